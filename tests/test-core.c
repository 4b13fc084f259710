/* Unit tests for the handle (src/core.c, listen.c, signal.c, notify.c,
 * pidfile.c). Each test runs in a forked child: a handle is process-wide
 * (signals, environment), so every case starts from a clean process. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "handoff.h"

/* Runs fn in a child and fails the test if the child fails. cmocka's
 * assertions in the child end it with a non-zero status. */
static void in_child(void (*fn)(void))
{
    pid_t pid = fork();
    int st;
    assert_true(pid >= 0);
    if (pid == 0) {
        fn();
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("child failed (status 0x%x)", st);
}

#define CHECK(cond)                                                                               \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);             \
            _exit(1);                                                                             \
        }                                                                                         \
    } while (0)

static handoff_t *mk(const handoff_options *o)
{
    handoff_t *h = NULL;
    char *argv[] = {"/bin/true", NULL};
    handoff_options def = HANDOFF_OPTIONS_INIT;
    if (!o)
        o = &def;
    handoff_options copy = *o;
    if (!copy.argv)
        copy.argv = argv;
    int r = handoff_new(&copy, &h);
    if (r != 0)
        fprintf(stderr, "handoff_new: %s\n", strerror(-r));
    CHECK(r == 0 && h);
    return h;
}

static int next(handoff_t *h, handoff_event *ev, int ms)
{
    return handoff_wait_event(h, ev, handoff_now_usec() + (uint64_t)ms * 1000);
}

static uint16_t port_of(int fd)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    CHECK(getsockname(fd, (struct sockaddr *)&sin, &len) == 0);
    return ntohs(sin.sin_port);
}

/* ---- lifecycle ---- */
static void c_lifecycle(void)
{
    handoff_t *h = mk(NULL), *h2 = NULL;
    CHECK(handoff_new(NULL, &h2) == -EBUSY);
    CHECK(handoff_event_fd(h) >= 0);
    CHECK(fcntl(handoff_event_fd(h), F_GETFD) & FD_CLOEXEC);
    CHECK(handoff_generation(h) == 1);
    CHECK(handoff_has_parent(h) == 0);
    CHECK(handoff_upgrade(h) == -EAGAIN);
    CHECK(strstr(handoff_errmsg(h), "handoff_ready") != NULL);
    CHECK(handoff_ready(h) == 0);
    CHECK(handoff_ready(h) == -EALREADY);
    CHECK(handoff_free(h) == NULL);
    CHECK(handoff_free(NULL) == NULL);
    /* A new handle can be made once the first is gone. */
    h = mk(NULL);
    handoff_free(h);
    handoff_options o = HANDOFF_OPTIONS_INIT;
    o.upgrade_signal = SIGKILL;
    CHECK(handoff_new(&o, &h) == -EINVAL);
    o.upgrade_signal = SIGTERM;
    CHECK(handoff_new(&o, &h) == -EINVAL);
    o.upgrade_signal = 0;
    o.flags = 1u << 20;
    CHECK(handoff_new(&o, &h) == -EINVAL);
    o.flags = 0;
    o.pid_file = "";
    CHECK(handoff_new(&o, &h) == -EINVAL);
}
static void test_lifecycle(void **s) { (void)s; in_child(c_lifecycle); }

