/*
 * h1.c - HTTP/1.1 on a connection (see h1.h): reading into the request
 * block, parsing in place (the request handed to the handler points into
 * the input), dispatching, pipelining, and driving the connection
 * between requests; h1_out.c makes the response bytes.
 *
 * Closing: after a final response ("Connection: close", an error, the
 * drain) the connection lingers (hs_conn_linger()).
 *
 * This file is over 600 lines: it is the whole life of an HTTP/1.1
 * connection (read, parse, body, dispatch, pipelining, keep-alive, hijack,
 * the switch to HTTP/2), one state machine best read in one place; the
 * response bytes are already apart (h1_out.c).
 */
#include "h1.h"

#include "h2.h"
#include "migrate.h"
#include "server.h"
#include "tls.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static size_t pending_out(const struct hs_conn *c)
{
    const struct hs_h1_blk *b = c->p;
    return b ? b->out.len - b->woff : 0;
}

/* ------------------------------------------------------------------------ */
/* The per-request block                                                    */

void hs_h1_blk_destroy(struct hs_pooled *o)
{
    struct hs_h1_blk *b = (struct hs_h1_blk *)(void *)o;
    free(b->rbuf);
    hs_buf_free(&b->out);
    hs_res_free(&b->res);
    free(b);
}

int hs_h1_blk_acquire(struct hs_conn *c)
{
    if (c->p)
        return 0;
    struct hs_h1_blk *b = (struct hs_h1_blk *)(void *)hs_pool_get(&c->w->blocks);
    if (!b) {
        b = calloc(1, sizeof *b);
        if (!b)
            return -1;
    }
    if (!b->rbuf) {
        b->rbuf = malloc(HS_RBUF_INIT);
        if (!b->rbuf) {
            hs_h1_blk_destroy(&b->pooled);
            return -1;
        }
    }
    b->rcap = HS_RBUF_INIT;
    b->rstart = b->rlen = 0;
    b->out.len = b->woff = 0;
    hs_res_init(&b->res, c, b, &b->req);
    b->req.internal_ = &b->hreq;
    c->p = b;
    return 0;
}

/* Gives c's block back (to the worker's pool, up to HS_BLK_POOL). Only
 * when nothing in it is needed: no unconsumed input, no request in
 * progress, no output pending, and no other thread may touch the
 * response (it has been ended). */
static void blk_release(struct hs_conn *c)
{
    struct hs_h1_blk *b = c->p;
    if (!b)
        return;
    c->p = NULL;
    if (b->rcap != HS_RBUF_INIT) {
        free(b->rbuf);
        b->rbuf = NULL;
    }
    b->rcap = b->rstart = b->rlen = 0;
    hs_buf_trim(&b->out, HS_BLK_BUF_KEEP);
    b->woff = 0;
    hs_res_trim(&b->res, HS_BLK_BUF_KEEP);
    if (!hs_pool_put(&c->w->blocks, &b->pooled))
        hs_h1_blk_destroy(&b->pooled);
}

/* ------------------------------------------------------------------------ */
/* Input                                                                    */

/* Makes room to read into. Returns 0, or an HTTP status to fail with. */
static int reserve_input(struct hs_conn *c)
{
    handoff_http_server *srv = hs_server_of(c->w);
    if (!c->p && hs_h1_blk_acquire(c) < 0)
        return 503;
    struct hs_h1_blk *b = c->p;
    if (b->rlen < b->rcap)
        return 0;
    if (b->rstart > 0) {
        memmove(b->rbuf, b->rbuf + b->rstart, b->rlen - b->rstart);
        b->rlen -= b->rstart;
        b->rstart = 0;
        if (c->pstate == HS_H1_BODY)
            b->moved = true;
        if (b->rlen < b->rcap)
            return 0;
    }
    size_t cap = b->rcap * 2, limit;
    if (c->pstate != HS_H1_BODY) {
        limit = srv->limits.max_header_bytes + HS_RBUF_INIT;
    } else if (b->hreq.body_kind == HH_BODY_LENGTH) {
        /* Grown as the body arrives (doubling), never reserved up front:
         * a client that announces a large body and stalls costs what it
         * has sent. */
        limit = b->req_len;
    } else {
        /* Decoded body plus one chunk-size line or trailer section. */
        limit = b->head_len + (size_t)srv->o.max_body_bytes + 16384;
    }
    if (cap > limit)
        cap = limit;
    if (cap <= b->rcap)
        return c->pstate == HS_H1_BODY ? 413 : 431;
    char *p = realloc(b->rbuf, cap);
    if (!p)
        return 503;
    if (c->pstate == HS_H1_BODY)
        b->moved = true;
    b->rbuf = p;
    b->rcap = cap;
    return 0;
}

