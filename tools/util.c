/*
 * util.c - logging, durations, growable strings, signal names and the
 * runtime directories.
 */
#include "tool.h"

#include "shared/status.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int tool_verbosity = 1;

/* One line per event on stderr. Under systemd (JOURNAL_STREAM set) the
 * journal stamps lines itself; elsewhere each line starts with UTC time. */
void tool_log(int level, const char *fmt, ...)
{
    static int stamp = -1;
    char line[1024], ts[40] = "";
    va_list ap;
    int off = 0;

    if ((level == LOG_INFO_ && tool_verbosity < 1) || (level == LOG_DEBUG_ && tool_verbosity < 2))
        return;
    if (stamp < 0)
        stamp = getenv("JOURNAL_STREAM") == NULL;
    if (stamp) {
        struct timespec now;
        struct tm tm;
        (void)clock_gettime(CLOCK_REALTIME, &now);
        (void)gmtime_r(&now.tv_sec, &tm);
        size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
        (void)snprintf(ts + n, sizeof ts - n, ".%03ldZ ", now.tv_nsec / 1000000);
    }
    off = snprintf(line, sizeof line, "%shandoff[%ld]: %s", ts, (long)getpid(),
                   level == LOG_ERR_ ? "error: " : level == LOG_WARN_ ? "warning: " : "");
    if (off < 0 || (size_t)off >= sizeof line)
        off = 0;
    va_start(ap, fmt);
    (void)vsnprintf(line + off, sizeof line - (size_t)off, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
    va_end(ap);
    (void)fprintf(stderr, "%s\n", line);
}

void tool_lib_log(void *userdata, int level, const char *msg)
{
    (void)userdata;
    tool_log(level <= HANDOFF_LOG_ERR       ? LOG_ERR_
             : level == HANDOFF_LOG_WARNING ? LOG_WARN_
                                            : LOG_DEBUG_,
             "%s", msg);
}

static bool sbuf_grow(struct sbuf *b, size_t more)
{
    size_t cap;
    char *n;

    if (b->oom)
        return false;
    if (b->len + more + 1 <= b->cap)
        return true;
    cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1)
        cap *= 2;
    n = realloc(b->p, cap);
    if (!n) {
        b->oom = true;
        return false;
    }
    b->p = n;
    b->cap = cap;
    return true;
}

void sbuf_append(struct sbuf *b, const char *p, size_t n)
{
    if (!sbuf_grow(b, n))
        return;
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void sbuf_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (!sbuf_grow(b, 128))
        return;
    va_start(ap, fmt);
    n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= b->cap - b->len) {
        if (!sbuf_grow(b, (size_t)n))
            return;
        va_start(ap, fmt);
        (void)vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
        va_end(ap);
    }
    b->len += (size_t)n;
}

/* The length of the valid UTF-8 sequence at s (2 to 4 bytes) encoding a
 * printable code point, or 0. */
static size_t utf8_printable(const unsigned char *s)
{
    uint32_t cp;
    size_t n;

    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        n = 2;
        cp = s[0] & 0x1fu;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        n = 3;
        cp = s[0] & 0x0fu;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        n = 4;
        cp = s[0] & 0x07u;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3fu);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) || /* overlong */
        (cp >= 0xd800 && cp <= 0xdfff) ||                                       /* surrogates */
        cp <= 0x9f ||                                                            /* C1 controls */
        cp == 0x61c || cp == 0x200e || cp == 0x200f || (cp >= 0x2028 && cp <= 0x202e) ||       /* bidi, separators */
        (cp >= 0x2066 && cp <= 0x2069))
        return 0;
    return n;
}

static void escaped(struct sbuf *b, const char *str, bool quoted)
{
    const unsigned char *s = (const unsigned char *)str;

    while (*s) {
        size_t n;
        if (*s >= 0x20 && *s < 0x7f && ((*s != '\\' && *s != '"') || !quoted)) {
            if (!sbuf_grow(b, 1))
                return;
            b->p[b->len++] = (char)*s++;
            b->p[b->len] = '\0';
        } else if (*s >= 0x80 && (n = utf8_printable(s)) > 0) {
            if (!sbuf_grow(b, n))
                return;
            memcpy(b->p + b->len, s, n);
            b->len += n;
            b->p[b->len] = '\0';
            s += n;
        } else {
            switch (*s) {
            case '\\': sbuf_printf(b, "\\\\"); break;
            case '"': sbuf_printf(b, "\\\""); break;
            case '\t': sbuf_printf(b, "\\t"); break;
            case '\r': sbuf_printf(b, "\\r"); break;
            case '\n': sbuf_printf(b, "\\n"); break;
            default: sbuf_printf(b, "\\x%02x", *s); break;
            }
            s++;
        }
    }
}

