/*
 * cli.c - the command line of the handoff command as a pure function:
 * cli_parse() fills a struct cli from argc/argv and returns. It never
 * prints, exits or allocates, and reads no environment variable (main()
 * applies $HANDOFF_NAME and $HANDOFF_CONTROL to the defaults first), so
 * main() and the fuzz harness fuzz/fuzz-cli.c run the same code.
 *
 * getopt_long() keeps its state in globals: cli_parse() resets it
 * (optind = 0) on every call and silences its messages (opterr = 0).
 */
#include "tool.h"

#include "shared/status.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((format(printf, 2, 3))) static int usage_err(struct cli *c, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    /* The analyzer does not follow va_start() into the call. */
    (void)vsnprintf(c->err, sizeof c->err, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
    va_end(ap);
    return EXIT_USAGE;
}

static int parse_secs(struct cli *c, const char *opt, const char *arg, uint64_t *out, bool zero_never)
{
    if (parse_duration(arg, out) < 0)
        return usage_err(c, "%s wants a duration (e.g. 1.5, 250ms, 2m), not \"%.64s\"", opt, arg);
    if (*out == 0 && zero_never)
        *out = HANDOFF_NO_TIMEOUT;
    return 0;
}

static int parse_int(struct cli *c, const char *opt, const char *arg, int min, int max, int *out)
{
    char *end;
    long v = strtol(arg, &end, 10);

    if (*arg == '\0' || *end || v < min || v > max)
        return usage_err(c, "%s wants a number from %d to %d, not \"%.64s\"", opt, min, max, arg);
    *out = (int)v;
    return 0;
}

/* Signals the supervisor keeps for itself, and those it cannot block (so
 * it could not read them from its signalfd). */
static bool forwardable(int s)
{
    sigset_t set;

    if (s <= 0 || s >= 64 || s == SIGKILL || s == SIGSTOP || s == SIGCHLD || s == SIGHUP ||
        s == SIGTERM || s == SIGINT || s == SIGQUIT || s == SIGPIPE)
        return false;
    sigemptyset(&set);
    return sigaddset(&set, s) == 0; /* glibc refuses its own real-time signals */
}

static int parse_forward(struct cli *c, const char *arg, uint64_t *out)
{
    char buf[256], *save = NULL;

    *out = 0;
    if (strcmp(arg, "none") == 0 || !*arg)
        return 0;
    if (strlen(arg) >= sizeof buf)
        return usage_err(c, "--forward: list too long");
    (void)snprintf(buf, sizeof buf, "%s", arg);
    for (char *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        int s = handoff__signal_parse(t);
        if (!forwardable(s))
            return usage_err(c, "--forward: cannot forward \"%.32s\"", t);
        *out |= (uint64_t)1 << s;
    }
    return 0;
}

enum {
    OPT_NONBLOCK = 256, OPT_ROLLING, OPT_READY, OPT_READY_COMMAND, OPT_READY_DELAY,
    OPT_READY_INTERVAL, OPT_READY_TIMEOUT, OPT_STOP_SIGNAL, OPT_DRAIN_TIMEOUT, OPT_MAX_DRAINING,
    OPT_FORWARD, OPT_RESTART_DELAY, OPT_RESTART_DELAY_MAX, OPT_RESTART_RESET, OPT_NOTIFY_ACCESS,
    OPT_PRELOAD, OPT_PRELOAD_DEPTH
};