/* ---- listeners ---- */
static void c_listen(void)
{
    handoff_t *h = mk(NULL);
    int fd = handoff_listen(h, "web", "127.0.0.1:0", NULL);
    CHECK(fd >= 3);
    CHECK(port_of(fd) != 0);
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    CHECK(fcntl(fd, F_GETFL) & O_NONBLOCK);
    CHECK(handoff_listen(h, "web", "127.0.0.1:0", NULL) == -EEXIST);
    CHECK(handoff_listen(h, "bad name", "127.0.0.1:0", NULL) == -EINVAL);
    CHECK(handoff_listen(h, NULL, "nonsense", NULL) == -EINVAL);
    CHECK(strstr(handoff_errmsg(h), "bad address") != NULL);
    char spec[64], got[64];
    snprintf(spec, sizeof spec, "127.0.0.1:%u", port_of(fd));
    handoff_addr a;
    CHECK(handoff_addr_from_fd(fd, &a) == 0);
    CHECK(handoff_addr_format(&a, got, sizeof got) > 0 && strcmp(got, spec) == 0);
    CHECK(handoff_addr_from_fd(-1, &a) == -EBADF);
    CHECK(handoff_addr_from_fd(fd, NULL) == -EINVAL);
    CHECK(handoff_addr_from_fd(0 + open("/dev/null", O_RDONLY | O_CLOEXEC), &a) == -ENOTSOCK);
    CHECK(handoff_listen(h, "again", spec, NULL) == -EADDRINUSE);
    CHECK(strstr(handoff_errmsg(h), "Address already in use") != NULL);
    handoff_listen_options lo = HANDOFF_LISTEN_OPTIONS_INIT;
    lo.flags = HANDOFF_LISTEN_BLOCKING;
    lo.v6only = 1;
    int fd6 = handoff_listen(h, "v6", "[::1]:0", &lo);
    CHECK(fd6 >= 0);
    CHECK(!(fcntl(fd6, F_GETFL) & O_NONBLOCK));
    int udp = handoff_listen(h, NULL, "udp://127.0.0.1:0", NULL);
    CHECK(udp >= 0);
    char path[] = "/tmp/handoff-test-XXXXXX";
    CHECK(mkdtemp(path));
    char uspec[128];
    snprintf(uspec, sizeof uspec, "unix:%s/s.sock", path);
    lo.flags = 0;
    lo.mode = 0600;
    int ufd = handoff_listen(h, "u", uspec, &lo);
    CHECK(ufd >= 0);
    char sock[120];
    snprintf(sock, sizeof sock, "%s/s.sock", path);
    CHECK(access(sock, F_OK) == 0);
    /* Abstract names are global: make this one ours alone (other test
     * runs may be going on at the same time). */
    char abs[64];
    snprintf(abs, sizeof abs, "unix:@handoff-test-abstract-%d", (int)getpid());
    CHECK(handoff_listen(h, "abs", abs, NULL) >= 0);
    CHECK(handoff_remove(h, "nope") == -ENOENT);
    CHECK(handoff_remove(h, "v6") == 0);
    handoff_free(h);
    /* The last generation removes its unix socket file. */
    CHECK(access(sock, F_OK) < 0);
    rmdir(path);
}
static void test_listen(void **s) { (void)s; in_child(c_listen); }

/* A stale unix socket file (its server died) is replaced; a live one is
 * not stolen. */
static void c_unix_stale(void)
{
    char path[] = "/tmp/handoff-test-XXXXXX", sock[128], spec[140];
    CHECK(mkdtemp(path));
    snprintf(sock, sizeof sock, "%s/s", path);
    snprintf(spec, sizeof spec, "unix:%s", sock);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, sock);
    int live = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(bind(live, (struct sockaddr *)&sun, sizeof sun) == 0 && listen(live, 1) == 0);
    handoff_t *h = mk(NULL);
    CHECK(handoff_listen(h, "u", spec, NULL) == -EADDRINUSE);
    close(live); /* now stale: the file stays, nobody accepts */
    CHECK(access(sock, F_OK) == 0);
    CHECK(handoff_listen(h, "u", spec, NULL) >= 0);
    handoff_free(h);
    rmdir(path);
}
static void test_unix_stale(void **s) { (void)s; in_child(c_unix_stale); }

/* ---- inheritance (LISTEN_FDS as systemd or a parent sets it) ---- */
static int make_listener(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(bind(fd, (struct sockaddr *)&sin, sizeof sin) == 0 && listen(fd, 8) == 0);
    *port = port_of(fd);
    return fd;
}

