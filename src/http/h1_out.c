/*
 * h1_out.c - the bytes of HTTP/1.1 responses: the status line and Date,
 * the application's header lines, Content-Length or chunked framing,
 * Connection, and the library's own error responses.
 */
#include "h1.h"

#include "migrate.h"
#include "server.h"

#include <errno.h>
#include <string.h>

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

static char *put_status_date(char *p, const struct hs_worker *w, int status)
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
    struct hs_h1_blk *b = c->p;
    handoff_http_server *srv = hs_server_of(c->w);
    /* Draining: unless the connection will be handed to the successor
     * once this response is out (migrate.c). */
    if (!b->hreq.keep_alive || b->res.a_close || c->nreq >= srv->o.max_keepalive_requests ||
        (atomic_load_explicit(&srv->draining, memory_order_relaxed) && !hs_mig_wanted(c)))
        c->close_after = true;
}

/* Composes the response head into the output. Called with the lock when
 * the response is async. Returns 0 or -ENOMEM. */
static int compose_head(struct hs_conn *c, bool streaming)
{
    struct hs_h1_blk *b = c->p;
    handoff_http_response *res = &b->res;
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
    if (streaming && body && b->hreq.minor_version == 0)
        c->close_after = true; /* no chunked for HTTP/1.0: close-delimited */
    b->chunked = streaming && body && b->hreq.minor_version == 1;

    if (hs_buf_reserve(&b->out, HEAD_FIXED + res->a_hdrs.len + 96) < 0)
        return -ENOMEM;
    char *p = b->out.p + b->out.len;
    p = put_status_date(p, c->w, status);
    p = put(p, res->a_hdrs.p, res->a_hdrs.len);
    if (b->chunked) {
        p = PUTLIT(p, "Transfer-Encoding: chunked\r\n");
    } else if (body && !streaming) {
        p = PUTLIT(p, "Content-Length: ");
        p = put_dec(p, res->a_body.len);
        p = PUTLIT(p, "\r\n");
    }
    if (c->close_after)
        p = PUTLIT(p, "Connection: close\r\n");
    else if (b->hreq.minor_version == 0)
        p = PUTLIT(p, "Connection: keep-alive\r\n");
    p = PUTLIT(p, "\r\n");
    b->out.len = (size_t)(p - b->out.p);
    b->hdrs_out = true;
    return 0;
}

/* Moves stream data out of a_body into the output as one chunk. */
static int emit_stream(struct hs_conn *c)
{
    struct hs_h1_blk *b = c->p;
    hs_buf *d = &b->res.a_body;
    if (d->len == 0 || b->is_head || !status_has_body(b->res.a_status)) {
        d->len = 0;
        return 0;
    }
    if (hs_buf_reserve(&b->out, d->len + 24) < 0)
        return -ENOMEM;
    char *p = b->out.p + b->out.len;
    if (b->chunked) {
        p = put_hex(p, d->len);
        p = PUTLIT(p, "\r\n");
    }
    p = put(p, d->p, d->len);
    if (b->chunked)
        p = PUTLIT(p, "\r\n");
    b->out.len = (size_t)(p - b->out.p);
    d->len = 0;
    return 0;
}

bool hs_h1_pump(struct hs_conn *c)
{
    struct hs_h1_blk *b = c->p;
    handoff_http_response *res = &b->res;
    struct hs_worker *w = c->w;
    bool locked = res->async;
    bool failed = false;

    if (locked)
        pthread_mutex_lock(&w->mu);
    bool ended = res->a_ended != 0;
    bool streaming = res->a_streaming != 0;
    if (c->state == HS_C_DEAD) {
        res->a_body.len = 0;
    } else if (c->state == HS_C_OPEN && c->pstate == HS_H1_APP) {
        if (!b->hdrs_out && (streaming || ended))
            failed = compose_head(c, streaming) < 0;
        if (!failed && streaming) {
            failed = emit_stream(c) < 0;
            if (!failed && ended && b->chunked && !b->is_head)
                failed = hs_buf_append(&b->out, "0\r\n\r\n", 5) < 0;
        } else if (!failed && ended && !b->is_head && status_has_body(res->a_status)) {
            failed = hs_buf_append(&b->out, res->a_body.p, res->a_body.len) < 0;
        }
    }
    if (locked)
        pthread_mutex_unlock(&w->mu);

    if (failed) {
        /* Out of memory with part of a response queued: the only honest
         * thing left is to cut the connection. */
        hs_conn_close(c);
    }
    return ended;
}

int hs_h1_error(struct hs_conn *c, int status)
{
    struct hs_h1_blk *b = c->p;
    const char *why = reason(status);
    size_t n = strlen(why);
    c->close_after = true;
    c->pstate = HS_H1_CLOSING;
    if (hs_buf_reserve(&b->out, HEAD_FIXED + n + 96) < 0)
        return -ENOMEM;
    char *p = b->out.p + b->out.len;
    p = put_status_date(p, c->w, status);
    p = PUTLIT(p, "Content-Type: text/plain\r\nContent-Length: ");
    p = put_dec(p, n + 1);
    p = PUTLIT(p, "\r\nConnection: close\r\n\r\n");
    p = put(p, why, n);
    *p++ = '\n';
    b->out.len = (size_t)(p - b->out.p);
    return 0;
}

int hs_h1_continue(struct hs_conn *c)
{
    struct hs_h1_blk *b = c->p;
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    return hs_buf_append(&b->out, cont, sizeof cont - 1);
}
