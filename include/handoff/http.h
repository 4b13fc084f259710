/*
 * handoff/http.h - an HTTP/1.1 and HTTP/2 server with zero-downtime
 * restarts.
 *
 * libhandoff-http is built on libhandoff (handoff.h). It has two layers:
 *
 *  1. handoff_http_listen_and_serve() and handoff_http_listen_and_serve_tls()
 *     are drop-in calls in the manner of Go's endless: they listen, serve,
 *     re-exec the binary on SIGHUP (the new generation inherits the
 *     listening sockets, the old one drains) and shut down gracefully on
 *     SIGTERM/SIGINT, with no further code in the application.
 *     handoff_http_serve() does the same for several servers and listeners
 *     with every option. This layer owns the process: it logs warnings and
 *     errors to stderr unless given a log function (handoff_options.log),
 *     and it decides what signals do.
 *
 *  2. handoff_http_server_*() expose the server object for applications
 *     that run their own handoff event loop: create it on a handoff_t,
 *     add listener fds, start it, and call drain/stop on the core's
 *     HANDOFF_EVENT_DRAIN/HANDOFF_EVENT_STOP.
 *
 * Each server runs its own worker threads, each with one epoll instance
 * that watches every listener. Handlers run on those threads. A handler
 * may complete its response later, from a timer (handoff_http_response_
 * defer()) or from any other thread, so a slow request never stalls the
 * other connections of its worker.
 *
 * HTTP/2 (RFC 9113, through libnghttp2) is one option away: with
 * handoff_http_options.http2 set, TLS listeners offer "h2" by ALPN (with
 * "http/1.1" as the fallback), and a cleartext listener may also take
 * HTTP/2 with prior knowledge (h2c; handoff_http_server_listener_flags()).
 * Each stream is a request and its response, handed to the same handler
 * through the same calls. What differs for a handler:
 *  - the streams of a connection are independent: holding one response
 *    does not hold up the others (HTTP/1.1 pipelining waits);
 *  - request fields: http_version is 20, minor_version 1, keep_alive 1;
 *    target is :path; the pseudo-header fields are not in the header list;
 *    names are lowercase; :authority becomes a "host" field (first) when
 *    there is none; several "cookie" fields are joined with "; " in the
 *    first one's place; the other fields keep their order;
 *  - no connection-specific field is sent: Connection, Keep-Alive,
 *    Proxy-Connection, Transfer-Encoding and Upgrade are dropped from a
 *    response; "Connection: close" makes the connection go away
 *    gracefully (GOAWAY) instead; names are sent lowercase;
 *  - trailers: a request's trailer section is checked and dropped (as
 *    HTTP/1.1's chunked trailers are); responses carry none;
 *  - handoff_http_response_hijack() returns -ENOTSUP; CONNECT gets 501.
 * Malformed requests (RFC 9113 8.1.1) are reset before the handler; the
 * drain sends GOAWAY twice (RFC 9113 6.8: a notice, then, one PING round
 * trip later, the last stream processed) and lets streams in flight end.
 * handoff_http(3) has the details, the limits and the protections.
 *
 * Conventions are those of handoff.h: fallible calls return 0 (or a
 * non-negative value) or a negative errno value, and a call on a server
 * that fails leaves a sentence in handoff_http_server_errmsg(); times are
 * microseconds; a zero option takes its default; layer 2 never logs or
 * exits; no fd given to the library is closed by it unless stated.
 *
 * Link with pkg-config --libs handoff-http.
 */
#ifndef HANDOFF_HTTP_H
#define HANDOFF_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "handoff.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct handoff_http_server handoff_http_server;
typedef struct handoff_http_response handoff_http_response;

/* A borrowed byte string; not NUL-terminated. */
typedef struct handoff_http_str {
    const char *p;
    size_t len;
} handoff_http_str;

/* One request, as passed to the handler. Everything it points to is owned
 * by the library and stays valid, unchanged, until the response is ended
 * (handoff_http_response_end()) or hijacked; copy what you need beyond
 * that. The fields are read-only. */
