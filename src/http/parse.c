/*
 * parse.c - HTTP/1.1 request parser and chunked-body decoder.
 *
 * Written from RFC 9110 and RFC 9112. Nothing here allocates, logs or keeps
 * global mutable state; every function is thread-safe and reentrant.
 *
 * The request parser is a single left-to-right pass over the head. Each
 * byte is classified through one 256-entry table, so the inner loops are a
 * load, a mask and a branch. The parser keeps no state between calls: a
 * server re-parses from the start when more bytes arrive, which costs
 * O(head) per call and is bounded by max_header_bytes. Semantic checks on
 * the header fields (framing, Host, Connection) run once, after the empty
 * line has been seen.
 *
 * Errors are reported in byte order: the first byte that breaks the
 * grammar or crosses a limit decides the result, so a prefix of a request
 * either needs more bytes or fails exactly where the whole request does.
 *
 * This file is over 600 lines: the request parser and the chunked decoder
 * share the character table and the field grammar (trailers are header
 * fields), and each is one state machine best read in one piece.
 */
#include "parse.h"

#include <limits.h>
#include <string.h>

#define DEFAULT_MAX_HEAD 8192
#define DEFAULT_MAX_TARGET 8192
/* Keeps the returned byte count representable as a positive int. */
#define MAX_LIMIT ((size_t)1 << 30)

/* Chunked decoder limits. */
#define MAX_CHUNK_SIZE ((uint64_t)1 << 62)
#define MAX_SIZE_LINE 4096
#define MAX_TRAILER 8192

/* Character classes (RFC 9110 section 5.6.2 and 5.5, RFC 3986). */
#define C_TCHAR 0x01  /* token character */
#define C_FIELD 0x02  /* field-content: VCHAR, obs-text, SP, HTAB */
#define C_TARGET 0x04 /* request-target: visible ASCII 0x21-0x7E */
#define C_HOST 0x08   /* uri-host / port: unreserved, sub-delims, %, :, [, ] */

static const uint8_t ctype[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, /* 0x00 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x10 */
    2, 15, 6, 7, 15, 15, 15, 15, 14, 14, 15, 15, 14, 15, 15, 6, /* 0x20 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 14, 6, 14, 6, 6, /* 0x30 */
    6, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x40 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 6, 14, 7, 15, /* 0x50 */
    7, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x60 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 6, 7, 6, 15, 0, /* 0x70 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0x80 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0x90 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0xa0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0xb0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0xc0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0xd0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0xe0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0xf0 */
};

typedef const unsigned char *uptr;

/* Returns the first byte in [p, e) whose class lacks mask, or e. Unrolled
 * because header values are the bulk of a request head. */
static inline uptr scan_class(uptr p, uptr e, uint8_t mask)
{
    while (e - p >= 4) {
        if (!(ctype[p[0]] & mask))
            return p;
        if (!(ctype[p[1]] & mask))
            return p + 1;
        if (!(ctype[p[2]] & mask))
            return p + 2;
        if (!(ctype[p[3]] & mask))
            return p + 3;
        p += 4;
    }
    while (p < e && (ctype[*p] & mask))
        p++;
    return p;
}

static inline int is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

/* Case-insensitive comparison of s with the lower-case literal lit. */
static int str_ieq(hh_str s, const char *lit, size_t litlen)
{
    if (s.len != litlen)
        return 0;
    for (size_t i = 0; i < litlen; i++)
        if (lower((unsigned char)s.p[i]) != (unsigned char)lit[i])
            return 0;
    return 1;
}

#define IEQ(s, lit) str_ieq((s), lit, sizeof(lit) - 1)

static int all_class(hh_str s, uint8_t mask)
{
    uptr p = (uptr)s.p;
    return scan_class(p, p + s.len, mask) == p + s.len;
}

/* Comma-separated list iteration (RFC 9110 section 5.6.1). Stores the next
 * element, OWS trimmed and possibly empty, in *out. Returns 0 when the
 * list is exhausted. */
typedef struct list_iter {
    const char *p, *end;
    int done;
} list_iter;

static list_iter list_begin(hh_str v)
{
    list_iter it = {v.p, v.p + v.len, 0};
    return it;
}

