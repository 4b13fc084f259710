/*
 * conn.h - one client connection (internal to libhandoff-http): its
 * socket, TLS, timeouts and closing, below the protocol that runs on it
 * (h1.c for HTTP/1.1; an HTTP/2 one plugs in the same way).
 *
 * A connection is a worker handle whose callbacks are its protocol's
 * (struct hs_proto). The protocol asks this layer to read, write, time
 * out, linger and close; this layer runs the TLS handshake and the
 * lingering close itself (hs_conn_begin()) and calls the protocol only
 * for an open connection. A connection can be made from any connected
 * stream socket with its peer's address (hs_conn_new()): an accepted
 * one, or one adopted from another generation along with the state the
 * protocol kept for it.
 *
 * Threads: a connection belongs to its worker's thread, except `gone`
 * (read by any thread) and what the cross-thread queue protects (w->mu).
 */
#ifndef HANDOFF_HTTP_CONN_H
#define HANDOFF_HTTP_CONN_H

#include "buf.h"
#include "worker.h"

#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct hs_conn;
struct handoff_http_response;

/* The open connections of a server and the core's count of them
 * (handoff_conn_begin/end, so that the core's drain waits for them). */
struct hs_counter {
    handoff_t *h;     /* may be NULL */
    atomic_ulong n;
};
void hs_count_begin(struct hs_counter *k);
void hs_count_end(struct hs_counter *k);

/* A protocol. Its handle callbacks (io, run, queued, timeout) are called
 * for its connections; stop and destroy must be hs_conn_stop and
 * hs_conn_destroy. io and timeout start with hs_conn_begin() and
 * hs_conn_timeout_common(), which deal with what is not the protocol's. */
struct hs_proto {
    struct hs_handle_ops h;
    const char *name;
    /* The socket was closed (hs_conn_close()). Returns true if the
     * application still holds a response of c: c is then kept (state
     * HS_C_DEAD) until the protocol calls hs_conn_gone(). */
    bool (*closed)(struct hs_conn *c);
    /* c is being freed: free what the protocol holds for it. */
    void (*release)(struct hs_conn *c);
    /* May be NULL. The application changed res (a write, the end, an
     * on_writable request), on any thread, with w->mu held; its connection
     * is queued or made ready right after. For a protocol with several
     * responses per connection (HTTP/2), to note which one. */
    void (*changed_locked)(struct handoff_http_response *res);
};

enum hs_cstate {
    HS_C_HANDSHAKE = 0, /* TLS handshake in progress */
    HS_C_OPEN,          /* the protocol's (see pstate) */
    HS_C_LINGER,        /* write side shut; discarding input until EOF */
    HS_C_DEAD,          /* socket closed; the application holds a response */
    HS_C_GONE           /* socket closed; freed at the end of the iteration */
};

/* The peer's address as kept by a connection: IPv4 and IPv6 fit; a
 * larger one (a bound unix socket) is read again when needed. */
typedef union hs_peer {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
} hs_peer;

/* This is all an idle keep-alive connection holds (about 150 bytes):
 * what is needed only while a request is in progress is the protocol's
 * (p). */
struct hs_conn {
    struct hs_handle h;  /* first; h.ops is the protocol's */
    int fd;
    uint8_t state;       /* enum hs_cstate */
    uint8_t pstate;      /* the protocol's own state while HS_C_OPEN */
    uint8_t peer_len;    /* bytes of peer; 0 when it did not fit */
    atomic_bool gone;    /* the socket is closed (read by any thread) */
    bool read_more : 1;      /* the socket may hold unread input */
    bool eof : 1;            /* the client shut its write side */
    bool tls_want_write : 1; /* an SSL_read/handshake needs the socket writable */
    bool close_after : 1;    /* the protocol closes once its output is out */
    bool counted : 1;        /* counts in the server's hs_counter */
    bool h2c : 1;            /* on an h2c listener: HTTP/1.1 looks for the
                                HTTP/2 preface first (h1.c) */
    bool no_migrate : 1;     /* never hand it to a successor (migrate.c) */
    unsigned nreq;       /* requests dispatched */
    unsigned tnreq;      /* nreq when the timer was last set (the protocol's) */
    struct hs_worker *w;
    SSL *ssl;
    void *p;             /* the protocol's (HTTP/1.1: the request block) */
    hs_peer peer;
};

/* The connection whose handle h is. */
static inline struct hs_conn *hs_conn_of(struct hs_handle *h)
{
    return (struct hs_conn *)(void *)h;
}

/* The protocol of c. */
static inline const struct hs_proto *hs_conn_proto(const struct hs_conn *c)
{
    return (const struct hs_proto *)(const void *)c->h.ops;
}

/* Starts serving the connected socket fd on w with proto (through TLS
 * with ctx, if not NULL): registered with w's epoll, in its handles, with
 * the read timeout of a new connection (or the handshake's). The caller
 * has counted it (hs_count_begin()); c now owns fd and the count.
 * Returns c, or NULL (fd and count still the caller's). */
struct hs_conn *hs_conn_new(struct hs_worker *w, int fd, const struct sockaddr *peer,
                            socklen_t peer_len, SSL_CTX *ctx, const struct hs_proto *proto);

/* The start of a protocol's io callback: records what events says, runs
 * the TLS handshake and the lingering close. Returns true if there is
 * nothing for the protocol to do (c may be closed then), false when c is
 * open (a handshake just completed: read_more is set). */
bool hs_conn_begin(struct hs_conn *c, uint32_t events);

/* The start of a protocol's timeout callback: handles the handshake,
 * write and linger classes (closing c). Returns true if it did. */
bool hs_conn_timeout_common(struct hs_conn *c, int cls);

/* Reads once into buf. Returns bytes (> 0), 0 (nothing now: read_more is
 * cleared), -1 (end of input), -2 (connection error). */
long hs_conn_read(struct hs_conn *c, char *buf, size_t room);

/* Writes out.p[*woff, out.len). Returns 1 when all is written (out is then
 * emptied, and freed if larger than keep), 0 when the socket is full, -1
 * on error. Progress restarts a running write timeout. */
int hs_conn_flush(struct hs_conn *c, hs_buf *out, size_t *woff, size_t keep);

/* The last output is out: shut the write side and discard input until
 * the client closes or HS_LINGER_USEC passes (closing with unread input
 * would send a reset that can destroy the response in flight). */
void hs_conn_linger(struct hs_conn *c);

/* Closes the socket (and ends its count); see hs_proto.closed. */
void hs_conn_close(struct hs_conn *c);

/* A dead connection's last response has ended: free it this iteration. */
void hs_conn_gone(struct hs_conn *c);

/* Takes the socket out of c for the application (hijack): c forgets it
 * and goes; the count stays with the application. Returns the fd. */
int hs_conn_take_fd(struct hs_conn *c);

/* The peer's address for a request: c's own, or read now into ss. */
const struct sockaddr *hs_conn_peer(struct hs_conn *c, struct sockaddr_storage *ss,
                                    socklen_t *len);

/* hs_proto callbacks every protocol uses. */
void hs_conn_stop(struct hs_handle *h);
void hs_conn_destroy(struct hs_handle *h);

/* After a final response, how long to read and discard what the client
 * still sends before closing. */
#define HS_LINGER_USEC (2 * HANDOFF_USEC_PER_SEC)

#endif
