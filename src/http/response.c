/*
 * response.c - the response and request API of handoff/http.h, the same
 * for every protocol (see response.h for who touches what, and when a
 * lock is taken).
 */
#include "response.h"

#include "parse.h"
#include "server.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

void hs_res_init(handoff_http_response *res, struct hs_conn *c, void *stream,
                 const handoff_http_request *req)
{
    res->c = c;
    res->stream = stream;
    res->req = req;
}

void hs_res_reset(handoff_http_response *res)
{
    res->a_status = 200;
    res->a_close = 0;
    res->a_streaming = 0;
    res->a_ended = 0;
    res->a_oom = 0;
    res->a_hdrs.len = 0;
    res->a_body.len = 0;
    res->in_handler = res->owner_ended = res->async = false;
    res->a_wfn = NULL;
    res->a_warg = NULL;
    atomic_store_explicit(&res->stream_gone, false, memory_order_relaxed);
    atomic_store_explicit(&res->unsent, 0, memory_order_relaxed);
}

void hs_res_trim(handoff_http_response *res, size_t keep)
{
    hs_buf_trim(&res->a_hdrs, keep);
    hs_buf_trim(&res->a_body, keep);
}

void hs_res_free(handoff_http_response *res)
{
    hs_buf_free(&res->a_hdrs);
    hs_buf_free(&res->a_body);
}

/* The built-in health path: 200 normally, 503 in lame duck or draining. */
static void health(handoff_http_server *srv, handoff_http_response *res)
{
    bool down = atomic_load(&srv->lame) || atomic_load(&srv->draining);
    if (down)
        (void)handoff_http_response_send(res, 503, "text/plain", "Service Unavailable\n", 20);
    else
        (void)handoff_http_response_send(res, 200, "text/plain", "OK\n", 3);
}

void hs_res_run(handoff_http_response *res, const handoff_http_request *req)
{
    handoff_http_server *srv = hs_server_of(res->c->w);
    res->in_handler = true;
    if (srv->health_path && req->path.len == srv->health_len &&
        memcmp(req->path.p, srv->health_path, srv->health_len) == 0)
        health(srv, res);
    else
        srv->o.handler(req, res, srv->o.userdata);
    res->in_handler = false;
    /* An end on this thread set a_ended before the handler returned; any
     * other thread goes through the lock (and the queue). */
    if (!res->owner_ended)
        res->async = true;
}

static bool res_gone(const handoff_http_response *res)
{
    return atomic_load_explicit(&res->c->gone, memory_order_relaxed) ||
           atomic_load_explicit(&res->stream_gone, memory_order_relaxed);
}

void hs_res_writable(handoff_http_response *res, size_t unsent, bool locked)
{
    struct hs_worker *w = res->c->w;
    atomic_store_explicit(&res->unsent, unsent, memory_order_relaxed);
    if (locked)
        pthread_mutex_lock(&w->mu);
    handoff_http_defer_fn fn = res->a_wfn;
    void *arg = res->a_warg;
    if (res->a_ended)
        res->a_wfn = fn = NULL;
    else if (fn && (res_gone(res) ||
                    res->a_body.len + unsent <= hs_server_of(w)->o.stream_buffer_bytes / 2))
        res->a_wfn = NULL;
    else
        fn = NULL;
    if (locked)
        pthread_mutex_unlock(&w->mu);
    if (fn)
        fn(res, arg);
}

/* ------------------------------------------------------------------------ */
/* Public API                                                               */

static bool on_owner(const handoff_http_response *res)
{
    return hs_current == res->c->w;
}

/* The application changed res on the worker thread: its connection gets
 * a turn (after the handler, which is followed by one anyway). */
static void changed_owner(handoff_http_response *res)
{
    if (res->in_handler)
        return;
    struct hs_conn *c = res->c;
    const struct hs_proto *p = hs_conn_proto(c);
    if (p->changed_locked) {
        pthread_mutex_lock(&c->w->mu);
        p->changed_locked(res);
        pthread_mutex_unlock(&c->w->mu);
    }
    hs_ready_push(c->w, &c->h);
}

/* The same from another thread, with w->mu held. Returns true when the
 * worker must be woken. */