static int list_next(list_iter *it, hh_str *out)
{
    if (it->done)
        return 0;
    const char *comma = memchr(it->p, ',', (size_t)(it->end - it->p));
    const char *e = comma ? comma : it->end;
    const char *s = it->p;
    while (s < e && is_ows((unsigned char)*s))
        s++;
    const char *t = e;
    while (t > s && is_ows((unsigned char)t[-1]))
        t--;
    out->p = s;
    out->len = (size_t)(t - s);
    if (comma)
        it->p = comma + 1;
    else
        it->done = 1;
    return 1;
}

/*
 * Request target forms (RFC 9112 section 3.2). Fills path, query and, for
 * absolute-form, host. Returns 0 or HH_ERR_BAD_REQUEST.
 */
static int parse_target(hh_request *req)
{
    hh_str t = req->target;
    const char *e = t.p + t.len;

    /* A fragment is never part of a request-target. */
    if (memchr(t.p, '#', t.len))
        return HH_ERR_BAD_REQUEST;

    /* Methods are case-sensitive (RFC 9110 section 9.1). */
    int is_connect =
        req->method.len == 7 && memcmp(req->method.p, "CONNECT", 7) == 0;
    req->path.p = t.p;
    req->path.len = 0;
    req->query.p = e;
    req->query.len = 0;

    if (is_connect) {
        /* authority-form: uri-host ":" port, nothing else. */
        if (!all_class(t, C_HOST))
            return HH_ERR_BAD_REQUEST;
        const char *colon = t.p + t.len;
        while (colon > t.p && colon[-1] != ':')
            colon--;
        if (colon == t.p || colon == e || colon - 1 == t.p)
            return HH_ERR_BAD_REQUEST;
        for (const char *q = colon; q < e; q++)
            if (*q < '0' || *q > '9')
                return HH_ERR_BAD_REQUEST;
        return 0;
    }

    if (t.len == 1 && t.p[0] == '*') {
        /* asterisk-form, only for OPTIONS. */
        if (req->method.len != 7 || memcmp(req->method.p, "OPTIONS", 7) != 0)
            return HH_ERR_BAD_REQUEST;
        req->path = t;
        return 0;
    }

    const char *path = t.p;
    if (t.p[0] != '/') {
        /* absolute-form: scheme "://" authority path-abempty ["?" query] */
        const char *q = t.p;
        if (!((*q | 0x20) >= 'a' && (*q | 0x20) <= 'z'))
            return HH_ERR_BAD_REQUEST;
        while (q < e && (((*q | 0x20) >= 'a' && (*q | 0x20) <= 'z') ||
                         (*q >= '0' && *q <= '9') || *q == '+' || *q == '-' ||
                         *q == '.'))
            q++;
        /* cppcheck 2.10 assumes the loop above always runs to e; it stops
         * at the first byte that is not a scheme character. */
        /* cppcheck-suppress knownConditionTrueFalse */
        if (e - q < 3 || q[0] != ':' || q[1] != '/' || q[2] != '/')
            return HH_ERR_BAD_REQUEST;
        const char *a = q + 3;
        const char *ae = a;
        while (ae < e && *ae != '/' && *ae != '?')
            ae++;
        /* No userinfo ('@' is not in C_HOST): RFC 9110 section 4.2.4. */
        hh_str auth = {a, (size_t)(ae - a)};
        if (auth.len == 0 || !all_class(auth, C_HOST))
            return HH_ERR_BAD_REQUEST;
        req->host = auth;
        path = ae;
    }

    const char *qm = memchr(path, '?', (size_t)(e - path));
    req->path.p = path;
    req->path.len = (size_t)((qm ? qm : e) - path);
    if (qm) {
        req->query.p = qm + 1;
        req->query.len = (size_t)(e - qm - 1);
    }
    return 0;
}

/* Parses Content-Length (RFC 9112 section 6.3, RFC 9110 section 8.6): a
 * list of identical 1*DIGIT values. */