static void c_inherit(void)
{
    uint16_t p1, p2;
    int a = make_listener(&p1), b = make_listener(&p2);
    /* Put them at 3 and 4, without close-on-exec, as after an exec. */
    int ta = fcntl(a, F_DUPFD, 100), tb = fcntl(b, F_DUPFD, 100);
    close(a);
    close(b);
    CHECK(dup2(ta, 3) == 3 && dup2(tb, 4) == 4);
    close(ta);
    close(tb);
    int fl = fcntl(4, F_GETFL);
    CHECK(fcntl(4, F_SETFL, fl | O_NONBLOCK) == 0);
    char pid[16];
    snprintf(pid, sizeof pid, "%d", getpid());
    setenv("LISTEN_PID", pid, 1);
    setenv("LISTEN_FDS", "2", 1);
    setenv("LISTEN_FDNAMES", "web:old", 1);
    setenv("NOTIFY_SOCKET", "@handoff-test-nowhere", 1);
    handoff_t *h = mk(NULL);
    CHECK(getenv("LISTEN_PID") == NULL && getenv("LISTEN_FDS") == NULL &&
          getenv("LISTEN_FDNAMES") == NULL && getenv("NOTIFY_SOCKET") == NULL);
    handoff_inherited_info info[4];
    CHECK(handoff_inherited(h, info, 4) == 2);
    CHECK(info[0].fd == 3 && strcmp(info[0].name, "web") == 0 && !info[0].claimed);
    CHECK(fcntl(3, F_GETFD) & FD_CLOEXEC);
    CHECK(fcntl(4, F_GETFD) & FD_CLOEXEC);
    char spec[64];
    /* By name and address. */
    snprintf(spec, sizeof spec, "127.0.0.1:%u", p1);
    CHECK(handoff_listen(h, "web", spec, NULL) == 3);
    /* By address under another name; O_NONBLOCK kept as it was. */
    snprintf(spec, sizeof spec, "127.0.0.1:%u", p2);
    CHECK(handoff_listen(h, "renamed", spec, NULL) == 4);
    CHECK(fcntl(4, F_GETFL) & O_NONBLOCK);
    CHECK(handoff_inherited(h, info, 4) == 2 && info[0].claimed && info[1].claimed);
    /* A talking NOTIFY_SOCKET that points nowhere is a warning, not an error. */
    CHECK(handoff_ready(h) == 0);
    handoff_free(h);
}
static void test_inherit(void **s) { (void)s; in_child(c_inherit); }

/* Moves fd to target without close-on-exec, as exec leaves inherited fds. */
static void place_at(int fd, int target)
{
    int t = fcntl(fd, F_DUPFD, 100);
    CHECK(t >= 100);
    close(fd);
    CHECK(dup2(t, target) == target);
    close(t);
}

static void c_inherit_unclaimed(void)
{
    uint16_t p1;
    place_at(make_listener(&p1), 3);
    char pid[16];
    snprintf(pid, sizeof pid, "%d", getpid());
    setenv("LISTEN_PID", pid, 1);
    setenv("LISTEN_FDS", "1", 1);
    handoff_t *h = mk(NULL);
    /* Same name ("unknown") but not asked for: closed at ready. */
    int fd = handoff_listen(h, NULL, "127.0.0.1:0", NULL);
    CHECK(fd >= 0 && fd != 3);
    CHECK(fcntl(3, F_GETFD) >= 0);
    CHECK(handoff_ready(h) == 0);
    CHECK(fcntl(3, F_GETFD) < 0 && errno == EBADF);
    handoff_free(h);
}
static void test_inherit_unclaimed(void **s) { (void)s; in_child(c_inherit_unclaimed); }

static void c_inherit_foreign(void)
{
    uint16_t p1;
    place_at(make_listener(&p1), 3);
    setenv("LISTEN_PID", "1", 1); /* not us */
    setenv("LISTEN_FDS", "1", 1);
    setenv("HANDOFF_READY_FD", "4", 1);
    handoff_t *h = mk(NULL);
    CHECK(handoff_inherited(h, NULL, 0) == 0);
    CHECK(handoff_has_parent(h) == 0);
    CHECK(getenv("LISTEN_FDS") == NULL && getenv("HANDOFF_READY_FD") == NULL);
    /* fd 3 was not ours: untouched (still open, still inheritable). */
    CHECK(fcntl(3, F_GETFD) == 0);
    CHECK(handoff_ready(h) == 0);
    CHECK(fcntl(3, F_GETFD) == 0);
    handoff_free(h);
    /* Garbage and a count past the open fds. */
    char pid[16];
    snprintf(pid, sizeof pid, "%d", getpid());
    setenv("LISTEN_PID", pid, 1);
    setenv("LISTEN_FDS", "3", 1); /* 3 open, 4 and 5 are not */
    h = mk(NULL);
    CHECK(handoff_inherited(h, NULL, 0) == 1);
    handoff_free(h);
    setenv("LISTEN_PID", pid, 1);
    setenv("LISTEN_FDS", "garbage", 1);
    h = mk(NULL);
    CHECK(handoff_inherited(h, NULL, 0) == 0);
    handoff_free(h);
}
static void test_inherit_foreign(void **s) { (void)s; in_child(c_inherit_foreign); }

