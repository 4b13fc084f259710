/* Hands a connection to the next generation. Generation 1 serves one end
 * of a connected socket pair; the other end is the client, which sends
 * "ping" and is passed on with handoff_add_fd() so that it outlives the
 * process. Generation 1 upgrades and, once generation 2 is ready,
 * migrates the connection with a state blob. Generation 2 adopts it,
 * reads the ping that waited in the kernel, answers "pong" and shuts
 * down. Generation 1 exits 0 if the client got the answer. */
#include <handoff.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    handoff_options o = HANDOFF_OPTIONS_INIT;
    handoff_event ev;
    handoff_adopted ad;
    handoff_t *h;
    char buf[16] = "";
    int sv[2], conn = -1, ok = 0;
    unsigned gen;

    (void)argc;
    o.argv = argv;
    o.flags = HANDOFF_MIGRATE;
    o.upgrade_timeout_usec = 10 * HANDOFF_USEC_PER_SEC;
    if (handoff_new(&o, &h) < 0)
        return 1;
    gen = handoff_generation(h);
    if (gen == 1) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 ||
            write(sv[1], "ping", 4) != 4 || handoff_add_fd(h, "client", sv[1]) < 0)
            return 1;
        conn = sv[0];
        handoff_conn_begin(h);           /* as handoff_accept() counts */
    }
    if (handoff_ready(h) < 0 || (gen == 1 && handoff_upgrade(h) < 0))
        return 1;
    /* A real server watches the event fd in its loop instead. */
    while (handoff_wait_event(h, &ev, HANDOFF_NO_TIMEOUT) > 0) {
        printf("generation %u: %s: %s\n", gen, handoff_event_name(ev.type),
               ev.message);
        if (ev.type == HANDOFF_EVENT_DRAIN && conn >= 0) {
            const char state[] = "requests=1";
            /* Idle, output flushed, no longer in any epoll set. */
            if (handoff_successor_adopts(h) &&
                handoff_migrate(h, conn, state, sizeof state - 1) == 0)
                printf("generation 1: connection handed over\n");
            else
                close(conn);             /* drain it as without migration */
            conn = -1;
            handoff_conn_end(h);
        } else if (ev.type == HANDOFF_EVENT_ADOPT) {
            while (handoff_adopt(h, &ad) == 1) {
                ssize_t n = read(ad.fd, buf, sizeof buf - 1);
                printf("generation %u: adopted fd %d (state \"%.*s\"%s), "
                       "read \"%.*s\"\n", gen, ad.fd, (int)ad.len,
                       (const char *)ad.state,
                       ad.returned ? ", returned" : "", n > 0 ? (int)n : 0, buf);
                if (write(ad.fd, "pong", 4) != 4)
                    perror("write");
                close(ad.fd);
                handoff_conn_end(h);
            }
            handoff_shutdown(h, 0);      /* as SIGTERM would */
        } else if (ev.type == HANDOFF_EVENT_UPGRADE_FAILED ||
                   ev.type == HANDOFF_EVENT_STOP) {
            break;
        }
    }
    if (gen == 1) {
        /* Generation 1 passed the client on but kept its own copy. */
        struct pollfd p = {.fd = sv[1], .events = POLLIN};
        ssize_t n = poll(&p, 1, 10000) == 1 ? read(sv[1], buf, 4) : -1;
        ok = n == 4 && memcmp(buf, "pong", 4) == 0;
        printf("generation 1: the client %s\n", ok ? "got pong" : "got no answer");
    }
    handoff_free(h);
    return gen == 1 && !ok;
}