static const struct option run_opts[] = {
    {"listen", required_argument, NULL, 'l'},
    {"nonblock", no_argument, NULL, OPT_NONBLOCK},
    {"preload", no_argument, NULL, OPT_PRELOAD},
    {"preload-depth", required_argument, NULL, OPT_PRELOAD_DEPTH},
    {"workers", required_argument, NULL, 'w'},
    {"rolling", no_argument, NULL, OPT_ROLLING},
    {"ready", required_argument, NULL, OPT_READY},
    {"ready-command", required_argument, NULL, OPT_READY_COMMAND},
    {"ready-delay", required_argument, NULL, OPT_READY_DELAY},
    {"ready-interval", required_argument, NULL, OPT_READY_INTERVAL},
    {"ready-timeout", required_argument, NULL, OPT_READY_TIMEOUT},
    {"notify-access", required_argument, NULL, OPT_NOTIFY_ACCESS},
    {"stop-signal", required_argument, NULL, OPT_STOP_SIGNAL},
    {"drain-timeout", required_argument, NULL, OPT_DRAIN_TIMEOUT},
    {"max-draining", required_argument, NULL, OPT_MAX_DRAINING},
    {"forward", required_argument, NULL, OPT_FORWARD},
    {"restart-delay", required_argument, NULL, OPT_RESTART_DELAY},
    {"restart-delay-max", required_argument, NULL, OPT_RESTART_DELAY_MAX},
    {"restart-reset", required_argument, NULL, OPT_RESTART_RESET},
    {"pid-file", required_argument, NULL, 'p'},
    {"quiet", no_argument, NULL, 'q'},
    {"verbose", no_argument, NULL, 'v'},
    {"name", required_argument, NULL, 'n'},
    {"control", required_argument, NULL, 'c'},
    {"timeout", required_argument, NULL, 't'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* getopt_long() returned '?' or ':' (its own messages are off). */
static int getopt_error(struct cli *c, int r, int argc, char **argv, const char *cmd)
{
    const char *arg = optind >= 1 && optind <= argc && argv[optind - 1] ? argv[optind - 1] : "?";
    bool is_long = strncmp(arg, "--", 2) == 0;

    if (r == ':') {
        if (is_long)
            return usage_err(c, "%s: option '%.64s' requires an argument", cmd, arg);
        return usage_err(c, "%s: option requires an argument -- '%c'", cmd, optopt);
    }
    if (is_long)
        return usage_err(c, "%s: unrecognized option '%.64s'", cmd, arg);
    if (optopt > 0x20 && optopt < 0x7f)
        return usage_err(c, "%s: invalid option -- '%c'", cmd, optopt);
    return usage_err(c, "%s: invalid option '%.64s'", cmd, arg);
}

static int parse_run(int argc, char **argv, struct cli *cl)
{
    struct config *cfg = &cl->cfg;
    const char *ready = NULL;
    int c;

    optind = 0; /* a full reset of getopt's state */
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+:l:w:p:qvn:c:t:h", run_opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            if (cfg->nlisten == TOOL_MAX_LISTEN)
                return usage_err(cl, "at most %d --listen", TOOL_MAX_LISTEN);
            cfg->listen[cfg->nlisten++] = optarg;
            break;
        case OPT_NONBLOCK: cfg->nonblock = true; break;
        case OPT_PRELOAD: cfg->preload = true; break;
        case OPT_PRELOAD_DEPTH:
            if (parse_int(cl, "--preload-depth", optarg, 0, 16, &cfg->preload_depth))
                return EXIT_USAGE;
            cfg->preload = true;
            break;
        case 'w':
            if (parse_int(cl, "--workers", optarg, 1, TOOL_MAX_WORKERS, &cfg->workers))
                return EXIT_USAGE;
            break;
        case OPT_ROLLING: cfg->rolling = true; break;
        case OPT_READY: ready = optarg; break;
        case OPT_READY_COMMAND: cfg->ready_command = optarg; break;
        case OPT_READY_DELAY:
            if (parse_secs(cl, "--ready-delay", optarg, &cfg->ready_delay, false))
                return EXIT_USAGE;
            if (!ready)
                ready = "delay";
            break;
        case OPT_READY_INTERVAL:
            if (parse_secs(cl, "--ready-interval", optarg, &cfg->ready_interval, false))
                return EXIT_USAGE;
            break;
        case OPT_READY_TIMEOUT:
            if (parse_secs(cl, "--ready-timeout", optarg, &cfg->ready_timeout, false))
                return EXIT_USAGE;
            if (!cfg->ready_timeout)
                return usage_err(cl, "--ready-timeout must be > 0, not \"%.64s\"", optarg);
            break;
        case OPT_NOTIFY_ACCESS:
            if (strcmp(optarg, "main") == 0)
                cfg->notify_access = NOTIFY_MAIN;
            else if (strcmp(optarg, "all") == 0)
                cfg->notify_access = NOTIFY_ALL;
            else
                return usage_err(cl, "--notify-access: \"%.32s\" is not main or all", optarg);
            break;
        case OPT_STOP_SIGNAL:
            cfg->stop_signal = handoff__signal_parse(optarg);
            if (cfg->stop_signal <= 0 || cfg->stop_signal == SIGSTOP)
                return usage_err(cl, "--stop-signal: unknown signal \"%.32s\"", optarg);
            break;
        case OPT_DRAIN_TIMEOUT:
            if (parse_secs(cl, "--drain-timeout", optarg, &cfg->drain_timeout, true))
                return EXIT_USAGE;
            break;
        case OPT_MAX_DRAINING:
            if (parse_int(cl, "--max-draining", optarg, 1, 64, &cfg->max_draining))
                return EXIT_USAGE;
            break;
        case OPT_FORWARD:
            if (parse_forward(cl, optarg, &cfg->forward))
                return EXIT_USAGE;
            break;
        case OPT_RESTART_DELAY:
            if (parse_secs(cl, "--restart-delay", optarg, &cfg->backoff_min, false))
                return EXIT_USAGE;
            break;
        case OPT_RESTART_DELAY_MAX:
            if (parse_secs(cl, "--restart-delay-max", optarg, &cfg->backoff_max, false))
                return EXIT_USAGE;
            break;
        case OPT_RESTART_RESET:
            if (parse_secs(cl, "--restart-reset", optarg, &cfg->backoff_reset, false))
                return EXIT_USAGE;
            break;
        case 'p': cfg->pid_file = optarg; break;
        case 'q': cfg->verbosity = 0; break;
        case 'v': cfg->verbosity = 2; break;
        case 'n': cfg->name = optarg; break;
        case 'c': cfg->control = optarg; break;
        case 't': break;
        case 'h': cl->command = CLI_HELP; return 0;
        default: return getopt_error(cl, c, argc, argv, "run");
        }
    }
    if (optind >= argc)
        return usage_err(cl, "run: no COMMAND given (handoff run [OPTIONS] -- COMMAND [ARGS...])");
    cfg->argv = argv + optind;
    if (ready) {
        if (strcmp(ready, "notify") == 0)
            cfg->ready_mode = READY_NOTIFY;
        else if (strcmp(ready, "command") == 0 || strcmp(ready, "exit-command") == 0)
            cfg->ready_mode = READY_COMMAND;
        else if (strcmp(ready, "delay") == 0)
            cfg->ready_mode = READY_DELAY;
        else
            return usage_err(cl, "--ready: \"%.32s\" is not notify, command or delay", ready);
    } else if (cfg->ready_command) {
        cfg->ready_mode = READY_COMMAND;
    }
    if (cfg->ready_mode == READY_COMMAND && !cfg->ready_command)
        return usage_err(cl, "--ready=command needs --ready-command");
    if (cfg->ready_mode == READY_DELAY && !cfg->ready_delay)
        return usage_err(cl, "--ready=delay needs --ready-delay");
    if (cfg->ready_mode != READY_COMMAND && cfg->ready_command)
        return usage_err(cl, "--ready-command is only used with --ready=command");
    if (cfg->rolling && cfg->workers < 2)
        cfg->rolling = false; /* one worker: rolling and all-at-once are the same */
    if (cfg->backoff_max < cfg->backoff_min)
        cfg->backoff_max = cfg->backoff_min;
    return 0;
}

