/*
 * conn.c - one HTTP/1.1 connection: reading, parsing, dispatching, writing
 * and closing, driven by the worker's edge-triggered epoll.
 *
 * A connection is registered once (EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET)
 * and never modified, so a request costs one read and one write. Input
 * goes into one buffer that is parsed in place; the request handed to the
 * handler points into it. Requests are handled one at a time, in order:
 * while the application holds a response, the connection reads nothing
 * (pipelined requests wait in the buffer or the socket), which keeps the
 * responses in order and the request valid. Responses of pipelined
 * requests answered at once are gathered and written together.
 *
 * Closing: after a final response ("Connection: close", an error, the
 * drain) the write side is shut and input is read and discarded until the
 * client closes or HS_LINGER_USEC passes. Closing with unread input would
 * make the kernel send a reset, which can destroy the response in flight.
 */
#include "server.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

static size_t pending_out(const struct hs_conn *c)
{
    return c->blk ? c->blk->out.len - c->blk->woff : 0;
}

/* Empties b, and gives its memory back if it grew large. */
static void buf_trim(hs_buf *b)
{
    if (b->cap > HS_BLK_BUF_KEEP)
        hs_buf_free(b);
    b->len = 0;
}

static void blk_destroy(struct hs_blk *b)
{
    free(b->rbuf);
    hs_buf_free(&b->out);
    hs_buf_free(&b->res.a_hdrs);
    hs_buf_free(&b->res.a_body);
    free(b);
}

void hs_blk_pool_free(struct hs_worker *w)
{
    while (w->blks) {
        struct hs_blk *b = w->blks;
        w->blks = b->next;
        blk_destroy(b);
    }
    w->nblks = 0;
}

/* Takes a per-request block (from the worker's pool if it has one) for a
 * connection about to read. Returns 0 or -1 (out of memory). */
static int blk_acquire(struct hs_conn *c)
{
    struct hs_worker *w = c->w;
    if (c->blk)
        return 0;
    struct hs_blk *b = w->blks;
    if (b) {
        w->blks = b->next;
        w->nblks--;
    } else {
        b = calloc(1, sizeof *b);
        if (!b)
            return -1;
    }
    if (!b->rbuf) {
        b->rbuf = malloc(HS_RBUF_INIT);
        if (!b->rbuf) {
            blk_destroy(b);
            return -1;
        }
    }
    b->next = NULL;
    b->rcap = HS_RBUF_INIT;
    b->rstart = b->rlen = 0;
    b->out.len = b->woff = 0;
    b->res.c = c;
    b->req.internal_ = b;
    c->blk = b;
    return 0;
}

/* Gives c's block, read buffer and output buffers back (to the worker's
 * pool, up to HS_BLK_POOL blocks). Only when nothing in them is needed:
 * no unconsumed input, no request in progress, no output pending, and
 * no other thread may touch the response (it has been ended). */
static void blk_release(struct hs_conn *c)
{
    struct hs_worker *w = c->w;
    struct hs_blk *b = c->blk;
    if (!b)
        return;
    c->blk = NULL;
    if (b->rcap != HS_RBUF_INIT) {
        free(b->rbuf);
        b->rbuf = NULL;
    }
    b->rcap = b->rstart = b->rlen = 0;
    buf_trim(&b->out);
    b->woff = 0;
    buf_trim(&b->res.a_hdrs);
    buf_trim(&b->res.a_body);
    if (w->nblks < HS_BLK_POOL) {
        b->next = w->blks;
        w->blks = b;
        w->nblks++;
    } else {
        blk_destroy(b);
    }
}

struct hs_conn *hs_conn_new(struct hs_worker *w, struct hs_listener *l, int fd,
                            const struct sockaddr *peer, socklen_t peer_len)
{
    struct hs_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->kind = HS_K_CONN;
    c->fd = fd;
    c->w = w;
    /* No buffers until there is something to read (blk_acquire()). */
    if (peer_len <= sizeof c->peer) {
        memcpy(&c->peer, peer, peer_len);
        c->peer_len = (uint8_t)peer_len;
    }
    c->state = HS_C_HEAD;
    if (l->ctx) {
        if (hs_tls_conn_new(c, l->ctx) < 0)
            goto fail;
        c->state = HS_C_HANDSHAKE;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                             .data.ptr = c};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        goto fail;

    c->counted = true; /* by the accepting worker, see worker_accept() */
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    hs_tset(c, c->state == HS_C_HANDSHAKE ? HS_T_HANDSHAKE : HS_T_NEW, true);
    return c;
fail:
    if (c->ssl)
        SSL_free(c->ssl);
    free(c);
    return NULL;
}

