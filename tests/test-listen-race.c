/* A unix socket's mode and owner are applied without following a path
 * swapped after bind() (issue 10 #7). bind() is wrapped (--wrap=bind):
 * right after the real bind, the socket file is replaced by a symlink to a
 * victim file, as someone who can write the directory could do. The
 * victim must keep its mode, and handoff_listen() must fail with -EPERM
 * rather than report success on a path it does not control. */
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "handoff.h"

static char g_swap_path[108];
static char g_victim[128];
static int g_swap_to; /* 0: nothing, 1: symlink to the victim, 2: a regular file */

int __real_bind(int fd, const struct sockaddr *sa, socklen_t len);
int __wrap_bind(int fd, const struct sockaddr *sa, socklen_t len);

int __wrap_bind(int fd, const struct sockaddr *sa, socklen_t len)
{
    int r = __real_bind(fd, sa, len);
    const struct sockaddr_un *sun = (const void *)sa;

    if (r == 0 && g_swap_to && sa->sa_family == AF_UNIX && strcmp(sun->sun_path, g_swap_path) == 0) {
        char moved[140];
        snprintf(moved, sizeof moved, "%s.moved", g_swap_path);
        if (rename(g_swap_path, moved) != 0)
            return r;
        if (g_swap_to == 1) {
            if (symlink(g_victim, g_swap_path) != 0)
                return r;
        } else {
            int f = open(g_swap_path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
            if (f >= 0)
                close(f);
        }
    }
    return r;
}

/* In the forked child: report and exit (cmocka's assertions would go on
 * running the next tests in the child). */
#define CHECK(cond)                                                                               \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);             \
            _exit(1);                                                                             \
        }                                                                                         \
    } while (0)

static handoff_t *mk(void)
{
    char *argv[] = {"/bin/true", NULL};
    handoff_options o = HANDOFF_OPTIONS_INIT;
    handoff_t *h = NULL;
    o.argv = argv;
    o.log_level = 1;
    CHECK(handoff_new(&o, &h) == 0);
    return h;
}

static void run(int swap_to)
{
    char dir[] = "/tmp/handoff-race-XXXXXX", spec[160];
    struct stat st;
    handoff_listen_options lo = HANDOFF_LISTEN_OPTIONS_INIT;
    CHECK(mkdtemp(dir) != NULL);
    snprintf(g_swap_path, sizeof g_swap_path, "%s/s.sock", dir);
    snprintf(g_victim, sizeof g_victim, "%s/victim", dir);
    int v = open(g_victim, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    CHECK(v >= 0);
    CHECK(fchmod(v, 0600) == 0);
    close(v);
    snprintf(spec, sizeof spec, "unix:%s", g_swap_path);
    g_swap_to = swap_to;
    handoff_t *h = mk();
    lo.mode = 0666;
    lo.set_owner = 1;
    lo.uid = (uid_t)-1;
    lo.gid = (gid_t)-1;
    int fd = handoff_listen(h, "u", spec, &lo);
    if (swap_to) {
        CHECK((fd) == (-EPERM));
        CHECK(strstr(handoff_errmsg(h), "replaced") != NULL);
        CHECK(stat(g_victim, &st) == 0);
        CHECK((st.st_mode & 07777) == (0600)); /* not followed */
        /* What is at the path now is not ours: left there. */
        CHECK(lstat(g_swap_path, &st) == 0);
    } else {
        CHECK(fd >= 0);
        CHECK(stat(g_swap_path, &st) == 0);
        CHECK(S_ISSOCK(st.st_mode));
        CHECK((st.st_mode & 07777) == (0666));
    }
    handoff_free(h);
    char moved[140];
    snprintf(moved, sizeof moved, "%s.moved", g_swap_path);
    unlink(moved);
    unlink(g_swap_path);
    unlink(g_victim);
    rmdir(dir);
}

static void in_child(int swap_to)
{
    pid_t pid = fork();
    int st;
    assert_true(pid >= 0);
    if (pid == 0) {
        run(swap_to);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("child failed (status 0x%x)", st);
}

static void test_no_swap(void **s) { (void)s; in_child(0); }
static void test_swap_symlink(void **s) { (void)s; in_child(1); }
static void test_swap_file(void **s) { (void)s; in_child(2); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_swap),
        cmocka_unit_test(test_swap_symlink),
        cmocka_unit_test(test_swap_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
