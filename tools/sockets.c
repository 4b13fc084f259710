/*
 * sockets.c - the sockets of `handoff run`: --listen through libhandoff
 * (handoff_listen adopts what systemd passed, or binds), then whatever
 * systemd passed that no --listen claimed, each described for the two
 * protocols the workers get.
 */
#include "tool.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static void describe_listener(struct listener *l)
{
    handoff_addr a;
    int r = handoff_addr_from_fd(l->fd, &a);

    (void)snprintf(l->spec, sizeof l->spec, "(not a socket)");
    l->starter[0] = '\0';
    /* A type handoff does not serve (a unix datagram socket) still has an
     * address to show. */
    if (r < 0 && r != -EPROTOTYPE)
        return;
    if (handoff_addr_format(&a, l->spec, sizeof l->spec) < 0) {
        (void)snprintf(l->spec, sizeof l->spec, "(family %d)", a.family);
        return;
    }
    /* Server::Starter keys: "host:port", "[v6]:port", "/path". */
    const char *k = l->spec;
    if (strncmp(k, "udp://", 6) == 0)
        k += 6;
    else if (strncmp(k, "unix:", 5) == 0)
        k += 5;
    (void)snprintf(l->starter, sizeof l->starter, "%s", k);
}

int open_listeners(handoff_t *h, const struct config *cfg, struct listener *ls, int *n)
{
    handoff_listen_options o = HANDOFF_LISTEN_OPTIONS_INIT;
    handoff_inherited_info inh[TOOL_MAX_LISTEN];
    int ninh;

    *n = 0;
    if (!cfg->nonblock)
        o.flags |= HANDOFF_LISTEN_BLOCKING;
    for (int i = 0; i < cfg->nlisten; i++) {
        struct listener *l = &ls[*n];
        const char *spec;
        listen_split(cfg->listen[i], l->name, sizeof l->name, &spec);
        l->fd = handoff_listen(h, l->name, spec, &o);
        if (l->fd < 0) {
            log_err("--listen %s: %s", cfg->listen[i], handoff_errmsg(h));
            return -1;
        }
        describe_listener(l);
        (*n)++;
    }
    /* Sockets systemd passed that no --listen claimed are passed on too,
     * in their order, under their names. */
    ninh = handoff_inherited(h, inh, TOOL_MAX_LISTEN);
    for (int i = 0; i < ninh && i < TOOL_MAX_LISTEN; i++) {
        if (inh[i].claimed || inh[i].fd < 0)
            continue;
        if (*n == TOOL_MAX_LISTEN) {
            log_err("more than %d sockets", TOOL_MAX_LISTEN);
            return -1;
        }
        struct listener *l = &ls[*n];
        (void)snprintf(l->name, sizeof l->name, "%s", inh[i].name);
        l->fd = handoff_take_fd(h, inh[i].name);
        if (l->fd < 0)
            continue;
        l->owned = true;
        describe_listener(l);
        log_info("adopted inherited fd as %s (%s)", l->name, l->spec);
        (*n)++;
    }
    return 0;
}