/* Frees c for good: it must not be in use by anything (see the graveyard
 * in server.c). Does not close the fd. */
void hs_conn_free(struct hs_conn *c)
{
    struct hs_worker *w = c->w;
    atomic_fetch_sub(&w->load, 1);
    hs_tset(c, HS_T_NONE, false);
    if (c->in_ready) {
        if (c->rprev)
            c->rprev->rnext = c->rnext;
        else
            w->ready_head = c->rnext;
        if (c->rnext)
            c->rnext->rprev = c->rprev;
        else
            w->ready_tail = c->rprev;
        w->nready--;
    }
    if (c->ever_async) {
        pthread_mutex_lock(&w->mu);
        if (c->queued) {
            struct hs_conn **pp = &w->q_head, *prev = NULL;
            while (*pp != c) {
                prev = *pp;
                pp = &(*pp)->qnext;
            }
            *pp = c->qnext;
            if (w->q_tail == c)
                w->q_tail = prev;
        }
        pthread_mutex_unlock(&w->mu);
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->ssl)
        SSL_free(c->ssl);
    blk_release(c);
    free(c);
}

static void uncount(struct hs_conn *c)
{
    if (!c->counted)
        return;
    c->counted = false;
    hs_count_end(c->w->srv);
}

/* Closes the socket. The structure lives on until the application has
 * ended a response it still holds (HS_C_DEAD), or until the end of the
 * loop iteration (HS_C_GONE), as events for it may still be queued. */
void hs_conn_close(struct hs_conn *c)
{
    if (c->state == HS_C_DEAD || c->state == HS_C_GONE)
        return;
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        /* Unregister explicitly: close() alone leaves the registration in
         * place while another copy of the fd exists, as in a child between
         * fork() and exec() during an upgrade, and epoll would go on
         * reporting events with a pointer to a freed connection. */
        (void)epoll_ctl(c->w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        (void)close(c->fd);
        c->fd = -1;
    }
    hs_tset(c, HS_T_NONE, false);
    uncount(c);
    atomic_store(&c->gone, true);
    if (c->blk)
        c->blk->out.len = c->blk->woff = 0;
    if (c->state == HS_C_APP) {
        c->state = HS_C_DEAD;
        return;
    }
    c->state = HS_C_GONE;
    hs_graveyard_add(c);
}

/* Makes room to read into. Returns 0, or an HTTP status to fail with. */
static int reserve_input(struct hs_conn *c)
{
    handoff_http_server *srv = c->w->srv;
    if (!c->blk && blk_acquire(c) < 0)
        return 503;
    if (c->blk->rlen < c->blk->rcap)
        return 0;
    if (c->blk->rstart > 0) {
        memmove(c->blk->rbuf, c->blk->rbuf + c->blk->rstart, c->blk->rlen - c->blk->rstart);
        c->blk->rlen -= c->blk->rstart;
        c->blk->rstart = 0;
        if (c->state == HS_C_BODY)
            c->blk->moved = true;
        if (c->blk->rlen < c->blk->rcap)
            return 0;
    }
    size_t cap = c->blk->rcap * 2, limit;
    if (c->state != HS_C_BODY) {
        limit = srv->limits.max_header_bytes + HS_RBUF_INIT;
    } else if (c->blk->hreq.body_kind == HH_BODY_LENGTH) {
        /* Grown as the body arrives (doubling), never reserved up front:
         * a client that announces a large body and stalls costs what it
         * has sent. */
        limit = c->blk->req_len;
    } else {
        /* Decoded body plus one chunk-size line or trailer section. */
        limit = c->blk->head_len + (size_t)srv->o.max_body_bytes + 16384;
    }
    if (cap > limit)
        cap = limit;
    if (cap <= c->blk->rcap)
        return c->state == HS_C_BODY ? 413 : 431;
    char *p = realloc(c->blk->rbuf, cap);
    if (!p)
        return 503;
    if (c->state == HS_C_BODY)
        c->blk->moved = true;
    c->blk->rbuf = p;
    c->blk->rcap = cap;
    return 0;
}