static int parse_client(int argc, char **argv, struct cli *cl, const char *cmd)
{
    int c;

    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+:n:c:t:h", run_opts, NULL)) != -1) {
        switch (c) {
        case 'n': cl->cfg.name = optarg; break;
        case 'c': cl->cfg.control = optarg; break;
        case 't':
            if (parse_secs(cl, "--timeout", optarg, &cl->timeout, false))
                return EXIT_USAGE;
            break;
        case 'h': cl->command = CLI_HELP; return 0;
        case '?':
        case ':': return getopt_error(cl, c, argc, argv, cmd);
        default: return usage_err(cl, "%s takes --name, --control and --timeout only", cmd);
        }
    }
    if (optind < argc)
        return usage_err(cl, "unexpected argument \"%.64s\"", argv[optind]);
    return 0;
}

void cli_defaults(struct cli *cl)
{
    memset(cl, 0, sizeof *cl);
    cl->cfg = (struct config){
        .name = "default",
        .workers = 1,
        .ready_mode = READY_NOTIFY,
        .ready_timeout = 60 * HANDOFF_USEC_PER_SEC,
        .ready_interval = 200 * HANDOFF_USEC_PER_MSEC,
        .stop_signal = SIGTERM,
        .drain_timeout = 30 * HANDOFF_USEC_PER_SEC,
        .max_draining = 3,
        .backoff_min = 100 * HANDOFF_USEC_PER_MSEC,
        .backoff_max = 30 * HANDOFF_USEC_PER_SEC,
        .backoff_reset = 10 * HANDOFF_USEC_PER_SEC,
        .forward = (uint64_t)1 << SIGUSR1 | (uint64_t)1 << SIGUSR2 | (uint64_t)1 << SIGWINCH,
        .verbosity = 1,
    };
}