static int parse_content_length(hh_str v, int *have, uint64_t *cl)
{
    list_iter it = list_begin(v);
    hh_str el;
    while (list_next(&it, &el)) {
        if (el.len == 0)
            return HH_ERR_BAD_REQUEST;
        uint64_t n = 0;
        for (size_t i = 0; i < el.len; i++) {
            unsigned d = (unsigned)(unsigned char)el.p[i] - '0';
            if (d > 9)
                return HH_ERR_BAD_REQUEST;
            if (n > ((uint64_t)INT64_MAX - d) / 10)
                return HH_ERR_BAD_REQUEST;
            n = n * 10 + d;
        }
        if (*have && n != *cl)
            return HH_ERR_BAD_REQUEST;
        *have = 1;
        *cl = n;
    }
    return 0;
}

typedef struct te_state {
    int seen;     /* a Transfer-Encoding field line was present */
    int chunked;  /* times "chunked" appeared */
    int last_chunked;
    int unknown;  /* a coding other than chunked appeared */
} te_state;

static int parse_transfer_encoding(hh_str v, te_state *te)
{
    list_iter it = list_begin(v);
    hh_str el;
    te->seen = 1;
    while (list_next(&it, &el)) {
        /* Empty elements and parameters are rejected: a lenient reading
         * here is what a smuggler looks for. */
        if (el.len == 0 || !all_class(el, C_TCHAR))
            return HH_ERR_BAD_REQUEST;
        if (IEQ(el, "chunked")) {
            te->chunked++;
            te->last_chunked = 1;
        } else {
            te->unknown = 1;
            te->last_chunked = 0;
        }
    }
    return 0;
}

/* Derives framing and connection state from the parsed header fields. */
static int analyse_headers(hh_request *req)
{
    int have_host = 0, have_cl = 0, have_upgrade = 0;
    int conn_close = 0, conn_keep_alive = 0, conn_upgrade = 0;
    int expect_continue = 0, expect_other = 0;
    uint64_t cl = 0;
    te_state te = {0, 0, 0, 0};
    hh_str host = {NULL, 0};
    int r;

    for (size_t i = 0; i < req->num_headers; i++) {
        const hh_header *h = &req->headers[i];
        hh_str list_el;
        list_iter it;
        switch (h->name.len) {
        case 4:
            if (IEQ(h->name, "host")) {
                if (have_host || !all_class(h->value, C_HOST))
                    return HH_ERR_BAD_REQUEST;
                have_host = 1;
                host = h->value;
            }
            break;
        case 6:
            if (IEQ(h->name, "expect")) {
                it = list_begin(h->value);
                while (list_next(&it, &list_el)) {
                    if (IEQ(list_el, "100-continue"))
                        expect_continue = 1;
                    else if (list_el.len)
                        expect_other = 1;
                }
            }
            break;
        case 7:
            if (IEQ(h->name, "upgrade") && h->value.len)
                have_upgrade = 1;
            break;
        case 10:
            if (IEQ(h->name, "connection")) {
                it = list_begin(h->value);
                while (list_next(&it, &list_el)) {
                    if (IEQ(list_el, "close"))
                        conn_close = 1;
                    else if (IEQ(list_el, "keep-alive"))
                        conn_keep_alive = 1;
                    else if (IEQ(list_el, "upgrade"))
                        conn_upgrade = 1;
                }
            }
            break;
        case 14:
            if (IEQ(h->name, "content-length")) {
                r = parse_content_length(h->value, &have_cl, &cl);
                if (r < 0)
                    return r;
            }
            break;
        case 17:
            if (IEQ(h->name, "transfer-encoding")) {
                r = parse_transfer_encoding(h->value, &te);
                if (r < 0)
                    return r;
            }
            break;
        default:
            break;
        }
    }

    if (req->minor_version == 1 && !have_host)
        return HH_ERR_BAD_REQUEST;

    req->body_kind = HH_BODY_NONE;
    req->content_length = 0;
    if (te.seen) {
        /* RFC 9112 section 6.1: no Transfer-Encoding in HTTP/1.0, never
         * together with Content-Length; section 6.3: chunked must be the
         * final coding, and applying it twice is an error. */
        if (req->minor_version == 0 || have_cl)
            return HH_ERR_BAD_REQUEST;
        if (te.chunked == 0 || !te.last_chunked || te.chunked > 1)
            return HH_ERR_BAD_REQUEST;
        if (te.unknown)
            return HH_ERR_NOT_IMPLEMENTED;
        req->body_kind = HH_BODY_CHUNKED;
    } else if (have_cl) {
        req->content_length = cl;
        req->body_kind = cl ? HH_BODY_LENGTH : HH_BODY_NONE;
    }

    /* parse_target() already set host for absolute-form (RFC 9112
     * section 3.2.2: the target's authority wins over the Host field). */
    if (!req->host.p)
        req->host = host.p ? host : (hh_str){req->target.p, 0};

    if (req->minor_version == 1)
        req->keep_alive = !conn_close;
    else
        req->keep_alive = conn_keep_alive && !conn_close;
    /* HTTP/1.0 Upgrade and 100-continue are ignored (RFC 9110 sections
     * 7.8 and 10.1.1). */
    req->upgrade = req->minor_version == 1 && conn_upgrade && have_upgrade;
    req->expect_continue = req->minor_version == 1 && expect_continue;
    req->expect_other = expect_other;
    return 0;
}

