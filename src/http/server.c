/*
 * server.c - the server object's life cycle (the handoff_http_server_*()
 * calls of handoff/http.h): options and defaults, listeners, the worker
 * threads, and the drain, resume and stop as the workers apply them.
 */
#include "server.h"

#include "accept.h"
#include "h1.h"
#include "h2.h"
#include "migrate.h"
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_READ_TIMEOUT (30 * HANDOFF_USEC_PER_SEC)
#define DEFAULT_WRITE_TIMEOUT (30 * HANDOFF_USEC_PER_SEC)
#define DEFAULT_IDLE_TIMEOUT (60 * HANDOFF_USEC_PER_SEC)
#define DEFAULT_TLS_TIMEOUT (10 * HANDOFF_USEC_PER_SEC)
#define DEFAULT_MAX_HEADER 8192
#define DEFAULT_MAX_BODY ((uint64_t)1 << 20)
#define DEFAULT_MAX_KEEPALIVE 10000
#define DEFAULT_STREAM_BUFFER ((size_t)1 << 20)

static int fail(handoff_http_server *srv, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records why a call on srv failed (handoff_http_server_errmsg()). */
static int fail(handoff_http_server *srv, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    /* The analyzer (clang 14) loses track of va_start() here. */
    (void)vsnprintf(srv->errmsg, sizeof srv->errmsg, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
    va_end(ap);
    return err;
}

/* ------------------------------------------------------------------------ */
/* The drain and the resume, as each worker applies them                   */

static void apply_drain(struct hs_worker *w)
{
    /* Every connection's next response gets "Connection: close"; on a
     * shutdown idle and new ones are also closed as their shortened
     * timeouts expire (a later shutdown drain may add the grace). */
    w->drain_grace = atomic_load(&hs_server_of(w)->drain_grace) != 0;
    if (!w->draining) {
        w->draining = true;
        hs_listeners_watch(w, false);
        /* With EPOLLEXCLUSIVE the kernel wakes one epoll instance per new
         * connection. One that woke this worker while the drain was being
         * set up (and was not accepted, see listener_io()) would wait in
         * the backlog until another connection woke the successor, for
         * ever on a quiet server: take what is queued now. The listeners
         * are out of this worker's epoll already, so whatever arrives from
         * now on wakes the successor (or, on a shutdown, is refused when
         * the listeners close). The fds are still open: the drain has not
         * been acknowledged yet. */
        hs_accept_sweep(w);
        w->accept_paused = false;
        hs_h2_drain_worker(w); /* HTTP/2 connections learn it by GOAWAY */
        /* A successor that adopts takes the connections (migrate.c). */
        hs_mig_drain(w);
    }
    /* The sequence number was raised before the flag was set, so this is
     * the number of the drain that set it (or a later one). */
    atomic_store(&w->drain_ack, atomic_load(&hs_server_of(w)->drain_seq));
}

/* Serve as before the drain. Keyed on the resume's number rather than on
 * w->draining: the drain may have removed the listeners from this
 * worker's epoll (from the loop thread) before the worker saw the flag. */
static void apply_resume(struct hs_worker *w, unsigned seq)
{
    w->resume_seen = seq;
    w->draining = false;
    w->drain_grace = false;
    hs_listeners_watch(w, true); /* which re-checks the flag: a new drain wins */
}

static void on_wake(struct hs_worker *w)
{
    handoff_http_server *srv = hs_server_of(w);
    unsigned resumed = atomic_load(&srv->resume_seq);
    if (atomic_load(&srv->draining))
        apply_drain(w);
    else if (resumed != w->resume_seen)
        apply_resume(w, resumed);
}

/* ------------------------------------------------------------------------ */
/* Public API                                                               */

static unsigned cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return (unsigned)n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

int handoff_http_server_new(handoff_t *h, const handoff_http_options *opts,
                            handoff_http_server **out)
{
    if (!opts || !opts->handler || !out)
        return -EINVAL;
    if (opts->health_path && opts->health_path[0] != '/')
        return -EINVAL;
    handoff_http_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return -ENOMEM;
    srv->h = h;
    srv->count.h = h;
    srv->o = *opts;
    handoff_http_options *o = &srv->o;
    if (!o->threads)
        o->threads = cpu_count();
    if (!o->read_timeout_usec)
        o->read_timeout_usec = DEFAULT_READ_TIMEOUT;
    if (!o->write_timeout_usec)
        o->write_timeout_usec = DEFAULT_WRITE_TIMEOUT;
    if (!o->idle_timeout_usec)
        o->idle_timeout_usec = DEFAULT_IDLE_TIMEOUT;
    if (!o->tls_handshake_timeout_usec)
        o->tls_handshake_timeout_usec = DEFAULT_TLS_TIMEOUT;
    if (!o->max_header_bytes)
        o->max_header_bytes = DEFAULT_MAX_HEADER;
    if (o->max_header_bytes > ((size_t)1 << 30))
        o->max_header_bytes = (size_t)1 << 30;
    if (!o->max_body_bytes)
        o->max_body_bytes = DEFAULT_MAX_BODY;
    if (o->max_body_bytes > ((uint64_t)1 << 40))
        o->max_body_bytes = (uint64_t)1 << 40;
    if (!o->max_keepalive_requests)
        o->max_keepalive_requests = DEFAULT_MAX_KEEPALIVE;
    if (!o->stream_buffer_bytes)
        o->stream_buffer_bytes = DEFAULT_STREAM_BUFFER;
    if (!o->http2_max_concurrent_streams)
        o->http2_max_concurrent_streams = 100;
    if (!o->http2_initial_window)
        o->http2_initial_window = 65535;
    if (o->http2_initial_window > 0x7fffffffu)
        o->http2_initial_window = 0x7fffffffu;
    if (o->http2_max_frame_size < 16384)
        o->http2_max_frame_size = 16384;
    if (o->http2_max_frame_size > 16777215)
        o->http2_max_frame_size = 16777215;
    srv->limits.max_header_bytes = o->max_header_bytes;
    srv->limits.max_target = o->max_header_bytes;
    srv->tdur[HS_T_HANDSHAKE] = o->tls_handshake_timeout_usec;
    srv->tdur[HS_T_NEW] = o->read_timeout_usec;
    srv->tdur[HS_T_READ] = o->read_timeout_usec;
    srv->tdur[HS_T_IDLE] = o->idle_timeout_usec;
    srv->tdur[HS_T_WRITE] = o->write_timeout_usec;
    srv->tdur[HS_T_LINGER] = HS_LINGER_USEC;
    if (opts->health_path) {
        srv->health_path = strdup(opts->health_path);
        if (!srv->health_path) {
            free(srv);
            return -ENOMEM;
        }
        srv->health_len = strlen(srv->health_path);
    }
    o->health_path = srv->health_path;
    *out = srv;
    return 0;
}

const char *handoff_http_server_errmsg(const handoff_http_server *srv)
{
    return srv ? srv->errmsg : "";
}

int handoff_http_server_add_listener(handoff_http_server *srv, int fd, const char *cert_file,
                                     const char *key_file)
{
    if (!srv)
        return -EINVAL;
    srv->errmsg[0] = '\0';
    if (fd < 0 || (!cert_file) != (!key_file))
        return fail(srv, -EINVAL, "%s", fd < 0 ? "bad fd" : "a certificate needs a key");
    if (srv->started)
        return fail(srv, -EBUSY, "the server has been started");
    int acc = 0;
    socklen_t al = sizeof acc;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &al) < 0) {
        int r = -errno;
        return fail(srv, r, "fd %d: %s", fd, strerror(-r));
    }
    if (!acc)
        return fail(srv, -EINVAL, "fd %d is not a listening socket", fd);
    SSL_CTX *ctx = NULL;
    if (cert_file) {
        int r = hs_tls_ctx_new(cert_file, key_file, srv->o.http2 != 0, &ctx, srv->errmsg, sizeof srv->errmsg);
        if (r < 0)
            return r;
    }
    struct hs_listener *ls = realloc(srv->ls, (srv->nls + 1) * sizeof *ls);
    if (!ls) {
        SSL_CTX_free(ctx);
        return fail(srv, -ENOMEM, "out of memory");
    }
    srv->ls = ls;
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK))
        (void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    ls[srv->nls++] = (struct hs_listener){.fd = fd, .ctx = ctx};
    return 0;
}

