/* Listens on an ephemeral TCP port under the name "web" (a later
 * generation inherits the same port through the name), registers another
 * fd for hand-over, and lists what was inherited. */
#include <handoff.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    handoff_options o = HANDOFF_OPTIONS_INIT;
    handoff_listen_options lo = HANDOFF_LISTEN_OPTIONS_INIT;
    handoff_inherited_info inh[8];
    handoff_addr a;
    handoff_t *h;
    char buf[128];
    int fd, state, n;

    (void)argc;
    o.argv = argv;
    if (handoff_new(&o, &h) < 0)
        return 1;

    lo.backlog = 1024;
    fd = handoff_listen(h, "web", "127.0.0.1:0", &lo);
    if (fd < 0) {
        fprintf(stderr, "%s\n", handoff_errmsg(h));
        return 1;
    }
    /* The bound address, formatted as a spec handoff_listen() accepts. */
    if (handoff_addr_from_fd(fd, &a) == 0 && handoff_addr_format(&a, buf, sizeof buf) > 0)
        printf("\"web\" is fd %d on %s\n", fd, buf);

    /* Any other fd can travel too: take it from the previous generation,
     * or open it the first time, then register it for the next one. */
    state = handoff_take_fd(h, "state");
    if (state < 0)
        state = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (state >= 0 && handoff_add_fd(h, "state", state) == 0)
        close(state);                    /* the handle keeps a duplicate */

    n = handoff_inherited(h, inh, 8);
    printf("%d fds inherited\n", n);
    for (int i = 0; i < n && i < 8; i++)
        printf("  fd %d \"%s\"%s\n", inh[i].fd, inh[i].name,
               inh[i].claimed ? " (claimed)" : "");

    if (handoff_addr_parse("[::1]:80", &a, buf, sizeof buf) == 0)
        printf("[::1]:80 is %s\n", a.kind == HANDOFF_ADDR_TCP ? "TCP" : "?");
    handoff_remove(h, "state");
    handoff_free(h);                     /* closes "web" */
    return 0;
}
