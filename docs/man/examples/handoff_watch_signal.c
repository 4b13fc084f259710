/* SIGUSR1 as an event (say, to reopen log files), and a hook that runs
 * before the library's own SIGTERM action. The program signals itself. */
#include <handoff.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

static void before_term(handoff_t *h, int signo, void *userdata)
{
    printf("%s: signal %d, %lu connections open\n", (const char *)userdata,
           signo, handoff_conn_count(h));
}

int main(int argc, char **argv)
{
    handoff_options o = HANDOFF_OPTIONS_INIT;
    handoff_event ev;
    handoff_t *h;

    (void)argc;
    o.argv = argv;
    if (handoff_new(&o, &h) < 0)    /* before any thread is started */
        return 1;
    if (handoff_watch_signal(h, SIGUSR1) < 0 ||
        handoff_set_signal_hook(h, SIGTERM, HANDOFF_HOOK_PRE, before_term,
                                "pre-hook") < 0) {
        fprintf(stderr, "%s\n", handoff_errmsg(h));
        return 1;
    }
    handoff_ready(h);

    kill(getpid(), SIGUSR1);
    while (handoff_wait_event(h, &ev, HANDOFF_NO_TIMEOUT) > 0) {
        printf("event %s: %s\n", handoff_event_name(ev.type), ev.message);
        if (ev.type == HANDOFF_EVENT_SIGNAL && ev.signo == SIGUSR1) {
            printf("SIGUSR1 x%u from pid %ld: reopening logs\n", ev.count,
                   (long)ev.pid);
            kill(getpid(), SIGTERM);
        } else if (ev.type == HANDOFF_EVENT_STOP) {
            break;
        }
    }
    handoff_free(h);
    return 0;
}
