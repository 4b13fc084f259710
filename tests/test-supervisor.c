/* Unit tests of the handoff command's modules (tools/), linked with the
 * command's objects and the static library. bind() is wrapped
 * (-Wl,--wrap=bind) so that a test can act right after a bind() of the
 * command's code, as an attacker racing it would. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "tool.h"

/* ---- bind() wrapper ---- */

int __real_bind(int fd, const struct sockaddr *sa, socklen_t len);
int __wrap_bind(int fd, const struct sockaddr *sa, socklen_t len);

/* After a successful bind() to swap_path: the socket file is moved to
 * swap_moved and swap_path becomes a symlink to swap_target. */
static const char *swap_path, *swap_moved, *swap_target;

int __wrap_bind(int fd, const struct sockaddr *sa, socklen_t len)
{
    int r = __real_bind(fd, sa, len);
    const struct sockaddr_un *sun = (const struct sockaddr_un *)(const void *)sa;

    if (r == 0 && swap_path && sa->sa_family == AF_UNIX && strcmp(sun->sun_path, swap_path) == 0) {
        if (rename(swap_path, swap_moved) < 0 || symlink(swap_target, swap_path) < 0)
            abort();
    }
    return r;
}

static char tmpdir[64];

static int setup_tmp(void **state)
{
    (void)state;
    (void)snprintf(tmpdir, sizeof tmpdir, "/tmp/test-supervisor-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmp(void **state)
{
    char cmd[128];
    (void)state;
    (void)snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* The control socket gets mode 0600 from the umask at bind(), and nothing
 * is chmod()ed by path after it: a symlink swapped in right after bind()
 * (the directory may be writable by others) must not carry the mode to
 * the file it points at. The old code chmod()ed the victim to 0600. */
static void test_control_no_chmod_through_symlink(void **state)
{
    char path[128], moved[128], victim[128], err[256];
    struct control *c = NULL;
    struct stat st;
    int fd;

    (void)state;
    (void)snprintf(path, sizeof path, "%s/ctl.sock", tmpdir);
    (void)snprintf(moved, sizeof moved, "%s/ctl.sock.real", tmpdir);
    (void)snprintf(victim, sizeof victim, "%s/victim", tmpdir);
    fd = open(victim, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    (void)close(fd);
    assert_int_equal(chmod(victim, 0644), 0);

    swap_path = path;
    swap_moved = moved;
    swap_target = victim;
    int r = control_open(path, &c, err, sizeof err);
    swap_path = NULL;
    if (r == 0)
        control_close(c);
    assert_int_equal(stat(victim, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    /* The socket itself never had a looser mode than 0600. */
    assert_int_equal(lstat(moved, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
}

static void expect_escaped(const char *in, const char *want, bool quoted)
{
    struct sbuf b = {0};
    if (quoted)
        sbuf_escaped(&b, in);
    else
        sbuf_text(&b, in);
    assert_false(b.oom);
    assert_string_equal(b.p ? b.p : "", want);
    sbuf_free(&b);
}

/* What goes to a terminal: controls, DEL, invalid or overlong UTF-8,
 * surrogates, C1 controls in UTF-8 and bidi/line-separator code points
 * are escaped; printable UTF-8 (2, 3 and 4 bytes) is kept. */
static void test_escape(void **state)
{
    (void)state;
    expect_escaped("plain text 123", "plain text 123", true);
    expect_escaped("a\"b\\c", "a\\\"b\\\\c", true);
    expect_escaped("a\"b\\c", "a\"b\\c", false);
    expect_escaped("\x1b[31m\t\r\n\x7f\x01", "\\x1b[31m\\t\\r\\n\\x7f\\x01", false);
    expect_escaped("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", true);
    expect_escaped("\xc2\x9b" "31m", "\\xc2\\x9b31m", true);               /* C1 CSI */
    expect_escaped("\xe2\x80\xae" "x", "\\xe2\\x80\\xaex", true);           /* RLO */
    expect_escaped("\xe2\x81\xa6", "\\xe2\\x81\\xa6", true);                /* LRI */
    expect_escaped("\xe2\x80\xa8", "\\xe2\\x80\\xa8", true);                /* LINE SEPARATOR */
    expect_escaped("\xc0\xaf", "\\xc0\\xaf", true);                         /* overlong '/' */
    expect_escaped("\xe0\x80\xaf", "\\xe0\\x80\\xaf", true);                /* overlong */
    expect_escaped("\xed\xa0\x80", "\\xed\\xa0\\x80", true);                /* surrogate */
    expect_escaped("\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80", true);       /* > U+10FFFF */
    expect_escaped("\xe2\x82", "\\xe2\\x82", true);                         /* cut short */
    expect_escaped("\xff\xfe", "\\xff\\xfe", true);
}

/* sbuf grows past any fixed size. */
static void test_sbuf_grows(void **state)
{
    struct sbuf b = {0};
    (void)state;
    for (int i = 0; i < 20000; i++)
        sbuf_printf(&b, "line %05d\n", i);
    assert_false(b.oom);
    assert_int_equal(b.len, 20000 * 11);
    assert_int_equal(strlen(b.p), b.len);
    assert_memory_equal(b.p + b.len - 11, "line 19999\n", 11);
    sbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_sbuf_grows),
        cmocka_unit_test_setup_teardown(test_control_no_chmod_through_symlink, setup_tmp, teardown_tmp),
    };
    tool_verbosity = 0;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
