/* Creates the handle with a few options, tells which generation this is,
 * shows handoff_errmsg() after a failed call, and frees the handle. */
#include <handoff.h>
#include <stdio.h>
#include <string.h>

static void log_line(void *userdata, int level, const char *msg)
{
    fprintf(userdata, "log(%d): %s\n", level, msg);
}

int main(int argc, char **argv)
{
    handoff_options o = HANDOFF_OPTIONS_INIT;
    handoff_t *h;
    int r;

    (void)argc;
    o.argv = argv;                               /* what an upgrade runs */
    o.drain_timeout_usec = 10 * HANDOFF_USEC_PER_SEC;
    o.log = log_line;
    o.log_userdata = stderr;
    o.log_level = HANDOFF_LOG_INFO;
    r = handoff_new(&o, &h);                     /* first thing in main() */
    if (r < 0) {
        fprintf(stderr, "handoff_new: %s\n", strerror(-r));
        return 1;
    }
    printf("generation %u (%s)\n", handoff_generation(h),
           handoff_has_parent(h) ? "started by an upgrade" : "first start");

    r = handoff_listen(h, "web", "www.example.com:80", NULL);
    if (r < 0)
        printf("handoff_listen: %s: %s\n", strerror(-r), handoff_errmsg(h));

    h = handoff_free(h);                         /* returns NULL */
    return 0;
}