typedef struct handoff_http_request {
    handoff_http_str method;   /* "GET", "HEAD", ... (case-sensitive) */
    handoff_http_str target;   /* the request-target as sent */
    handoff_http_str path;     /* target up to '?' ("/" for an empty
                                  absolute-form path) */
    handoff_http_str query;    /* after the first '?'; len 0 if none */
    int minor_version;         /* 0 for HTTP/1.0, 1 for HTTP/1.1 */
    int keep_alive;            /* the client asked to keep the connection */
    int upgrade;               /* Connection: upgrade with an Upgrade header */
    int tls;                   /* 1 if it came over TLS */
    const char *body;          /* decoded body (Content-Length or chunked);
                                  NULL when body_len is 0 */
    size_t body_len;
    const struct sockaddr *peer; /* the client's address */
    socklen_t peer_len;
    const void *internal_;     /* private */
    int http_version;          /* 10, 11, or 20 for HTTP/2 (minor_version
                                  is then 1) */
} handoff_http_request;

/* Returns the value of the first header named name (ASCII case-
 * insensitive) and stores its length in *len (len may be NULL), or NULL if
 * the request has no such header. The value is not NUL-terminated.
 * Thread-safe: yes, while the request is valid. */
HANDOFF_EXPORT const char *handoff_http_request_header(
    const handoff_http_request *req, const char *name, size_t *len);

/* Stores the i-th header (in the order received) in *name and *value.
 * Returns 1, or 0 when i is past the last header. */
HANDOFF_EXPORT int handoff_http_request_header_at(
    const handoff_http_request *req, size_t i, handoff_http_str *name,
    handoff_http_str *value);

/* A request handler. It runs on a worker thread of the server and must not
 * block: it either ends res before returning, or hands res to a timer or
 * another thread that ends it later. Until res is ended the connection
 * reads nothing more (pipelined requests wait, so responses stay in
 * order). userdata is handoff_http_options.userdata. */
typedef void (*handoff_http_handler)(const handoff_http_request *req,
                                     handoff_http_response *res,
                                     void *userdata);

/* ------------------------------------------------------------------------ */
/* Responses                                                                */
/*
 * A response is owned by one thread at a time: the worker gives it to the
 * handler; the handler may pass it to another thread (with the usual
 * synchronisation, e.g. a mutex-protected queue), which then owns it. The
 * functions below may be called from any thread by the current owner;
 * none is async-signal-safe. After handoff_http_response_end() the
 * response and its request must not be touched again.
 *
 * If the connection has gone away in the meantime, the output is dropped
 * (handoff_http_response_write() says so with -EPIPE); the response must
 * still be ended.
 */

/* Sets the status code (200..999; default 200).
 * Returns 0, -EINVAL, or -EALREADY once streaming has started. */
HANDOFF_EXPORT int handoff_http_response_status(handoff_http_response *res,
                                                int status);

/* Adds a header field. name must be a token, value must not contain CR,
 * LF or NUL. Content-Length and Transfer-Encoding are managed by the
 * library and refused; "Connection: close" makes the connection close
 * after this response; Date is always sent by the library.
 * Returns 0, -EINVAL, -ENOMEM, or -EALREADY once streaming has started. */
HANDOFF_EXPORT int handoff_http_response_header(handoff_http_response *res,
                                                const char *name,
                                                const char *value);

/* Appends len bytes to the buffered body, sent with a Content-Length when
 * the response ends. For HEAD the body is not sent but still counts in
 * Content-Length. Returns 0, -ENOMEM, or -EALREADY once streaming has
 * started (use handoff_http_response_write() then). */
HANDOFF_EXPORT int handoff_http_response_body(handoff_http_response *res,
                                              const void *data, size_t len);

/* Streams: the first call sends the status line and headers with
 * "Transfer-Encoding: chunked" (for an HTTP/1.0 client: no framing, and
 * the connection closes after the response; over HTTP/2, DATA frames
 * within the client's flow-control windows); each call sends data as one
 * chunk (len 0 sends nothing). The data is copied. What is queued and not
 * yet written to the connection is bounded by stream_buffer_bytes (see
 * handoff_http_options): beyond it the call queues nothing and returns
 * -EAGAIN, and handoff_http_response_on_writable() says when to go on (a
 * single call may exceed the bound when nothing is queued). Returns 0,
 * -EAGAIN, -ENOMEM, -EALREADY if a buffered body was set, or -EPIPE when
 * the connection (or the HTTP/2 stream) is closed (stop producing; end
 * res). */
