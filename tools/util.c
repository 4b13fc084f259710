/*
 * util.c - logging, durations, signal names and the default control path.
 */
#include "tool.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

const char *fmt_duration(uint64_t usec, char *buf, size_t len)
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

static const struct {
    int signo;
    const char *name;
} signames[] = {
    {SIGHUP, "HUP"},   {SIGINT, "INT"},     {SIGQUIT, "QUIT"},     {SIGILL, "ILL"},
    {SIGTRAP, "TRAP"}, {SIGABRT, "ABRT"},   {SIGBUS, "BUS"},       {SIGFPE, "FPE"},
    {SIGKILL, "KILL"}, {SIGUSR1, "USR1"},   {SIGSEGV, "SEGV"},     {SIGUSR2, "USR2"},
    {SIGPIPE, "PIPE"}, {SIGALRM, "ALRM"},   {SIGTERM, "TERM"},     {SIGCHLD, "CHLD"},
    {SIGCONT, "CONT"}, {SIGSTOP, "STOP"},   {SIGTSTP, "TSTP"},     {SIGTTIN, "TTIN"},
    {SIGTTOU, "TTOU"}, {SIGURG, "URG"},     {SIGXCPU, "XCPU"},     {SIGXFSZ, "XFSZ"},
    {SIGVTALRM, "VTALRM"}, {SIGPROF, "PROF"}, {SIGWINCH, "WINCH"}, {SIGIO, "IO"},
    {SIGPWR, "PWR"},   {SIGSYS, "SYS"},
};

int parse_signal(const char *s)
{
    char *end;
    long v;

    if (!s || !*s)
        return -1;
    if (strncmp(s, "SIG", 3) == 0)
        s += 3;
    for (size_t i = 0; i < sizeof signames / sizeof signames[0]; i++)
        if (strcasecmp(s, signames[i].name) == 0)
            return signames[i].signo;
    v = strtol(s, &end, 10);
    if (*end || v < 1 || v > 64)
        return -1;
    return (int)v;
}

const char *signal_name(int signo)
{
    static char buf[16];
    for (size_t i = 0; i < sizeof signames / sizeof signames[0]; i++)
        if (signames[i].signo == signo)
            return signames[i].name;
    (void)snprintf(buf, sizeof buf, "%d", signo);
    return buf;
}

const char *describe_status(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        (void)snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        (void)snprintf(buf, len, "was killed by SIG%s%s", signal_name(WTERMSIG(status)),
                       WCOREDUMP(status) ? " (core dumped)" : "");
    else
        (void)snprintf(buf, len, "ended with status 0x%x", (unsigned)status);
    return buf;
}

int status_exit_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return EXIT_FAILED;
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