/* Reads once. Returns > 0 (bytes), 0 (nothing now), -1 (end of input),
 * -2 (connection error), or -status when no room could be made. */
static long conn_read(struct hs_conn *c)
{
    int st = reserve_input(c);
    if (st)
        return -st;
    size_t room = c->blk->rcap - c->blk->rlen;
    long n;
    if (c->ssl) {
        n = hs_tls_read(c, c->blk->rbuf + c->blk->rlen, room);
        if (n == 0)
            c->read_more = false;
    } else {
        for (;;) {
            n = read(c->fd, c->blk->rbuf + c->blk->rlen, room);
            if (n >= 0 || errno != EINTR)
                break;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                c->read_more = false;
                return 0;
            }
            return -2;
        }
        if (n == 0)
            return -1;
        /* A short read emptied the socket: the next edge tells us more. */
        if ((size_t)n < room)
            c->read_more = false;
    }
    if (n > 0)
        c->blk->rlen += (size_t)n;
    return n;
}

/* Writes pending output. Returns 1 when all is written, 0 when the
 * socket is full, -1 on error. */
static int conn_flush(struct hs_conn *c)
{
    while (c->blk->woff < c->blk->out.len) {
        long n;
        if (c->ssl) {
            n = hs_tls_write(c, c->blk->out.p + c->blk->woff, c->blk->out.len - c->blk->woff);
            if (n == 0)
                return 0;
            if (n < 0)
                return -1;
        } else {
            n = send(c->fd, c->blk->out.p + c->blk->woff, c->blk->out.len - c->blk->woff, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return 0;
                return -1;
            }
        }
        c->blk->woff += (size_t)n;
        if (c->tclass == HS_T_WRITE)
            hs_tset(c, HS_T_WRITE, true); /* progress */
    }
    c->blk->out.len = c->blk->woff = 0;
    if (c->blk->out.cap > HS_WBUF_KEEP)
        hs_buf_free(&c->blk->out);
    return 1;
}

static void fill_request(struct hs_conn *c)
{
    const hh_request *h = &c->blk->hreq;
    handoff_http_request *r = &c->blk->req;
    r->method = (handoff_http_str){h->method.p, h->method.len};
    r->target = (handoff_http_str){h->target.p, h->target.len};
    if (h->path.len == 0 && h->target.len && h->target.p[0] != '/' &&
        !(h->method.len == 7 && memcmp(h->method.p, "CONNECT", 7) == 0))
        r->path = (handoff_http_str){"/", 1}; /* empty absolute-form path */
    else
        r->path = (handoff_http_str){h->path.p, h->path.len};
    r->query = (handoff_http_str){h->query.p, h->query.len};
    r->minor_version = h->minor_version;
    r->keep_alive = h->keep_alive;
    r->upgrade = h->upgrade;
    r->tls = c->ssl != NULL;
    r->body_len = c->blk->body_end - c->blk->head_len;
    r->body = r->body_len ? c->blk->rbuf + c->blk->rstart + c->blk->head_len : NULL;
    if (c->peer_len) {
        r->peer = &c->peer.sa;
        r->peer_len = c->peer_len;
    } else {
        /* Too large to keep while idle (a bound unix socket). */
        socklen_t len = sizeof c->blk->peer;
        if (getpeername(c->fd, (struct sockaddr *)&c->blk->peer, &len) < 0) {
            len = sizeof(sa_family_t);
            c->blk->peer.ss_family = AF_UNSPEC;
        }
        r->peer = (const struct sockaddr *)&c->blk->peer;
        r->peer_len = len;
    }
}

