/* Unit tests for src/shared/: the layer both libhandoff and the handoff
 * command link (protocol table, wait statuses and signal names, socket
 * addresses and the stale probe, the sd_notify sender, the exec plan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shared/exec.h"
#include "shared/notify.h"
#include "shared/protocol.h"
#include "shared/sockaddr.h"
#include "shared/status.h"

static void test_protocol_table(void **s)
{
    (void)s;
    assert_true(handoff__env_is_protocol("LISTEN_FDS=3"));
    assert_true(handoff__env_is_protocol("LISTEN_PID=1"));
    assert_true(handoff__env_is_protocol("NOTIFY_SOCKET=/run/x"));
    assert_true(handoff__env_is_protocol("WATCHDOG_USEC=100"));
    assert_true(handoff__env_is_protocol("SERVER_STARTER_PORT=80=3"));
    assert_true(handoff__env_is_protocol("HANDOFF_ANYTHING=1"));
    assert_true(handoff__env_is_protocol("HANDOFF_READY_FD=4"));
    assert_false(handoff__env_is_protocol("LISTEN_FDSX=1"));
    assert_false(handoff__env_is_protocol("LISTEN_FDS"));
    assert_false(handoff__env_is_protocol("PATH=/bin"));
    assert_false(handoff__env_is_protocol("XHANDOFF_A=1"));
    /* Every consumed variable is also kept from children. */
    for (const struct handoff__protocol_var *v = handoff__protocol_vars; v->name; v++) {
        char kv[128];
        snprintf(kv, sizeof kv, "%s=1", v->name);
        assert_true(handoff__env_is_protocol(kv));
    }
}

static void test_status_words(void **s)
{
    char buf[128], n[32];
    (void)s;
    assert_string_equal(handoff__wait_status(1 << 8, buf, sizeof buf), "exited with status 1");
    assert_string_equal(handoff__wait_status(0, buf, sizeof buf), "exited with status 0");
    assert_string_equal(handoff__wait_status(SIGSEGV, buf, sizeof buf), "was killed by SIGSEGV");
    assert_string_equal(handoff__wait_status(SIGABRT | 0x80, buf, sizeof buf),
                        "was killed by SIGABRT (core dumped)");
    assert_string_equal(handoff__wait_status(33, buf, sizeof buf), "was killed by signal 33");
    assert_string_equal(handoff__signal_name(SIGTERM, n, sizeof n), "SIGTERM");
    assert_string_equal(handoff__signal_name(64, n, sizeof n), "SIGRTMAX");
    assert_string_equal(handoff__signal_abbrev(35), "RTMIN+1");
    assert_null(handoff__signal_abbrev(0));
    assert_int_equal(handoff__signal_parse("TERM"), SIGTERM);
    assert_int_equal(handoff__signal_parse("sigusr1"), SIGUSR1);
    assert_int_equal(handoff__signal_parse("RTMIN+2"), 36);
    assert_int_equal(handoff__signal_parse("9"), 9);
    assert_int_equal(handoff__signal_parse("65"), -1);
    assert_int_equal(handoff__signal_parse("32"), -1); /* glibc-reserved: no name */
    assert_int_equal(handoff__signal_parse("33"), -1);
    assert_int_equal(handoff__signal_parse("34"), 34);
    assert_int_equal(handoff__signal_parse("-1"), -1);
    assert_int_equal(handoff__signal_parse(""), -1);
    assert_int_equal(handoff__signal_parse("NOPE"), -1);
}

static void test_addr(void **s)
{
    handoff_addr a, b;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sin;
    char path[256];
    (void)s;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    assert_int_equal(handoff__fd_addr(fd, &a), 0);
    assert_int_equal(a.kind, HANDOFF_ADDR_TCP);
    assert_int_equal(handoff__sockaddr_to_addr(&sin, len, SOCK_STREAM, &b), 0);
    assert_true(handoff__addr_equal(&a, &b, false));
    sin.sin_port = htons((uint16_t)(ntohs(sin.sin_port) + 1));
    assert_int_equal(handoff__sockaddr_to_addr(&sin, len, SOCK_STREAM, &b), 0);
    assert_false(handoff__addr_equal(&a, &b, false));
    assert_true(handoff__addr_equal(&a, &b, true));
    assert_int_equal(handoff__unix_path(&a, path, sizeof path), 0);
    close(fd);
    assert_int_equal(handoff__fd_addr(fd, &a), -EBADF);
    int dg = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_int_equal(handoff__fd_addr(dg, &a), -EPROTOTYPE);
    close(dg);
}

