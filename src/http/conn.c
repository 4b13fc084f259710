/*
 * conn.c - one client connection (see conn.h): creation, the TLS
 * handshake, reading and writing through TLS or not, the lingering
 * close, closing and freeing.
 *
 * A connection is registered once (EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET)
 * and never modified, so that a request costs one read and one write.
 */
#include "conn.h"

#include "tls.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

void hs_count_begin(struct hs_counter *k)
{
    atomic_fetch_add(&k->n, 1);
    if (k->h)
        handoff_conn_begin(k->h);
}

void hs_count_end(struct hs_counter *k)
{
    atomic_fetch_sub(&k->n, 1);
    if (k->h)
        handoff_conn_end(k->h);
}

struct hs_conn *hs_conn_new(struct hs_worker *w, int fd, const struct sockaddr *peer,
                            socklen_t peer_len, SSL_CTX *ctx, const struct hs_proto *proto)
{
    struct hs_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->h.ops = &proto->h;
    c->fd = fd;
    c->w = w;
    if (peer_len <= sizeof c->peer) {
        memcpy(&c->peer, peer, peer_len);
        c->peer_len = (uint8_t)peer_len;
    }
    c->state = HS_C_OPEN;
    if (ctx) {
        c->ssl = hs_tls_new(ctx, fd);
        if (!c->ssl) {
            free(c);
            return NULL;
        }
        c->state = HS_C_HANDSHAKE;
    }
    if (hs_watch(w, fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, &c->h) < 0) {
        SSL_free(c->ssl);
        free(c);
        return NULL;
    }
    c->counted = true;
    hs_attach(w, &c->h);
    hs_tset(w, &c->h, c->state == HS_C_HANDSHAKE ? HS_T_HANDSHAKE : HS_T_NEW, true);
    return c;
}

void hs_conn_destroy(struct hs_handle *h)
{
    struct hs_conn *c = hs_conn_of(h);
    struct hs_worker *w = c->w;
    hs_detach(w, h);
    atomic_fetch_sub(&w->load, 1);
    hs_conn_proto(c)->release(c);
    SSL_free(c->ssl);
    /* Closed already, unless its worker never ran (a failed start). */
    if (c->fd >= 0)
        (void)close(c->fd);
    if (c->counted)
        hs_count_end(w->counter);
    free(c);
}

void hs_conn_stop(struct hs_handle *h)
{
    hs_conn_close(hs_conn_of(h));
}

void hs_conn_gone(struct hs_conn *c)
{
    c->state = HS_C_GONE;
    hs_bury(c->w, &c->h);
}

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
        hs_unwatch(c->w, c->fd);
        (void)close(c->fd);
        c->fd = -1;
    }
    hs_tset(c->w, &c->h, HS_T_NONE, false);
    if (c->counted) {
        c->counted = false;
        hs_count_end(c->w->counter);
    }
    atomic_store(&c->gone, true);
    if (hs_conn_proto(c)->closed(c)) {
        c->state = HS_C_DEAD;
        /* A producer waiting for handoff_http_response_on_writable()
         * learns that the client is gone when the protocol pumps. */
        hs_ready_push(c->w, &c->h);
        return;
    }
    hs_conn_gone(c);
}

int hs_conn_take_fd(struct hs_conn *c)
{
    int fd = c->fd;
    hs_unwatch(c->w, fd);
    c->fd = -1;
    c->counted = false;
    hs_conn_gone(c);
    return fd;
}

const struct sockaddr *hs_conn_peer(struct hs_conn *c, struct sockaddr_storage *ss,
                                    socklen_t *len)
{
    if (c->peer_len) {
        *len = c->peer_len;
        return &c->peer.sa;
    }
    /* Too large to keep while idle (a bound unix socket). */
    *len = sizeof *ss;
    if (getpeername(c->fd, (struct sockaddr *)ss, len) < 0) {
        ss->ss_family = AF_UNSPEC;
        *len = sizeof(sa_family_t);
    }
    return (const struct sockaddr *)ss;
}

long hs_conn_read(struct hs_conn *c, char *buf, size_t room)
{
    long n;
    if (c->ssl) {
        bool ww;
        n = hs_tls_read(c->ssl, buf, room, &ww);
        c->tls_want_write = ww;
        if (n == 0)
            c->read_more = false;
        return n;
    }
    for (;;) {
        n = read(c->fd, buf, room);
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
    return n;
}

int hs_conn_flush(struct hs_conn *c, hs_buf *out, size_t *woff, size_t keep)
{
    while (*woff < out->len) {
        long n;
        if (c->ssl) {
            n = hs_tls_write(c->ssl, out->p + *woff, out->len - *woff);
            if (n == 0)
                return 0;
            if (n < 0)
                return -1;
        } else {
            n = send(c->fd, out->p + *woff, out->len - *woff, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return 0;
                return -1;
            }
        }
        *woff += (size_t)n;
        if (c->h.tclass == HS_T_WRITE)
            hs_tset(c->w, &c->h, HS_T_WRITE, true); /* progress */
    }
    *woff = 0;
    hs_buf_trim(out, keep);
    return 1;
}

static void linger_read(struct hs_conn *c);

void hs_conn_linger(struct hs_conn *c)
{
    if (c->ssl)
        hs_tls_shutdown(c->ssl);
    if (c->eof) {
        hs_conn_close(c);
        return;
    }
    (void)shutdown(c->fd, SHUT_WR);
    c->state = HS_C_LINGER;
    c->read_more = true;
    hs_tset(c->w, &c->h, HS_T_LINGER, false);
    linger_read(c); /* edge-triggered: what is there already gives no event */
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

bool hs_conn_begin(struct hs_conn *c, uint32_t events)
{
    if (c->state == HS_C_DEAD || c->state == HS_C_GONE)
        return true;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->read_more = true;
    if ((events & EPOLLOUT) && c->tls_want_write)
        c->read_more = true;
    if (c->state == HS_C_LINGER) {
        linger_read(c);
        return true;
    }
    if (c->state != HS_C_HANDSHAKE)
        return false;
    bool ww;
    int r = hs_tls_handshake(c->ssl, &ww);
    c->tls_want_write = ww;
    if (r < 0) {
        hs_conn_close(c);
        return true;
    }
    if (r == 0)
        return true;
    c->w->handshakes++;
    c->state = HS_C_OPEN;
    c->read_more = true; /* the first request may have come with it */
    hs_tset(c->w, &c->h, HS_T_NEW, true);
    return false;
}

bool hs_conn_timeout_common(struct hs_conn *c, int cls)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    switch (cls) {
    case HS_T_WRITE:
        /* The client stopped reading: drop what the kernel still holds
         * for it too (a reset) rather than trickle it out after close. */
        (void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        hs_conn_close(c);
        return true;
    case HS_T_HANDSHAKE:
    case HS_T_LINGER:
        hs_conn_close(c);
        return true;
    default:
        return false;
    }
}