HANDOFF_EXPORT int handoff_http_response_write(handoff_http_response *res,
                                               const void *data, size_t len);

/* Ends the response: a buffered response is sent with its Content-Length,
 * a streamed one with the last chunk. The owning worker is woken through
 * its eventfd when called from another thread. Afterwards res and its
 * request are invalid. Returns 0 (or -EINVAL for NULL).
 * Thread-safe: yes (by the owner of res, once). */
HANDOFF_EXPORT int handoff_http_response_end(handoff_http_response *res);

/* Shorthand: status, a Content-Type header (if content_type is not NULL),
 * the body, then end. Returns as the calls it makes; res is ended even on
 * failure (with status 500 if a header or the body could not be set). */
HANDOFF_EXPORT int handoff_http_response_send(handoff_http_response *res,
                                              int status,
                                              const char *content_type,
                                              const void *body, size_t len);

/* The request this response answers (valid until the end). */
HANDOFF_EXPORT const handoff_http_request *handoff_http_response_request(
    const handoff_http_response *res);

/* A callback scheduled with handoff_http_response_defer(). */
typedef void (*handoff_http_defer_fn)(handoff_http_response *res, void *arg);

/* Runs fn(res, arg) on the worker thread that owns res's connection after
 * delay_usec, without blocking that worker meanwhile; fn usually ends
 * res. Must be called on that worker thread (from the handler or from a
 * deferred callback). When the server stops first, fn runs at the stop
 * (the connection is closed by then; ending res is still required).
 * Returns 0, -ENOMEM, -EPERM when called from another thread, or
 * -ECANCELED from a callback run by the stop (end res instead). */
HANDOFF_EXPORT int handoff_http_response_defer(handoff_http_response *res,
                                               uint64_t delay_usec,
                                               handoff_http_defer_fn fn,
                                               void *arg);

/* Runs fn(res, arg) once, on the worker thread that owns res's connection,
 * when the stream data queued for res has fallen to half of
 * stream_buffer_bytes (at the next turn of the worker if it already has),
 * or when the client has gone (handoff_http_response_write() then returns
 * -EPIPE: end res). Meant for a producer that got -EAGAIN; fn usually
 * writes more (and calls this again) or ends res. A later call replaces
 * an earlier one not yet run; after handoff_http_response_end() fn is
 * never run. May be called by the owner of res from any thread.
 * Returns 0, -EINVAL, or -ECANCELED once the server is stopping (end res
 * instead). */
HANDOFF_EXPORT int handoff_http_response_on_writable(handoff_http_response *res,
                                                     handoff_http_defer_fn fn,
                                                     void *arg);

/* A connection taken over by the application (WebSocket and the like). */
typedef struct handoff_http_hijack {
    int fd;            /* the socket: non-blocking, close-on-exec; owned
                          by the application, which closes it */
    char *buffered;    /* bytes the client sent after the request (may be
                          the start of the new protocol); malloc'd, the
                          application frees it; NULL if none */
    size_t buffered_len;
} handoff_http_hijack;

/* Takes the raw connection out of the server: the library stops watching
 * the socket, sends nothing more on it (not even a response: write your
 * own "101 Switching Protocols"), and forgets it; res and the request are
 * ended (invalid) on success. The connection stays counted for the drain
 * (handoff_conn_begin()) until the application calls
 * handoff_http_hijack_end() once, after closing the fd; hook
 * handoff_http_options.on_drain to close such connections on a restart.
 * Must be called from the handler, on its worker thread, before anything
 * was streamed. Returns 0, -ENOTSUP for a TLS connection, -EALREADY if
 * streaming has started, -EPERM from another thread or outside the
 * handler, -EAGAIN if earlier pipelined responses are still being sent,
 * -EPIPE if sending them failed (the client is gone), -ENOMEM. On
 * failure res is unchanged and still owned by the caller. */