static void test_unix_stale(void **s)
{
    char dir[] = "/tmp/handoff-shared-XXXXXX", sock[128], file[128], path[256];
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    handoff_addr a;
    (void)s;
    assert_non_null(mkdtemp(dir));
    snprintf(sock, sizeof sock, "%s/s", dir);
    snprintf(file, sizeof file, "%s/f", dir);
    strcpy(sun.sun_path, sock);
    int live = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(bind(live, (struct sockaddr *)&sun, sizeof sun), 0);
    assert_int_equal(listen(live, 0), 0);
    assert_int_equal(handoff__fd_addr(live, &a), 0);
    assert_int_equal(handoff__unix_path(&a, path, sizeof path), (int)strlen(sock));
    assert_string_equal(path, sock);
    assert_int_equal(handoff__unix_path(&a, path, 4), -ENAMETOOLONG);
    /* A live server with a full backlog is live, and the probe does not
     * wait for it. */
    int c1 = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    (void)connect(c1, (struct sockaddr *)&sun, sizeof sun);
    int c2 = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    (void)connect(c2, (struct sockaddr *)&sun, sizeof sun);
    assert_int_equal(handoff__unix_unlink_stale(sock), -EADDRINUSE);
    assert_int_equal(access(sock, F_OK), 0);
    close(c1);
    close(c2);
    close(live);
    assert_int_equal(handoff__unix_unlink_stale(sock), 0);
    assert_int_not_equal(access(sock, F_OK), 0);
    /* Not a socket: never removed. */
    int f = open(file, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    close(f);
    assert_int_equal(handoff__unix_unlink_stale(file), -EADDRINUSE);
    assert_int_equal(access(file, F_OK), 0);
    unlink(file);
    rmdir(dir);
}

static void test_notifier(void **s)
{
    char dir[] = "/tmp/handoff-shared-XXXXXX", sock[128], buf[64];
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    struct handoff__notifier n = HANDOFF__NOTIFIER_INIT;
    (void)s;
    assert_int_equal(handoff__notifier_send(&n, "X", 1), 0);
    assert_int_equal(handoff__notifier_open(&n, "relative"), -EAFNOSUPPORT);
    assert_int_equal(handoff__notifier_open(&n, ""), -EAFNOSUPPORT);
    assert_non_null(mkdtemp(dir));
    snprintf(sock, sizeof sock, "%s/n", dir);
    strcpy(sun.sun_path, sock);
    int rx = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_int_equal(bind(rx, (struct sockaddr *)&sun, sizeof sun), 0);
    assert_int_equal(handoff__notifier_open(&n, sock), 0);
    assert_true(fcntl(n.fd, F_GETFD) & FD_CLOEXEC);
    assert_int_equal(handoff__notifier_send(&n, "READY=1", 7), 1);
    assert_int_equal(recv(rx, buf, sizeof buf, 0), 7);
    /* A receiver that never reads: the sender never blocks. */
    int r = 0;
    for (int i = 0; i < 100000 && r >= 0; i++)
        r = handoff__notifier_send(&n, "STATUS=x", 8);
    assert_int_equal(r, -EAGAIN);
    handoff__notifier_close(&n);
    assert_int_equal(n.fd, -1);
    close(rx);
    unlink(sock);
    rmdir(dir);
    /* Abstract. */
    rx = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    char abs[64];
    int alen = snprintf(abs, sizeof abs, "@handoff-shared-test-%d", (int)getpid());
    memcpy(sun.sun_path, abs, (size_t)alen);
    sun.sun_path[0] = '\0';
    assert_int_equal(bind(rx, (struct sockaddr *)&sun,
                          (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)alen)), 0);
    assert_int_equal(handoff__notifier_open(&n, abs), 0);
    assert_int_equal(handoff__notifier_send(&n, "A=1", 3), 1);
    assert_int_equal(recv(rx, buf, sizeof buf, 0), 3);
    handoff__notifier_close(&n);
    close(rx);
}

