/* Allocation failure injection: every allocation the library makes (on the
 * paths of handoff_new, handoff_listen, handoff_add_fd, handoff_ready,
 * handoff_upgrade and handoff_free) is made to fail in turn, through the
 * linker's --wrap. Each run happens in a child process; it must end with a
 * clean -ENOMEM (or success), never a crash, and - under ASan - no leak. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "handoff.h"

static long fail_at = -1; /* the allocation number that fails */
static long count;

static int injected(void)
{
    return ++count == fail_at;
}

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
char *__real_getcwd(char *buf, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
char *__wrap_getcwd(char *buf, size_t n);
__attribute__((format(printf, 2, 3))) int __wrap_asprintf(char **out, const char *fmt, ...);

void *__wrap_malloc(size_t n) { return injected() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t m) { return injected() ? NULL : __real_calloc(n, m); }
void *__wrap_realloc(void *p, size_t n) { return injected() ? NULL : __real_realloc(p, n); }
char *__wrap_strdup(const char *s) { return injected() ? NULL : __real_strdup(s); }
char *__wrap_strndup(const char *s, size_t n) { return injected() ? NULL : __real_strndup(s, n); }
char *__wrap_getcwd(char *buf, size_t n)
{
    if (!buf && injected()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_getcwd(buf, n);
}
int __wrap_asprintf(char **out, const char *fmt, ...)
{
    va_list ap;
    int r;
    if (injected())
        return -1;
    va_start(ap, fmt);
    r = vasprintf(out, fmt, ap);
    va_end(ap);
    return r;
}

/* One run of the scenario. Returns 0 if every step succeeded, 1 if a step
 * failed with -ENOMEM (and everything was cleaned up), 2 on anything else. */
static int scenario(void)
{
    char *argv[] = {"/bin/true", NULL};
    handoff_options o = HANDOFF_OPTIONS_INIT;
    handoff_t *h = NULL;
    char pidf[64];
    int r, m;

    snprintf(pidf, sizeof pidf, "/tmp/handoff-alloc-%d.pid", getpid());
    o.argv = argv;
    o.pid_file = pidf;
    o.log_level = 1; /* quiet: warnings are expected here */
    r = handoff_new(&o, &h);
    if (r == -ENOMEM)
        return 1;
    if (r < 0)
        return 2;
    r = handoff_listen(h, "a", "127.0.0.1:0", NULL);
    if (r >= 0) {
        /* Abstract names are global: one of our own (other runs may be
         * going on at the same time). */
        char spec[64];
        snprintf(spec, sizeof spec, "unix:@handoff-alloc-test-%d", (int)getpid());
        r = handoff_listen(h, "u", spec, NULL);
    }
    if (r >= 0) {
        m = memfd_create("state", MFD_CLOEXEC);
        r = handoff_add_fd(h, "state", m);
        close(m);
    }
    if (r >= 0)
        r = handoff_ready(h);
    if (r >= 0) {
        r = handoff_upgrade(h); /* /bin/true exits: the upgrade then fails */
        if (r == 0) {
            handoff_event ev;
            while (handoff_wait_event(h, &ev, handoff_now_usec() + 2000000) == 1 &&
                   ev.type != HANDOFF_EVENT_UPGRADE_FAILED) {
            }
        }
    }
    handoff_free(h);
    unlink(pidf);
    if (r == -ENOMEM)
        return 1;
    return r < 0 ? 2 : 0;
}

static int run_child(long n)
{
    pid_t pid = fork();
    int st;
    if (pid == 0) {
        fail_at = n;
        count = 0;
        exit(scenario()); /* exit(), not _exit(): LeakSanitizer checks here */
    }
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void test_every_allocation_fails_cleanly(void **state)
{
    (void)state;
    /* Count the allocations of a full run first. */
    fail_at = -1;
    count = 0;
    pid_t pid = fork();
    int st;
    if (pid == 0) {
        int r = scenario();
        /* Report the count through the exit status (capped). */
        _exit(r != 0 ? 255 : (int)(count > 250 ? 250 : count));
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    int total = WEXITSTATUS(st);
    assert_true(total > 10 && total < 250);
    int enomem = 0;
    for (long n = 1; n <= total + 1; n++) {
        int r = run_child(n);
        if (r != 0 && r != 1)
            fail_msg("allocation %ld of %d failing: child ended with %d", n, total, r);
        enomem += r == 1;
    }
    print_message("%d allocations on the path; %d injected failures reported -ENOMEM, the others "
                  "were absorbed (warnings)\n", total, enomem);
    assert_true(enomem > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_allocation_fails_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