void sbuf_escaped(struct sbuf *b, const char *s)
{
    escaped(b, s, true);
}

void sbuf_text(struct sbuf *b, const char *s)
{
    escaped(b, s, false);
}

void sbuf_free(struct sbuf *b)
{
    free(b->p);
    *b = (struct sbuf){0};
}

int parse_duration(const char *s, uint64_t *out)
{
    char *end;
    double v, mult = 1e6;

    if (!s || !*s)
        return -EINVAL;
    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || !(v >= 0 && v <= 1e7)) /* also refuses "nan" */
        return -EINVAL;
    if (strcmp(end, "ms") == 0)
        mult = 1e3;
    else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
        mult = 60e6;
    else if (*end && strcmp(end, "s") != 0)
        return -EINVAL;
    *out = (uint64_t)(v * mult + 0.5);
    return 0;
}

uint64_t deadline_after(uint64_t now, uint64_t timeout)
{
    return timeout == HANDOFF_NO_TIMEOUT || now > UINT64_MAX - timeout ? UINT64_MAX : now + timeout;
}

const char *dur(uint64_t usec, char *buf, size_t len)
{
    if (usec < 10 * HANDOFF_USEC_PER_MSEC)
        (void)snprintf(buf, len, "%.1f ms", (double)usec / 1e3);
    else if (usec < 10 * HANDOFF_USEC_PER_SEC)
        (void)snprintf(buf, len, "%llu ms", (unsigned long long)(usec / 1000));
    else if (usec < 120 * HANDOFF_USEC_PER_SEC)
        (void)snprintf(buf, len, "%.1f s", (double)usec / 1e6);
    else if (usec < 7200 * HANDOFF_USEC_PER_SEC)
        (void)snprintf(buf, len, "%llum%02llus", (unsigned long long)(usec / 60000000),
                       (unsigned long long)(usec / 1000000 % 60));
    else
        (void)snprintf(buf, len, "%lluh%02llum", (unsigned long long)(usec / 3600000000ULL),
                       (unsigned long long)(usec / 60000000 % 60));
    return buf;
}

const char *sig_abbrev(int signo)
{
    const char *n = handoff__signal_abbrev(signo);
    return n ? n : "?";
}

int status_exit_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return EXIT_FAILED;
}

int unix_sockaddr(const char *path, struct sockaddr_un *sun, socklen_t *len)
{
    size_t n = strlen(path);

    if (n == 0 || n >= sizeof sun->sun_path)
        return -ENAMETOOLONG;
    memset(sun, 0, sizeof *sun);
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, path, n);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

int runtime_dir(int which, char *buf, size_t len, bool create_dir)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    struct stat st;
    int n;

    if (which == 0) {
        if (!xdg || xdg[0] != '/')
            return -ENOENT;
        n = snprintf(buf, len, "%s", xdg);
        return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
    }
    if (geteuid() == 0)
        n = snprintf(buf, len, "/run/handoff");
    else
        n = snprintf(buf, len, "/tmp/handoff-%ld", (long)geteuid());
    if (n < 0 || (size_t)n >= len)
        return -ENAMETOOLONG;
    if (create_dir && mkdir(buf, geteuid() == 0 ? 0755 : 0700) < 0 && errno != EEXIST)
        return -errno;
    if (lstat(buf, &st) == 0 && (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() ||
                                 (geteuid() != 0 && (st.st_mode & 077))))
        return -EPERM; /* someone else's directory: refuse to use it */
    return 0;
}

int default_control_path(const char *name, char *buf, size_t len, bool create_dir)
{
    char dir[256];
    int n, r;

    if ((r = runtime_dir(0, dir, sizeof dir, create_dir)) == 0) {
        n = snprintf(buf, len, "%s/handoff.%s.sock", dir, name);
    } else {
        if (r != -ENOENT || (r = runtime_dir(1, dir, sizeof dir, create_dir)) < 0)
            return r;
        n = snprintf(buf, len, "%s/%s.sock", dir, name);
    }
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}