static void test_put_pid(void **s)
{
    char b[24];
    (void)s;
    handoff__put_pid(b, 0);
    assert_string_equal(b, "0");
    handoff__put_pid(b, 4194304);
    assert_string_equal(b, "4194304");
}

/* The exec plan end to end: a shell reports what it got. mode is 0 (the
 * vfork-style start where the build allows it) or HANDOFF__EXEC_FORK. */
static void exec_case(unsigned mode)
{
    char *argv[] = {"sh", "-c",
                    "exec >&5; echo \"pid=$$ lp=$LISTEN_PID fds=$LISTEN_FDS names=$LISTEN_FDNAMES "
                    "x=$X h=${HANDOFF_SECRET-unset} n=${NOTIFY_SOCKET-unset} pwd=$(pwd)\"; "
                    /* no pipeline: its pipes would be the shell's fds
                     * for a moment; no glob: its directory fd would be */
                    "ls /proc/$$/fd",
                    NULL};
    char *names[] = {"a", "b", NULL};
    char out[512] = "";
    struct handoff__exec p;
    int pp[2], leak, st;
    setenv("HANDOFF_SECRET", "1", 1);
    setenv("NOTIFY_SOCKET", "/nowhere", 1);
    assert_int_equal(pipe2(pp, O_CLOEXEC), 0);
    leak = open("/dev/null", O_RDONLY); /* not close-on-exec */
    assert_true(leak >= 0);
    handoff__exec_init(&p, argv);
    p.flags = mode;
    p.cwd = "/tmp";
    assert_int_equal(handoff__exec_resolve(&p, "/tmp"), 0);
    assert_int_equal(handoff__exec_env_inherit(&p, environ), 0);
    assert_int_equal(handoff__exec_env_listen(&p, names, 2), 0);
    assert_int_equal(handoff__exec_env_add(&p, "X=%d", 42), 0);
    /* fds 3 and 4: /dev/null twice; 5: the report pipe. */
    int z = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_int_equal(handoff__exec_fd(&p, z), 0);
    assert_int_equal(handoff__exec_fd(&p, z), 0);
    assert_int_equal(handoff__exec_fd(&p, pp[1]), 0);
    pid_t pid = handoff__exec_start(&p);
    assert_true(pid > 0);
    /* The child's fd shuffle happened in its own memory: the plan (ours,
     * which a vfork-style child shares) still lists the caller's fds. */
    assert_int_equal(p.fds[0], z);
    assert_int_equal(p.fds[1], z);
    assert_int_equal(p.fds[2], pp[1]);
    assert_int_equal(p.pidfd, -1); /* not asked for */
    close(pp[1]);
    ssize_t n, got = 0;
    while ((n = read(pp[0], out + got, sizeof out - 1 - (size_t)got)) > 0)
        got += n;
    out[got] = '\0';
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char want[256];
    snprintf(want, sizeof want,
             "pid=%d lp=%d fds=2 names=a:b x=42 h=unset n=unset pwd=/tmp\n0\n1\n2\n3\n4\n5\n",
             (int)pid, (int)pid);
    /* Exactly 0..5: the fd left without O_CLOEXEC did not leak. */
    if (strcmp(out, want) != 0)
        fail_msg("got \"%s\", want \"%s\"", out, want);
    handoff__exec_free(&p);
    /* A missing program: -ENOENT, child reaped. */
    char *bad[] = {"/nonexistent/prog", NULL};
    handoff__exec_init(&p, bad);
    p.flags = mode | HANDOFF__EXEC_PIDFD;
    assert_int_equal(handoff__exec_resolve(&p, NULL), 0);
    assert_int_equal(handoff__exec_start(&p), -ENOENT);
    assert_int_equal(p.pidfd, -1);
    assert_int_equal(waitpid(-1, NULL, WNOHANG), -1); /* reaped */
    handoff__exec_free(&p);
    /* Not executable: execve()'s -EACCES, also for root. */
    char noexec[] = "/tmp/handoff-noexec-XXXXXX";
    int nf = mkstemp(noexec);
    assert_true(nf >= 0);
    assert_int_equal(write(nf, "#!/bin/sh\n", 10), 10);
    close(nf);
    char *nx[] = {noexec, NULL};
    handoff__exec_init(&p, nx);
    p.flags = mode;
    assert_int_equal(handoff__exec_resolve(&p, NULL), 0);
    assert_int_equal(handoff__exec_start(&p), -EACCES);
    assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
    handoff__exec_free(&p);
    unlink(noexec);
    /* A step before execve() failing (chdir): its errno. */
    char *tru[] = {"/bin/true", NULL};
    handoff__exec_init(&p, tru);
    p.flags = mode;
    p.cwd = "/nonexistent-dir";
    assert_int_equal(handoff__exec_resolve(&p, NULL), 0);
    assert_int_equal(handoff__exec_start(&p), -ENOENT);
    handoff__exec_free(&p);
    /* With HANDOFF__EXEC_PIDFD: a pidfd for the very child (pidfd_open()
     * is missing under valgrind, which the fork() side then needs). */
    int self = (int)syscall(SYS_pidfd_open, getpid(), 0);
    if (self < 0 && (mode & HANDOFF__EXEC_FORK))
        goto done;
    if (self >= 0)
        close(self);
    handoff__exec_init(&p, tru);
    p.flags = mode | HANDOFF__EXEC_PIDFD;
    assert_int_equal(handoff__exec_resolve(&p, NULL), 0);
    pid = handoff__exec_start(&p);
    assert_true(pid > 0);
    assert_true(p.pidfd >= 0);
    assert_true(fcntl(p.pidfd, F_GETFD) & FD_CLOEXEC);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    assert_int_equal(waitid(P_PIDFD, (id_t)p.pidfd, &si, WEXITED), 0);
    assert_int_equal(si.si_pid, pid);
    assert_int_equal(si.si_status, 0);
    close(p.pidfd);
    handoff__exec_free(&p);
done:;
    char *none[] = {"handoff-no-such-program", NULL};
    handoff__exec_init(&p, none);
    assert_int_equal(handoff__exec_resolve(&p, NULL), -ENOENT);
    handoff__exec_free(&p);
    close(leak);
    close(z);
    close(pp[0]);
}