/* The name handoff_listen() gives spec by default: the characters that
 * LISTEN_FDNAMES cannot carry (':' is its separator, blanks, controls,
 * non-ASCII) become '_', at most 255 bytes. The name is passed explicitly
 * so that a failure can remove exactly this registration, and kept equal
 * to the core's default so that generations agree on it. */
static void default_name(const char *spec, char out[256])
{
    size_t i = 0;
    for (; i < 255 && spec[i]; i++) {
        unsigned char ch = (unsigned char)spec[i];
        out[i] = (ch == ':' || ch <= 0x20 || ch >= 0x7f) ? '_' : (char)ch;
    }
    out[i] = '\0';
}

int handoff_http_server_listen(handoff_http_server *srv, const char *spec, const char *cert_file,
                               const char *key_file)
{
    if (!srv)
        return -EINVAL;
    srv->errmsg[0] = '\0';
    if (!srv->h || !spec)
        return fail(srv, -EINVAL, "%s", !spec ? "no address" : "the server has no handle");
    if (srv->started)
        return fail(srv, -EBUSY, "the server has been started");
    char name[256];
    default_name(spec, name);
    char *copy = strdup(name);
    if (!copy)
        return fail(srv, -ENOMEM, "out of memory");
    int fd = handoff_listen(srv->h, name, spec, NULL);
    if (fd < 0) {
        free(copy);
        return fail(srv, fd, "%s", handoff_errmsg(srv->h));
    }
    int r = handoff_http_server_add_listener(srv, fd, cert_file, key_file);
    if (r < 0) {
        /* Closes the socket, and it is not passed to a successor. */
        (void)handoff_remove(srv->h, name);
        free(copy);
        return r;
    }
    srv->ls[srv->nls - 1].name = copy;
    return fd;
}