int hh_parse_request(const char *buf, size_t len, hh_request *req,
                     hh_header *headers, size_t max_headers,
                     const hh_limits *limits)
{
    size_t max_head = limits && limits->max_header_bytes
                          ? limits->max_header_bytes
                          : DEFAULT_MAX_HEAD;
    size_t max_target =
        limits && limits->max_target ? limits->max_target : DEFAULT_MAX_TARGET;
    if (max_head > MAX_LIMIT)
        max_head = MAX_LIMIT;
    if (max_target > MAX_LIMIT)
        max_target = MAX_LIMIT;

    uptr start = (uptr)buf;
    uptr end = start + len;
    /* The head must end within the first max_head bytes. Scanning stops
     * at wend; running into it with more input behind it means the head
     * is too large, running into it at the end of input means "more". */
    uptr wend = len > max_head ? start + max_head : end;
    uptr p = start;

#define NEED_MORE()                                                         \
    return wend < end ? HH_ERR_HEADERS_TOO_LARGE : HH_INCOMPLETE
#define EXPECT(ch)                                                          \
    do {                                                                    \
        if (p >= wend)                                                      \
            NEED_MORE();                                                    \
        if (*p != (ch))                                                     \
            return HH_ERR_BAD_REQUEST;                                      \
        p++;                                                                \
    } while (0)

    /* RFC 9112 section 2.2: ignore empty lines before the request-line. */
    while (p < wend && *p == '\r') {
        p++;
        EXPECT('\n');
    }

    /* method SP */
    uptr m = p;
    p = scan_class(p, wend, C_TCHAR);
    if (p >= wend)
        NEED_MORE();
    if (p == m || *p != ' ')
        return HH_ERR_BAD_REQUEST;
    hh_str method = {(const char *)m, (size_t)(p - m)};
    p++;

    /* request-target SP. Exceeding max_target, or running past the head
     * limit while inside the target, is a 414. */
    uptr t = p;
    size_t budget = max_target;
    size_t in_window = (size_t)(start + max_head - t); /* t <= start+max_head */
    if (budget > in_window)
        budget = in_window;
    uptr tlim = (size_t)(end - t) > budget ? t + budget + 1 : end;
    p = scan_class(t, tlim, C_TARGET);
    if (p >= tlim) {
        if ((size_t)(p - t) > budget)
            return HH_ERR_URI_TOO_LONG;
        return HH_INCOMPLETE; /* p == end, within both limits */
    }
    if (p == t || *p != ' ')
        return HH_ERR_BAD_REQUEST;
    hh_str target = {(const char *)t, (size_t)(p - t)};
    p++;

    /* HTTP-version CRLF. "HTTP/" DIGIT ["." DIGIT] is accepted as a
     * version so that HTTP/2.0, HTTP/3 etc. get a 505. */
    for (const char *v = "HTTP/"; *v; v++)
        EXPECT((unsigned char)*v);
    if (p >= wend)
        NEED_MORE();
    if (*p < '0' || *p > '9')
        return HH_ERR_BAD_REQUEST;
    int major = *p++ - '0', minor = -1;
    if (p >= wend)
        NEED_MORE();
    if (*p == '.') {
        p++;
        if (p >= wend)
            NEED_MORE();
        if (*p < '0' || *p > '9')
            return HH_ERR_BAD_REQUEST;
        minor = *p++ - '0';
    }
    EXPECT('\r');
    EXPECT('\n');
    if (major == 1 && minor < 0)
        return HH_ERR_BAD_REQUEST;
    if (major != 1 || minor > 1)
        return HH_ERR_VERSION;

    /* *( field-line CRLF ) CRLF */
    size_t n = 0;
    for (;;) {
        if (p >= wend)
            NEED_MORE();
        if (*p == '\r') {
            p++;
            EXPECT('\n');
            break;
        }
        /* field-name ":" — this also rejects obs-fold (a line starting
         * with SP/HTAB), whitespace before the colon and bare LF. */
        uptr name = p;
        p = scan_class(p, wend, C_TCHAR);
        if (p >= wend)
            NEED_MORE();
        if (p == name || *p != ':')
            return HH_ERR_BAD_REQUEST;
        if (n == max_headers)
            return HH_ERR_HEADERS_TOO_LARGE;
        uptr name_end = p++;
        while (p < wend && is_ows(*p))
            p++;
        uptr val = p;
        p = scan_class(p, wend, C_FIELD);
        if (p >= wend)
            NEED_MORE();
        if (*p != '\r')
            return HH_ERR_BAD_REQUEST; /* CTL, NUL or bare LF */
        uptr vend = p;
        while (vend > val && is_ows(vend[-1]))
            vend--;
        p++;
        EXPECT('\n');
        headers[n].name.p = (const char *)name;
        headers[n].name.len = (size_t)(name_end - name);
        headers[n].value.p = (const char *)val;
        headers[n].value.len = (size_t)(vend - val);
        n++;
    }
#undef EXPECT
#undef NEED_MORE

    memset(req, 0, sizeof(*req));
    req->method = method;
    req->target = target;
    req->minor_version = minor;
    req->headers = headers;
    req->num_headers = n;
    int r = parse_target(req);
    if (r < 0)
        return r;
    r = analyse_headers(req);
    if (r < 0)
        return r;
    return (int)(p - start);
}