static void test_exec(void **s)
{
    (void)s;
    exec_case(0);
}

static void test_exec_fork(void **s)
{
    (void)s;
    exec_case(HANDOFF__EXEC_FORK);
}

static void on_usr1(int sig) { (void)sig; }

/* "SigBlk:\t0000...\n" of /proc/<pid>/status as a number, from a file
 * the child wrote. */
static unsigned long long sig_field(const char *text, const char *name)
{
    const char *p = strstr(text, name);
    return p ? strtoull(p + strlen(name) + 1, NULL, 16) : ~0ULL;
}

/* What the program finds: the plan's mask; without
 * HANDOFF__EXEC_RESET_SIGNALS our ignored signals stay ignored (a handler
 * never survives execve()); with it, exactly plan.ignored. */
static void exec_signals_case(unsigned mode)
{
    char *argv[] = {"sh", "-c", "exec grep ^Sig /proc/self/status >&3", NULL};
    struct sigaction sa, old_usr1, old_usr2, old_term;
    struct handoff__exec p;
    char out[1024];
    int pp[2], st;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    assert_int_equal(sigaction(SIGUSR1, &sa, &old_usr1), 0);
    sa.sa_handler = SIG_IGN;
    assert_int_equal(sigaction(SIGUSR2, &sa, &old_usr2), 0);
    assert_int_equal(sigaction(SIGTERM, &sa, &old_term), 0);
    for (int reset = 0; reset < 2; reset++) {
        assert_int_equal(pipe2(pp, O_CLOEXEC), 0);
        handoff__exec_init(&p, argv);
        p.flags = mode | (reset ? HANDOFF__EXEC_RESET_SIGNALS : 0);
        sigemptyset(&p.mask);
        sigaddset(&p.mask, SIGWINCH);
        sigaddset(&p.ignored, SIGTERM);
        assert_int_equal(handoff__exec_resolve(&p, NULL), 0);
        assert_int_equal(handoff__exec_fd(&p, pp[1]), 0);
        pid_t pid = handoff__exec_start(&p);
        assert_true(pid > 0);
        close(pp[1]);
        ssize_t n, got = 0;
        while ((n = read(pp[0], out + got, sizeof out - 1 - (size_t)got)) > 0)
            got += n;
        out[got] = '\0';
        close(pp[0]);
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        handoff__exec_free(&p);
        unsigned long long blk = sig_field(out, "SigBlk:"), ign = sig_field(out, "SigIgn:");
        unsigned long long bit = 1;
        if (blk != bit << (SIGWINCH - 1))
            fail_msg("reset=%d: SigBlk %llx, want only SIGWINCH (%s)", reset, blk, out);
        if (reset && ign != bit << (SIGTERM - 1))
            fail_msg("reset=%d: SigIgn %llx, want only SIGTERM (%s)", reset, ign, out);
        if (!reset && (!(ign & (bit << (SIGUSR2 - 1))) || !(ign & (bit << (SIGTERM - 1))) ||
                       (ign & (bit << (SIGUSR1 - 1)))))
            fail_msg("reset=%d: SigIgn %llx, want SIGUSR2 and SIGTERM, not SIGUSR1 (%s)", reset,
                     ign, out);
    }
    /* Our own dispositions are untouched (the child changed its copy). */
    assert_int_equal(sigaction(SIGUSR1, &old_usr1, &sa), 0);
    assert_ptr_equal(sa.sa_handler, on_usr1);
    assert_int_equal(sigaction(SIGUSR2, &old_usr2, &sa), 0);
    assert_ptr_equal(sa.sa_handler, SIG_IGN);
    assert_int_equal(sigaction(SIGTERM, &old_term, NULL), 0);
}