/* Hands a complete request to the handler. Returns 1. */
static int dispatch(struct hs_conn *c)
{
    handoff_http_server *srv = c->w->srv;
    if (c->blk->moved) {
        /* The buffer moved under the parsed head: parse it again (it was
         * accepted before, so it is accepted now). */
        int r = hh_parse_request(c->blk->rbuf + c->blk->rstart, c->blk->head_len, &c->blk->hreq, c->blk->hh,
                                 HS_MAX_HEADERS, &srv->limits);
        if (r < 0)
            return hs_error_response(c, 500), 1;
        c->blk->moved = false;
    }
    fill_request(c);
    c->nreq++;
    c->blk->is_head = c->blk->hreq.method.len == 4 && memcmp(c->blk->hreq.method.p, "HEAD", 4) == 0;
    hs_res_reset(&c->blk->res);
    c->blk->hdrs_out = c->blk->chunked = c->blk->async = false;
    c->state = HS_C_APP;
    hs_tset(c, HS_T_NONE, false);

    c->blk->in_handler = true;
    if (srv->health_path && c->blk->hreq.path.len == srv->health_len &&
        memcmp(c->blk->hreq.path.p, srv->health_path, srv->health_len) == 0)
        hs_res_health(c);
    else
        srv->o.handler(&c->blk->req, &c->blk->res, srv->o.userdata);
    c->blk->in_handler = false;
    if (c->state == HS_C_GONE)
        return 1; /* hijacked */
    /* An end on this thread set a_ended before the handler returned; any
     * other thread goes through the lock (and the queue). */
    if (!c->blk->owner_ended)
        c->blk->async = c->ever_async = true;
    (void)hs_res_pump(c);
    return 1;
}

/* The response is complete: move on to the next request, or to closing. */
void hs_conn_finish_response(struct hs_conn *c)
{
    c->blk->async = false;
    c->blk->owner_ended = false;
    if (c->state == HS_C_DEAD) {
        c->state = HS_C_GONE;
        hs_graveyard_add(c);
        return;
    }
    if (c->state != HS_C_APP)
        return;
    c->blk->rstart += c->blk->req_len;
    if (c->blk->rstart == c->blk->rlen) {
        c->blk->rstart = c->blk->rlen = 0;
        if (c->blk->rcap > HS_RBUF_KEEP) {
            char *p = realloc(c->blk->rbuf, HS_RBUF_INIT);
            if (p) {
                c->blk->rbuf = p;
                c->blk->rcap = HS_RBUF_INIT;
            }
        }
    }
    c->blk->body_end = c->blk->head_len = c->blk->req_len = 0;
    c->state = c->close_after ? HS_C_CLOSING : HS_C_HEAD;
}

/* Parses and answers what the buffer holds. Returns 1 when something
 * happened (a request was dispatched, an error answered), 0 when more
 * input is needed. */
static int conn_process(struct hs_conn *c)
{
    handoff_http_server *srv = c->w->srv;
    if (!c->blk)
        return 0; /* idle: nothing buffered */
    if (c->state == HS_C_HEAD) {
        size_t avail = c->blk->rlen - c->blk->rstart;
        if (avail == 0)
            return 0;
        int r = hh_parse_request(c->blk->rbuf + c->blk->rstart, avail, &c->blk->hreq, c->blk->hh,
                                 HS_MAX_HEADERS, &srv->limits);
        if (r == HH_INCOMPLETE)
            return 0;
        if (r < 0) {
            int st = -r;
            if (st != 400 && st != 414 && st != 431 && st != 501 && st != 505)
                st = 400;
            return hs_error_response(c, st), 1;
        }
        c->blk->head_len = (size_t)r;
        c->blk->moved = false;
        c->blk->sent_continue = false;
        if (c->blk->hreq.expect_other)
            return hs_error_response(c, 417), 1;
        switch (c->blk->hreq.body_kind) {
        case HH_BODY_LENGTH:
            if (c->blk->hreq.content_length > srv->o.max_body_bytes)
                return hs_error_response(c, 413), 1; /* never read it */
            c->blk->req_len = c->blk->head_len + (size_t)c->blk->hreq.content_length;
            break;
        case HH_BODY_CHUNKED:
            memset(&c->blk->dec, 0, sizeof c->blk->dec);
            c->blk->raw_off = c->blk->body_end = c->blk->head_len;
            break;
        default:
            c->blk->body_end = c->blk->req_len = c->blk->head_len;
            return dispatch(c);
        }
        c->state = HS_C_BODY;
    }

    size_t avail = c->blk->rlen - c->blk->rstart;
    if (c->blk->hreq.body_kind == HH_BODY_LENGTH) {
        if (avail >= c->blk->req_len) {
            c->blk->body_end = c->blk->req_len;
            return dispatch(c);
        }
    } else {
        size_t outlen = 0, used = 0;
        char *base = c->blk->rbuf + c->blk->rstart;
        int r = hh_decode_chunked(&c->blk->dec, base + c->blk->raw_off, avail - c->blk->raw_off,
                                  base + c->blk->body_end, &outlen, &used,
                                  srv->o.max_body_bytes);
        c->blk->body_end += outlen;
        c->blk->raw_off += used;
        if (r == 1) {
            c->blk->req_len = c->blk->raw_off;
            return dispatch(c);
        }
        if (r < 0)
            return hs_error_response(c, r == -413 ? 413 : 400), 1;
        /* Keep only the decoded body and the undecoded rest. */
        size_t rest = avail - c->blk->raw_off;
        if (c->blk->raw_off > c->blk->body_end) {
            memmove(base + c->blk->body_end, base + c->blk->raw_off, rest);
            c->blk->rlen = c->blk->rstart + c->blk->body_end + rest;
            c->blk->raw_off = c->blk->body_end;
        }
    }
    /* The body is needed and allowed: ask for it (RFC 9110 10.1.1). */
    if (c->blk->hreq.expect_continue && !c->blk->sent_continue) {
        c->blk->sent_continue = true;
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (hs_buf_append(&c->blk->out, cont, sizeof cont - 1) < 0)
            return hs_error_response(c, 503), 1;
    }
    return 0;
}