static bool changed_locked(handoff_http_response *res)
{
    struct hs_conn *c = res->c;
    const struct hs_proto *p = hs_conn_proto(c);
    if (p->changed_locked)
        p->changed_locked(res);
    return hs_enqueue_locked(c->w, &c->h);
}

/* Whether len more bytes would take res's queued stream data over the
 * limit. One write may go over when nothing is queued, so that a producer
 * of large pieces is not stuck. Called by the owner, with w->mu if not on
 * the worker. */
static bool over_limit(const handoff_http_response *res, size_t len)
{
    size_t queued = res->a_body.len + atomic_load_explicit(&res->unsent, memory_order_relaxed);
    size_t limit = hs_server_of(res->c->w)->o.stream_buffer_bytes;
    return queued && (queued >= limit || len > limit - queued);
}

/* Appends without checking room: the caller reserved it. */
static char *put(char *p, const void *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

static bool is_token(const char *s)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (!*s)
        return false;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
              (ch >= 'A' && ch <= 'Z') || (ch && strchr(extra, ch))))
            return false;
    }
    return true;
}

static bool has_close_token(const char *v)
{
    /* Connection is a list of tokens; look for "close" among them. */
    const char *p = v;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *s = p;
        while (*p && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        if (p - s == 5 && strncasecmp(s, "close", 5) == 0)
            return true;
    }
    return false;
}

int handoff_http_response_status(handoff_http_response *res, int status)
{
    if (!res || status < 200 || status > 999)
        return -EINVAL;
    if (res->a_streaming)
        return -EALREADY;
    res->a_status = status;
    return 0;
}

int handoff_http_response_header(handoff_http_response *res, const char *name,
                                 const char *value)
{
    if (!res || !name || !value || !is_token(name))
        return -EINVAL;
    if (strpbrk(value, "\r\n"))
        return -EINVAL;
    if (res->a_streaming)
        return -EALREADY;
    if (strcasecmp(name, "content-length") == 0 ||
        strcasecmp(name, "transfer-encoding") == 0)
        return -EINVAL;
    if (strcasecmp(name, "date") == 0)
        return 0; /* the library sends its own */
    if (strcasecmp(name, "connection") == 0 && has_close_token(value)) {
        res->a_close = 1;
        return 0; /* sent by the library with the close decision */
    }
    size_t nl = strlen(name), vl = strlen(value);
    hs_buf *b = &res->a_hdrs;
    if (hs_buf_reserve(b, nl + vl + 4) < 0) {
        res->a_oom = 1;
        return -ENOMEM;
    }
    char *p = b->p + b->len;
    p = put(p, name, nl);
    p = put(p, ": ", 2);
    p = put(p, value, vl);
    p = put(p, "\r\n", 2);
    b->len = (size_t)(p - b->p);
    return 0;
}

int handoff_http_response_body(handoff_http_response *res, const void *data, size_t len)
{
    if (!res || (!data && len))
        return -EINVAL;
    if (res->a_streaming)
        return -EALREADY;
    /* The worker reads a buffered body only after the end, so no lock. */
    if (hs_buf_append(&res->a_body, data, len) < 0) {
        res->a_oom = 1;
        return -ENOMEM;
    }
    return 0;
}

int handoff_http_response_write(handoff_http_response *res, const void *data, size_t len)
{
    if (!res || (!data && len))
        return -EINVAL;
    struct hs_conn *c = res->c;
    if (res_gone(res))
        return -EPIPE; /* tell a producer that nobody listens any more */
    if (on_owner(res)) {
        if (!res->a_streaming && res->a_body.len)
            return -EALREADY;
        if (res->a_streaming && over_limit(res, len))
            return -EAGAIN; /* wait for handoff_http_response_on_writable() */
        res->a_streaming = 1;
        if (hs_buf_append(&res->a_body, data, len) < 0)
            return -ENOMEM;
        changed_owner(res);
        return 0;
    }
    struct hs_worker *w = c->w;
    int r = 0;
    bool wake = false;
    pthread_mutex_lock(&w->mu);
    if (!res->a_streaming && res->a_body.len) {
        r = -EALREADY;
    } else if (res->a_streaming && over_limit(res, len)) {
        r = -EAGAIN;
    } else {
        res->a_streaming = 1;
        r = hs_buf_append(&res->a_body, data, len);
        if (r == 0)
            wake = changed_locked(res);
    }
    pthread_mutex_unlock(&w->mu);
    if (wake)
        hs_wake(w);
    return r;
}

