/*
 * response.c - the response API and the bytes of HTTP/1.1 responses.
 *
 * Who touches what. A response is built by its owner (the handler on the
 * worker thread, or whichever thread it was handed to) in the a_* fields;
 * the worker turns those into bytes in c->blk->out ("pumping") and never writes
 * a_* except to take stream data. While the handler runs, and when the
 * owner is the worker thread itself, nothing else can run concurrently, so
 * no lock is taken: the fast path (a handler that answers at once) is
 * lock-free. Once the handler has returned without ending the response
 * (c->blk->async), another thread may own it: its write() and end() take the
 * worker's mutex, queue the connection and wake the worker through its
 * eventfd, and the worker pumps under the same mutex.
 */
#include "server.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int hs_buf_reserve(hs_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra) {
        if (cap > SIZE_MAX / 2)
            return -ENOMEM;
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p)
        return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

int hs_buf_append(hs_buf *b, const void *data, size_t n)
{
    if (n == 0)
        return 0;
    int r = hs_buf_reserve(b, n);
    if (r < 0)
        return r;
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

void hs_buf_free(hs_buf *b)
{
    free(b->p);
    *b = (hs_buf){0};
}

static const char *reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "";
    }
}

/* Appends without checking room: the caller reserved it. */
static char *put(char *p, const void *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

#define PUTLIT(p, lit) put((p), (lit), sizeof(lit) - 1)

static char *put_dec(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static char *put_hex(char *p, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[16];
    size_t n = 0;
    do {
        tmp[n++] = digits[v & 15];
        v >>= 4;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* Status line and Date: at most 9 + 3 + 1 + 31 + 2 + 6 + 29 + 2 bytes. */
#define HEAD_FIXED 96

static char *put_status_date(char *p, struct hs_worker *w, int status)
{
    const char *why = reason(status);
    p = PUTLIT(p, "HTTP/1.1 ");
    p = put_dec(p, (uint64_t)status);
    *p++ = ' ';
    p = put(p, why, strlen(why));
    p = PUTLIT(p, "\r\nDate: ");
    p = put(p, w->date, 29);
    return PUTLIT(p, "\r\n");
}

static bool status_has_body(int status)
{
    return status != 204 && status != 304 && status >= 200;
}

/* Decides whether the connection closes after this response. */
static void decide_close(struct hs_conn *c)
{
    handoff_http_server *srv = c->w->srv;
    if (!c->blk->hreq.keep_alive || c->blk->res.a_close ||
        c->nreq >= srv->o.max_keepalive_requests ||
        atomic_load_explicit(&srv->draining, memory_order_relaxed))
        c->close_after = true;
}

/* Composes the response head into c->blk->out. Called with the lock when
 * c->blk->async. Returns 0 or -ENOMEM. */
static int compose_head(struct hs_conn *c, bool streaming)
{
    handoff_http_response *res = &c->blk->res;
    int status = res->a_status;
    bool body = status_has_body(status);
    if (res->a_oom) {
        /* Something the handler set is missing; say so honestly. */
        status = 500;
        res->a_hdrs.len = 0;
        res->a_body.len = 0;
        body = true;
        c->close_after = true;
    }
    decide_close(c);
    if (streaming && body && c->blk->hreq.minor_version == 0)
        c->close_after = true; /* no chunked for HTTP/1.0: close-delimited */
    c->blk->chunked = streaming && body && c->blk->hreq.minor_version == 1;

    if (hs_buf_reserve(&c->blk->out, HEAD_FIXED + res->a_hdrs.len + 96) < 0)
        return -ENOMEM;
    char *p = c->blk->out.p + c->blk->out.len;
    p = put_status_date(p, c->w, status);
    p = put(p, res->a_hdrs.p, res->a_hdrs.len);
    if (c->blk->chunked) {
        p = PUTLIT(p, "Transfer-Encoding: chunked\r\n");
    } else if (body && !streaming) {
        p = PUTLIT(p, "Content-Length: ");
        p = put_dec(p, res->a_body.len);
        p = PUTLIT(p, "\r\n");
    }
    if (c->close_after)
        p = PUTLIT(p, "Connection: close\r\n");
    else if (c->blk->hreq.minor_version == 0)
        p = PUTLIT(p, "Connection: keep-alive\r\n");
    p = PUTLIT(p, "\r\n");
    c->blk->out.len = (size_t)(p - c->blk->out.p);
    c->blk->hdrs_out = true;
    return 0;
}

/* Moves stream data out of a_body into c->blk->out as one chunk. */
static int emit_stream(struct hs_conn *c)
{
    hs_buf *b = &c->blk->res.a_body;
    if (b->len == 0 || c->blk->is_head || !status_has_body(c->blk->res.a_status)) {
        b->len = 0;
        return 0;
    }
    if (hs_buf_reserve(&c->blk->out, b->len + 24) < 0)
        return -ENOMEM;
    char *p = c->blk->out.p + c->blk->out.len;
    if (c->blk->chunked) {
        p = put_hex(p, b->len);
        p = PUTLIT(p, "\r\n");
    }
    p = put(p, b->p, b->len);
    if (c->blk->chunked)
        p = PUTLIT(p, "\r\n");
    c->blk->out.len = (size_t)(p - c->blk->out.p);
    b->len = 0;
    return 0;
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
}

/* Turns what the application produced into output. Returns true when the
 * response is complete (the connection has then moved on: see
 * hs_conn_finish_response(), which may have queued c for freeing). */
bool hs_res_pump(struct hs_conn *c)
{
    handoff_http_response *res = &c->blk->res;
    struct hs_worker *w = c->w;
    bool locked = c->blk->async;
    bool failed = false;

    if (locked)
        pthread_mutex_lock(&w->mu);
    bool ended = res->a_ended != 0;
    bool streaming = res->a_streaming != 0;
    if (c->state == HS_C_DEAD) {
        res->a_body.len = 0;
    } else if (c->state == HS_C_APP) {
        if (!c->blk->hdrs_out && (streaming || ended))
            failed = compose_head(c, streaming) < 0;
        if (!failed && streaming) {
            failed = emit_stream(c) < 0;
            if (!failed && ended && c->blk->chunked && !c->blk->is_head)
                failed = hs_buf_append(&c->blk->out, "0\r\n\r\n", 5) < 0;
        } else if (!failed && ended && !c->blk->is_head && status_has_body(res->a_status)) {
            failed = hs_buf_append(&c->blk->out, res->a_body.p, res->a_body.len) < 0;
        }
    }
    if (locked)
        pthread_mutex_unlock(&w->mu);

    if (failed) {
        /* Out of memory with part of a response queued: the only honest
         * thing left is to cut the connection. */
        hs_conn_close(c);
    }
    if (!ended)
        return false;
    hs_conn_finish_response(c);
    return true;
}

/* A complete error response; the connection closes after it. */
int hs_error_response(struct hs_conn *c, int status)
{
    const char *why = reason(status);
    size_t n = strlen(why);
    c->close_after = true;
    c->state = HS_C_CLOSING;
    if (hs_buf_reserve(&c->blk->out, HEAD_FIXED + n + 96) < 0)
        return -ENOMEM;
    char *p = c->blk->out.p + c->blk->out.len;
    p = put_status_date(p, c->w, status);
    p = PUTLIT(p, "Content-Type: text/plain\r\nContent-Length: ");
    p = put_dec(p, n + 1);
    p = PUTLIT(p, "\r\nConnection: close\r\n\r\n");
    p = put(p, why, n);
    *p++ = '\n';
    c->blk->out.len = (size_t)(p - c->blk->out.p);
    return 0;
}

/* The built-in health path: 200 normally, 503 in lame duck or draining. */
void hs_res_health(struct hs_conn *c)
{
    handoff_http_server *srv = c->w->srv;
    bool down = atomic_load(&srv->lame) || atomic_load(&srv->draining);
    if (down)
        (void)handoff_http_response_send(&c->blk->res, 503, "text/plain",
                                         "Service Unavailable\n", 20);
    else
        (void)handoff_http_response_send(&c->blk->res, 200, "text/plain", "OK\n", 3);
}

/* ------------------------------------------------------------------------ */
/* Public API                                                               */

static bool on_owner(const handoff_http_response *res)
{
    return hs_current == res->c->w;
}

/* Queues c for its worker; called with w->mu held. Returns true if the
 * worker must be woken (the queue was empty). */
static bool enqueue_locked(struct hs_conn *c)
{
    struct hs_worker *w = c->w;
    if (c->queued)
        return false;
    c->queued = true;
    c->qnext = NULL;
    bool was_empty = w->q_head == NULL;
    if (w->q_tail)
        w->q_tail->qnext = c;
    else
        w->q_head = c;
    w->q_tail = c;
    return was_empty;
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
    p = PUTLIT(p, ": ");
    p = put(p, value, vl);
    p = PUTLIT(p, "\r\n");
    b->len = (size_t)(p - b->p);
    return 0;
}

int handoff_http_response_body(handoff_http_response *res, const void *data,
                               size_t len)
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

int handoff_http_response_write(handoff_http_response *res, const void *data,
                                size_t len)
{
    if (!res || (!data && len))
        return -EINVAL;
    struct hs_conn *c = res->c;
    if (atomic_load_explicit(&c->gone, memory_order_relaxed))
        return -EPIPE; /* tell a producer that nobody listens any more */
    if (on_owner(res)) {
        if (!res->a_streaming && res->a_body.len)
            return -EALREADY;
        res->a_streaming = 1;
        if (hs_buf_append(&res->a_body, data, len) < 0)
            return -ENOMEM;
        if (!c->blk->in_handler)
            hs_ready_push(c);
        return 0;
    }
    struct hs_worker *w = c->w;
    int r = 0;
    bool wake = false;
    pthread_mutex_lock(&w->mu);
    if (!res->a_streaming && res->a_body.len) {
        r = -EALREADY;
    } else {
        res->a_streaming = 1;
        r = hs_buf_append(&res->a_body, data, len);
        if (r == 0)
            wake = enqueue_locked(c);
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
        c->blk->owner_ended = true;
        if (!c->blk->in_handler)
            hs_ready_push(c);
        return 0;
    }
    /* After the unlock the worker may finish and free c: only w is used. */
    struct hs_worker *w = c->w;
    pthread_mutex_lock(&w->mu);
    res->a_ended = 1;
    bool wake = enqueue_locked(c);
    pthread_mutex_unlock(&w->mu);
    if (wake)
        hs_wake(w);
    return 0;
}

int handoff_http_response_send(handoff_http_response *res, int status,
                               const char *content_type, const void *body,
                               size_t len)
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

const handoff_http_request *handoff_http_response_request(
    const handoff_http_response *res)
{
    return res ? &res->c->blk->req : NULL;
}

handoff_http_server *handoff_http_response_server(const handoff_http_response *res)
{
    return res ? res->c->w->srv : NULL;
}

int handoff_http_response_defer(handoff_http_response *res, uint64_t delay_usec,
                                handoff_http_defer_fn fn, void *arg)
{
    if (!res || !fn)
        return -EINVAL;
    if (!on_owner(res))
        return -EPERM;
    struct hs_conn *c = res->c;
    uint64_t now = handoff_now_usec();
    uint64_t at = delay_usec > UINT64_MAX - now ? UINT64_MAX : now + delay_usec;
    return hs_timer_add(c->w, res, at, fn, arg);
}

const char *handoff_http_request_header(const handoff_http_request *req,
                                        const char *name, size_t *len)
{
    if (!req || !name)
        return NULL;
    const struct hs_blk *b = req->internal_;
    const hh_header *hd = hh_find_header(&b->hreq, name);
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
    const struct hs_blk *b = req->internal_;
    if (i >= b->hreq.num_headers)
        return 0;
    const hh_header *hd = &b->hreq.headers[i];
    if (name)
        *name = (handoff_http_str){hd->name.p, hd->name.len};
    if (value)
        *value = (handoff_http_str){hd->value.p, hd->value.len};
    return 1;
}
