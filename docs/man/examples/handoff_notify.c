/* Status lines for systemd, and a pid file written by hand. Under a
 * Type=notify unit the messages reach systemd; without NOTIFY_SOCKET in
 * the environment handoff_notify() returns 0 and sends nothing. */
#include <handoff.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    const char *pidfile = argc > 1 ? argv[1] : "handoff_notify-example.pid";
    handoff_options o = HANDOFF_OPTIONS_INIT;
    handoff_t *h;
    int r;

    o.argv = argv;
    if (handoff_new(&o, &h) < 0)
        return 1;

    r = handoff_notify(h, "STATUS=Loading the configuration");
    printf("STATUS: %s\n", r > 0 ? "sent" : r == 0 ? "no NOTIFY_SOCKET"
                                                   : strerror(-r));
    /* handoff_options.pid_file does this at the right moments; this is
     * the same atomic write, for a file of the application's own. */
    r = handoff_pidfile_write(pidfile, getpid());
    printf("%s: %s\n", pidfile, r == 0 ? "written" : strerror(-r));

    handoff_ready(h);                    /* READY=1 */
    handoff_notify(h, "STATUS=Serving");
    unlink(pidfile);
    handoff_free(h);
    return 0;
}
