/* Upgrades for real, with this program as its own successor: the "never"
 * values of the options (issue 10 #2), signalling and reaping children
 * through their pidfd (#4), close_range() failing (#5), a READY=1 that a
 * grandchild sends on the handshake socket (ignored), and a malformed
 * HELLO. Each case runs in a forked child (a handle is process-wide).
 *
 * Started as "test-upgrade --successor MODE", it is a successor:
 *   ready-exit   handoff_ready(), then exit 0 after 300 ms
 *   ready-wait   handoff_ready(), then serve until STOP
 *   grandchild   a forked grandchild first sends READY=1 on the
 *                handshake socket; 300 ms later the successor itself
 *                becomes ready; then serve until STOP
 *   fds          write the open fds to $TEST_OUT, then ready-wait */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "handoff.h"
#include "handshake.h"

static char g_self[4096];

#define CHECK(cond)                                                                               \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);             \
            _exit(1);                                                                             \
        }                                                                                         \
    } while (0)

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* Runs fn in a child; 77 from it means "skipped". Without pidfd_open()
 * (valgrind does not know it) nothing here can run. */
static void in_child(void (*fn)(void))
{
    int pfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    if (pfd < 0) {
        fprintf(stderr, "SKIP: pidfd_open: %s (under valgrind?)\n", strerror(errno));
        skip();
    }
    close(pfd);
    pid_t pid = fork();
    int st;
    assert_true(pid >= 0);
    if (pid == 0) {
        /* A group of its own, so that whatever a failed case leaves
         * behind (a successor) is killed below. */
        (void)setpgid(0, 0);
        fn();
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    (void)kill(-pid, SIGKILL);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
        skip();
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("child failed (status 0x%x)", st);
}

static char g_logs[64][256];
static int g_nlogs;
static void capture(void *ud, int level, const char *msg)
{
    (void)ud;
    (void)level;
    if (g_nlogs < 64)
        snprintf(g_logs[g_nlogs++], sizeof g_logs[0], "%s", msg);
    fprintf(stderr, "log: %s\n", msg);
}
static int logged(const char *needle)
{
    for (int i = 0; i < g_nlogs; i++)
        if (strstr(g_logs[i], needle))
            return 1;
    return 0;
}

/* A handle whose upgrades start this program as successor MODE. */
static handoff_t *mk_mode(handoff_options *o, const char *mode)
{
    static char *argv[4];
    handoff_t *h = NULL;
    argv[0] = g_self;
    argv[1] = "--successor";
    argv[2] = (char *)mode;
    argv[3] = NULL;
    if (!o->argv)
        o->argv = argv;
    o->log = capture;
    o->log_level = HANDOFF_LOG_INFO;
    CHECK(handoff_new(o, &h) == 0);
    return h;
}

static int next(handoff_t *h, handoff_event *ev, int ms)
{
    return handoff_wait_event(h, ev, handoff_now_usec() + (uint64_t)ms * 1000);
}

/* Waits for an event of type t, skipping others; 1 if seen. */
static int expect(handoff_t *h, int t, int ms, handoff_event *ev)
{
    uint64_t end = handoff_now_usec() + (uint64_t)ms * 1000;
    while (handoff_now_usec() < end) {
        int r = handoff_wait_event(h, ev, end);
        if (r <= 0)
            return 0;
        fprintf(stderr, "event: %s %s\n", handoff_event_name(ev->type), ev->message);
        if (ev->type == t)
            return 1;
    }
    return 0;
}

/* ---- the "never" values (HANDOFF_NO_TIMEOUT and the largest finite
 * ones, which used to wrap) ---- */

/* resume_window_usec: the successor dies long after taking over and the
 * old generation still takes the service back; STOP is held back until
 * then, although nothing is left to drain. */
static void never_resume(uint64_t window)
{
    handoff_options o = HANDOFF_OPTIONS_INIT;
    handoff_event ev;
    o.resume_window_usec = window;
    handoff_t *h = mk_mode(&o, "ready-exit");
    CHECK(handoff_ready(h) == 0);
    CHECK(handoff_upgrade(h) == 0);
    CHECK(expect(h, HANDOFF_EVENT_DRAIN, 10000, &ev) && ev.reason == HANDOFF_DRAIN_UPGRADE);
    /* Nothing to drain: no STOP while the window is open ... */
    CHECK(next(h, &ev, 100) == 0);
    /* ... and the successor's exit (300 ms after its ready) is a rollback. */
    CHECK(expect(h, HANDOFF_EVENT_RESUME, 10000, &ev));
    CHECK(handoff_free(h) == NULL);
}
static void c_never_resume(void)
{
    never_resume(HANDOFF_NO_TIMEOUT);
    never_resume(HANDOFF_NO_TIMEOUT - 1);
}
static void test_never_resume(void **s) { (void)s; in_child(c_never_resume); }

/* drain_timeout_usec: a draining process waits for its connections. */
static void never_drain(uint64_t d)
{
    handoff_options o = HANDOFF_OPTIONS_INIT;
    handoff_event ev;
    o.drain_timeout_usec = d;
    handoff_t *h = mk_mode(&o, "ready-wait");
    CHECK(handoff_ready(h) == 0);
    handoff_conn_begin(h);
    CHECK(handoff_shutdown(h, 0) == 0);
    CHECK(next(h, &ev, 1000) == 1 && ev.type == HANDOFF_EVENT_DRAIN);
    CHECK(next(h, &ev, 300) == 0);
    handoff_conn_end(h);
    CHECK(next(h, &ev, 1000) == 1 && ev.type == HANDOFF_EVENT_STOP &&
          ev.reason == HANDOFF_STOP_DRAINED);
    handoff_free(h);
}
static void c_never_drain(void)
{
    never_drain(HANDOFF_NO_TIMEOUT);
    never_drain(HANDOFF_NO_TIMEOUT - 1);
}
static void test_never_drain(void **s) { (void)s; in_child(c_never_drain); }

/* upgrade_timeout_usec: a successor that never becomes ready is waited
 * for; a shutdown still cancels it. */
static void never_upgrade(uint64_t t)
{
    char *argv[] = {"/bin/sleep", "30", NULL};
    handoff_options o = HANDOFF_OPTIONS_INIT;
    handoff_event ev;
    o.upgrade_timeout_usec = t;
    o.argv = argv;
    handoff_t *h = mk_mode(&o, NULL);
    CHECK(handoff_ready(h) == 0);
    CHECK(handoff_upgrade(h) == 0);
    CHECK(next(h, &ev, 1000) == 1 && ev.type == HANDOFF_EVENT_UPGRADE_STARTED);
    CHECK(next(h, &ev, 500) == 0);
    CHECK(handoff_shutdown(h, 0) == 0);
    CHECK(next(h, &ev, 1000) == 1 && ev.type == HANDOFF_EVENT_UPGRADE_FAILED &&
          ev.error == -ECANCELED);
    handoff_free(h);
}
static void c_never_upgrade(void)
{
    never_upgrade(HANDOFF_NO_TIMEOUT);
    never_upgrade(HANDOFF_NO_TIMEOUT - 1);
}
static void test_never_upgrade(void **s) { (void)s; in_child(c_never_upgrade); }

/* ---- #4: children are signalled and reaped through their pidfd ---- */

/* The application reaps the successor itself and the kernel gives its
 * pid to another process; the library must not kill that one. Run as
 * pid 2 of a new pid namespace, whose ns_last_pid we may set. */
static void pid_reuse_scenario(void)
{
    char *argv[] = {"/bin/sleep", "30", NULL};
    handoff_options o = HANDOFF_OPTIONS_INIT;
    handoff_event ev;
    char buf[32];
    o.argv = argv;
    handoff_t *h = mk_mode(&o, NULL);
    CHECK(handoff_ready(h) == 0);
    CHECK(handoff_upgrade(h) == 0);
    CHECK(next(h, &ev, 1000) == 1 && ev.type == HANDOFF_EVENT_UPGRADE_STARTED);
    pid_t child = ev.pid;
    /* The application reaps it (as waitpid(-1) or SIGCHLD handlers do). */
    CHECK(kill(child, SIGKILL) == 0);
    CHECK(waitpid(child, NULL, 0) == child);
    /* Another process gets the same pid. */
    int fd = open("/proc/sys/kernel/ns_last_pid", O_WRONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    int n = snprintf(buf, sizeof buf, "%d", (int)child - 1);
    CHECK(write(fd, buf, (size_t)n) == n);
    close(fd);
    pid_t victim = fork();
    if (victim == 0) {
        for (;;)
            pause();
    }
    CHECK(victim == child);
    /* The library ends the upgrade (shutdown kills a pending child). */
    CHECK(handoff_shutdown(h, 0) == 0);
    CHECK(expect(h, HANDOFF_EVENT_UPGRADE_FAILED, 2000, &ev));
    fprintf(stderr, "upgrade-failed: %s\n", ev.message);
    sleep_ms(100);
    /* The victim lives, and is still ours to reap. */
    CHECK(waitpid(victim, NULL, WNOHANG) == 0);
    CHECK(kill(victim, 0) == 0);
    kill(victim, SIGKILL);
    waitpid(victim, NULL, 0);
    handoff_free(h);
}

static int write_file(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, s, strlen(s));
    close(fd);
    return n == (ssize_t)strlen(s) ? 0 : -1;
}

static void c_pid_reuse(void)
{
    char map[64];
    uid_t uid = getuid();
    gid_t gid = getgid();
    if (unshare(CLONE_NEWUSER | CLONE_NEWPID) < 0) {
        fprintf(stderr, "SKIP: no user+pid namespaces (%s)\n", strerror(errno));
        _exit(77);
    }
    snprintf(map, sizeof map, "0 %u 1", (unsigned)uid);
    if (write_file("/proc/self/setgroups", "deny") < 0 || write_file("/proc/self/uid_map", map) < 0) {
        fprintf(stderr, "SKIP: cannot map our uid in a user namespace\n");
        _exit(77);
    }
    snprintf(map, sizeof map, "0 %u 1", (unsigned)gid);
    (void)write_file("/proc/self/gid_map", map);
    pid_t init = fork(); /* pid 1 of the namespace */
    CHECK(init >= 0);
    if (init == 0) {
        pid_t p = fork(); /* pid 2: the scenario (pid 1 ignores signals) */
        if (p == 0) {
            pid_reuse_scenario();
            _exit(0);
        }
        int st;
        while (waitpid(p, &st, 0) < 0 && errno == EINTR) {
        }
        _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 1);
    }
    int st;
    CHECK(waitpid(init, &st, 0) == init);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}