const hh_header *hh_find_header(const hh_request *req, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < req->num_headers; i++) {
        const hh_header *h = &req->headers[i];
        if (h->name.len != len)
            continue;
        size_t j = 0;
        while (j < len && lower((unsigned char)h->name.p[j]) ==
                              lower((unsigned char)name[j]))
            j++;
        if (j == len)
            return h;
    }
    return NULL;
}

/* ------------------------------------------------------------------------
 * Chunked transfer coding (RFC 9112 section 7.1).
 */

enum {
    CK_SIZE0 = 0, /* start of a chunk-size line: needs a HEXDIG */
    CK_SIZE,      /* in chunk-size */
    CK_EXT_PRE,   /* after ';', BWS before chunk-ext-name */
    CK_EXT_NAME,
    CK_EXT_POST,  /* BWS after the name */
    CK_EXT_EQ,    /* BWS after '=' */
    CK_EXT_TOK,   /* token value */
    CK_EXT_QS,    /* quoted-string value */
    CK_EXT_QP,    /* after a backslash in the quoted-string */
    CK_EXT_QEND,  /* right after the closing quote */
    CK_EXT_END,   /* BWS after the value */
    CK_SIZE_LF,
    CK_DATA,
    CK_DATA_CR,
    CK_DATA_LF,
    CK_TR_START,  /* start of a trailer line, or the final CRLF */
    CK_TR_NAME,
    CK_TR_VALUE,
    CK_TR_LF,
    CK_END_LF,
    CK_DONE,
    CK_ERR_400,
    CK_ERR_413
};

static inline int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (unsigned char)(c | 0x20);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static inline int is_qdtext(unsigned char c)
{
    return c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) ||
           (c >= 0x5d && c <= 0x7e) || c >= 0x80;
}

