/*
 * h1.h - HTTP/1.1 on a connection (internal to libhandoff-http): h1.c
 * reads, parses and dispatches requests and drives the connection;
 * h1_out.c turns responses into HTTP/1.1 bytes.
 *
 * Requests are handled one at a time, in order: while the application
 * holds a response, the connection reads nothing (pipelined requests wait
 * in the buffer or the socket), which keeps the responses in order and
 * the request valid. Responses of pipelined requests answered at once are
 * gathered and written together.
 */
#ifndef HANDOFF_HTTP_H1_H
#define HANDOFF_HTTP_H1_H

#include "buf.h"
#include "conn.h"
#include "parse.h"
#include "pool.h"
#include "response.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define HS_MAX_HEADERS 100
#define HS_RBUF_INIT 4096
/* Read buffers grown beyond this (for a large body) are given back once
 * the request is done; output buffers beyond it once written. */
#define HS_RBUF_KEEP 65536
#define HS_WBUF_KEEP 65536
/* Idle per-request blocks a worker keeps, and the largest buffers kept in
 * one. */
#define HS_BLK_POOL 64
#define HS_BLK_BUF_KEEP 16384
/* Stop composing pipelined responses beyond this much pending output. */
#define HS_OUT_HIGH 65536
/* Requests handled in one go on a connection before others get a turn,
 * and the time that turn may take: a round over N busy connections (a
 * pipelining flood) then delays another client by at most about N times
 * the slice, however slow each request is (a slow handler, a sanitizer
 * build). */
#define HS_BUDGET 32
#define HS_SLICE_USEC 250

/* The protocol state of an open connection (hs_conn.pstate). */
enum hs_h1_state {
    HS_H1_HEAD = 0, /* waiting for / reading a request head */
    HS_H1_BODY,     /* reading a request body */
    HS_H1_APP,      /* the application holds the response */
    HS_H1_CLOSING   /* sending the last response, then linger */
};

/* What an HTTP/1.1 connection needs only while it has a request in
 * progress (hs_conn.p): the input, the request being read or answered
 * (the parser's state, the header array, the request and response handed
 * to the application) and the output, so that an idle keep-alive
 * connection holds none of it. Taken when input is to be read, given back
 * when the connection is idle: no unconsumed input, no request in
 * progress, no output pending. Blocks given back stay in the worker's
 * pool with their buffers (up to HS_BLK_POOL), so that steady load
 * allocates nothing. */
struct hs_h1_blk {
    struct hs_pooled pooled;
    /* Input: unconsumed bytes are rbuf[rstart, rlen). rbuf is NULL or
     * HS_RBUF_INIT bytes while the block is in the pool. */
    char *rbuf;
    size_t rcap, rstart, rlen;
    /* The request being read or answered; offsets from rstart. */
    hh_request hreq;
    size_t head_len;
    size_t body_end;    /* end of the (decoded) body */
    size_t raw_off;     /* chunked: start of undecoded input */
    size_t req_len;     /* whole request (head + raw body) */
    hh_chunked dec;
    handoff_http_request req;
    handoff_http_response res;
    /* Output: pending bytes are out.p[woff, out.len). */
    hs_buf out;
    size_t woff;
    bool hdrs_out;      /* the response head has been composed */
    bool chunked;       /* streamed with chunked framing */
    bool is_head;       /* the request is HEAD */
    bool moved;         /* rbuf moved since the head was parsed */
    bool sent_continue; /* 100 Continue sent for this request */
    struct sockaddr_storage peer; /* a peer address c does not keep */
    hh_header hh[HS_MAX_HEADERS];
};

/* The HTTP/1.1 protocol (for hs_conn_new()). */
extern const struct hs_proto hs_h1_proto;

/* Gives c a block (from the worker's pool if it has one), for reading
 * or for restoring the input of an adopted connection (migrate.c).
 * Returns 0 or -1 (out of memory). */
int hs_h1_blk_acquire(struct hs_conn *c);

/* Frees a pooled block (for hs_worker_done()). */
void hs_h1_blk_destroy(struct hs_pooled *o);

/* h1_out.c. Composes what the application put in c's response into
 * output; returns true when the response has ended (the caller then
 * finishes the exchange). May close c (out of memory). */
bool hs_h1_pump(struct hs_conn *c);
/* A complete error response (the connection closes after it): 0 or
 * -ENOMEM. */
int hs_h1_error(struct hs_conn *c, int status);
/* "HTTP/1.1 100 Continue": 0 or -ENOMEM. */
int hs_h1_continue(struct hs_conn *c);

#endif