static void test_pid_reuse(void **s) { (void)s; in_child(c_pid_reuse); }

/* A successor that made itself a process group leader (setsid) and forked:
 * on the timeout its whole group is killed, so no orphan keeps the
 * listeners. */
static int marker_alive(const char *marker)
{
    DIR *d = opendir("/proc");
    int found = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        char path[300], buf[256];
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0)
            continue;
        for (ssize_t i = 0; i < n; i++)
            if (!buf[i])
                buf[i] = ' ';
        buf[n] = '\0';
        if (strstr(buf, marker)) {
            snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
            fd = open(path, O_RDONLY | O_CLOEXEC);
            n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
            if (fd >= 0)
                close(fd);
            if (n > 0) {
                buf[n] = '\0';
                char *rp = strrchr(buf, ')');
                if (rp && rp[2] != 'Z')
                    found = 1;
            }
        }
    }
    if (d)
        closedir(d);
    return found;
}

static void c_group_kill(void)
{
    char marker[64], script[256];
    snprintf(marker, sizeof marker, "3600.%d", (int)getpid());
    snprintf(script, sizeof script, "sleep %s & exec sleep %s1", marker, marker);
    char *argv[] = {"setsid", "sh", "-c", script, NULL};
    handoff_options o = HANDOFF_OPTIONS_INIT;
    handoff_event ev;
    o.upgrade_timeout_usec = 500 * 1000;
    o.argv = argv;
    handoff_t *h = mk_mode(&o, NULL);
    CHECK(handoff_ready(h) == 0);
    CHECK(handoff_upgrade(h) == 0);
    for (int i = 0; i < 100 && !marker_alive(marker); i++)
        sleep_ms(10);
    CHECK(marker_alive(marker));
    CHECK(expect(h, HANDOFF_EVENT_UPGRADE_FAILED, 5000, &ev) && ev.error == -ETIMEDOUT);
    for (int i = 0; i < 100 && marker_alive(marker); i++)
        sleep_ms(10);
    CHECK(!marker_alive(marker));
    /* This process's own group is never killed (we are still here). */
    handoff_free(h);
}
static void test_group_kill(void **s) { (void)s; in_child(c_group_kill); }

