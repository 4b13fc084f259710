/*
 * accept.h - listeners in the workers (internal to libhandoff-http):
 * each worker watches every listener (EPOLLEXCLUSIVE, level-triggered, so
 * one idle worker is woken per new connection), accepts, and hands each
 * connection to the least loaded worker.
 */
#ifndef HANDOFF_HTTP_ACCEPT_H
#define HANDOFF_HTTP_ACCEPT_H

#include "server.h"
#include "worker.h"

#include <stdbool.h>
#include <sys/socket.h>

/* A worker's registration of one listener (its epoll data). */
struct hs_lwatch {
    struct hs_handle h;
    struct hs_worker *w;
    struct hs_listener *l;
};

/* Sets up w's listener handles (one per listener of its server).
 * Returns 0 or -ENOMEM. */
int hs_accept_init(struct hs_worker *w);
void hs_accept_free(struct hs_worker *w);

/* Watches (on) or stops watching every listener in w's epoll. Watching
 * checks the server's drain flag afterwards: a listener is never left
 * watched by a draining server (whose caller may close it). */
void hs_listeners_watch(struct hs_worker *w, bool on);

/* Accepts what is queued on every listener now (the drain, see
 * apply_drain() in server.c). */
void hs_accept_sweep(struct hs_worker *w);

/* Starts serving the connected socket fd on w (a connection accepted
 * from l, or adopted), which the caller has counted and charged to w's
 * load; on failure fd is closed and both are undone. */
void hs_accept_start(struct hs_worker *w, struct hs_listener *l, int fd,
                     const struct sockaddr *peer, socklen_t peer_len);

#endif
