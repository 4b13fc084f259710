/*
 * server.h - internals of libhandoff-http shared by its source files;
 * never installed. Internal non-static functions are prefixed hs_.
 *
 * Threads: each worker owns its epoll instance, its connections and
 * everything in them, except the parts of a response the application
 * touches (struct handoff_http_response's a_* fields) and the worker's
 * cross-thread queue, which w->mu protects. See response.c.
 */
#ifndef HANDOFF_HTTP_SERVER_H
#define HANDOFF_HTTP_SERVER_H

#include "handoff/http.h"
#include "parse.h"

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define HS_MAX_HEADERS 100
#define HS_RBUF_INIT 4096
/* Read buffers grown beyond this (for a large body) are given back once
 * the request is done. */
#define HS_RBUF_KEEP 65536
#define HS_WBUF_KEEP 65536
/* Idle per-request blocks a worker keeps for reuse, and the largest
 * output buffers kept in one. */
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
/* After this many TLS handshakes, a worker quiet for this long trims the
 * heap (see trim_heap() in server.c). */
#define HS_TRIM_HANDSHAKES 64
#define HS_TRIM_QUIET_USEC (200 * HANDOFF_USEC_PER_MSEC)
/* Connections accepted per listener event (fairness between workers),
 * and at most by a worker taking what is queued when it starts draining. */
#define HS_ACCEPT_BATCH 16
#define HS_DRAIN_SWEEP_MAX 4096
/* After a final response, how long to read and discard what the client
 * still sends before closing (so that close() does not turn into a reset
 * that destroys the response in flight). */
#define HS_LINGER_USEC (2 * HANDOFF_USEC_PER_SEC)
/* While draining, a keep-alive connection idle for this long is closed
 * (as is a new one that has sent nothing). One active more recently may
 * have its next request on the way: a busy client sends it within
 * microseconds, but one stalled by the scheduler for a few hundred
 * milliseconds must not find the connection closed under the request,
 * so the grace is generous; the successor serves meanwhile anyway. */
#define HS_DRAIN_GRACE_USEC (1000 * HANDOFF_USEC_PER_MSEC)
#define HS_DRAIN_GRACE_NEW_USEC (1000 * HANDOFF_USEC_PER_MSEC)

/* A growable byte buffer. */
typedef struct hs_buf {
    char *p;
    size_t len;
    size_t cap;
} hs_buf;

int hs_buf_reserve(hs_buf *b, size_t extra);
int hs_buf_append(hs_buf *b, const void *data, size_t n);
void hs_buf_free(hs_buf *b);

/* What an epoll event's data.ptr points to starts with one of these. */
enum hs_kind { HS_K_LISTENER = 1, HS_K_WAKE = 2, HS_K_CONN = 3 };

struct hs_listener {
    int fd;
    SSL_CTX *ctx; /* NULL: plain HTTP */
    char *name;   /* the name it is registered under in srv->h when
                     handoff_http_server_listen() made it; NULL otherwise */
};

/* A worker's registration of one listener (epoll data). */
struct hs_lwatch {
    int kind; /* HS_K_LISTENER */
    struct hs_listener *l;
};

/* Timeout classes; every connection is in at most one list, sorted by
 * the time it entered, since each class has one duration. */
enum hs_tclass {
    HS_T_NONE = 0,
    HS_T_HANDSHAKE,
    HS_T_NEW,        /* no request yet (read timeout) */
    HS_T_READ,
    HS_T_IDLE,
    HS_T_WRITE,
    HS_T_LINGER,
    HS_T_COUNT
};

enum hs_cstate {
    HS_C_HANDSHAKE = 0, /* TLS handshake in progress */
    HS_C_HEAD,          /* waiting for / reading a request head */
    HS_C_BODY,          /* reading a request body */
    HS_C_APP,           /* the application holds the response */
    HS_C_CLOSING,       /* sending the last response, then linger */
    HS_C_LINGER,        /* write side shut; discarding input until EOF */
    HS_C_DEAD,          /* fd closed; waiting for the application's end */
    HS_C_GONE           /* fd closed; freed at the end of the iteration */
};