/* ---- #5: close_range() failing is not a silent leak ---- */

static int block_close_range(void)
{
#if defined(__x86_64__)
    const unsigned arch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
    const unsigned arch = AUDIT_ARCH_AARCH64;
#else
    const unsigned arch = 0;
#endif
    if (!arch)
        return -1;
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arch, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_close_range, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
        syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
        return -1;
    return 0;
}

static void c_close_range_fails(void)
{
    char out[] = "/tmp/handoff-fds-XXXXXX", buf[1024];
    handoff_options o = HANDOFF_OPTIONS_INIT;
    handoff_event ev;
    int tmp = mkstemp(out);
    CHECK(tmp >= 0);
    close(tmp);
    if (block_close_range() < 0) {
        fprintf(stderr, "SKIP: cannot install a seccomp filter\n");
        unlink(out);
        _exit(77);
    }
    CHECK(syscall(SYS_close_range, 100, 100, 0) < 0 && errno == ENOSYS);
    /* An fd the application left inheritable, far above the passed ones. */
    int leak = open("/dev/null", O_RDONLY);
    CHECK(leak >= 0 && dup2(leak, 77) == 77);
    close(leak);
    setenv("TEST_OUT", out, 1);
    handoff_t *h = mk_mode(&o, "fds");
    CHECK(handoff_ready(h) == 0);
    CHECK(handoff_upgrade(h) == 0);
    CHECK(expect(h, HANDOFF_EVENT_DRAIN, 10000, &ev));
    int fd = open(out, O_RDONLY | O_CLOEXEC);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    CHECK(n > 0);
    buf[n] = '\0';
    fprintf(stderr, "successor's fds: %s\n", buf);
    CHECK(strstr(buf, " 77 ") == NULL);
    pid_t succ = ev.pid;
    CHECK(kill(succ, SIGTERM) == 0);
    CHECK(expect(h, HANDOFF_EVENT_STOP, 10000, &ev));
    handoff_free(h);
    unlink(out);
}
static void test_close_range_fails(void **s) { (void)s; in_child(c_close_range_fails); }

