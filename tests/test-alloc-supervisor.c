/* Allocation failure injection for `handoff run` (tools/): the supervisor's
 * code (the objects of handoff_tool_obj, everything but main()) and the
 * library under it (static) are linked with --wrap for every allocator
 * they call. A full run - command line, sockets, control and notify
 * sockets, pid file, generation 1, a reload to generation 2 (asked for by
 * generation 1 with SIGHUP), the stop (asked for by generation 2 with
 * SIGTERM) - is repeated with allocation 1, 2, ... N failing in turn, in
 * readiness modes delay and command (which spawns checks).
 *
 * Each run is a child process. It must end with status 0 (the failure
 * was absorbed: a failed reload, a retried check) or 1 (start-up failed),
 * in bounded time, never with a crash, a sanitizer report or - under
 * ASan - a leak; and every injected failure must be visible in the
 * supervisor's log ("out of memory" or strerror(ENOMEM)). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tool.h"

struct shared {
    long count;    /* allocations made by the run */
    long fail_at;  /* the one that fails (0: none) */
    int injected;  /* it did fail */
};
static struct shared *sh;

/* As the real allocators do, a failure sets errno to ENOMEM. */
static int injected(void)
{
    if (!sh || ++sh->count != sh->fail_at)
        return 0;
    sh->injected = 1;
    errno = ENOMEM;
    return 1;
}

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
char *__real_getcwd(char *buf, size_t n);
int __real_vasprintf(char **out, const char *fmt, va_list ap);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
char *__wrap_getcwd(char *buf, size_t n);
__attribute__((format(printf, 2, 0))) int __wrap_vasprintf(char **out, const char *fmt, va_list ap);
__attribute__((format(printf, 2, 3))) int __wrap_asprintf(char **out, const char *fmt, ...);

void *__wrap_malloc(size_t n) { return injected() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t m) { return injected() ? NULL : __real_calloc(n, m); }
void *__wrap_realloc(void *p, size_t n) { return injected() ? NULL : __real_realloc(p, n); }
char *__wrap_strdup(const char *s) { return injected() ? NULL : __real_strdup(s); }
char *__wrap_strndup(const char *s, size_t n) { return injected() ? NULL : __real_strndup(s, n); }
char *__wrap_getcwd(char *buf, size_t n)
{
    if (!buf && injected())
        return NULL;
    return __real_getcwd(buf, n);
}
int __wrap_vasprintf(char **out, const char *fmt, va_list ap)
{
    if (injected())
        return -1;
    return __real_vasprintf(out, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
}
int __wrap_asprintf(char **out, const char *fmt, ...)
{
    va_list ap;
    int r;
    if (injected())
        return -1;
    va_start(ap, fmt);
    r = __real_vasprintf(out, fmt, ap);
    va_end(ap);
    return r;
}

/* Generation 1 asks for a reload at once, and stops the supervisor itself
 * if that reload failed (it is still running 0.3 s later); generation 2
 * stops the supervisor 0.1 s after it started. Each exits 0 on SIGTERM. */
static const char script[] =
    "trap 'kill $! 2>/dev/null; exit 0' TERM\n"
    "if [ \"$SERVER_STARTER_GENERATION\" = 1 ]; then\n"
    "  kill -HUP $PPID; sleep 0.3 & wait\n"
    "else\n"
    "  sleep 0.1 & wait\n"
    "fi\n"
    "kill -TERM $PPID; sleep 10 & wait\n";

enum { MODE_DELAY, MODE_COMMAND };

static int run_supervisor(int mode)
{
    char ctl[64], pidf[64];
    char *argv[32];
    int argc = 0;
    struct cli cl;

    (void)snprintf(ctl, sizeof ctl, "/tmp/handoff-alloc-sup-%d.sock", (int)getpid());
    (void)snprintf(pidf, sizeof pidf, "/tmp/handoff-alloc-sup-%d.pid", (int)getpid());
    argv[argc++] = "handoff";
    argv[argc++] = "run";
    argv[argc++] = "--control";
    argv[argc++] = ctl;
    argv[argc++] = "--pid-file";
    argv[argc++] = pidf;
    argv[argc++] = "--listen";
    argv[argc++] = "127.0.0.1:0";
    argv[argc++] = "--drain-timeout";
    argv[argc++] = "3";
    argv[argc++] = "--restart-delay";
    argv[argc++] = "20ms";
    if (mode == MODE_DELAY) {
        argv[argc++] = "--ready-delay";
        argv[argc++] = "20ms";
    } else {
        /* Ready once the worker's shell catches SIGTERM (bit 14 of
         * SigCgt): a worker stopped before its trap ran would die of the
         * signal, and its 143 would become the supervisor's exit code. */
        argv[argc++] = "--ready-command";
        argv[argc++] = "grep -Eq '^SigCgt:.*[4-7c-f][0-9a-f]{3}$' /proc/$HANDOFF_PID/status";
        argv[argc++] = "--ready-interval";
        argv[argc++] = "10ms";
    }
    argv[argc++] = "--";
    argv[argc++] = "/bin/sh";
    argv[argc++] = "-c";
    argv[argc++] = (char *)script;
    argv[argc] = NULL;
    cli_defaults(&cl);
    if (cli_parse(argc, argv, &cl) != 0) {
        (void)fprintf(stderr, "cli_parse: %s\n", cl.err);
        return 99;
    }
    tool_verbosity = 1;
    return sup_run(&cl.cfg);
}

/* One run with allocation fail_at failing (0: none). Returns the child's
 * exit code (10 + sup_run's result for 0 and 1; see below), or 128 + the
 * signal. The supervisor's log goes to logpath. */
static int run_child(int mode, long fail_at, const char *logpath)
{
    int st;
    pid_t pid;

    sh->count = 0;
    sh->fail_at = fail_at;
    sh->injected = 0;
    pid = fork();
    if (pid == 0) {
        int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || dup2(fd, 2) < 0)
            _exit(4);
        (void)clearenv();
        (void)setenv("PATH", "/usr/bin:/bin", 1);
        alarm(30); /* a hang fails the run (SIGALRM) */
        int r = run_supervisor(mode);
        /* 10/11: distinct from ASan's exit code 1 and LSan's 23. exit(),
         * not _exit(): LeakSanitizer checks here. */
        exit(r == 0 ? 10 : r == 1 ? 11 : 3);
    }
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int log_mentions_oom(const char *path)
{
    char buf[65536];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof buf - 1);
    (void)close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return strstr(buf, "out of memory") != NULL || strstr(buf, strerror(ENOMEM)) != NULL;
}