static void linger_start(struct hs_conn *c)
{
    if (c->ssl)
        hs_tls_shutdown(c);
    if (c->eof) {
        hs_conn_close(c);
        return;
    }
    (void)shutdown(c->fd, SHUT_WR);
    c->state = HS_C_LINGER;
    c->read_more = true;
}

/* Discards input until EOF (close) or nothing more for now. */
static void linger_read(struct hs_conn *c)
{
    char buf[4096];
    while (c->read_more) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->read_more = false;
            return;
        }
        hs_conn_close(c);
        return;
    }
}

static void update_timer(struct hs_conn *c)
{
    int cls;
    bool refresh = false;
    switch (c->state) {
    case HS_C_HANDSHAKE:
        cls = HS_T_HANDSHAKE;
        break;
    case HS_C_HEAD:
    case HS_C_BODY:
        if (pending_out(c)) {
            cls = HS_T_WRITE;
        } else if (c->state == HS_C_BODY || (c->blk && c->blk->rlen > c->blk->rstart)) {
            cls = HS_T_READ;
            refresh = c->tnreq != c->nreq;
        } else if (c->nreq == 0) {
            cls = HS_T_NEW;
        } else {
            cls = HS_T_IDLE;
            refresh = c->tnreq != c->nreq;
        }
        break;
    case HS_C_APP:
    case HS_C_CLOSING:
        cls = pending_out(c) ? HS_T_WRITE : HS_T_NONE;
        break;
    case HS_C_LINGER:
        cls = HS_T_LINGER;
        break;
    default:
        cls = HS_T_NONE;
    }
    c->tnreq = c->nreq;
    hs_tset(c, cls, refresh);
}

void hs_conn_io(struct hs_conn *c, uint32_t events)
{
    if (c->state == HS_C_DEAD || c->state == HS_C_GONE)
        return;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->read_more = true;
    if ((events & EPOLLOUT) && c->tls_want_write)
        c->read_more = true;
    hs_conn_run(c);
}