/* ---- a READY=1 from a forked grandchild is ignored ---- */
static void c_grandchild_ready(void)
{
    handoff_options o = HANDOFF_OPTIONS_INIT;
    handoff_event ev;
    g_nlogs = 0;
    handoff_t *h = mk_mode(&o, "grandchild");
    CHECK(handoff_ready(h) == 0);
    CHECK(handoff_upgrade(h) == 0);
    CHECK(next(h, &ev, 1000) == 1 && ev.type == HANDOFF_EVENT_UPGRADE_STARTED);
    pid_t child = ev.pid;
    /* The grandchild's READY arrives first and is ignored (logged). */
    for (int i = 0; i < 200 && !logged("ignoring a readiness message from pid"); i++)
        CHECK(next(h, &ev, 10) == 0);
    CHECK(logged("ignoring a readiness message from pid"));
    CHECK(!logged("ready in"));
    /* The successor's own READY hands over. */
    CHECK(expect(h, HANDOFF_EVENT_DRAIN, 10000, &ev) && ev.pid == child);
    CHECK(kill(child, SIGTERM) == 0);
    CHECK(expect(h, HANDOFF_EVENT_STOP, 10000, &ev));
    handoff_free(h);
}
static void test_grandchild_ready(void **s) { (void)s; in_child(c_grandchild_ready); }