int cli_parse(int argc, char **argv, struct cli *cl)
{
    const char *cmd;
    int r;

    cl->err[0] = '\0';
    if (argc < 2 || !argv[1])
        return usage_err(cl, "a command is needed: run, reload, status or stop");
    cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        cl->command = CLI_HELP;
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        cl->command = CLI_VERSION;
        return 0;
    }
    /* getopt_long() sees "run ..." with "run" as its argv[0]. */
    if (strcmp(cmd, "run") == 0) {
        cl->command = CLI_RUN;
        r = parse_run(argc - 1, argv + 1, cl);
    } else if (strcmp(cmd, "reload") == 0 || strcmp(cmd, "status") == 0 || strcmp(cmd, "stop") == 0) {
        cl->command = cmd[2] == 'l' ? CLI_RELOAD : cmd[2] == 'a' ? CLI_STATUS : CLI_STOP;
        r = parse_client(argc - 1, argv + 1, cl, cmd);
    } else {
        return usage_err(cl, "unknown command \"%.64s\" (run, reload, status or stop)", cmd);
    }
    if (r != 0 || cl->command == CLI_HELP)
        return r;
    if (!cl->cfg.name || strchr(cl->cfg.name, '/') || !*cl->cfg.name)
        return usage_err(cl, "--name \"%.64s\" must be a plain word", cl->cfg.name ? cl->cfg.name : "");
    return 0;
}

/* NAME=SPEC when NAME is a plain word; otherwise the whole text is SPEC,
 * and the name is the library's default: the spec with ':' and blanks
 * (and any byte outside printable ASCII) as '_'. */
void listen_split(const char *arg, char *name, size_t nlen, const char **spec)
{
    const char *eq = strchr(arg, '=');
    size_t n = eq ? (size_t)(eq - arg) : 0;
    bool word = n > 0 && n < nlen;

    for (size_t i = 0; word && i < n; i++) {
        char ch = arg[i];
        word = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
               ch == '_' || ch == '-' || ch == '.';
    }
    if (word) {
        memcpy(name, arg, n);
        name[n] = '\0';
        *spec = eq + 1;
        return;
    }
    size_t i = 0;
    for (; i + 1 < nlen && arg[i]; i++) {
        unsigned char ch = (unsigned char)arg[i];
        name[i] = ch == ':' || ch <= 0x20 || ch >= 0x7f ? '_' : (char)ch;
    }
    name[i] = '\0';
    *spec = arg;
}