struct hs_conn;
struct hs_worker;

struct handoff_http_response {
    struct hs_conn *c;
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
};

/* What a connection needs only while it has a request in progress: the
 * input buffer, the request being read or answered (the parser's state,
 * the header array, the request and response handed to the application)
 * and the output buffer, so that an idle keep-alive connection holds none
 * of it. Taken when input is to be read, given back when the connection
 * is idle: no unconsumed input, no request in progress, no output pending
 * (see conn.c). Blocks given back are kept in a per-worker pool with their
 * buffers (up to HS_BLK_POOL blocks), so that steady load allocates
 * nothing. */
struct hs_blk {
    struct hs_blk *next; /* in the worker's pool */
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
    /* Per-request flags (worker-only). */
    bool in_handler;    /* the handler is running */
    bool async;         /* the handler returned before ending */
    bool owner_ended;   /* ended on the worker thread (no lock needed) */
    bool hdrs_out;      /* the response head has been composed */
    bool chunked;       /* streamed with chunked framing */
    bool is_head;       /* the request is HEAD */
    bool moved;         /* rbuf moved since the head was parsed */
    bool sent_continue; /* 100 Continue sent for this request */
    /* The peer's address when it does not fit in the connection (a
     * bound unix socket): read again with getpeername() per request. */
    struct sockaddr_storage peer;
    hh_header hh[HS_MAX_HEADERS];
};


struct hs_timer {
    uint64_t at;
    uint64_t seq;
    handoff_http_response *res;
    handoff_http_defer_fn fn;
    void *arg;
};

/* The peer's address as kept by an idle connection: IPv4 and IPv6 fit;
 * anything larger (a bound unix socket) is read per request instead. */
typedef union hs_peer {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
} hs_peer;

/* One connection. This is all an idle keep-alive connection holds (about
 * 150 bytes): everything needed only while a request is in progress lives
 * in the per-request block (blk). */
struct hs_conn {
    int kind; /* HS_K_CONN */
    int fd;
    uint8_t state;      /* enum hs_cstate */
    uint8_t tclass;     /* enum hs_tclass: timeout list membership */
    uint8_t peer_len;   /* bytes of peer; 0 when it did not fit */
    bool queued;        /* in the cross-thread queue (under w->mu) */
    atomic_bool gone;   /* the socket is closed (read by any thread) */
    /* Worker-only flags. */
    bool read_more : 1;      /* the socket may hold unread input */
    bool eof : 1;            /* the client shut its write side */
    bool tls_want_write : 1; /* an SSL_read/handshake needs the socket writable */
    bool close_after : 1;    /* close once the current response is out */
    bool in_ready : 1;       /* in the worker's ready list */
    bool ever_async : 1;     /* the response may have been queued */
    bool counted : 1;        /* counts in handoff_conn_begin/srv->nconn */
    unsigned nreq;      /* requests dispatched */
    unsigned tnreq;     /* nreq when the timer was last set */
    struct hs_worker *w;
    SSL *ssl;
    /* The per-request block: NULL while idle. */
    struct hs_blk *blk;
    uint64_t tsince;    /* when it entered its timeout list */
    /* Timeout list (also the graveyard's link once closed). */
    struct hs_conn *tprev, *tnext;
    /* All connections of the worker. */
    struct hs_conn *prev, *next;
    /* Ready list (work to do without an I/O event). */
    struct hs_conn *rprev, *rnext;
    /* Cross-thread queue (under w->mu). */
    struct hs_conn *qnext;
    hs_peer peer;
};

struct hs_tlist {
    struct hs_conn *head, *tail;
};

struct hs_worker {
    int kind; /* HS_K_WAKE: the eventfd's epoll data */
    handoff_http_server *srv;
    pthread_t thread;
    bool started;
    int epfd;
    int evfd;
    struct hs_lwatch *lw; /* one per listener */