static void worker_done(struct hs_worker *w)
{
    hs_accept_free(w);
    hs_h2_worker_free(w);
    hs_worker_done(w, hs_h1_blk_destroy);
}

static int worker_init(handoff_http_server *srv, struct hs_worker *w)
{
    int r = hs_worker_init(w, srv, srv->tdur, &srv->stopping, on_wake, HS_BLK_POOL);
    w->counter = &srv->count;
    if (r == 0)
        r = hs_accept_init(w);
    if (r == 0 && !atomic_load(&srv->draining))
        hs_listeners_watch(w, true);
    return r;
}

int handoff_http_server_start(handoff_http_server *srv)
{
    if (!srv)
        return -EINVAL;
    srv->errmsg[0] = '\0';
    if (srv->started)
        return fail(srv, -EALREADY, "the server has been started");
    unsigned n = srv->o.threads;
    srv->ws = calloc(n, sizeof *srv->ws);
    if (!srv->ws)
        return fail(srv, -ENOMEM, "out of memory");
    srv->nws = n;
    for (unsigned i = 0; i < n; i++)
        srv->ws[i].epfd = srv->ws[i].evfd = -1;
    int r = 0;
    for (unsigned i = 0; i < n && r == 0; i++)
        r = worker_init(srv, &srv->ws[i]);

    /* Workers block every signal: signals are the handoff loop's job, and
     * a SIGPIPE from a write to a closed peer then only fails the write. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (unsigned i = 0; i < n && r == 0; i++) {
        r = -pthread_create(&srv->ws[i].thread, NULL, hs_worker_main, &srv->ws[i]);
        if (r == 0)
            srv->ws[i].started = true;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    srv->started = true;
    if (r < 0) {
        (void)fail(srv, r, "starting %u worker threads: %s", n, strerror(-r));
        (void)handoff_http_server_stop(srv);
        for (unsigned i = 0; i < n; i++) {
            hs_worker_destroy_all(&srv->ws[i]);
            worker_done(&srv->ws[i]);
        }
        free(srv->ws);
        srv->ws = NULL;
        srv->nws = 0;
        srv->started = false;
        srv->stopped = false;
        atomic_store(&srv->stopping, 0);
    }
    return r;
}

int handoff_http_server_lame_duck(handoff_http_server *srv)
{
    if (!srv)
        return -EINVAL;
    atomic_store(&srv->lame, 1);
    return 0;
}

int handoff_http_server_drain(handoff_http_server *srv)
{
    return srv ? hs_server_drain(srv, true) : -EINVAL;
}

int hs_server_drain(handoff_http_server *srv, bool grace)
{
    if (atomic_load(&srv->draining)) {
        if (grace && !atomic_exchange(&srv->drain_grace, 1))
            for (unsigned i = 0; i < srv->nws; i++)
                if (srv->ws[i].started)
                    hs_wake(&srv->ws[i]);
        return 0;
    }
    atomic_store(&srv->drain_grace, grace ? 1 : 0);
    unsigned seq = atomic_fetch_add(&srv->drain_seq, 1) + 1;
    atomic_store(&srv->draining, 1);
    /* Stop accepting before returning: the successor owns new
     * connections from now on. The workers also do this themselves when
     * they wake (so that a paused listener is not re-added). */
    for (unsigned i = 0; i < srv->nws; i++) {
        if (srv->ws[i].epfd < 0)
            continue;
        for (size_t k = 0; k < srv->nls; k++)
            hs_unwatch(&srv->ws[i], srv->ls[k].fd);
        hs_wake(&srv->ws[i]);
    }
    /* Wait (briefly: workers never block, unless a handler does) until
     * every worker has applied the drain, so that the caller may close
     * the listeners once this returns. */
    uint64_t until = handoff_now_usec() + HANDOFF_USEC_PER_SEC;
    for (unsigned i = 0; i < srv->nws; i++) {
        while (srv->ws[i].started && atomic_load(&srv->ws[i].drain_ack) != seq &&
               handoff_now_usec() < until) {
            struct timespec ts = {.tv_nsec = 200000};
            (void)nanosleep(&ts, NULL);
        }
    }
    if (srv->o.on_drain)
        srv->o.on_drain(srv, srv->o.userdata);
    return 0;
}

