/*
 * handoff.c - main() of the handoff command: the command line.
 *
 *   handoff run [OPTIONS] -- COMMAND [ARGS...]   supervise COMMAND
 *   handoff reload|status|stop [OPTIONS]         talk to a running supervisor
 *
 * The text of usage() is the reference for docs/handoff.1; keep both in
 * step.
 */
#include "tool.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: handoff run [OPTIONS] [--] COMMAND [ARGS...]\n"
    "       handoff reload [--name NAME | --control PATH] [--timeout SEC]\n"
    "       handoff status [--name NAME | --control PATH]\n"
    "       handoff stop   [--name NAME | --control PATH]\n"
    "       handoff --help | --version\n"
    "\n"
    "`handoff run` keeps the listening sockets and a stable pid, and runs COMMAND\n"
    "as generations: a reload starts a new one on the same sockets, waits until it\n"
    "is ready, then stops the old one gracefully. COMMAND gets the sockets at fd 3\n"
    "and up, described in LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES (systemd) and\n"
    "SERVER_STARTER_PORT (Server::Starter), and a NOTIFY_SOCKET for READY=1.\n"
    "\n"
    "Options of run:\n"
    "  -l, --listen [NAME=]ADDR  listening socket, repeatable: HOST:PORT, [V6]:PORT,\n"
    "                            udp://HOST:PORT, unix:/PATH, unix:@NAME; sockets\n"
    "                            passed by systemd are adopted and passed on too\n"
    "      --nonblock            create sockets with O_NONBLOCK (default: blocking)\n"
    "  -w, --workers N           processes per generation (default 1)\n"
    "      --rolling             reload one worker at a time\n"
    "      --ready MODE          notify (default), command or delay\n"
    "      --ready-command CMD   shell command run until it exits 0 (--ready=command)\n"
    "      --ready-delay SEC     ready SEC after start (--ready=delay)\n"
    "      --ready-interval SEC  pause between --ready-command runs (default 0.2)\n"
    "      --ready-timeout SEC   a generation not ready by then fails (default 60)\n"
    "      --stop-signal SIG     graceful stop signal (default TERM)\n"
    "      --drain-timeout SEC   SIGKILL a stopping generation after SEC (default 30,\n"
    "                            0 = never)\n"
    "      --max-draining N      generations draining at once; the oldest is killed\n"
    "                            beyond that (default 3)\n"
    "      --forward SIGS        signals passed to the current generation\n"
    "                            (default USR1,USR2,WINCH; \"none\")\n"
    "      --restart-delay SEC   first delay before restarting a crashed worker,\n"
    "                            doubled at each crash in a row (default 0.1)\n"
    "      --restart-delay-max SEC  cap of that delay (default 30)\n"
    "      --restart-reset SEC   a worker up that long resets the delay (default 10)\n"
    "  -p, --pid-file PATH       write the supervisor's pid (it never changes)\n"
    "  -q, --quiet               log warnings and errors only\n"
    "  -v, --verbose             log details\n"
    "\n"
    "Options of all commands:\n"
    "  -n, --name NAME           instance name (default \"default\", or $HANDOFF_NAME)\n"
    "  -c, --control PATH        control socket (default $HANDOFF_CONTROL, else\n"
    "                            $XDG_RUNTIME_DIR/handoff.NAME.sock, else\n"
    "                            /run/handoff/NAME.sock as root or\n"
    "                            /tmp/handoff-UID/NAME.sock)\n"
    "  -t, --timeout SEC         reload/status/stop: give up waiting after SEC\n"
    "\n"
    "Signals to run: HUP reloads; TERM, INT and QUIT stop gracefully (a second\n"
    "one kills at once); the --forward signals go to the current generation.\n"
    "SEC accepts fractions and the suffixes ms, s, m.\n"
    "\n"
    "Exit status: 0 success; 1 failure (reload failed, COMMAND cannot start);\n"
    "2 usage; 3 cannot connect to the control socket; 4 refused by the\n"
    "supervisor; 5 timed out. run exits with the status of its last generation\n"
    "(128+N if it was killed by signal N).\n";

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
    va_list ap;
    (void)fputs("handoff: ", stderr);
    va_start(ap, fmt);
    (void)vfprintf(stderr, fmt, ap);
    va_end(ap);
    (void)fputs("\nTry 'handoff --help'.\n", stderr);
    return EXIT_USAGE;
}

static int parse_secs(const char *opt, const char *arg, uint64_t *out, bool zero_never)
{
    if (parse_duration(arg, out) < 0) {
        (void)fprintf(stderr, "handoff: %s wants a duration (e.g. 1.5, 250ms, 2m), not \"%s\"\n", opt, arg);
        return -1;
    }
    if (*out == 0 && zero_never)
        *out = HANDOFF_NO_TIMEOUT;
    return 0;
}

