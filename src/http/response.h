/*
 * response.h - requests and responses as the application sees them
 * (internal to libhandoff-http), whatever protocol carries them: a
 * protocol fills a handoff_http_request, runs the handler with
 * hs_res_run(), and turns what the application put in the response into
 * bytes of its own framing when its connection is called back (its
 * handle's run or queued callback).
 *
 * Who touches what. A response is built by its owner (the handler on the
 * worker thread, or whichever thread it was handed to) in the a_* fields;
 * the protocol never writes a_* except to take stream data. While the
 * handler runs, and when the owner is the worker thread itself, nothing
 * else can run concurrently, so no lock is taken: the fast path (a
 * handler that answers at once) is lock-free. Once the handler has
 * returned without ending the response (async), another thread may own
 * it: its write() and end() take the worker's mutex, queue the connection
 * and wake the worker through its eventfd, and the protocol reads a_*
 * under the same mutex.
 */
#ifndef HANDOFF_HTTP_RESPONSE_H
#define HANDOFF_HTTP_RESPONSE_H

#include "buf.h"
#include "conn.h"
#include "handoff/http.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct handoff_http_response {
    struct hs_conn *c;
    void *stream;                      /* the protocol's (HTTP/1.1: its block) */
    const handoff_http_request *req;   /* the request it answers */
    /* Written by the application side (the response's owner). When the
     * owner is not the worker thread, a_body, a_streaming and a_ended are
     * only touched under w->mu. */
    int a_status;
    int a_close;         /* "Connection: close" was added */
    int a_streaming;     /* handoff_http_response_write() was called */
    int a_ended;
    int a_oom;           /* an allocation failed: answer 500 */
    hs_buf a_hdrs;       /* "Name: value\r\n" lines */
    hs_buf a_body;       /* buffered body, or stream data not yet taken */
    handoff_http_defer_fn a_wfn; /* on_writable's callback and argument */
    void *a_warg;
    /* The worker's. */
    bool in_handler;     /* the handler is running */
    bool owner_ended;    /* ended on the worker thread (no lock needed) */
    bool async;          /* the handler returned before ending */
    /* The protocol's stream was closed while the application holds res
     * (HTTP/2: reset): write() says -EPIPE, as for a closed connection. */
    atomic_bool stream_gone;
    /* Stream data the protocol has taken but not yet written (written by
     * the worker; read by write() to bound what is queued). */
    atomic_size_t unsent;
};

/* Ties res to its connection, protocol object and request. */
void hs_res_init(handoff_http_response *res, struct hs_conn *c, void *stream,
                 const handoff_http_request *req);
/* Makes res a fresh response (status 200, nothing added). */
void hs_res_reset(handoff_http_response *res);
/* Empties res's buffers, freeing those that grew beyond keep bytes. */
void hs_res_trim(handoff_http_response *res, size_t keep);
/* Frees res's buffers. */
void hs_res_free(handoff_http_response *res);

/* Runs the application's handler for req on res (or answers the health
 * path itself), then notes whether the response was ended on this thread
 * (otherwise res->async: another thread may own it now). */
void hs_res_run(handoff_http_response *res, const handoff_http_request *req);

/* The protocol took res's stream data and unsent bytes of it are not
 * written yet: runs the application's on_writable callback when the data
 * queued for res fell to half of stream_buffer_bytes, or the client has
 * gone (write() then says -EPIPE). Never after the end. locked: res may be
 * owned by another thread (w->mu is taken). */
void hs_res_writable(handoff_http_response *res, size_t unsent, bool locked);

#endif