/* Reads once. Returns > 0 (bytes), 0 (nothing now), -1 (end of input),
 * -2 (connection error), or -status when no room could be made. */
static long h1_read(struct hs_conn *c)
{
    int st = reserve_input(c);
    if (st)
        return -st;
    struct hs_h1_blk *b = c->p;
    long n = hs_conn_read(c, b->rbuf + b->rlen, b->rcap - b->rlen);
    if (n > 0)
        b->rlen += (size_t)n;
    return n;
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                 */

static void fill_request(struct hs_conn *c)
{
    struct hs_h1_blk *b = c->p;
    const hh_request *h = &b->hreq;
    handoff_http_request *r = &b->req;
    r->method = (handoff_http_str){h->method.p, h->method.len};
    r->target = (handoff_http_str){h->target.p, h->target.len};
    if (h->path.len == 0 && h->target.len && h->target.p[0] != '/' &&
        !(h->method.len == 7 && memcmp(h->method.p, "CONNECT", 7) == 0))
        r->path = (handoff_http_str){"/", 1}; /* empty absolute-form path */
    else
        r->path = (handoff_http_str){h->path.p, h->path.len};
    r->query = (handoff_http_str){h->query.p, h->query.len};
    r->minor_version = h->minor_version;
    r->http_version = 10 + h->minor_version;
    r->keep_alive = h->keep_alive;
    r->upgrade = h->upgrade;
    r->tls = c->ssl != NULL;
    r->body_len = b->body_end - b->head_len;
    r->body = r->body_len ? b->rbuf + b->rstart + b->head_len : NULL;
    socklen_t len;
    r->peer = hs_conn_peer(c, &b->peer, &len);
    r->peer_len = len;
}

/* The response is complete: move on to the next request, or to closing. */
static void finish(struct hs_conn *c)
{
    struct hs_h1_blk *b = c->p;
    b->res.async = false;
    b->res.owner_ended = false;
    if (c->state == HS_C_DEAD) {
        hs_conn_gone(c);
        return;
    }
    if (c->state != HS_C_OPEN || c->pstate != HS_H1_APP)
        return;
    b->rstart += b->req_len;
    if (b->rstart == b->rlen) {
        b->rstart = b->rlen = 0;
        if (b->rcap > HS_RBUF_KEEP) {
            char *p = realloc(b->rbuf, HS_RBUF_INIT);
            if (p) {
                b->rbuf = p;
                b->rcap = HS_RBUF_INIT;
            }
        }
    }
    b->body_end = b->head_len = b->req_len = 0;
    c->pstate = c->close_after ? HS_H1_CLOSING : HS_H1_HEAD;
}

/* A streamed response waiting for room (on_writable): how much of it is
 * still unsent. (Its a_* fields may be another thread's: not read here.) */
static void writable(struct hs_conn *c)
{
    struct hs_h1_blk *b = c->p;
    if (b && b->hdrs_out)
        hs_res_writable(&b->res, pending_out(c), b->res.async);
}

/* Composes what the application has produced; finishes the exchange when
 * the response has ended. */
static void pump(struct hs_conn *c)
{
    if (hs_h1_pump(c))
        finish(c);
    else
        writable(c);
}

/* Hands a complete request to the handler. Returns 1. */
static int dispatch(struct hs_conn *c)
{
    struct hs_h1_blk *b = c->p;
    handoff_http_server *srv = hs_server_of(c->w);
    if (b->moved) {
        /* The buffer moved under the parsed head: parse it again (it was
         * accepted before, so it is accepted now). */
        int r = hh_parse_request(b->rbuf + b->rstart, b->head_len, &b->hreq, b->hh,
                                 HS_MAX_HEADERS, &srv->limits);
        if (r < 0)
            return hs_h1_error(c, 500), 1;
        b->moved = false;
    }
    fill_request(c);
    c->nreq++;
    b->is_head = b->hreq.method.len == 4 && memcmp(b->hreq.method.p, "HEAD", 4) == 0;
    hs_res_reset(&b->res);
    b->hdrs_out = b->chunked = false;
    c->pstate = HS_H1_APP;
    hs_tset(c->w, &c->h, HS_T_NONE, false);
    hs_res_run(&b->res, &b->req);
    if (c->state != HS_C_OPEN)
        return 1; /* hijacked */
    pump(c);
    return 1;
}

/* Parses and answers what the buffer holds. Returns 1 when something
 * happened (a request was dispatched, an error answered), 0 when more
 * input is needed. */
static int process(struct hs_conn *c)
{
    handoff_http_server *srv = hs_server_of(c->w);
    struct hs_h1_blk *b = c->p;
    if (!b)
        return 0; /* idle: nothing buffered */
    if (c->pstate == HS_H1_HEAD) {
        size_t avail = b->rlen - b->rstart;
        if (avail == 0)
            return 0;
        if (c->h2c && c->nreq == 0 && b->rstart == 0) {
            /* Prior-knowledge HTTP/2 next to HTTP/1.1: the client preface
             * decides (no HTTP/1.1 request starts with it). */
            size_t n = avail < HS_H2_PREFACE_LEN ? avail : HS_H2_PREFACE_LEN;
            if (memcmp(b->rbuf, HS_H2_PREFACE, n) == 0) {
                if (avail < HS_H2_PREFACE_LEN)
                    return 0;
                (void)hs_h2_start(c, b->rbuf, avail); /* releases b */
                return 1;
            }
        }
        int r = hh_parse_request(b->rbuf + b->rstart, avail, &b->hreq, b->hh, HS_MAX_HEADERS,
                                 &srv->limits);
        if (r == HH_INCOMPLETE)
            return 0;
        if (r < 0) {
            int st = -r;
            if (st != 400 && st != 414 && st != 431 && st != 501 && st != 505)
                st = 400;
            return hs_h1_error(c, st), 1;
        }
        b->head_len = (size_t)r;
        b->moved = false;
        b->sent_continue = false;
        if (b->hreq.expect_other)
            return hs_h1_error(c, 417), 1;
        switch (b->hreq.body_kind) {
        case HH_BODY_LENGTH:
            if (b->hreq.content_length > srv->o.max_body_bytes)
                return hs_h1_error(c, 413), 1; /* never read it */
            b->req_len = b->head_len + (size_t)b->hreq.content_length;
            break;
        case HH_BODY_CHUNKED:
            memset(&b->dec, 0, sizeof b->dec);
            b->raw_off = b->body_end = b->head_len;
            break;
        default:
            b->body_end = b->req_len = b->head_len;
            return dispatch(c);
        }
        c->pstate = HS_H1_BODY;
    }

    size_t avail = b->rlen - b->rstart;
    if (b->hreq.body_kind == HH_BODY_LENGTH) {
        if (avail >= b->req_len) {
            b->body_end = b->req_len;
            return dispatch(c);
        }
    } else {
        size_t outlen = 0, used = 0;
        char *base = b->rbuf + b->rstart;
        int r = hh_decode_chunked(&b->dec, base + b->raw_off, avail - b->raw_off,
                                  base + b->body_end, &outlen, &used, srv->o.max_body_bytes);
        b->body_end += outlen;
        b->raw_off += used;
        if (r == 1) {
            b->req_len = b->raw_off;
            return dispatch(c);
        }
        if (r < 0)
            return hs_h1_error(c, r == -413 ? 413 : 400), 1;
        /* Keep only the decoded body and the undecoded rest. */
        size_t rest = avail - b->raw_off;
        if (b->raw_off > b->body_end) {
            memmove(base + b->body_end, base + b->raw_off, rest);
            b->rlen = b->rstart + b->body_end + rest;
            b->raw_off = b->body_end;
        }
    }
    /* The body is needed and allowed: ask for it (RFC 9110 10.1.1). */
    if (b->hreq.expect_continue && !b->sent_continue) {
        b->sent_continue = true;
        if (hs_h1_continue(c) < 0)
            return hs_h1_error(c, 503), 1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Driving the connection                                                   */

static void update_timer(struct hs_conn *c)
{
    if (c->state != HS_C_OPEN)
        return; /* the connection layer's (handshake, linger) or none */
    const struct hs_h1_blk *b = c->p;
    int cls;
    bool refresh = false;
    switch (c->pstate) {
    case HS_H1_HEAD:
    case HS_H1_BODY:
        if (pending_out(c)) {
            cls = HS_T_WRITE;
        } else if (c->pstate == HS_H1_BODY || (b && b->rlen > b->rstart)) {
            cls = HS_T_READ;
            refresh = c->tnreq != c->nreq;
        } else if (c->nreq == 0) {
            cls = HS_T_NEW;
        } else {
            cls = HS_T_IDLE;
            refresh = c->tnreq != c->nreq;
        }
        break;
    default: /* the application's turn, or closing */
        cls = pending_out(c) ? HS_T_WRITE : HS_T_NONE;
    }
    c->tnreq = c->nreq;
    hs_tset(c->w, &c->h, cls, refresh);
}

/* Makes all the progress possible without blocking. */
static void drive(struct hs_conn *c)
{
    unsigned budget = HS_BUDGET;
    uint64_t start = handoff_now_usec();
    for (;;) {
        if (c->state != HS_C_OPEN)
            return;
        bool wait_input = false;
        if (c->pstate == HS_H1_HEAD || c->pstate == HS_H1_BODY) {
            /* An upgrade drain hands the connection to the successor at
             * the end of its output, with the input not parsed yet. */
            if (c->pstate == HS_H1_HEAD && c->w->draining && hs_mig_wanted(c)) {
                if (pending_out(c))
                    goto flush;
                if (hs_mig_out(c))
                    return;
            }
            if (pending_out(c) >= HS_OUT_HIGH)
                goto flush;
            if (process(c)) {
                if (c->state != HS_C_OPEN || c->h.ops != &hs_h1_proto.h)
                    return; /* closed, or HTTP/2's now */
                if (--budget == 0 || handoff_now_usec() - start >= HS_SLICE_USEC) {
                    hs_ready_push(c->w, &c->h); /* let other connections in */
                    goto flush;
                }
                continue;
            }
            if (!c->read_more) {
                wait_input = true;
                goto flush;
            }
            long r = h1_read(c);
            if (r > 0)
                continue;
            if (r == 0) {
                wait_input = true;
                goto flush;
            }
            if (r == -1) {
                /* The client is done sending. Anything partial is lost. */
                const struct hs_h1_blk *b = c->p;
                c->eof = true;
                c->read_more = false;
                if (c->pstate == HS_H1_HEAD && b->rlen == b->rstart && pending_out(c)) {
                    c->pstate = HS_H1_CLOSING;
                    goto flush;
                }
                hs_conn_close(c);
                return;
            }
            if (r == -2 || !c->p) {
                hs_conn_close(c); /* no block for an error response either */
                return;
            }
            hs_h1_error(c, (int)-r);
            continue;
        }
    flush:
        if (pending_out(c)) {
            struct hs_h1_blk *b = c->p;
            int f = hs_conn_flush(c, &b->out, &b->woff, HS_WBUF_KEEP);
            if (f < 0) {
                hs_conn_close(c);
                return;
            }
            if (c->pstate == HS_H1_APP)
                writable(c);
            if (f == 0)
                break;
            /* Everything went out; there may be more to do. */
            if (!wait_input && (c->pstate == HS_H1_HEAD || c->pstate == HS_H1_BODY) &&
                !c->h.in_ready)
                continue;
        }
        if (c->pstate == HS_H1_CLOSING) {
            hs_conn_linger(c);
            return;
        }
        break;
    }
    /* Idle: hold no buffers until the next request comes in. */
    const struct hs_h1_blk *b = c->p;
    if (b && c->pstate == HS_H1_HEAD && b->rlen == b->rstart && !c->read_more &&
        !c->h.in_ready && b->out.len == 0)
        blk_release(c);
    update_timer(c);
}

static void h1_io(struct hs_handle *h, uint32_t events)
{
    struct hs_conn *c = hs_conn_of(h);
    if (hs_conn_begin(c, events))
        return;
    if (c->ssl && c->nreq == 0 && hs_tls_alpn_h2(c->ssl)) {
        (void)hs_h2_start(c, NULL, 0); /* ALPN chose HTTP/2 */
        return;
    }
    drive(c);
}

/* The application's side moved (an end or a write on the worker thread,
 * or through the queue from another thread). */
static bool app_turn(const struct hs_conn *c)
{
    return c->state == HS_C_DEAD || (c->state == HS_C_OPEN && c->pstate == HS_H1_APP);
}

static void h1_run(struct hs_handle *h)
{
    struct hs_conn *c = hs_conn_of(h);
    if (app_turn(c))
        pump(c);
    drive(c);
}

static void h1_queued(struct hs_handle *h)
{
    struct hs_conn *c = hs_conn_of(h);
    if (!app_turn(c))
        return;
    pump(c);
    drive(c);
}

/* Reads what may already be in the socket before closing an idle
 * connection: a request on its way is served rather than cut off. */
static void idle_close(struct hs_conn *c)
{
    c->read_more = true;
    if (h1_read(c) > 0) {
        drive(c);
        return;
    }
    hs_conn_close(c);
}

static void h1_timeout(struct hs_handle *h, int cls)
{
    struct hs_conn *c = hs_conn_of(h);
    if (hs_conn_timeout_common(c, cls))
        return;
    const struct hs_h1_blk *b = c->p;
    switch (cls) {
    case HS_T_READ:
        if (c->pstate == HS_H1_BODY ||
            (c->pstate == HS_H1_HEAD && b && b->rlen > b->rstart)) {
            hs_h1_error(c, 408);
            drive(c);
            return;
        }
        hs_conn_close(c);
        return;
    case HS_T_NEW:
    case HS_T_IDLE:
        idle_close(c);
        return;
    default:
        hs_conn_close(c);
        return;
    }
}

static bool h1_closed(struct hs_conn *c)
{
    struct hs_h1_blk *b = c->p;
    if (b)
        b->out.len = b->woff = 0;
    return c->state == HS_C_OPEN && c->pstate == HS_H1_APP;
}

static void h1_release(struct hs_conn *c)
{
    blk_release(c);
}

const struct hs_proto hs_h1_proto = {
    .h = {.io = h1_io,
          .run = h1_run,
          .queued = h1_queued,
          .timeout = h1_timeout,
          .stop = hs_conn_stop,
          .destroy = hs_conn_destroy},
    .name = "http/1.1",
    .closed = h1_closed,
    .release = h1_release,
};

/* ------------------------------------------------------------------------ */

int handoff_http_response_hijack(handoff_http_response *res, handoff_http_hijack *out)
{
    if (!res || !out)
        return -EINVAL;
    struct hs_conn *c = res->c;
    if (hs_conn_proto(c) != &hs_h1_proto)
        return -ENOTSUP; /* HTTP/2: the streams share the connection */
    if (hs_current != c->w || !res->in_handler || c->state != HS_C_OPEN ||
        c->pstate != HS_H1_APP)
        return -EPERM;
    if (c->ssl)
        return -ENOTSUP;
    if (res->a_streaming)
        return -EALREADY;
    struct hs_h1_blk *b = c->p;
    if (pending_out(c)) {
        if (hs_conn_flush(c, &b->out, &b->woff, HS_WBUF_KEEP) < 0)
            return -EPIPE;
        if (pending_out(c))
            return -EAGAIN;
    }
    size_t extra = b->rlen - b->rstart - b->req_len;
    char *copy = NULL;
    if (extra) {
        copy = malloc(extra);
        if (!copy)
            return -ENOMEM;
        memcpy(copy, b->rbuf + b->rstart + b->req_len, extra);
    }
    out->buffered = copy;
    out->buffered_len = extra;
    /* The drain keeps counting it until handoff_http_hijack_end(). */
    out->fd = hs_conn_take_fd(c);
    return 0;
}