    uint64_t now;         /* CLOCK_MONOTONIC at the last wake-up */
    int64_t date_sec;
    char date[30];
    bool draining;        /* this worker has applied the drain */
    unsigned resume_seen; /* the last resume it applied */
    bool inited;          /* mu initialised */
    bool finishing;       /* stopped: no new deferred callbacks */
    uint64_t accept_paused_until; /* listeners unwatched (EMFILE) until */
    uint64_t busy_at;     /* the last wake-up with events */
    unsigned handshakes;  /* TLS handshakes since the heap was trimmed */

    struct hs_conn *conns;
    struct hs_tlist tl[HS_T_COUNT];
    struct hs_conn *ready_head, *ready_tail;
    size_t nready;
    struct hs_conn *graveyard;
    struct hs_blk *blks;  /* pool of idle per-request blocks */
    unsigned nblks;

    struct hs_timer *timers; /* binary min-heap on (at, seq) */
    size_t ntimers, captimers;
    uint64_t timer_seq;

    pthread_mutex_t mu;
    struct hs_conn *q_head, *q_tail; /* under mu */
    struct hs_incoming *in_head;     /* under mu: handed over by others */

    /* Connections this worker serves or is about to (for balancing). */
    atomic_uint load;
    /* The number of the last drain this worker applied (it stopped
     * accepting): see handoff_http_server_drain(). */
    atomic_uint drain_ack;
};

/* A connection accepted by one worker for another (see worker_accept()). */
struct hs_incoming {
    struct hs_incoming *next;
    int fd;
    struct hs_listener *l;
    socklen_t peer_len;
    struct sockaddr_storage peer;
};

struct handoff_http_server {
    handoff_t *h;
    handoff_http_options o;
    char *health_path;
    size_t health_len;
    hh_limits limits;
    uint64_t tdur[HS_T_COUNT];

    struct hs_listener *ls;
    size_t nls;
    struct hs_worker *ws;
    unsigned nws;

    bool started;
    bool stopped;
    atomic_int draining;
    atomic_uint drain_seq; /* drains started (a resume allows another) */
    atomic_uint resume_seq; /* resumes (see apply_resume()) */
    atomic_int stopping;
    atomic_int lame;
    atomic_ulong nconn;
};

/* The worker whose thread this is, or NULL. */
extern _Thread_local struct hs_worker *hs_current;

/* server.c */
void hs_ready_push(struct hs_conn *c);
void hs_wake(struct hs_worker *w);
void hs_tset(struct hs_conn *c, int tclass, bool refresh);
int hs_timer_add(struct hs_worker *w, handoff_http_response *res, uint64_t at,
                 handoff_http_defer_fn fn, void *arg);
void hs_graveyard_add(struct hs_conn *c);
void hs_count_begin(handoff_http_server *srv);
void hs_count_end(handoff_http_server *srv);
void hs_date_update(struct hs_worker *w, bool force);

/* conn.c */
struct hs_conn *hs_conn_new(struct hs_worker *w, struct hs_listener *l,
                            int fd, const struct sockaddr *peer,
                            socklen_t peer_len);
void hs_conn_io(struct hs_conn *c, uint32_t events);
void hs_conn_run(struct hs_conn *c);
void hs_conn_close(struct hs_conn *c);
void hs_conn_free(struct hs_conn *c);
void hs_conn_timeout(struct hs_conn *c, int cls);
void hs_conn_finish_response(struct hs_conn *c);
void hs_blk_pool_free(struct hs_worker *w);

/* response.c */
void hs_res_reset(handoff_http_response *res);
bool hs_res_pump(struct hs_conn *c);
int hs_error_response(struct hs_conn *c, int status);
void hs_res_health(struct hs_conn *c);

/* tls.c */
int hs_tls_ctx_new(const char *cert_file, const char *key_file,
                   SSL_CTX **out, char *errbuf, size_t errlen);
int hs_tls_conn_new(struct hs_conn *c, SSL_CTX *ctx);
int hs_tls_handshake(struct hs_conn *c);
long hs_tls_read(struct hs_conn *c, char *buf, size_t len);
long hs_tls_write(struct hs_conn *c, const char *buf, size_t len);
void hs_tls_shutdown(struct hs_conn *c);

#endif
