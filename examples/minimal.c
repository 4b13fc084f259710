/* The README's 20-line server: says "hello" to each connection, restarts
 * on SIGHUP with no refused connection, drains on SIGTERM. */
#include <handoff.h>
#include <poll.h>
#include <unistd.h>

int main(int argc, char **argv) {
    (void)argc;
    handoff_options o = HANDOFF_OPTIONS_INIT;
    o.argv = argv;                                   /* what SIGHUP re-executes */
    handoff_t *h;
    if (handoff_new(&o, &h) < 0) return 1;           /* first thing in main() */
    int lfd = handoff_listen(h, "web", "127.0.0.1:8080", NULL); /* inherited or bound */
    if (lfd < 0) return 1;
    handoff_ready(h);                                /* the previous generation drains */
    struct pollfd p[2] = {{lfd, POLLIN, 0}, {handoff_event_fd(h), POLLIN, 0}};
    for (handoff_event ev;;) {
        poll(p, 2, -1);
        int c = p[0].revents ? handoff_accept(h, lfd, 0) : -1;
        if (c >= 0) { (void)!write(c, "hello\n", 6); close(c); handoff_conn_end(h); }
        while (handoff_next_event(h, &ev) > 0) {
            if (ev.type == HANDOFF_EVENT_DRAIN) p[0].fd = -1;     /* stop accepting */
            if (ev.type == HANDOFF_EVENT_STOP) { handoff_free(h); return 0; }
        }
    }
}