HANDOFF_EXPORT int handoff_http_response_hijack(handoff_http_response *res,
                                                handoff_http_hijack *out);

/* Tells the server that a hijacked connection is finished (its fd was
 * closed), so the drain no longer waits for it. Thread-safe: yes. */
HANDOFF_EXPORT void handoff_http_hijack_end(handoff_http_server *srv);

/* The server that dispatched res. Thread-safe: yes. */
HANDOFF_EXPORT handoff_http_server *handoff_http_response_server(
    const handoff_http_response *res);

/* ------------------------------------------------------------------------ */
/* Options                                                                  */

/* One listener for handoff_http_serve(). */
typedef struct handoff_http_listen_spec {
    const char *addr;          /* an address spec as handoff_listen() takes */
    const char *tls_cert_file; /* PEM certificate chain; NULL: plain HTTP */
    const char *tls_key_file;  /* PEM private key (with tls_cert_file) */
    int h2c;                   /* cleartext only: also serve HTTP/2 with
                                  prior knowledge (see
                                  handoff_http_server_listener_flags()) */
} handoff_http_listen_spec;

/* Options of one server (handoff_http_server_new(), and each site of
 * handoff_http_serve()). Zero-initialise (HANDOFF_HTTP_OPTIONS_INIT) and
 * set what you need; every zero field takes its default. A timeout of
 * HANDOFF_NO_TIMEOUT means never. */
typedef struct handoff_http_options {
    handoff_http_handler handler;  /* required */
    void *userdata;                /* passed to handler and on_drain */

    /* Worker threads. Default: the number of CPUs this process may run on. */
    unsigned threads;

    /* Read timeout: from the first byte of a request to its last body
     * byte; a partial request then gets 408. A new connection that sends
     * nothing at all is closed after this long, without a response.
     * Default 30 s. */
    uint64_t read_timeout_usec;
    /* Write timeout: how long pending output may make no progress before
     * the connection is closed (with a reset: what the client did not read
     * is dropped). Default 30 s. */
    uint64_t write_timeout_usec;
    /* Idle timeout: how long a keep-alive connection may wait for its next
     * request. Default 60 s. */
    uint64_t idle_timeout_usec;
    /* TLS handshake timeout. Default 10 s. */
    uint64_t tls_handshake_timeout_usec;

    /* Largest request head (request line and headers) in bytes; beyond
     * it: 431 (or 414 while still in the request-target). More than 100
     * header fields also get 431. Default 8192. */
    size_t max_header_bytes;
    /* Largest request body (decoded); beyond it: 413. Bodies are held in
     * memory. Default 1 MiB. */
    uint64_t max_body_bytes;
    /* Requests served on one connection before "Connection: close".
     * Default 10000. */
    unsigned max_keepalive_requests;

    /* A path answered by the server itself: 200 "OK" normally, 503 in lame
     * duck and while draining. NULL: none. Copied. */
    const char *health_path;

    /* Called (on the thread that calls handoff_http_server_drain()) when the
     * server starts draining, e.g. to close hijacked connections. */
    void (*on_drain)(handoff_http_server *srv, void *userdata);

    /* HTTP/2 (RFC 9113). Non-zero: TLS listeners offer "h2" by ALPN
     * before "http/1.1". Cleartext HTTP/2 is a per-listener choice
     * (h2c). Default 0: HTTP/1.1 only. */
    int http2;
    /* SETTINGS_MAX_CONCURRENT_STREAMS. Default 100. */
    uint32_t http2_max_concurrent_streams;
    /* SETTINGS_INITIAL_WINDOW_SIZE: how much of a request body a client
     * may send on a stream before we ask for more. Default 65535. */
    uint32_t http2_initial_window;
    /* SETTINGS_MAX_FRAME_SIZE we accept, 16384..16777215. Default 16384. */
    uint32_t http2_max_frame_size;

    /* Streamed responses (handoff_http_response_write()), both protocols:
     * the most data queued per response and not yet written to the
     * connection; a client that reads slowly (or, over HTTP/2, keeps its
     * flow-control window shut) then costs at most this much memory per
     * response. Default 1 MiB. */
    size_t stream_buffer_bytes;
    /* Connection migration. 0 (default): when the server drains for a
     * restart and the successor adopts connections (both processes set
     * HANDOFF_MIGRATE, which handoff_http_serve() does), its plain
     * HTTP/1.1 connections are handed to the successor instead of being
     * closed: idle ones at once, others once their response is out, with
     * the input not yet parsed, the requests served and the time idle
     * (see handoff_http_adopt()). TLS, HTTP/2 and hijacked connections
     * never migrate. 1: never hand this server's connections over. */
    int no_migrate;
} handoff_http_options;