/* Byte-at-a-time state machine for everything but chunk data. Size lines,
 * extensions and trailers are short, so this is not on the hot path.
 * Returns the next state. dec->trailer_bytes counts the bytes of the
 * current chunk-size line, then those of the trailer section. */
static int chunk_step(hh_chunked *dec, unsigned char c, uint64_t max_body)
{
    int s = dec->state;
    int h;

    if (s <= CK_SIZE_LF) {
        if (++dec->trailer_bytes > MAX_SIZE_LINE)
            return CK_ERR_400;
    } else if (s >= CK_TR_START && s <= CK_END_LF) {
        if (++dec->trailer_bytes > MAX_TRAILER)
            return CK_ERR_400;
    }

    switch (s) {
    case CK_SIZE0:
    case CK_SIZE:
        h = hexval(c);
        if (h >= 0) {
            if (dec->remaining > (MAX_CHUNK_SIZE >> 4))
                return CK_ERR_400;
            uint64_t v = (dec->remaining << 4) | (uint64_t)h;
            if (v > MAX_CHUNK_SIZE)
                return CK_ERR_400;
            if (max_body && v > max_body - dec->total)
                return CK_ERR_413;
            dec->remaining = v;
            return CK_SIZE;
        }
        /* No whitespace around chunk-size: parsers disagree on it. */
        if (s == CK_SIZE0)
            return CK_ERR_400;
        if (c == ';')
            return CK_EXT_PRE;
        if (c == '\r')
            return CK_SIZE_LF;
        return CK_ERR_400;
    case CK_EXT_PRE:
        if (is_ows(c))
            return s;
        return (ctype[c] & C_TCHAR) ? CK_EXT_NAME : CK_ERR_400;
    case CK_EXT_NAME:
    case CK_EXT_POST:
        if (s == CK_EXT_NAME && (ctype[c] & C_TCHAR))
            return s;
        if (is_ows(c))
            return CK_EXT_POST;
        if (c == '=')
            return CK_EXT_EQ;
        if (c == ';')
            return CK_EXT_PRE;
        if (c == '\r' && s == CK_EXT_NAME)
            return CK_SIZE_LF;
        return CK_ERR_400;
    case CK_EXT_EQ:
        if (is_ows(c))
            return s;
        if (c == '"')
            return CK_EXT_QS;
        return (ctype[c] & C_TCHAR) ? CK_EXT_TOK : CK_ERR_400;
    case CK_EXT_TOK:
    case CK_EXT_QEND:
    case CK_EXT_END:
        if (s == CK_EXT_TOK && (ctype[c] & C_TCHAR))
            return s;
        if (is_ows(c))
            return CK_EXT_END;
        if (c == ';')
            return CK_EXT_PRE;
        if (c == '\r' && s != CK_EXT_END)
            return CK_SIZE_LF;
        return CK_ERR_400;
    case CK_EXT_QS:
        if (c == '"')
            return CK_EXT_QEND;
        if (c == '\\')
            return CK_EXT_QP;
        return is_qdtext(c) ? s : CK_ERR_400;
    case CK_EXT_QP:
        return (ctype[c] & C_FIELD) ? CK_EXT_QS : CK_ERR_400;
    case CK_SIZE_LF:
        if (c != '\n')
            return CK_ERR_400;
        dec->trailer_bytes = 0;
        return dec->remaining ? CK_DATA : CK_TR_START;
    case CK_DATA_CR:
        return c == '\r' ? CK_DATA_LF : CK_ERR_400;
    case CK_DATA_LF:
        return c == '\n' ? CK_SIZE0 : CK_ERR_400;
    case CK_TR_START:
        if (c == '\r')
            return CK_END_LF;
        return (ctype[c] & C_TCHAR) ? CK_TR_NAME : CK_ERR_400;
    case CK_TR_NAME:
        if (ctype[c] & C_TCHAR)
            return s;
        return c == ':' ? CK_TR_VALUE : CK_ERR_400;
    case CK_TR_VALUE:
        if (ctype[c] & C_FIELD)
            return s;
        return c == '\r' ? CK_TR_LF : CK_ERR_400;
    case CK_TR_LF:
        return c == '\n' ? CK_TR_START : CK_ERR_400;
    case CK_END_LF:
        return c == '\n' ? CK_DONE : CK_ERR_400;
    default:
        return CK_ERR_400;
    }
}