/* Makes all the progress possible without blocking. */
void hs_conn_run(struct hs_conn *c)
{
    unsigned budget = HS_BUDGET;
    uint64_t start = handoff_now_usec();
    for (;;) {
        long r;
        bool wait_input = false;
        switch (c->state) {
        case HS_C_HANDSHAKE:
            r = hs_tls_handshake(c);
            if (r < 0) {
                hs_conn_close(c);
                return;
            }
            if (r == 0)
                goto out;
            c->w->handshakes++;
            c->state = HS_C_HEAD;
            continue;
        case HS_C_HEAD:
        case HS_C_BODY:
            if (pending_out(c) >= HS_OUT_HIGH)
                break;
            if (conn_process(c)) {
                if (c->state == HS_C_GONE || c->state == HS_C_DEAD)
                    return;
                if (--budget == 0 || handoff_now_usec() - start >= HS_SLICE_USEC) {
                    hs_ready_push(c); /* let other connections in */
                    break;
                }
                continue;
            }
            if (!c->read_more) {
                wait_input = true;
                break;
            }
            r = conn_read(c);
            if (r > 0)
                continue;
            if (r == 0) {
                wait_input = true;
                break;
            }
            if (r == -1) {
                /* The client is done sending. Anything partial is lost. */
                c->eof = true;
                c->read_more = false;
                if (c->state == HS_C_HEAD && c->blk->rlen == c->blk->rstart &&
                    pending_out(c)) {
                    c->state = HS_C_CLOSING;
                    break;
                }
                hs_conn_close(c);
                return;
            }
            if (r == -2 || !c->blk) {
                hs_conn_close(c); /* no block for an error response either */
                return;
            }
            hs_error_response(c, (int)-r);
            continue;
        case HS_C_APP:
        case HS_C_CLOSING:
            break;
        case HS_C_LINGER:
            linger_read(c);
            if (c->state == HS_C_GONE)
                return;
            goto out;
        default:
            return;
        }

        if (pending_out(c)) {
            int f = conn_flush(c);
            if (f < 0) {
                hs_conn_close(c);
                return;
            }
            if (f == 0)
                goto out;
            /* Everything went out; there may be more to do. */
            if (!wait_input && (c->state == HS_C_HEAD || c->state == HS_C_BODY) &&
                !c->in_ready)
                continue;
        }
        if (c->state == HS_C_CLOSING) {
            linger_start(c);
            if (c->state == HS_C_GONE)
                return;
            continue;
        }
        break;
    }
out:
    /* Idle: hold no buffers until the next request comes in. */
    if (c->blk && c->state == HS_C_HEAD && c->blk->rlen == c->blk->rstart && !c->read_more &&
        !c->in_ready && c->blk->out.len == 0)
        blk_release(c);
    update_timer(c);
}

/* Reads what may already be in the socket before closing an idle
 * connection: a request on its way is served rather than cut off. */
static void idle_close(struct hs_conn *c)
{
    c->read_more = true;
    long r = conn_read(c);
    if (r > 0) {
        hs_conn_run(c);
        return;
    }
    hs_conn_close(c);
}

/* c's timer (class cls, already removed) expired. */
void hs_conn_timeout(struct hs_conn *c, int cls)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    switch (cls) {
    case HS_T_READ:
        if (c->state == HS_C_BODY ||
            (c->state == HS_C_HEAD && c->blk && c->blk->rlen > c->blk->rstart)) {
            hs_error_response(c, 408);
            hs_conn_run(c);
            return;
        }
        hs_conn_close(c);
        return;
    case HS_T_NEW:
    case HS_T_IDLE:
        idle_close(c);
        return;
    case HS_T_WRITE:
        /* The client stopped reading: drop what the kernel still holds
         * for it too (a reset) rather than trickle it out after close. */
        (void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        hs_conn_close(c);
        return;
    default:
        hs_conn_close(c);
        return;
    }
}

/* ------------------------------------------------------------------------ */

int handoff_http_response_hijack(handoff_http_response *res, handoff_http_hijack *out)
{
    if (!res || !out)
        return -EINVAL;
    struct hs_conn *c = res->c;
    if (hs_current != c->w || !c->blk->in_handler || c->state != HS_C_APP)
        return -EPERM;
    if (c->ssl)
        return -ENOTSUP;
    if (res->a_streaming)
        return -EALREADY;
    if (pending_out(c)) {
        if (conn_flush(c) < 0)
            return -EPIPE;
        if (pending_out(c))
            return -EAGAIN;
    }
    size_t extra = c->blk->rlen - c->blk->rstart - c->blk->req_len;
    char *copy = NULL;
    if (extra) {
        copy = malloc(extra);
        if (!copy)
            return -ENOMEM;
        memcpy(copy, c->blk->rbuf + c->blk->rstart + c->blk->req_len, extra);
    }
    (void)epoll_ctl(c->w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    out->fd = c->fd;
    out->buffered = copy;
    out->buffered_len = extra;
    /* The drain keeps counting it until handoff_http_hijack_end(). */
    c->counted = false;
    c->fd = -1;
    c->state = HS_C_GONE;
    hs_tset(c, HS_T_NONE, false);
    hs_graveyard_add(c);
    return 0;
}