#define HANDOFF_HTTP_OPTIONS_INIT {0}

/* One server of handoff_http_serve(): its options and its listeners. */
typedef struct handoff_http_site {
    const handoff_http_options *options;    /* required */
    const handoff_http_listen_spec *listen; /* num_listen entries */
    size_t num_listen;
} handoff_http_site;

/* What handoff_http_serve() decides for the whole process. Zero-initialise
 * (HANDOFF_HTTP_SERVE_OPTIONS_INIT); every zero field takes its default. */
typedef struct handoff_http_serve_options {
    /* The handle's options (NULL: defaults). Its drain_timeout_usec is
     * the default of hammer_timeout_usec; without a log function, warnings
     * and errors go to stderr. */
    const handoff_options *core;
    /* Hammer timeout: how long a draining process waits for requests in
     * flight before closing everything. Default: core->drain_timeout_usec
     * (30 s if that is 0 too). */
    uint64_t hammer_timeout_usec;
    /* Lame-duck delay: on SIGTERM/SIGINT (not on a restart) keep serving
     * for this long while each server's health_path answers 503, then
     * drain. Default 0 (drain at once). */
    uint64_t lame_duck_usec;
    /* SIGUSR1 and SIGUSR2, which would end the process by their default
     * action, are watched when they are still at it (a handler the
     * application installed before is left alone). With on_signal, each
     * one calls on_signal(signo, userdata) on the thread that called
     * handoff_http_serve() (a normal context, not a signal handler: it may
     * reopen log files, for example); without, it is logged and ignored. */
    void (*on_signal)(int signo, void *userdata);
    void *userdata;
} handoff_http_serve_options;

#define HANDOFF_HTTP_SERVE_OPTIONS_INIT {0}

/* ------------------------------------------------------------------------ */
/* Layer 1: serve until shut down                                           */

/* Listens on addr (see handoff_listen()) and serves handler, endless-style:
 * SIGHUP re-executes the binary, which inherits the listening socket and
 * takes over, while this process drains; SIGTERM/SIGINT drain and return
 * (the listening sockets are closed when that drain starts, after any
 * lame-duck delay, so that new clients are refused rather than queued).
 * Call it from main() before starting any thread (see handoff_new()).
 * Returns 0 after a graceful drain (the connections finished),
 * -ETIMEDOUT if the hammer timeout closed some, -EINTR after a forced
 * stop (second SIGTERM), or a negative errno if it could not start. */
HANDOFF_EXPORT int handoff_http_listen_and_serve(const char *addr,
                                                 handoff_http_handler handler,
                                                 void *userdata);

/* The same over TLS (OpenSSL 3, ALPN "http/1.1"), with a certificate chain
 * and a private key in PEM files. They are read at start-up, so a restart
 * picks up rotated files. */
HANDOFF_EXPORT int handoff_http_listen_and_serve_tls(
    const char *addr, const char *cert_file, const char *key_file,
    handoff_http_handler handler, void *userdata);

/* The general form: creates the handoff handle with opts->core (opts may
 * be NULL for all defaults), creates the n servers of sites with their
 * listeners, declares readiness and runs the event loop until STOP. The
 * handle's drain_timeout_usec is the hammer timeout plus the lame-duck
 * delay, since the core's hammer timer starts at the DRAIN event, before
 * the lame duck. On a shutdown the listening sockets are closed when the
 * drain starts, so that new clients are refused. With the core's
 * resume_window_usec, HANDOFF_EVENT_RESUME (the successor died right
 * after taking over) makes the servers serve again. SIGUSR1 and SIGUSR2:
 * see on_signal. When start-up fails, the reason is logged. Returns as
 * handoff_http_listen_and_serve(). Thread-safe: no. */
