/*
 * server.h - the server object (internal to libhandoff-http): its
 * options, listeners, workers and state. server.c owns it (the public
 * handoff_http_server_*() calls); the layers below read its
 * configuration and atomics through their worker's owner pointer.
 */
#ifndef HANDOFF_HTTP_SERVER_H
#define HANDOFF_HTTP_SERVER_H

#include "conn.h"
#include "handoff/http.h"
#include "parse.h"
#include "worker.h"

#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct hs_listener {
    int fd;
    SSL_CTX *ctx; /* NULL: plain HTTP */
    bool h2c;     /* cleartext HTTP/2 with prior knowledge too (h2.h) */
    char *name;   /* the name it is registered under in srv->h when
                     handoff_http_server_listen() made it; NULL otherwise */
};

struct handoff_http_server {
    handoff_t *h;
    handoff_http_options o;   /* with defaults filled in */
    char *health_path;
    size_t health_len;
    hh_limits limits;
    uint64_t tdur[HS_T_COUNT]; /* timeout durations by class */
    struct hs_counter count;

    struct hs_listener *ls;
    size_t nls;
    struct hs_worker *ws;
    unsigned nws;

    bool started;
    bool stopped;
    atomic_int draining;
    atomic_int drain_grace; /* the drain closes idle connections after a grace */
    atomic_int stopping;
    atomic_int lame;
    atomic_uint drain_seq;  /* drains started (a resume allows another) */
    atomic_uint resume_seq; /* resumes */
    atomic_ulong mig_out;    /* connections handed to the successor */
    atomic_ulong mig_failed; /* hand-overs that failed (drained here) */
    char errmsg[256];       /* handoff_http_server_errmsg() */
};

/* handoff_http_server_drain(); grace: idle and new connections are closed
 * after HS_DRAIN_GRACE_USEC (a shutdown, or a drain of unknown reason);
 * without it (an upgrade) they stay open until their next response
 * ("Connection: close"), their own timeout or the hammer. */
int hs_server_drain(handoff_http_server *srv, bool grace);

/* The server a worker serves. */
static inline handoff_http_server *hs_server_of(const struct hs_worker *w)
{
    return w->owner;
}

#endif
