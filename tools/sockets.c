/*
 * sockets.c - the sockets of `handoff run`: --listen through libhandoff
 * (handoff_listen adopts what systemd passed, or binds), then whatever
 * systemd passed that no --listen claimed, each described for the two
 * protocols the workers get.
 */
#include "supervisor.h"

#include <string.h>
#include <stdio.h>
#include <sys/socket.h>

static void describe_listener(struct listener *l)
{
    struct sockaddr_storage ss = {0};
    socklen_t slen = sizeof ss;
    int type = 0;
    socklen_t tlen = sizeof type;
    handoff_addr a;

    (void)snprintf(l->spec, sizeof l->spec, "(not a socket)");
    l->starter[0] = '\0';
    if (getsockopt(l->fd, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0 ||
        getsockname(l->fd, (struct sockaddr *)&ss, &slen) < 0 || slen > sizeof a.sa.raw)
        return;
    memset(&a, 0, sizeof a);
    memcpy(a.sa.raw, &ss, slen);
    a.len = slen;
    a.family = ss.ss_family;
    a.socktype = type;
    a.kind = ss.ss_family == AF_UNIX ? HANDOFF_ADDR_UNIX : type == SOCK_DGRAM ? HANDOFF_ADDR_UDP : HANDOFF_ADDR_TCP;
    if (handoff_addr_format(&a, l->spec, sizeof l->spec) < 0) {
        (void)snprintf(l->spec, sizeof l->spec, "(family %d)", ss.ss_family);
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

int open_listeners(bool nonblock)
{
    handoff_listen_options o = HANDOFF_LISTEN_OPTIONS_INIT;
    handoff_inherited_info inh[TOOL_MAX_LISTEN];
    int n;

    if (!nonblock)
        o.flags |= HANDOFF_LISTEN_BLOCKING;
    for (int i = 0; i < S.cfg->nlisten; i++) {
        struct listener *l = &S.ls[S.nls];
        const char *spec;
        listen_split(S.cfg->listen[i], l->name, sizeof l->name, &spec);
        l->fd = handoff_listen(S.h, l->name, spec, &o);
        if (l->fd < 0) {
            log_err("--listen %s: %s", S.cfg->listen[i], handoff_errmsg(S.h));
            return -1;
        }
        describe_listener(l);
        S.nls++;
    }
    /* Sockets systemd passed that no --listen claimed are passed on too,
     * in their order, under their names. */
    n = handoff_inherited(S.h, inh, TOOL_MAX_LISTEN);
    for (int i = 0; i < n && i < TOOL_MAX_LISTEN; i++) {
        if (inh[i].claimed || inh[i].fd < 0)
            continue;
        if (S.nls == TOOL_MAX_LISTEN) {
            log_err("more than %d sockets", TOOL_MAX_LISTEN);
            return -1;
        }
        struct listener *l = &S.ls[S.nls];
        (void)snprintf(l->name, sizeof l->name, "%s", inh[i].name);
        l->fd = handoff_take_fd(S.h, inh[i].name);
        if (l->fd < 0)
            continue;
        l->owned = true;
        describe_listener(l);
        log_info("adopted inherited fd as %s (%s)", l->name, l->spec);
        S.nls++;
    }
    return 0;
}