/* ---- logging: silent without a log function (issue 9) ---- */

/* Runs a handle that has something to warn about (a garbage LISTEN_FDS)
 * with stderr on a pipe; returns what reached stderr. */
static void warn_once(handoff_log_fn fn, char *out, size_t len)
{
    int pp[2], saved = dup(2);
    handoff_options o = HANDOFF_OPTIONS_INIT;
    char pid[16];
    CHECK(saved >= 0 && pipe2(pp, O_CLOEXEC) == 0 && dup2(pp[1], 2) == 2);
    close(pp[1]);
    snprintf(pid, sizeof pid, "%d", getpid());
    setenv("LISTEN_PID", pid, 1);
    setenv("LISTEN_FDS", "garbage", 1);
    o.log = fn;
    handoff_t *h = mk(&o);
    CHECK(handoff_upgrade(h) == -EAGAIN); /* a failure: errmsg, DEBUG only */
    handoff_free(h);
    CHECK(dup2(saved, 2) == 2);
    close(saved);
    ssize_t n = read(pp[0], out, len - 1);
    out[n > 0 ? n : 0] = '\0';
    close(pp[0]);
}

static void c_log_default_silent(void)
{
    char out[2048], want[64];
    warn_once(NULL, out, sizeof out);
    if (out[0]) {
        fprintf(stderr, "unexpected output: %s\n", out);
        _exit(1);
    }
    /* The ready-made logger: one line per message, as 0.1's default. */
    warn_once(handoff_log_stderr, out, sizeof out);
    snprintf(want, sizeof want, "handoff[%d]: ", getpid());
    fprintf(stderr, "with handoff_log_stderr: %s", out);
    CHECK(strncmp(out, want, strlen(want)) == 0);
    CHECK(strstr(out, "LISTEN_FDS") != NULL);
    CHECK(out[strlen(out) - 1] == '\n');
    CHECK(strstr(out, "handoff_ready") == NULL); /* below the default level */
}
static void test_log_default_silent(void **s) { (void)s; in_child(c_log_default_silent); }

/* ---- calls without a handle: handoff_errmsg(NULL), per thread ---- */
static void *other_thread(void *arg)
{
    handoff_addr a;
    (void)arg;
    CHECK(strcmp(handoff_errmsg(NULL), "") == 0); /* not the main thread's */
    CHECK(handoff_addr_parse("unix:", &a, NULL, 0) == -EINVAL);
    CHECK(strstr(handoff_errmsg(NULL), "empty unix socket path") != NULL);
    return NULL;
}

static void c_errmsg_no_handle(void)
{
    handoff_addr a;
    char eb[128], buf[8];
    pthread_t t;
    CHECK(strcmp(handoff_errmsg(NULL), "") == 0);
    CHECK(handoff_addr_parse("nonsense", &a, NULL, 0) == -EINVAL);
    CHECK(strstr(handoff_errmsg(NULL), "bad address \"nonsense\"") != NULL);
    /* The older errbuf gets the same sentence. */
    CHECK(handoff_addr_parse("nonsense", &a, eb, sizeof eb) == -EINVAL);
    CHECK(strcmp(eb, handoff_errmsg(NULL)) == 0);
    CHECK(pthread_create(&t, NULL, other_thread, NULL) == 0 && pthread_join(t, NULL) == 0);
    CHECK(strstr(handoff_errmsg(NULL), "nonsense") != NULL); /* ours is kept */
    CHECK(handoff_addr_parse("127.0.0.1:80", &a, NULL, 0) == 0);
    CHECK(handoff_addr_format(&a, buf, sizeof buf) == -ENOSPC);
    CHECK(strstr(handoff_errmsg(NULL), "too small") != NULL);
    CHECK(handoff_addr_from_fd(-1, &a) == -EBADF);
    CHECK(strstr(handoff_errmsg(NULL), "fd -1") != NULL);
    CHECK(handoff_pidfile_write("/nonexistent-dir/x.pid", 1) == -ENOENT);
    CHECK(strstr(handoff_errmsg(NULL), "/nonexistent-dir/x.pid") != NULL);
    /* A handle's own failures stay on the handle. */
    handoff_t *h = mk(NULL);
    CHECK(handoff_upgrade(h) == -EAGAIN);
    CHECK(strstr(handoff_errmsg(h), "handoff_ready") != NULL);
    CHECK(strstr(handoff_errmsg(NULL), "/nonexistent-dir/x.pid") != NULL);
    handoff_free(h);
}
static void test_errmsg_no_handle(void **s) { (void)s; in_child(c_errmsg_no_handle); }