int hh_decode_chunked(hh_chunked *dec, const char *in, size_t inlen,
                      char *out, size_t *out_len, size_t *consumed,
                      uint64_t max_body)
{
    size_t i = 0, o = 0;
    int r = 0;

    for (;;) {
        int s = dec->state;
        if (s == CK_DONE) {
            r = 1;
            break;
        }
        if (s == CK_ERR_400) {
            r = HH_ERR_BAD_REQUEST;
            break;
        }
        if (s == CK_ERR_413) {
            r = -413;
            break;
        }
        if (i == inlen)
            break;
        if (s == CK_DATA) {
            size_t n = inlen - i;
            if (n > dec->remaining)
                n = (size_t)dec->remaining;
            /* out may alias in; o <= i always holds, so moving forward
             * never overwrites unread input. */
            if (out + o != in + i)
                memmove(out + o, in + i, n);
            i += n;
            o += n;
            dec->remaining -= n;
            dec->total += n;
            if (dec->remaining == 0)
                dec->state = CK_DATA_CR;
            continue;
        }
        int ns = chunk_step(dec, (unsigned char)in[i], max_body);
        dec->state = ns;
        if (ns != CK_ERR_400 && ns != CK_ERR_413)
            i++;
    }
    *out_len = o;
    *consumed = i;
    return r;
}

/* ------------------------------------------------------------------------
 * IMF-fixdate (RFC 9110 section 5.6.7), computed with integer arithmetic:
 * no locale, no time zone lock, no static buffer.
 */

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

void hh_format_date(int64_t t, char out[30])
{
    static const char wday[7][4] = {"Thu", "Fri", "Sat", "Sun",
                                    "Mon", "Tue", "Wed"};
    static const char mon[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    static const int mdays[12] = {31, 28, 31, 30, 31, 30,
                                  31, 31, 30, 31, 30, 31};

    /* The format has a four-digit year: clamp to 1970..9999. */
    if (t < 0)
        t = 0;
    if (t > INT64_C(253402300799))
        t = INT64_C(253402300799);

    int64_t days = t / 86400;
    int64_t secs = t % 86400;
    int wd = (int)(days % 7); /* 1970-01-01 was a Thursday */

    /* The Gregorian calendar repeats every 400 years (146097 days). */
    int64_t year = 1970 + 400 * (days / 146097);
    days %= 146097;
    for (;;) {
        int64_t ylen = is_leap(year) ? 366 : 365;
        if (days < ylen)
            break;
        days -= ylen;
        year++;
    }
    int m = 0;
    for (;;) {
        int64_t mlen = mdays[m] + (m == 1 && is_leap(year));
        if (days < mlen)
            break;
        days -= mlen;
        m++;
    }
    int mday = (int)days + 1;
    int hh = (int)(secs / 3600), mm = (int)(secs / 60 % 60), ss = (int)(secs % 60);
    int y = (int)year;

    memcpy(out, wday[wd], 3);
    out[3] = ',';
    out[4] = ' ';
    out[5] = (char)('0' + mday / 10);
    out[6] = (char)('0' + mday % 10);
    out[7] = ' ';
    memcpy(out + 8, mon[m], 3);
    out[11] = ' ';
    out[12] = (char)('0' + y / 1000);
    out[13] = (char)('0' + y / 100 % 10);
    out[14] = (char)('0' + y / 10 % 10);
    out[15] = (char)('0' + y % 10);
    out[16] = ' ';
    out[17] = (char)('0' + hh / 10);
    out[18] = (char)('0' + hh % 10);
    out[19] = ':';
    out[20] = (char)('0' + mm / 10);
    out[21] = (char)('0' + mm % 10);
    out[22] = ':';
    out[23] = (char)('0' + ss / 10);
    out[24] = (char)('0' + ss % 10);
    memcpy(out + 25, " GMT", 5);
}
