/*
 * client.c - `handoff reload`, `handoff status` and `handoff stop`: one
 * command line to the control socket (protocol in control.c), the answer
 * read to EOF, its data printed and its last line turned into the exit
 * status (handoff(1)).
 */
#include "tool.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

/* The answer can be large (the status of hundreds of
 * workers), so it is kept whole in memory, up to MAX_ANSWER, and only
 * then split into data and the verdict (its last line). */
#define MAX_ANSWER (64u << 20)

/* Writes text to f with any control byte left (an older supervisor does
 * not escape what workers report) shown as '?'. */
static void print_clean(FILE *f, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        (void)putc((ch < 0x20 && ch != '\n' && ch != '\t') || ch == 0x7f ? '?' : ch, f);
    }
}

/* Prints the data lines of an answer and returns the exit code its last
 * line (the verdict) stands for. */
static int client_verdict(char *buf, size_t got, const char *cmd, const char *path, int send_err)
{
    while (got > 0 && buf[got - 1] == '\n')
        buf[--got] = '\0';
    char *last = memrchr(buf, '\n', got);
    last = last ? last + 1 : buf;
    if (last > buf)
        print_clean(stdout, buf, (size_t)(last - buf));
    if (strncmp(last, "OK", 2) == 0) {
        if (last[2] == ' ' && last[3]) {
            print_clean(stdout, last + 3, strlen(last + 3));
            (void)putchar('\n');
        }
        return EXIT_OK;
    }
    if (strncmp(last, "DENIED ", 7) == 0) {
        (void)fprintf(stderr, "handoff: %s: ", cmd);
        print_clean(stderr, last + 7, strlen(last + 7));
        (void)putc('\n', stderr);
        return EXIT_REFUSED;
    }
    if (strncmp(last, "ERR ", 4) == 0) {
        (void)fprintf(stderr, "handoff: %s failed: ", cmd);
        print_clean(stderr, last + 4, strlen(last + 4));
        (void)putc('\n', stderr);
        return EXIT_FAILED;
    }
    if (send_err) {
        (void)fprintf(stderr, "handoff: %s: %s\n", path, strerror(send_err));
        return EXIT_NOCONNECT;
    }
    (void)fprintf(stderr, "handoff: %s: the supervisor closed the connection without an answer\n", cmd);
    return EXIT_FAILED;
}

int control_client(const char *path, const char *cmd, uint64_t timeout)
{
    struct sockaddr_un sun;
    socklen_t len;
    char line[160];
    struct sbuf ans = {0};
    uint64_t deadline = timeout ? handoff_now_usec() + timeout : UINT64_MAX;
    int fd, send_err = 0, code;

    if (unix_sockaddr(path, &sun, &len) < 0) {
        (void)fprintf(stderr, "handoff: control socket path \"%s\" is too long\n", path);
        return EXIT_USAGE;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    /* connect() to a unix socket whose backlog is full (a supervisor that
     * is stopped, or flooded) waits for room, bounded by SO_SNDTIMEO only;
     * so do the sends. */
    if (fd >= 0 && timeout) {
        struct timeval tv = {.tv_sec = (time_t)(timeout / 1000000), .tv_usec = (suseconds_t)(timeout % 1000000)};
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, len) < 0) {
        int e = errno;
        if (e == EAGAIN && timeout) {
            (void)fprintf(stderr, "handoff: no answer within %.1f s: %s accepts no connection (its backlog is full)\n",
                          (double)timeout / 1e6, path);
            (void)close(fd);
            return EXIT_TIMEOUT;
        }
        (void)fprintf(stderr, "handoff: cannot connect to %s: %s%s\n", path, strerror(e),
                      e == ENOENT || e == ECONNREFUSED ? " (is `handoff run` running? see --control/--name)" : "");
        if (fd >= 0)
            (void)close(fd);
        return e == EACCES || e == EPERM ? EXIT_REFUSED : EXIT_NOCONNECT;
    }
    (void)snprintf(line, sizeof line, "%s\n", cmd);
    /* A refused client may find the connection already closed; the
     * verdict waiting in the receive buffer is read below all the same. */
    if (send(fd, line, strlen(line), MSG_NOSIGNAL) < 0)
        send_err = errno;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int ms = -1;
        if (deadline != UINT64_MAX) {
            uint64_t now = handoff_now_usec();
            if (now >= deadline) {
                (void)fprintf(stderr, "handoff: no answer within %.1f s (a reload goes on regardless)\n",
                              (double)timeout / 1e6);
                (void)close(fd);
                sbuf_free(&ans);
                return EXIT_TIMEOUT;
            }
            ms = (int)((deadline - now + 999) / 1000);
        }
        int r = poll(&p, 1, ms);
        if (r < 0 && errno != EINTR)
            break;
        if (r <= 0)
            continue;
        char chunk[16384];
        ssize_t n = recv(fd, chunk, sizeof chunk, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (ans.len + (size_t)n > MAX_ANSWER) {
            (void)fprintf(stderr, "handoff: %s: the answer is longer than %u MB; giving up\n", cmd, MAX_ANSWER >> 20);
            (void)close(fd);
            sbuf_free(&ans);
            return EXIT_FAILED;
        }
        sbuf_append(&ans, chunk, (size_t)n);
        if (ans.oom) {
            (void)fprintf(stderr, "handoff: %s: out of memory for the answer\n", cmd);
            (void)close(fd);
            sbuf_free(&ans);
            return EXIT_FAILED;
        }
    }
    (void)close(fd);
    code = client_verdict(ans.p ? ans.p : "", ans.len, cmd, path, send_err);
    sbuf_free(&ans);
    return code;
}