/* A supervisor (handoff run) passes its own generation number without a
 * handshake: the number is reported, but the process is not part of a
 * handoff chain, so the unix socket path it inherited stays at exit. */
static void c_generation_from_supervisor(void)
{
    char dir[] = "/tmp/handoff-test-XXXXXX", sock[128], spec[140], pid[16];
    CHECK(mkdtemp(dir));
    snprintf(sock, sizeof sock, "%s/s", dir);
    snprintf(spec, sizeof spec, "unix:%s", sock);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, sock);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(bind(fd, (struct sockaddr *)&sun, sizeof sun) == 0 && listen(fd, 1) == 0);
    place_at(fd, 3);
    snprintf(pid, sizeof pid, "%d", getpid());
    setenv("LISTEN_PID", pid, 1);
    setenv("LISTEN_FDS", "1", 1);
    setenv("HANDOFF_GENERATION", "5", 1);
    handoff_t *h = mk(NULL);
    CHECK(handoff_generation(h) == 5);
    CHECK(handoff_has_parent(h) == 0);
    CHECK(getenv("HANDOFF_GENERATION") == NULL);
    CHECK(handoff_listen(h, "u", spec, NULL) == 3);
    CHECK(handoff_ready(h) == 0);
    handoff_free(h);
    CHECK(access(sock, F_OK) == 0); /* the supervisor's, not ours */
    /* Garbage is ignored: generation 1. */
    setenv("HANDOFF_GENERATION", "0", 1);
    h = mk(NULL);
    CHECK(handoff_generation(h) == 1);
    handoff_free(h);
    unlink(sock);
    rmdir(dir);
}
static void test_generation_from_supervisor(void **s) { (void)s; in_child(c_generation_from_supervisor); }

/* ---- named fds ---- */
static void c_named_fds(void)
{
    handoff_t *h = mk(NULL);
    int m = memfd_create("state", MFD_CLOEXEC);
    CHECK(m >= 0);
    CHECK(handoff_add_fd(h, "state", m) == 0);
    CHECK(handoff_add_fd(h, "state", m) == 0); /* replaces */
    CHECK(handoff_add_fd(h, "bad:name", m) == -EINVAL);
    CHECK(handoff_add_fd(h, "x", 9999) == -EBADF);
    CHECK(handoff_take_fd(h, "state") == -ENOENT); /* not inherited */
    CHECK(handoff_remove(h, "state") == 0);
    CHECK(fcntl(m, F_GETFD) >= 0); /* the caller's fd is still the caller's */
    close(m);
    handoff_free(h);
}
static void test_named_fds(void **s) { (void)s; in_child(c_named_fds); }

/* ---- signals ---- */
static int hook_log[8], hook_n;
static void hook(handoff_t *h, int signo, void *ud)
{
    (void)h;
    (void)signo;
    hook_log[hook_n++] = (int)(intptr_t)ud;
}