static int parse_int(const char *opt, const char *arg, int min, int max, int *out)
{
    char *end;
    long v = strtol(arg, &end, 10);
    if (*arg == '\0' || *end || v < min || v > max) {
        (void)fprintf(stderr, "handoff: %s wants a number from %d to %d, not \"%s\"\n", opt, min, max, arg);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_forward(const char *arg, uint64_t *out)
{
    char buf[256], *save = NULL;

    *out = 0;
    if (strcmp(arg, "none") == 0 || !*arg)
        return 0;
    (void)snprintf(buf, sizeof buf, "%s", arg);
    for (char *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        int s = parse_signal(t);
        if (s <= 0 || s == SIGKILL || s == SIGSTOP || s == SIGCHLD || s == SIGHUP || s == SIGTERM ||
            s == SIGINT || s == SIGQUIT || s == SIGPIPE) {
            (void)fprintf(stderr, "handoff: --forward: cannot forward \"%s\"\n", t);
            return -1;
        }
        *out |= (uint64_t)1 << s;
    }
    return 0;
}

enum {
    OPT_NONBLOCK = 256, OPT_ROLLING, OPT_READY, OPT_READY_COMMAND, OPT_READY_DELAY,
    OPT_READY_INTERVAL, OPT_READY_TIMEOUT, OPT_STOP_SIGNAL, OPT_DRAIN_TIMEOUT, OPT_MAX_DRAINING,
    OPT_FORWARD, OPT_RESTART_DELAY, OPT_RESTART_DELAY_MAX, OPT_RESTART_RESET
};

static const struct option run_opts[] = {
    {"listen", required_argument, NULL, 'l'},
    {"nonblock", no_argument, NULL, OPT_NONBLOCK},
    {"workers", required_argument, NULL, 'w'},
    {"rolling", no_argument, NULL, OPT_ROLLING},
    {"ready", required_argument, NULL, OPT_READY},
    {"ready-command", required_argument, NULL, OPT_READY_COMMAND},
    {"ready-delay", required_argument, NULL, OPT_READY_DELAY},
    {"ready-interval", required_argument, NULL, OPT_READY_INTERVAL},
    {"ready-timeout", required_argument, NULL, OPT_READY_TIMEOUT},
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

static int cmd_run(int argc, char **argv, struct config *cfg)
{
    const char *ready = NULL;
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "+l:w:p:qvn:c:t:h", run_opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            if (cfg->nlisten == TOOL_MAX_LISTEN)
                return usage_error("at most %d --listen", TOOL_MAX_LISTEN);
            cfg->listen[cfg->nlisten++] = optarg;
            break;
        case OPT_NONBLOCK: cfg->nonblock = true; break;
        case 'w':
            if (parse_int("--workers", optarg, 1, TOOL_MAX_WORKERS, &cfg->workers) < 0)
                return EXIT_USAGE;
            break;
        case OPT_ROLLING: cfg->rolling = true; break;
        case OPT_READY: ready = optarg; break;
        case OPT_READY_COMMAND: cfg->ready_command = optarg; break;
        case OPT_READY_DELAY:
            if (parse_secs("--ready-delay", optarg, &cfg->ready_delay, false) < 0)
                return EXIT_USAGE;
            if (!ready)
                ready = "delay";
            break;
        case OPT_READY_INTERVAL:
            if (parse_secs("--ready-interval", optarg, &cfg->ready_interval, false) < 0)
                return EXIT_USAGE;
            break;
        case OPT_READY_TIMEOUT:
            if (parse_secs("--ready-timeout", optarg, &cfg->ready_timeout, false) < 0 || !cfg->ready_timeout)
                return usage_error("--ready-timeout must be > 0, not \"%s\"", optarg);
            break;
        case OPT_STOP_SIGNAL:
            cfg->stop_signal = parse_signal(optarg);
            if (cfg->stop_signal <= 0 || cfg->stop_signal == SIGSTOP)
                return usage_error("--stop-signal: unknown signal \"%s\"", optarg);
            break;
        case OPT_DRAIN_TIMEOUT:
            if (parse_secs("--drain-timeout", optarg, &cfg->drain_timeout, true) < 0)
                return EXIT_USAGE;
            break;
        case OPT_MAX_DRAINING:
            if (parse_int("--max-draining", optarg, 1, 64, &cfg->max_draining) < 0)
                return EXIT_USAGE;
            break;
        case OPT_FORWARD:
            if (parse_forward(optarg, &cfg->forward) < 0)
                return EXIT_USAGE;
            break;
        case OPT_RESTART_DELAY:
            if (parse_secs("--restart-delay", optarg, &cfg->backoff_min, false) < 0)
                return EXIT_USAGE;
            break;
        case OPT_RESTART_DELAY_MAX:
            if (parse_secs("--restart-delay-max", optarg, &cfg->backoff_max, false) < 0)
                return EXIT_USAGE;
            break;
        case OPT_RESTART_RESET:
            if (parse_secs("--restart-reset", optarg, &cfg->backoff_reset, false) < 0)
                return EXIT_USAGE;
            break;
        case 'p': cfg->pid_file = optarg; break;
        case 'q': cfg->verbosity = 0; break;
        case 'v': cfg->verbosity = 2; break;
        case 'n': cfg->name = optarg; break;
        case 'c': cfg->control = optarg; break;
        case 't': break;
        case 'h': (void)fputs(usage_text, stdout); return -EXIT_OK - 1;
        default: (void)fputs("Try 'handoff --help'.\n", stderr); return EXIT_USAGE;
        }
    }
    if (optind >= argc)
        return usage_error("run: no COMMAND given%s", " (handoff run [OPTIONS] -- COMMAND [ARGS...])");
    cfg->argv = argv + optind;
    if (ready) {
        if (strcmp(ready, "notify") == 0)
            cfg->ready_mode = READY_NOTIFY;
        else if (strcmp(ready, "command") == 0 || strcmp(ready, "exit-command") == 0)
            cfg->ready_mode = READY_COMMAND;
        else if (strcmp(ready, "delay") == 0)
            cfg->ready_mode = READY_DELAY;
        else
            return usage_error("--ready: \"%s\" is not notify, command or delay", ready);
    } else if (cfg->ready_command) {
        cfg->ready_mode = READY_COMMAND;
    }
    if (cfg->ready_mode == READY_COMMAND && !cfg->ready_command)
        return usage_error("--ready=command needs --ready-command");
    if (cfg->ready_mode == READY_DELAY && !cfg->ready_delay)
        return usage_error("--ready=delay needs --ready-delay");
    if (cfg->ready_mode != READY_COMMAND && cfg->ready_command)
        return usage_error("--ready-command is only used with --ready=command");
    if (cfg->rolling && cfg->workers < 2)
        cfg->rolling = false; /* one worker: rolling and all-at-once are the same */
    if (cfg->backoff_max < cfg->backoff_min)
        cfg->backoff_max = cfg->backoff_min;
    return 0;
}

static int cmd_client(int argc, char **argv, const char *cmd, const char **name, const char **control,
                      uint64_t *timeout)
{
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "+n:c:t:h", run_opts, NULL)) != -1) {
        switch (c) {
        case 'n': *name = optarg; break;
        case 'c': *control = optarg; break;
        case 't':
            if (parse_secs("--timeout", optarg, timeout, false) < 0)
                return EXIT_USAGE;
            break;
        case 'h': (void)fputs(usage_text, stdout); return -EXIT_OK - 1;
        default:
            (void)fprintf(stderr, "handoff: %s takes --name, --control and --timeout only\n", cmd);
            return EXIT_USAGE;
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument \"%s\"", argv[optind]);
    return 0;
}