HANDOFF_EXPORT int handoff_http_serve(const handoff_http_serve_options *opts,
                                      const handoff_http_site *sites, size_t n);

/* ------------------------------------------------------------------------ */
/* Layer 2: the server object                                               */
/*
 * Life cycle: new -> add_listener/listen (one or more) -> start ->
 * [lame_duck] -> drain -> stop -> free. Except where stated, the calls
 * must come from one thread (the application's event-loop thread) and are
 * not async-signal-safe. Create the handoff_t (handoff_new()) before
 * starting servers, so that worker threads inherit its signal mask.
 */

/* Creates a server. h (may be NULL) is used to count connections
 * (handoff_conn_begin/end, so that the core's HANDOFF_EVENT_STOP with
 * HANDOFF_STOP_DRAINED fires when they are done) and by
 * handoff_http_server_listen(); it must outlive the server. opts is
 * copied. Returns 0 with *out set,
 * -EINVAL (no handler, or a health_path that does not start with '/'),
 * or -ENOMEM. */
HANDOFF_EXPORT int handoff_http_server_new(handoff_t *h,
                                           const handoff_http_options *opts,
                                           handoff_http_server **out);

/* A sentence about the last failure of a call on srv ("" if none). Owned
 * by srv, valid until the next call on it. Thread-safe: no. */
HANDOFF_EXPORT const char *handoff_http_server_errmsg(const handoff_http_server *srv);

/* Serves the listening stream socket fd (TCP or unix). The fd stays
 * owned by the caller (typically h, from handoff_listen()) and is never
 * closed by the server; it is made non-blocking. With cert_file and
 * key_file (PEM) the listener speaks TLS; both are read now. Call before
 * handoff_http_server_start(). Returns 0, -EINVAL (not a listening
 * socket, only one of cert_file and key_file, or a certificate/key that
 * does not load or match), -EBADF/-ENOTSOCK (from getsockopt()), -EBUSY
 * (already started), -ENOMEM, or -ENOENT/-EACCES when a PEM file cannot
 * be read; handoff_http_server_errmsg() tells which. */
HANDOFF_EXPORT int handoff_http_server_add_listener(handoff_http_server *srv,
                                                    int fd,
                                                    const char *cert_file,
                                                    const char *key_file);

/* handoff_listen(h, name, spec, NULL), where name is the one handoff_listen()
 * gives spec by default (':' and blanks replaced by '_'), followed by
 * add_listener. If add_listener fails the socket is closed and its
 * registration removed (handoff_remove()), so that it is not passed to a
 * successor and the same spec may be listened on again. handoff_http_
 * serve() removes such listeners when a shutdown drain starts.
 * Returns the listener fd (owned by h) or a negative errno: those of
 * handoff_listen() and of add_listener; -EINVAL if the server has no
 * handoff_t, -EBUSY if it was started. handoff_http_server_errmsg() says
 * why (handoff_errmsg() of h for handoff_listen()'s failures). */
HANDOFF_EXPORT int handoff_http_server_listen(handoff_http_server *srv,
                                              const char *spec,
                                              const char *cert_file,
                                              const char *key_file);

/* Flags for handoff_http_server_listener_flags(). */
#define HANDOFF_HTTP_H2C 1u /* HTTP/2 with prior knowledge (cleartext) */

/* Sets flags on listener fd (added with add_listener or listen) before
 * the server starts. HANDOFF_HTTP_H2C: a client that opens with the HTTP/2
 * preface speaks HTTP/2, any other HTTP/1.1, on the same cleartext
 * listener ("Upgrade: h2c" is not supported). Returns 0, -EINVAL (unknown
 * flags, or H2C on a TLS listener, where ALPN decides), -ENOENT (no such
 * listener) or -EBUSY (started). */
HANDOFF_EXPORT int handoff_http_server_listener_flags(handoff_http_server *srv,
                                                      int fd, unsigned flags);

/* Starts the worker threads (which block every signal). Returns 0,
 * -EALREADY, or -errno from pthread_create/epoll_create1/eventfd (then no
 * thread is left running). */