static void c_signals(void)
{
    handoff_t *h = mk(NULL);
    handoff_event ev;
    int rt = SIGRTMIN + 1;
    CHECK(handoff_watch_signal(h, SIGTERM) == -EINVAL);
    CHECK(handoff_watch_signal(h, SIGKILL) == -EINVAL);
    CHECK(handoff_watch_signal(h, SIGUSR1) == 0);
    CHECK(handoff_watch_signal(h, rt) == 0);
    CHECK(handoff_set_signal_hook(h, SIGUSR2, HANDOFF_HOOK_PRE, hook, NULL) == -EINVAL);
    CHECK(handoff_set_signal_hook(h, SIGUSR1, HANDOFF_HOOK_PRE, hook, (void *)1) == 0);
    CHECK(handoff_set_signal_hook(h, SIGUSR1, HANDOFF_HOOK_POST, hook, (void *)2) == 0);
    CHECK(next(h, &ev, 0) == 0);
    /* Real-time signals queue: three deliveries, one event counting 3. */
    union sigval v = {0};
    CHECK(sigqueue(getpid(), rt, v) == 0 && sigqueue(getpid(), rt, v) == 0 &&
          sigqueue(getpid(), rt, v) == 0);
    CHECK(kill(getpid(), SIGUSR1) == 0);
    int seen_rt = 0, seen_usr1 = 0;
    while (next(h, &ev, 200) == 1) {
        CHECK(ev.type == HANDOFF_EVENT_SIGNAL);
        CHECK(ev.pid == getpid());
        if (ev.signo == rt) {
            CHECK(ev.count == 3);
            seen_rt++;
        } else if (ev.signo == SIGUSR1) {
            CHECK(ev.count == 1);
            seen_usr1++;
        }
        if (seen_rt && seen_usr1)
            break;
    }
    CHECK(seen_rt == 1 && seen_usr1 == 1);
    CHECK(hook_n == 2 && hook_log[0] == 1 && hook_log[1] == 2);
    handoff_free(h);
    /* The mask is restored: SIGUSR1 is deliverable again (ignore it). */
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    CHECK(!sigismember(&cur, SIGUSR1) && !sigismember(&cur, SIGTERM));
}
static void test_signals(void **s) { (void)s; in_child(c_signals); }

/* ---- shutdown and drain ---- */
static void c_shutdown(void)
{
    handoff_t *h = mk(NULL);
    handoff_event ev;
    hook_n = 0;
    CHECK(handoff_set_signal_hook(h, SIGTERM, HANDOFF_HOOK_PRE, hook, (void *)7) == 0);
    CHECK(handoff_ready(h) == 0);
    handoff_conn_begin(h);
    handoff_conn_begin(h);
    CHECK(handoff_conn_count(h) == 2);
    CHECK(kill(getpid(), SIGTERM) == 0);
    CHECK(next(h, &ev, 1000) == 1);
    CHECK(ev.type == HANDOFF_EVENT_DRAIN && ev.reason == HANDOFF_DRAIN_SHUTDOWN);
    CHECK(hook_n == 1 && hook_log[0] == 7);
    CHECK(handoff_upgrade(h) == -ESHUTDOWN);
    CHECK(next(h, &ev, 50) == 0); /* two connections still open */
    handoff_conn_end(h);
    CHECK(next(h, &ev, 50) == 0);
    handoff_conn_end(h);
    /* The last end wakes the event fd by itself. */
    CHECK(next(h, &ev, 1000) == 1);
    CHECK(ev.type == HANDOFF_EVENT_STOP && ev.reason == HANDOFF_STOP_DRAINED);
    CHECK(next(h, &ev, 0) == 0);
    handoff_free(h);
}
static void test_shutdown(void **s) { (void)s; in_child(c_shutdown); }