/* ---- HELLO: malformed messages are refused, their fds closed ---- */
static int hello_of(const char *text, int nfds, int kind)
{
    int sv[2], fds[4];
    struct hf_pred *preds;
    size_t n;
    union {
        struct cmsghdr hdr;
        char space[CMSG_SPACE(sizeof(int) * 4)];
    } ctl;
    struct iovec iov = {.iov_base = (void *)text, .iov_len = strlen(text)};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
    for (int i = 0; i < nfds; i++)
        fds[i] = kind ? (int)syscall(SYS_pidfd_open, getpid(), 0) : open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (nfds) {
        memset(&ctl, 0, sizeof ctl);
        msg.msg_control = &ctl;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    CHECK(sendmsg(sv[0], &msg, 0) == (ssize_t)strlen(text));
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    int r = handoff__hello_recv(sv[1], &preds, &n);
    if (r == 1) {
        CHECK((int)n == nfds);
        for (size_t i = 0; i < n; i++) {
            CHECK(fcntl(preds[i].pidfd, F_GETFD) & FD_CLOEXEC);
            close(preds[i].pidfd);
        }
        free(preds);
    }
    close(sv[0]);
    close(sv[1]);
    return r;
}

static int count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void c_hello(void)
{
    int before = count_fds();
    CHECK(hello_of("HELLO=1\n", 0, 1) == 1);
    CHECK(hello_of("HELLO=1\nDRAINING=12/3,13/4\nFUTURE=x\n", 2, 1) == 1);
    CHECK(hello_of("HELLO=1\nDRAINING=12/3,13/4\n", 1, 1) == -EBADMSG);     /* count */
    CHECK(hello_of("HELLO=1\nDRAINING=12/3\n", 1, 0) == -EBADMSG);          /* not a pidfd */
    CHECK(hello_of("HELLO=1\nDRAINING=12/3/4\n", 1, 1) == -EBADMSG);
    CHECK(hello_of("HELLO=1\nDRAINING=0/3\n", 1, 1) == -EBADMSG);
    CHECK(hello_of("HELLO=1\nDRAINING=99999999999/3\n", 1, 1) == -EBADMSG);
    CHECK(hello_of("HELLO=1\nDRAINING=1/\n", 1, 1) == -EBADMSG);
    CHECK(hello_of("HELLO=2\n", 0, 1) == -EBADMSG);
    CHECK(hello_of("READY=1", 1, 1) == -EBADMSG);
    CHECK(count_fds() == before); /* every fd received was closed */
    int sv[2];
    struct hf_pred *p;
    size_t n;
    CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
    CHECK(handoff__hello_recv(sv[1], &p, &n) == 0); /* none queued: older parent */
    close(sv[0]);
    close(sv[1]);
}
static void test_hello(void **s) { (void)s; in_child(c_hello); }

/* ---- the successor side ---- */
static int successor(const char *mode)
{
    handoff_options o = HANDOFF_OPTIONS_INIT;
    handoff_event ev;
    handoff_t *h;
    const char *rfd = getenv("HANDOFF_READY_FD");
    int ready_fd = rfd ? atoi(rfd) : -1;

    o.log_level = HANDOFF_LOG_INFO;
    if (handoff_new(&o, &h) < 0)
        return 3;
    if (strcmp(mode, "fds") == 0) {
        char line[1024] = " ";
        size_t len = 1;
        DIR *d = opendir("/proc/self/fd");
        for (struct dirent *e; d && (e = readdir(d));)
            if (e->d_name[0] != '.' && len + strlen(e->d_name) + 2 < sizeof line)
                len += (size_t)snprintf(line + len, sizeof line - len, "%s ", e->d_name);
        if (d)
            closedir(d);
        int fd = open(getenv("TEST_OUT"), O_WRONLY | O_TRUNC | O_CLOEXEC);
        if (fd < 0 || write(fd, line, len) != (ssize_t)len)
            return 4;
        close(fd);
    }
    if (strcmp(mode, "grandchild") == 0) {
        pid_t g = fork();
        if (g == 0)
            _exit(send(ready_fd, "READY=1", 7, MSG_NOSIGNAL) == 7 ? 0 : 1);
        int st;
        if (waitpid(g, &st, 0) != g || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            return 5;
        sleep_ms(300);
    }
    if (handoff_ready(h) < 0)
        return 6;
    if (strcmp(mode, "ready-exit") == 0) {
        sleep_ms(300);
        handoff_free(h);
        return 0;
    }
    for (;;) {
        int r = handoff_wait_event(h, &ev, HANDOFF_NO_TIMEOUT);
        if (r < 0)
            return 7;
        if (ev.type == HANDOFF_EVENT_STOP)
            break;
    }
    handoff_free(h);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--successor") == 0)
        return successor(argv[2]);
    ssize_t n = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
    if (n <= 0)
        return 1;
    g_self[n] = '\0';
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_never_resume),   cmocka_unit_test(test_never_drain),
        cmocka_unit_test(test_never_upgrade),  cmocka_unit_test(test_pid_reuse),
        cmocka_unit_test(test_group_kill),     cmocka_unit_test(test_close_range_fails),
        cmocka_unit_test(test_grandchild_ready), cmocka_unit_test(test_hello),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