int handoff_http_response_end(handoff_http_response *res)
{
    if (!res)
        return -EINVAL;
    struct hs_conn *c = res->c;
    if (on_owner(res)) {
        res->a_ended = 1;
        res->owner_ended = true;
        changed_owner(res);
        return 0;
    }
    /* After the unlock the worker may finish and free c: only w is used. */
    struct hs_worker *w = c->w;
    pthread_mutex_lock(&w->mu);
    res->a_ended = 1;
    bool wake = changed_locked(res);
    pthread_mutex_unlock(&w->mu);
    if (wake)
        hs_wake(w);
    return 0;
}

int handoff_http_response_on_writable(handoff_http_response *res, handoff_http_defer_fn fn,
                                      void *arg)
{
    if (!res || !fn)
        return -EINVAL;
    struct hs_conn *c = res->c;
    struct hs_worker *w = c->w;
    if (on_owner(res)) {
        if (w->finishing)
            return -ECANCELED;
        res->a_wfn = fn;
        res->a_warg = arg;
        changed_owner(res); /* the worker checks when it pumps */
        return 0;
    }
    if (atomic_load(&hs_server_of(w)->stopping))
        return -ECANCELED; /* nobody would run fn */
    pthread_mutex_lock(&w->mu);
    res->a_wfn = fn;
    res->a_warg = arg;
    bool wake = changed_locked(res);
    pthread_mutex_unlock(&w->mu);
    if (wake)
        hs_wake(w);
    return 0;
}

int handoff_http_response_send(handoff_http_response *res, int status,
                               const char *content_type, const void *body, size_t len)
{
    if (!res)
        return -EINVAL;
    int r = handoff_http_response_status(res, status);
    if (r == 0 && content_type)
        r = handoff_http_response_header(res, "Content-Type", content_type);
    if (r == 0)
        r = handoff_http_response_body(res, body, len);
    if (r < 0 && r != -EALREADY)
        res->a_oom = 1; /* answer 500 rather than half of what was meant */
    (void)handoff_http_response_end(res);
    return r;
}

const handoff_http_request *handoff_http_response_request(const handoff_http_response *res)
{
    return res ? res->req : NULL;
}

handoff_http_server *handoff_http_response_server(const handoff_http_response *res)
{
    return res ? hs_server_of(res->c->w) : NULL;
}

/* Calls the application's deferred callback with its own type. */
static void defer_run(void *obj, void (*fn)(void), void *arg)
{
    ((handoff_http_defer_fn)fn)(obj, arg);
}

int handoff_http_response_defer(handoff_http_response *res, uint64_t delay_usec,
                                handoff_http_defer_fn fn, void *arg)
{
    if (!res || !fn)
        return -EINVAL;
    if (!on_owner(res))
        return -EPERM;
    uint64_t at = hs_sat_add(handoff_now_usec(), delay_usec);
    return hs_timer_add(res->c->w, at, defer_run, res, (void (*)(void))fn, arg);
}

const char *handoff_http_request_header(const handoff_http_request *req, const char *name,
                                        size_t *len)
{
    if (!req || !name)
        return NULL;
    const hh_header *hd = hh_find_header(req->internal_, name);
    if (!hd)
        return NULL;
    if (len)
        *len = hd->value.len;
    return hd->value.p;
}

int handoff_http_request_header_at(const handoff_http_request *req, size_t i,
                                   handoff_http_str *name, handoff_http_str *value)
{
    if (!req)
        return 0;
    const hh_request *h = req->internal_;
    if (i >= h->num_headers)
        return 0;
    const hh_header *hd = &h->headers[i];
    if (name)
        *name = (handoff_http_str){hd->name.p, hd->name.len};
    if (value)
        *value = (handoff_http_str){hd->value.p, hd->value.len};
    return 1;
}
