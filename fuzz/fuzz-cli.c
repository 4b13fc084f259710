/* libFuzzer harness: the command line of the handoff command (tools/cli.c:
 * cli_parse() and listen_split(), and through them parse_duration() of
 * tools/util.c and handoff__signal_parse() of src/shared/status.c).
 *
 * The input is the argument list after "handoff", arguments separated by
 * NUL bytes (at most 64). Invariants: no crash; the result is 0 or
 * EXIT_USAGE, with a non-empty message exactly when it is EXIT_USAGE; a
 * parsed `run` is consistent (COMMAND inside argv, every number in its
 * documented range, the ready mode and its parameters agree, no signal of
 * the supervisor's own in --forward); listen_split() stays inside its
 * buffer and splits only at a plain-word NAME; a second parse of the same
 * arguments gives the same result (getopt's global state is reset). */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../tools/tool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ARGS 64
#define MAX_DURATION ((uint64_t)10000000 * 60 * HANDOFF_USEC_PER_SEC) /* 1e7 minutes */

static void check_duration(uint64_t v, bool never_ok)
{
    char buf[32];

    if (v == HANDOFF_NO_TIMEOUT) {
        if (!never_ok)
            abort();
        return;
    }
    if (v > MAX_DURATION)
        abort();
    if (strlen(dur(v, buf, sizeof buf)) >= sizeof buf)
        abort();
}

static bool is_word_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
}

static void check_listen(const char *arg)
{
    static const size_t lens[] = {1, 2, 8, 256};

    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        char name[256 + 8];
        const char *spec = NULL;
        size_t nlen = lens[k];

        memset(name, 'Z', sizeof name);
        listen_split(arg, name, nlen, &spec);
        if (!memchr(name, '\0', nlen) || name[nlen] != 'Z')
            abort(); /* unterminated, or written past nlen */
        if (spec == arg) {
            /* Default name: the spec, sanitised and truncated. */
            size_t n = strlen(name);
            if (n != (strlen(arg) < nlen - 1 ? strlen(arg) : nlen - 1))
                abort();
            for (size_t i = 0; i < n; i++)
                if (name[i] == ':' || (unsigned char)name[i] <= 0x20 || (unsigned char)name[i] >= 0x7f)
                    abort();
        } else {
            /* NAME=SPEC: a non-empty plain word before the first '='. */
            const char *eq = strchr(arg, '=');
            if (!eq || spec != eq + 1 || strlen(name) != (size_t)(eq - arg) || !*name)
                abort();
            for (const char *p = name; *p; p++)
                if (!is_word_char(*p))
                    abort();
        }
    }
}

static void check_run(const struct config *c, char **argv, int argc)
{
    if (!c->argv || c->argv < argv + 2 || c->argv >= argv + argc || !c->argv[0])
        abort();
    if (c->workers < 1 || c->workers > TOOL_MAX_WORKERS || c->max_draining < 1 || c->max_draining > 64)
        abort();
    if (c->nlisten < 0 || c->nlisten > TOOL_MAX_LISTEN)
        abort();
    for (int i = 0; i < c->nlisten; i++)
        check_listen(c->listen[i]);
    switch (c->ready_mode) {
    case READY_NOTIFY: if (c->ready_command) abort(); break;
    case READY_COMMAND: if (!c->ready_command) abort(); break;
    case READY_DELAY: if (c->ready_command || !c->ready_delay) abort(); break;
    default: abort();
    }
    if (!c->ready_timeout)
        abort();
    check_duration(c->ready_timeout, false);
    check_duration(c->ready_delay, false);
    check_duration(c->ready_interval, false);
    check_duration(c->drain_timeout, true);
    check_duration(c->backoff_min, false);
    check_duration(c->backoff_max, false);
    check_duration(c->backoff_reset, false);
    if (c->backoff_max < c->backoff_min)
        abort();
    if (c->stop_signal < 1 || c->stop_signal > 64 || c->stop_signal == SIGSTOP || strcmp(sig_abbrev(c->stop_signal), "?") == 0)
        abort();
    if (c->forward & ((uint64_t)1 | (uint64_t)1 << SIGHUP | (uint64_t)1 << SIGTERM | (uint64_t)1 << SIGINT |
                      (uint64_t)1 << SIGQUIT | (uint64_t)1 << SIGCHLD | (uint64_t)1 << SIGPIPE |
                      (uint64_t)1 << SIGKILL | (uint64_t)1 << SIGSTOP))
        abort();
    for (int s = 1; s < 64; s++) {
        sigset_t set;
        sigemptyset(&set);
        if ((c->forward & ((uint64_t)1 << s)) && sigaddset(&set, s) != 0)
            abort(); /* a signal the supervisor could not block */
    }
    if (c->rolling && c->workers < 2)
        abort();
    if (c->notify_access != NOTIFY_MAIN && c->notify_access != NOTIFY_ALL)
        abort();
    if (c->verbosity < 0 || c->verbosity > 2)
        abort();
}

static int parse(int argc, char **argv, struct cli *cl)
{
    cli_defaults(cl);
    int r = cli_parse(argc, argv, cl);
    size_t elen = strnlen(cl->err, sizeof cl->err);

    if (elen == sizeof cl->err)
        abort(); /* unterminated */
    if (r != 0 && (r != EXIT_USAGE || elen == 0))
        abort();
    if (r == 0 && elen != 0)
        abort();
    return r;
}

static bool same(const struct cli *a, const struct cli *b)
{
    const struct config *x = &a->cfg, *y = &b->cfg;

    return a->command == b->command && strcmp(a->err, b->err) == 0 && a->timeout == b->timeout &&
           x->argv == y->argv && x->nlisten == y->nlisten && x->workers == y->workers &&
           x->ready_mode == y->ready_mode && x->ready_command == y->ready_command &&
           x->ready_delay == y->ready_delay && x->ready_timeout == y->ready_timeout &&
           x->stop_signal == y->stop_signal && x->drain_timeout == y->drain_timeout &&
           x->forward == y->forward && x->name == y->name && x->control == y->control &&
           x->pid_file == y->pid_file && x->backoff_min == y->backoff_min &&
           x->backoff_max == y->backoff_max && x->max_draining == y->max_draining &&
           x->notify_access == y->notify_access;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *argv[MAX_ARGS + 2];
    char *buf;
    int argc = 1;
    struct cli a, b;

    if (size > 4096)
        return 0;
    buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    static char prog[] = "handoff";
    argv[0] = prog;
    for (size_t i = 0; i < size + 1 && argc <= MAX_ARGS;) {
        argv[argc++] = buf + i;
        i += strlen(buf + i) + 1;
    }
    argv[argc] = NULL;

    int r = parse(argc, argv, &a);
    if (r == 0 && a.command == CLI_RUN)
        check_run(&a.cfg, argv, argc);
    if (r == 0 && a.command != CLI_HELP && a.command != CLI_VERSION &&
        (!a.cfg.name || !*a.cfg.name || strchr(a.cfg.name, '/')))
        abort(); /* (--help ends the parse: what follows is not checked) */
    if (r == 0 && a.command != CLI_RUN && a.command != CLI_HELP && a.timeout != 0)
        check_duration(a.timeout, false);
    if (parse(argc, argv, &b) != r || !same(&a, &b))
        abort();
    free(buf);
    return 0;
}
