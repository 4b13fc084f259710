/* Upgrades itself once. Generation 1 listens on an ephemeral port and
 * calls handoff_upgrade(), as SIGHUP would; generation 2 inherits the
 * same socket through its name, declares itself ready (so generation 1
 * drains and exits), then shuts itself down. */
#include <handoff.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    handoff_options o = HANDOFF_OPTIONS_INIT;
    handoff_event ev;
    handoff_t *h;
    unsigned gen;
    int fd, r;

    (void)argc;
    o.argv = argv;
    o.upgrade_timeout_usec = 10 * HANDOFF_USEC_PER_SEC;
    if (handoff_new(&o, &h) < 0)
        return 1;
    gen = handoff_generation(h);
    fd = handoff_listen(h, "web", "127.0.0.1:0", NULL);
    if (fd < 0) {
        fprintf(stderr, "%s\n", handoff_errmsg(h));
        return 1;
    }
    if (handoff_ready(h) < 0)
        return 1;
    printf("generation %u (pid %ld) serving on fd %d\n", gen,
           (long)getpid(), fd);

    if (gen == 1) {
        r = handoff_upgrade(h);
        if (r < 0) {
            fprintf(stderr, "upgrade: %s: %s\n", strerror(-r),
                    handoff_errmsg(h));
            return 1;
        }
    } else {
        handoff_shutdown(h, 0);          /* as SIGTERM would */
    }
    /* A real server watches the event fd in its loop instead. */
    while (handoff_wait_event(h, &ev, HANDOFF_NO_TIMEOUT) > 0) {
        printf("generation %u: %s: %s\n", gen, handoff_event_name(ev.type),
               ev.message);
        if (ev.type == HANDOFF_EVENT_UPGRADE_FAILED ||
            ev.type == HANDOFF_EVENT_STOP)
            break;
    }
    handoff_free(h);
    return 0;
}
