/* A poll() loop around the event fd. The program sends itself SIGTERM,
 * as "systemctl stop" would, and prints the events that follow: DRAIN
 * (reason SHUTDOWN), then STOP (reason DRAINED: nothing was open). */
#include <handoff.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    handoff_options o = HANDOFF_OPTIONS_INIT;
    handoff_event ev;
    handoff_t *h;
    uint64_t t0 = handoff_now_usec();
    int r;

    (void)argc;
    o.argv = argv;
    if (handoff_new(&o, &h) < 0)
        return 1;
    handoff_ready(h);
    kill(getpid(), SIGTERM);    /* blocked: it waits on the event fd */

    struct pollfd p = {.fd = handoff_event_fd(h), .events = POLLIN};
    for (;;) {
        if (poll(&p, 1, -1) < 0 && errno != EINTR)
            break;
        while ((r = handoff_next_event(h, &ev)) > 0) {
            printf("+%llu us %s (reason %d): %s\n",
                   (unsigned long long)(handoff_now_usec() - t0),
                   handoff_event_name(ev.type), ev.reason, ev.message);
            if (ev.type == HANDOFF_EVENT_STOP) {
                handoff_free(h);
                return 0;
            }
        }
        if (r < 0) {
            fprintf(stderr, "handoff_next_event: %s\n", strerror(-r));
            break;
        }
    }
    handoff_free(h);
    return 1;
}