HANDOFF_EXPORT int handoff_http_server_start(handoff_http_server *srv);

/* Enters lame duck: the server keeps serving, but health_path answers 503.
 * Returns 0. Thread-safe: yes. */
HANDOFF_EXPORT int handoff_http_server_lame_duck(handoff_http_server *srv);

/* Starts the drain (call it on HANDOFF_EVENT_DRAIN): when it returns, no
 * worker watches or accepts on the listener fds any more (they are left
 * open for the successor; on a shutdown the caller may then close them,
 * e.g. with handoff_remove(), so that new clients are refused at once;
 * what was already queued in the listen backlog is accepted and served);
 * requests in flight complete. When the successor adopts connections
 * (handoff_successor_adopts()) and no_migrate is 0, plain HTTP/1.1
 * connections are handed over (see no_migrate) instead of what follows.
 * Each other keep-alive connection gets "Connection: close" on its next
 * response; a connection idle for a second (or new and silent for a
 * second) is closed, after one last read so that a request already on its
 * way is served (handoff_http_serve() keeps this grace for a shutdown
 * only: on an upgrade such a connection is never closed while idle; it
 * closes after its next response, at its own idle/read timeout or at the
 * hammer timeout). Calls on_drain. May
 * wait up to a second for a worker blocked in a handler. Idempotent.
 * Returns 0. */
HANDOFF_EXPORT int handoff_http_server_drain(handoff_http_server *srv);

/* What handoff_http_adopt() did. */
typedef struct handoff_http_adopt_counts {
    unsigned long adopted;  /* from the predecessor, now served */
    unsigned long returned; /* our own, back from the successor: drained */
    unsigned long refused;  /* closed: unreadable state, or no plain
                             * listener for it */
} handoff_http_adopt_counts;

/* Call it on HANDOFF_EVENT_ADOPT (handoff_http_serve() does): takes every
 * waiting connection (handoff_adopt() until none is left) and gives each
 * to the server among servers[0..n) with the plain listener it was
 * accepted from (matched by address), on its least loaded worker, with
 * its state restored: input received but not parsed yet is served before
 * what the socket holds, and its request count and current wait (idle or
 * new, against its timeouts) carry on. A connection of our own returned
 * by the successor is served here until it closes and never handed over
 * again. A connection that cannot be adopted is closed and counted in
 * refused. counts may be NULL. Returns 0, or -errno from handoff_adopt()
 * or -ENOMEM (connections still waiting stay for the next call). */
HANDOFF_EXPORT int handoff_http_adopt(handoff_t *h, handoff_http_server *const *servers,
                                      size_t n, handoff_http_adopt_counts *counts);

/* Undoes a drain (call it on HANDOFF_EVENT_RESUME, which the core reports
 * with resume_window_usec when the successor died right after taking
 * over): the workers watch the listener fds again and keep-alive
 * connections are kept again; connections the drain closed stay closed,
 * and lame duck ends. The listener fds must still be open (the core keeps
 * them through a hand-over). Returns 0 (also when not draining),
 * -ESHUTDOWN after handoff_http_server_stop(), or -EINVAL. */
HANDOFF_EXPORT int handoff_http_server_resume(handoff_http_server *srv);

/* Stops the workers (call it on HANDOFF_EVENT_STOP): closes every
 * connection, runs pending deferred callbacks, and joins the threads.
 * Responses still held by other threads stay valid and must be ended
 * before handoff_http_server_free(). Idempotent. Returns 0. */
HANDOFF_EXPORT int handoff_http_server_stop(handoff_http_server *srv);

/* Stops the server if needed and frees it. Does not close listener fds.
 * Accepts NULL. Always returns NULL. */
HANDOFF_EXPORT handoff_http_server *handoff_http_server_free(
    handoff_http_server *srv);

/* The number of connections currently open (including hijacked ones).
 * Thread-safe: yes. */
HANDOFF_EXPORT unsigned long handoff_http_server_connections(
    const handoff_http_server *srv);

#ifdef __cplusplus
}
#endif

#endif /* HANDOFF_HTTP_H */