int handoff_http_server_resume(handoff_http_server *srv)
{
    if (!srv)
        return -EINVAL;
    srv->errmsg[0] = '\0';
    if (srv->stopped)
        return fail(srv, -ESHUTDOWN, "the server has been stopped");
    atomic_store(&srv->lame, 0);
    if (!atomic_load(&srv->draining))
        return 0;
    atomic_fetch_add(&srv->resume_seq, 1);
    atomic_store(&srv->draining, 0);
    /* Each worker watches the listeners again when it wakes. */
    for (unsigned i = 0; i < srv->nws; i++)
        if (srv->ws[i].started)
            hs_wake(&srv->ws[i]);
    return 0;
}

int handoff_http_server_stop(handoff_http_server *srv)
{
    if (!srv)
        return -EINVAL;
    if (!srv->started || srv->stopped)
        return 0;
    srv->stopped = true;
    atomic_store(&srv->stopping, 1);
    for (unsigned i = 0; i < srv->nws; i++)
        if (srv->ws[i].started)
            hs_wake(&srv->ws[i]);
    for (unsigned i = 0; i < srv->nws; i++)
        if (srv->ws[i].started) {
            pthread_join(srv->ws[i].thread, NULL);
            srv->ws[i].started = false;
        }
    return 0;
}

handoff_http_server *handoff_http_server_free(handoff_http_server *srv)
{
    if (!srv)
        return NULL;
    (void)handoff_http_server_stop(srv);
    for (unsigned i = 0; i < srv->nws; i++) {
        /* Whatever is left was held by the application until now. */
        hs_worker_destroy_all(&srv->ws[i]);
        worker_done(&srv->ws[i]);
    }
    free(srv->ws);
    for (size_t i = 0; i < srv->nls; i++) {
        SSL_CTX_free(srv->ls[i].ctx);
        free(srv->ls[i].name);
    }
    free(srv->ls);
    free(srv->health_path);
    free(srv);
    return NULL;
}

int handoff_http_server_listener_flags(handoff_http_server *srv, int fd, unsigned flags)
{
    if (!srv)
        return -EINVAL;
    if (flags & ~(unsigned)HANDOFF_HTTP_H2C)
        return fail(srv, -EINVAL, "unknown listener flags %#x", flags);
    if (srv->started)
        return fail(srv, -EBUSY, "the server has been started");
    for (size_t i = 0; i < srv->nls; i++) {
        if (srv->ls[i].fd != fd)
            continue;
        if ((flags & HANDOFF_HTTP_H2C) && srv->ls[i].ctx)
            return fail(srv, -EINVAL, "h2c on a TLS listener (ALPN chooses there)");
        srv->ls[i].h2c = (flags & HANDOFF_HTTP_H2C) != 0;
        return 0;
    }
    return fail(srv, -ENOENT, "fd %d is not a listener of this server", fd);
}

unsigned long handoff_http_server_connections(const handoff_http_server *srv)
{
    return srv ? atomic_load(&srv->count.n) : 0;
}

void handoff_http_hijack_end(handoff_http_server *srv)
{
    if (srv)
        hs_count_end(&srv->count);
}