static void test_exec_signals(void **s)
{
    (void)s;
    exec_signals_case(0);
    exec_signals_case(HANDOFF__EXEC_FORK);
}

/* Another thread allocating and freeing all along: the vfork-style child
 * shares the heap and must never take its lock (a deadlock or a corrupt
 * heap here). */
static atomic_int g_churn_stop;
static void *churn(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_churn_stop)) {
        void *v[64];
        for (int i = 0; i < 64; i++) {
            v[i] = malloc((size_t)(16 + i * 97));
            if (v[i])
                memset(v[i], i, 16);
        }
        for (int i = 0; i < 64; i++)
            free(v[i]);
    }
    return NULL;
}

static void test_exec_threads(void **s)
{
    char *tru[] = {"/bin/true", NULL};
    pthread_t t[2];
    (void)s;
    /* Under valgrind threads run one at a time, and the churning ones
     * starve the starts: a few are enough there (memcheck is about the
     * memory, not the race). */
    const char *pre = getenv("LD_PRELOAD");
    int starts = pre && strstr(pre, "vgpreload") ? 5 : 100;
    atomic_store(&g_churn_stop, 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, churn, NULL), 0);
    for (int i = 0; i < starts; i++) {
        struct handoff__exec p;
        int st;
        handoff__exec_init(&p, tru);
        p.flags = HANDOFF__EXEC_PIDFD;
        assert_int_equal(handoff__exec_resolve(&p, NULL), 0);
        assert_int_equal(handoff__exec_env_inherit(&p, environ), 0);
        pid_t pid = handoff__exec_start(&p);
        assert_true(pid > 0);
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        close(p.pidfd);
        handoff__exec_free(&p);
    }
    atomic_store(&g_churn_stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_protocol_table), cmocka_unit_test(test_status_words),
        cmocka_unit_test(test_addr),           cmocka_unit_test(test_unix_stale),
        cmocka_unit_test(test_notifier),       cmocka_unit_test(test_put_pid),
        cmocka_unit_test(test_exec),           cmocka_unit_test(test_exec_fork),
        cmocka_unit_test(test_exec_signals),   cmocka_unit_test(test_exec_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
