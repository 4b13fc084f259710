/* A TCP server that says hello to each client. SIGHUP restarts it with
 * no refused connection (the new binary inherits the socket, this
 * process drains), SIGTERM stops it gracefully, a second SIGTERM at once.
 *
 *   ./hello & curl -s telnet://127.0.0.1:8080 </dev/null; kill -HUP %1 */
#include <handoff.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    handoff_options o = HANDOFF_OPTIONS_INIT;
    handoff_event ev;
    handoff_t *h;
    int lfd, r;

    (void)argc;
    o.argv = argv;                       /* what SIGHUP re-executes */
    o.pid_file = "/tmp/hello.pid";       /* always names the serving pid */
    r = handoff_new(&o, &h);             /* first thing in main() */
    if (r < 0) {
        fprintf(stderr, "handoff_new: %s\n", strerror(-r));
        return 1;
    }
    lfd = handoff_listen(h, "web", "127.0.0.1:8080", NULL);
    if (lfd < 0) {                       /* inherited, or bound now */
        fprintf(stderr, "%s\n", handoff_errmsg(h));
        return 1;
    }
    handoff_ready(h);                    /* a previous generation drains */

    struct pollfd p[2] = {{.fd = lfd, .events = POLLIN},
                          {.fd = handoff_event_fd(h), .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if (p[0].revents & POLLIN) {
            int c = handoff_accept(h, lfd, 0);  /* counted for the drain */
            if (c >= 0) {
                (void)!write(c, "hello\n", 6);
                close(c);
                handoff_conn_end(h);
            }
        }
        while (handoff_next_event(h, &ev) > 0) {
            if (ev.type == HANDOFF_EVENT_DRAIN)
                p[0].fd = -1;            /* stop accepting; keep the fd */
            else if (ev.type == HANDOFF_EVENT_STOP)
                goto out;
            else if (ev.type == HANDOFF_EVENT_UPGRADE_FAILED)
                fprintf(stderr, "%s\n", ev.message);
        }
    }
out:
    handoff_free(h);
    return 0;
}
