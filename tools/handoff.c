/*
 * handoff.c - main() of the handoff command (the parser is cli.c).
 *
 *   handoff run [OPTIONS] -- COMMAND [ARGS...]   supervise COMMAND
 *   handoff reload|status|stop [OPTIONS]         talk to a running supervisor
 *
 * The text of usage() is the reference for docs/handoff.1; keep both in
 * step.
 */
#include "tool.h"

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
    "      --preload             for a server that binds its own sockets: preload\n"
    "                            libhandoff-preload.so, which gives it the supervisor's\n"
    "                            socket when it binds a --listen address\n"
    "      --preload-depth N     programs the server starts that keep the library,\n"
    "                            in levels (default 0: none; implies --preload)\n"
    "  -w, --workers N           processes per generation (default 1)\n"
    "      --rolling             reload one worker at a time\n"
    "      --ready MODE          notify (default), command or delay\n"
    "      --ready-command CMD   shell command run until it exits 0 (--ready=command)\n"
    "      --ready-delay SEC     ready SEC after start (--ready=delay)\n"
    "      --ready-interval SEC  pause between --ready-command runs (default 0.2)\n"
    "      --ready-timeout SEC   a generation not ready by then fails (default 60)\n"
    "      --notify-access WHO   whose READY=1 counts: main (default: the worker's\n"
    "                            own pid) or all (also processes it started)\n"
    "      --stop-signal SIG     graceful stop signal (default TERM)\n"
    "      --drain-timeout SEC   SIGKILL a stopping generation after SEC (default 30,\n"
    "                            0 = never)\n"
    "      --max-draining N      generations draining at once (default 3); a reload\n"
    "                            waits up to 1 s for one to finish, then kills the\n"
    "                            oldest\n"
    "      --forward SIGS        signals passed to the current generation's workers\n"
    "                            that handle them (default USR1,USR2,WINCH; \"none\")\n"
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
    "one kills at once); the --forward signals go to the current generation's\n"
    "workers that handle them; other signals are logged and ignored.\n"
    "SEC accepts fractions and the suffixes ms, s, m.\n"
    "\n"
    "Exit status: 0 success; 1 failure (reload failed, COMMAND cannot start);\n"
    "2 usage; 3 cannot connect to the control socket; 4 refused by the\n"
    "supervisor; 5 timed out. run exits with the status of its last generation\n"
    "(128+N if it was killed by signal N).\n";

int main(int argc, char **argv)
{
    struct cli cl;
    const char *e;
    int r;

    cli_defaults(&cl);
    if ((e = getenv("HANDOFF_NAME")) && *e)
        cl.cfg.name = e;
    if ((e = getenv("HANDOFF_CONTROL")) && *e)
        cl.cfg.control = e;
    if (cli_parse(argc, argv, &cl) != 0) {
        (void)fprintf(stderr, "handoff: %s\nTry 'handoff --help'.\n", cl.err);
        return EXIT_USAGE;
    }
    switch (cl.command) {
    case CLI_HELP:
        (void)fputs(usage_text, stdout);
        return EXIT_OK;
    case CLI_VERSION:
        (void)printf("handoff %d.%d.%d\n", HANDOFF_VERSION_MAJOR, HANDOFF_VERSION_MINOR,
                     HANDOFF_VERSION_PATCH);
        return EXIT_OK;
    case CLI_RUN:
        tool_verbosity = cl.cfg.verbosity;
        return sup_run(&cl.cfg);
    default:
        break;
    }

    char path[108];
    if (cl.cfg.control) {
        (void)snprintf(path, sizeof path, "%s", cl.cfg.control);
    } else if ((r = default_control_path(cl.cfg.name, path, sizeof path, false)) < 0) {
        (void)fprintf(stderr, "handoff: no usable control socket directory for \"%s\": %s\n", cl.cfg.name,
                      strerror(-r));
        return EXIT_NOCONNECT;
    }
    return control_client(path, argv[1], cl.timeout);
}