static void c_hammer_and_forced(void)
{
    handoff_options o = HANDOFF_OPTIONS_INIT;
    o.drain_timeout_usec = 50 * 1000;
    handoff_t *h = mk(&o);
    handoff_event ev;
    CHECK(handoff_ready(h) == 0);
    handoff_conn_begin(h);
    /* The hammer counts from the decision to drain (the shutdown), not
     * from the delivery of DRAIN, which a busy machine may delay. */
    uint64_t t0 = handoff_now_usec();
    CHECK(handoff_shutdown(h, 0) == 0);
    CHECK(next(h, &ev, 1000) == 1 && ev.type == HANDOFF_EVENT_DRAIN);
    CHECK(next(h, &ev, 2000) == 1);
    CHECK(ev.type == HANDOFF_EVENT_STOP && ev.reason == HANDOFF_STOP_TIMEOUT);
    CHECK(handoff_now_usec() - t0 >= 49 * 1000);
    handoff_free(h);

    h = mk(NULL);
    CHECK(handoff_ready(h) == 0);
    handoff_conn_begin(h);
    CHECK(kill(getpid(), SIGINT) == 0);
    CHECK(next(h, &ev, 1000) == 1 && ev.type == HANDOFF_EVENT_DRAIN);
    CHECK(kill(getpid(), SIGTERM) == 0);
    CHECK(next(h, &ev, 1000) == 1);
    CHECK(ev.type == HANDOFF_EVENT_STOP && ev.reason == HANDOFF_STOP_FORCED);
    handoff_free(h);
}
static void test_hammer_and_forced(void **s) { (void)s; in_child(c_hammer_and_forced); }

/* With HANDOFF_TERM_GRACEFUL_ONLY a repeated SIGTERM does not force STOP. */
static void c_term_graceful_only(void)
{
    handoff_options o = HANDOFF_OPTIONS_INIT;
    o.flags = HANDOFF_TERM_GRACEFUL_ONLY;
    handoff_t *h = mk(&o);
    handoff_event ev;
    CHECK(handoff_ready(h) == 0);
    handoff_conn_begin(h);
    CHECK(kill(getpid(), SIGTERM) == 0);
    CHECK(next(h, &ev, 1000) == 1 && ev.type == HANDOFF_EVENT_DRAIN);
    CHECK(kill(getpid(), SIGTERM) == 0 && kill(getpid(), SIGINT) == 0);
    CHECK(next(h, &ev, 100) == 0);
    handoff_conn_end(h);
    CHECK(next(h, &ev, 1000) == 1);
    CHECK(ev.type == HANDOFF_EVENT_STOP && ev.reason == HANDOFF_STOP_DRAINED);
    handoff_free(h);
}
static void test_term_graceful_only(void **s) { (void)s; in_child(c_term_graceful_only); }

/* ---- sd_notify and pid file ---- */
static void c_notify_pidfile(void)
{
    char dir[] = "/tmp/handoff-test-XXXXXX", sock[128], pidf[128], buf[512];
    CHECK(mkdtemp(dir));
    snprintf(sock, sizeof sock, "%s/notify", dir);
    snprintf(pidf, sizeof pidf, "%s/pid", dir);
    int rx = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, sock);
    CHECK(bind(rx, (struct sockaddr *)&sun, sizeof sun) == 0);
    setenv("NOTIFY_SOCKET", sock, 1);
    handoff_options o = HANDOFF_OPTIONS_INIT;
    o.pid_file = pidf;
    handoff_t *h = mk(&o);
    CHECK(getenv("NOTIFY_SOCKET") == NULL);
    CHECK(handoff_ready(h) == 0);
    ssize_t n = recv(rx, buf, sizeof buf - 1, MSG_DONTWAIT);
    CHECK(n > 0);
    buf[n] = '\0';
    CHECK(strncmp(buf, "READY=1\n", 8) == 0);
    FILE *f = fopen(pidf, "r");
    long p = 0;
    CHECK(f && fscanf(f, "%ld", &p) == 1 && p == getpid());
    fclose(f);
    CHECK(handoff_notify(h, "STATUS=hello") == 1);
    n = recv(rx, buf, sizeof buf - 1, MSG_DONTWAIT);
    CHECK(n == 12);
    CHECK(handoff_shutdown(h, 0) == 0);
    n = recv(rx, buf, sizeof buf - 1, MSG_DONTWAIT);
    CHECK(n > 0);
    buf[n] = '\0';
    CHECK(strstr(buf, "STOPPING=1") != NULL);
    handoff_free(h);
    CHECK(access(pidf, F_OK) < 0); /* removed: it named us */
    CHECK(handoff_pidfile_write("/nonexistent-dir/x.pid", 1) == -ENOENT);
    CHECK(handoff_pidfile_write(pidf, 0) == -EINVAL);
    unlink(sock);
    close(rx);
    rmdir(dir);
}
static void test_notify_pidfile(void **s) { (void)s; in_child(c_notify_pidfile); }

