/* Unit tests for the LISTEN_* parser (src/inherit.c): malformed or
 * foreign values never crash and never make us adopt the wrong fd. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "internal.h"

static int parse(const char *pid, const char *fds, const char *names, struct hf_listen_env *e,
                 char *err)
{
    return handoff__parse_listen_env(pid, fds, names, 4242, e, err, 256);
}

static void test_valid(void **state)
{
    struct hf_listen_env e;
    char err[256];
    (void)state;
    assert_int_equal(parse("4242", "2", "web:admin", &e, err), 2);
    assert_int_equal(e.nfds, 2);
    assert_string_equal(e.names[0], "web");
    assert_string_equal(e.names[1], "admin");
    assert_string_equal(err, "");
    handoff__listen_env_done(&e);

    assert_int_equal(parse("4242", "3", NULL, &e, err), 3);
    assert_null(e.names);
    handoff__listen_env_done(&e);

    assert_int_equal(parse("4242", "0", NULL, &e, err), 0);
    assert_int_equal(parse(NULL, NULL, NULL, &e, err), 0);
    /* Empty names are allowed (systemd uses them): they become unknown. */
    assert_int_equal(parse("4242", "2", ":b", &e, err), 2);
    assert_string_equal(e.names[0], "");
    handoff__listen_env_done(&e);
}

static void test_foreign_and_garbage(void **state)
{
    struct hf_listen_env e;
    char err[256];
    (void)state;
    /* Someone else's fds (a grandchild that inherited a stale env). */
    assert_int_equal(parse("4243", "2", "a:b", &e, err), -ESRCH);
    assert_non_null(strstr(err, "not this process"));
    assert_int_equal(parse(NULL, "2", NULL, &e, err), -EINVAL);
    assert_non_null(strstr(err, "without LISTEN_PID"));
    static const char *badpid[] = {"", "abc", "-4242", " 4242", "4242 ", "0", "99999999999999999999999", "4242x"};
    for (size_t i = 0; i < sizeof badpid / sizeof *badpid; i++)
        assert_true(parse(badpid[i], "1", NULL, &e, err) < 0);
    static const char *badfds[] = {"", "-1", "1x", "4097", "99999999999999999999", " 1", "0x1"};
    for (size_t i = 0; i < sizeof badfds / sizeof *badfds; i++) {
        err[0] = '\0';
        assert_int_equal(parse("4242", badfds[i], NULL, &e, err), -EINVAL);
        assert_true(strlen(err) > 0);
    }
}

static void test_name_mismatch(void **state)
{
    struct hf_listen_env e;
    char err[256];
    (void)state;
    /* Count mismatch: the fds are kept, the names are not trusted. */
    assert_int_equal(parse("4242", "2", "only-one", &e, err), 2);
    assert_null(e.names);
    assert_non_null(strstr(err, "names ignored"));
    assert_int_equal(parse("4242", "1", "a:b:c", &e, err), 1);
    assert_null(e.names);
    handoff__listen_env_done(&e);
    /* An invalid name is replaced, the others kept. */
    assert_int_equal(parse("4242", "2", "ok:bad\x01name", &e, err), 2);
    assert_string_equal(e.names[0], "ok");
    assert_string_equal(e.names[1], "");
    handoff__listen_env_done(&e);
}

static void test_valid_name(void **state)
{
    (void)state;
    assert_true(handoff__valid_name("web"));
    assert_true(handoff__valid_name("127.0.0.1_80"));
    assert_false(handoff__valid_name(""));
    assert_false(handoff__valid_name("a:b"));
    assert_false(handoff__valid_name("a b"));
    assert_false(handoff__valid_name(NULL));
    char longname[300];
    memset(longname, 'x', sizeof longname - 1);
    longname[299] = '\0';
    assert_false(handoff__valid_name(longname));
    longname[255] = '\0';
    assert_true(handoff__valid_name(longname));
}

static void test_starter_port(void **state)
{
    struct hf_starter_entry e[4];
    char err[256];
    (void)state;
    assert_int_equal(handoff__parse_starter_port("127.0.0.1:80=3;/tmp/sock=4", e, 4, err, 256), 2);
    assert_string_equal(e[0].key, "127.0.0.1:80");
    assert_int_equal(e[0].fd, 3);
    assert_string_equal(e[1].key, "/tmp/sock");
    assert_int_equal(e[1].fd, 4);
    assert_int_equal(handoff__parse_starter_port("8080=5;", e, 4, err, 256), 1);
    assert_int_equal(handoff__parse_starter_port("[::1]:443=7", e, 4, err, 256), 1);
    assert_string_equal(e[0].key, "[::1]:443");
    assert_int_equal(handoff__parse_starter_port("", e, 4, err, 256), 0);
    assert_int_equal(handoff__parse_starter_port(NULL, e, 4, err, 256), 0);
    static const char *bad[] = {"80", "=3", "80=", "80=x", "80=-1", "80=70000", "80=3;81=3",
                                "a=1;b=2;c=3;d=4;e=5", "80=3 ", "a\nb=3"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = '\0';
        assert_int_equal(handoff__parse_starter_port(bad[i], e, 4, err, 256), -EINVAL);
        assert_non_null(strstr(err, "SERVER_STARTER_PORT"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_foreign_and_garbage),
        cmocka_unit_test(test_name_mismatch),
        cmocka_unit_test(test_valid_name),
        cmocka_unit_test(test_starter_port),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