static void print_log(const char *path)
{
    char buf[8192];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;

    if (fd >= 0)
        (void)close(fd);
    buf[n > 0 ? n : 0] = '\0';
    print_message("---- supervisor log\n%s----\n", buf);
}

static void every_allocation_fails(int mode)
{
    char logpath[64];
    int r;

    (void)snprintf(logpath, sizeof logpath, "/tmp/handoff-alloc-sup-%d.log", (int)getpid());
    r = run_child(mode, 0, logpath);
    if (r != 10)
        print_log(logpath);
    assert_int_equal(r, 10);
    long total = sh->count;
    print_message("mode %s: %ld allocations in a full run\n", mode == MODE_DELAY ? "delay" : "command", total);
    assert_true(total > 10 && total < 2000);
    int startup = 0, absorbed = 0;
    for (long n = 1; n <= total + 5; n++) {
        r = run_child(mode, n, logpath);
        if (r != 10 && r != 11) {
            print_log(logpath);
            fail_msg("allocation %ld of %ld failing: the run ended with %d", n, total, r);
        }
        if (sh->injected && !log_mentions_oom(logpath)) {
            print_log(logpath);
            fail_msg("allocation %ld of %ld failed without a word in the log", n, total);
        }
        startup += r == 11;
        absorbed += r == 10 && sh->injected;
    }
    (void)unlink(logpath);
    print_message("mode %s: %d injected failures stopped the start-up (exit 1), %d were absorbed "
                  "(failed reload, retried check); all were logged\n",
                  mode == MODE_DELAY ? "delay" : "command", startup, absorbed);
    assert_true(startup > 0 && absorbed > 0);
}

static void test_delay(void **state)
{
    (void)state;
    every_allocation_fails(MODE_DELAY);
}

static void test_command(void **state)
{
    (void)state;
    every_allocation_fails(MODE_COMMAND);
}

/* The command line parser never allocates. */
static void test_cli_no_allocation(void **state)
{
    char *argv[] = {"handoff", "run", "-l", "a=127.0.0.1:1", "--forward", "USR1,USR2", "--ready-delay",
                    "1.5", "--", "x", NULL};
    struct cli cl;

    (void)state;
    sh->count = 0;
    sh->fail_at = 0;
    cli_defaults(&cl);
    assert_int_equal(cli_parse(10, argv, &cl), 0);
    assert_int_equal(sh->count, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cli_no_allocation),
        cmocka_unit_test(test_delay),
        cmocka_unit_test(test_command),
    };
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