static void c_no_signals(void)
{
    handoff_options o = HANDOFF_OPTIONS_INIT;
    o.flags = HANDOFF_NO_SIGNALS;
    handoff_t *h = mk(&o);
    CHECK(handoff_watch_signal(h, SIGUSR1) == -ENOTSUP);
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    CHECK(!sigismember(&cur, SIGTERM) && !sigismember(&cur, SIGHUP));
    handoff_free(h);
}
static void test_no_signals(void **s) { (void)s; in_child(c_no_signals); }

/* The pid file's temporary file is new (O_EXCL, random name): a file
 * planted at the name the old code used (PATH.tmp.<pid>) is never opened,
 * so it cannot become the pid file (issue 10 #6). */
static void c_pidfile_planted(void)
{
    char dir[] = "/tmp/handoff-test-XXXXXX", pidf[128], planted[160];
    struct stat st, pst;
    CHECK(mkdtemp(dir));
    snprintf(pidf, sizeof pidf, "%s/x.pid", dir);
    snprintf(planted, sizeof planted, "%s.tmp.%ld", pidf, (long)getpid());
    int fd = open(planted, O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
    CHECK(fd >= 0 && fchmod(fd, 0666) == 0);
    close(fd);
    CHECK(stat(planted, &pst) == 0);
    CHECK(handoff_pidfile_write(pidf, 4242) == 0);
    CHECK(stat(pidf, &st) == 0);
    CHECK(st.st_ino != pst.st_ino); /* our own file, not the planted one */
    CHECK((st.st_mode & 07777) == 0644);
    CHECK(access(planted, F_OK) == 0); /* left alone */
    /* No temporary file is left behind. */
    int n = 0;
    DIR *d = opendir(dir);
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    CHECK(n == 2);
    unlink(planted);
    unlink(pidf);
    rmdir(dir);
}
static void test_pidfile_planted(void **s) { (void)s; in_child(c_pidfile_planted); }

/* Signal 64 (SIGRTMAX) can be watched and hooked: its bit is 63, not
 * 1 << 64 (undefined behaviour, caught by UBSan; issue 10 #9). */
static void c_signal_64(void)
{
    handoff_t *h = mk(NULL);
    handoff_event ev;
    hook_n = 0;
    CHECK(SIGRTMAX == 64);
    CHECK(handoff_watch_signal(h, 64) == 0);
    CHECK(handoff_set_signal_hook(h, 64, HANDOFF_HOOK_PRE, hook, (void *)3) == 0);
    CHECK(handoff_watch_signal(h, 63) == 0);
    CHECK(handoff_set_signal_hook(h, 62, HANDOFF_HOOK_PRE, hook, NULL) == -EINVAL);
    /* valgrind keeps SIGRTMAX for itself: kill() refuses it there. */
    if (kill(getpid(), 64) == 0) {
        CHECK(next(h, &ev, 1000) == 1 && ev.type == HANDOFF_EVENT_SIGNAL && ev.signo == 64);
        CHECK(hook_n == 1 && hook_log[0] == 3);
    } else {
        CHECK(errno == EINVAL);
    }
    handoff_free(h);
}
static void test_signal_64(void **s) { (void)s; in_child(c_signal_64); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifecycle),      cmocka_unit_test(test_listen),
        cmocka_unit_test(test_unix_stale),     cmocka_unit_test(test_inherit),
        cmocka_unit_test(test_inherit_unclaimed), cmocka_unit_test(test_inherit_foreign),
        cmocka_unit_test(test_generation_from_supervisor),
        cmocka_unit_test(test_named_fds),      cmocka_unit_test(test_signals),
        cmocka_unit_test(test_shutdown),       cmocka_unit_test(test_hammer_and_forced),
        cmocka_unit_test(test_term_graceful_only),
        cmocka_unit_test(test_notify_pidfile), cmocka_unit_test(test_no_signals),
        cmocka_unit_test(test_pidfile_planted), cmocka_unit_test(test_signal_64),
        cmocka_unit_test(test_log_default_silent), cmocka_unit_test(test_errmsg_no_handle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