int main(int argc, char **argv)
{
    struct config cfg = {
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
    char cmd[64];
    uint64_t timeout = 0;
    int r;

    if (getenv("HANDOFF_NAME") && *getenv("HANDOFF_NAME"))
        cfg.name = getenv("HANDOFF_NAME");
    if (getenv("HANDOFF_CONTROL") && *getenv("HANDOFF_CONTROL"))
        cfg.control = getenv("HANDOFF_CONTROL");
    if (argc < 2)
        return usage_error("a command is needed: run, reload, status or stop");
    (void)snprintf(cmd, sizeof cmd, "%s", argv[1]);
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        (void)fputs(usage_text, stdout);
        return EXIT_OK;
    }
    if (strcmp(cmd, "--version") == 0) {
        (void)printf("handoff %d.%d.%d\n", HANDOFF_VERSION_MAJOR, HANDOFF_VERSION_MINOR,
                     HANDOFF_VERSION_PATCH);
        return EXIT_OK;
    }
    /* getopt names argv[0] in its messages: "handoff run: ..." */
    char prog[80];
    (void)snprintf(prog, sizeof prog, "handoff %s", cmd);
    argv[1] = prog;
    if (strcmp(cmd, "run") == 0) {
        r = cmd_run(argc - 1, argv + 1, &cfg);
    } else if (strcmp(cmd, "reload") == 0 || strcmp(cmd, "status") == 0 || strcmp(cmd, "stop") == 0) {
        r = cmd_client(argc - 1, argv + 1, cmd, &cfg.name, &cfg.control, &timeout);
    } else {
        return usage_error("unknown command \"%s\" (run, reload, status or stop)", cmd);
    }
    if (r == -EXIT_OK - 1)
        return EXIT_OK; /* --help */
    if (r != 0)
        return r;
    if (strchr(cfg.name, '/') || !*cfg.name)
        return usage_error("--name \"%s\" must be a plain word", cfg.name);
    tool_verbosity = cfg.verbosity;
    if (strcmp(cmd, "run") == 0)
        return sup_run(&cfg);

    char path[108];
    if (cfg.control) {
        (void)snprintf(path, sizeof path, "%s", cfg.control);
    } else if ((r = default_control_path(cfg.name, path, sizeof path, false)) < 0) {
        (void)fprintf(stderr, "handoff: no usable control socket directory for \"%s\": %s\n", cfg.name,
                      strerror(-r));
        return EXIT_NOCONNECT;
    }
    return control_client(path, cmd, timeout);
}
