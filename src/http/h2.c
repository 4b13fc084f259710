/*
 * h2.c - HTTP/2 (RFC 9113) on libnghttp2, driven by the worker's
 * edge-triggered epoll: one nghttp2 server session per connection, one
 * struct hs_h2_stream per request. The application sees the same request
 * and response objects as for HTTP/1.1.
 *
 * Input is read into a stack buffer and fed to nghttp2_session_mem_recv(),
 * which consumes all of it; requests are dispatched from its callbacks as
 * soon as they are complete. Output: nghttp2_session_mem_send() pieces are
 * gathered in a per-worker buffer and written in one go; what the socket
 * does not take is kept in the connection's tail (h->out), and mem_send is
 * not called again until that drained (its pointer dies with the next
 * call). While a tail is pending, no input is read either, so a client
 * that sends without reading cannot make the session queue without bound
 * (1.52 has no outbound queue limit): the write timeout closes it.
 *
 * Streams. A stream is attached to the session (stream user data) from
 * its first HEADERS until nghttp2 closes it, and held by the application
 * from the handler's call until the response is ended. It is freed when
 * both are over; a connection whose socket is closed lives on (HS_C_DEAD)
 * while the application holds responses of its streams.
 *
 * Threads. As for HTTP/1.1 (response.c): a response ended on the worker
 * thread needs no lock; one handed to another thread is changed under
 * w->mu, which also guards the connection's list of changed (dirty)
 * streams. The worker pumps dirty streams: it submits the response
 * HEADERS, takes streamed data into the stream's own queue, and resumes
 * deferred DATA.
 *
 * Timers. Connection-level ones use the worker's timeout classes (NEW,
 * IDLE, WRITE, LINGER); the per-stream ones (the request's read timeout,
 * a response making no progress), the drain's PING fallback and the trim
 * of idle connections each have one duration, so each is a list sorted by
 * start time, per worker, and one deferred callback of the worker
 * (hs_timer_add(), "the tick") is kept pending at or before the earliest
 * of their deadlines.
 *
 * This file is over 600 lines: nghttp2's callbacks, the streams they
 * create and the connection that drives them share one private state
 * (struct hs_h2 / hs_h2_stream) that no other file should see.
 */
#include "h2.h"

#include "conn.h"
#include "list.h"
#include "parse.h"
#include "response.h"
#include "server.h"
#include "tls.h"
#include "worker.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <unistd.h>

/* Input read per call, and output gathered per write. */
#define H2_RBUF 16384
#define H2_WBUF 65536
/* Header fields per request, as for HTTP/1.1 (h1.h). */
#define H2_MAX_FIELDS 100
/* Stop reading while nghttp2 has this many frames queued. */
#define H2_OUTQ_HIGH 64
/* Reads per turn before other connections get theirs. */
#define H2_BUDGET 16
/* Streams kept per worker for reuse, and the buffer capacity kept. */
#define H2_POOL 256
#define H2_KEEP 4096
/* How long to wait for the drain PING's ACK before the final GOAWAY. */
#define H2_PING_USEC (1000 * HANDOFF_USEC_PER_MSEC)
/* How long a connection stays idle before its large blocks are given back
 * (h2_trim()): a busy client's connection falls idle between its batches
 * of requests all the time, and giving the pages back then (a TLB
 * shootdown on every CPU the process runs on) and faulting them in again
 * for the next batch cost more than the requests themselves. */
#define H2_TRIM_USEC (500 * HANDOFF_USEC_PER_MSEC)
/* Blocks nghttp2 allocates of this size or more are page-aligned and
 * tracked, so that an idle connection can give their memory back (see
 * h2_trim()); at most H2_BIG of them per session. */
#define H2_BIG_MIN 4096
#define H2_BIG 4
/* Flood budget (control frames that cost us work and give nothing). */
/* Below nghttp2's max_outbound_ack (1000): one read of a flood must hit
 * this (a GOAWAY that says why) before that (NGHTTP2_ERR_FLOODED). */
#define H2_GLITCH_BURST 500.0
#define H2_GLITCH_RATE 100.0
/* Fallbacks for a libnghttp2 without the backported limits. */
#define H2_RESET_BURST 1000.0
#define H2_RESET_RATE 33.0
#define H2_MAX_CONTINUATIONS 8

static const uint8_t drain_ping[8] = {'h', 'o', '-', 'd', 'r', 'a', 'i', 'n'};

enum { G_OPEN = 0, G_NOTICE, G_FINAL };
enum { T_NONE = 0, T_READ, T_WRITE };

struct h2_list {
    struct hs_h2_stream *head, *tail;
};

struct hs_h2_stream {
    struct hs_h2 *h;   /* NULL once the connection is gone */
    int32_t id;
    /* Application side; res.c is the connection, res.stream this one. */
    handoff_http_response res;
    handoff_http_request req;
    hh_request hreq;
    hs_buf arena;      /* header names and values */
    hs_buf fields;     /* struct fref while headers come, hh_header after */
    hs_buf body;       /* request body */
    size_t hlist;      /* header list size (RFC 9113 6.5.2) */
    unsigned nfields;
    struct fref_pair {
        uint32_t off, len;
    } method, path, authority, scheme;
    bool have_method, have_path, have_authority;
    bool attached;     /* nghttp2 knows it (stream user data set) */
    bool headers_done;
    bool too_large;    /* header list over the limit: 431 */
    bool body_over;    /* 413 sent */
    bool answered;     /* dispatched, or answered by the library */
    bool head_sent;    /* the response HEADERS were submitted */
    bool app_held;     /* the application holds res */
    bool deferred;     /* the data provider returned DEFERRED */
    bool taken_end;    /* the worker saw the end and took all data */
    bool buffered;     /* the body is res.a_body, sent from boff */
    bool streaming;    /* the application writes (seen by the worker) */
    bool dirty;        /* on the connection's dirty list (w->mu) */
    bool is_head;
    int tkind;         /* T_NONE, T_READ, T_WRITE */
    uint64_t tsince;
    size_t boff;
    hs_buf outq;       /* streamed data taken from res.a_body */
    size_t outoff;
    struct hs_h2_stream *tprev, *tnext; /* timer list */
    struct hs_h2_stream *aprev, *anext; /* the connection's streams */
    struct hs_h2_stream *dnext;         /* dirty list */
};

struct fref {
    uint32_t noff, nlen, voff, vlen;
};

/* A connection's place on a per-worker list of connections waiting for
 * one deadline (the drain PING's ACK, the trim), by the time they joined. */
struct h2_wait {
    struct hs_h2 *h;
    struct h2_wait *prev, *next;
    uint64_t since;
    bool on;
};

struct h2_waits {
    struct h2_wait *head, *tail;
    uint64_t dur;
};

struct hs_h2 {
    nghttp2_session *ng;
    struct hs_conn *c;
    hs_buf out;            /* unsent tail */
    size_t woff;
    struct hs_h2_stream *all; /* attached or held streams */
    unsigned nstreams;
    unsigned held;         /* responses the application holds */
    unsigned nreq;         /* streams begun */
    uint64_t body_bytes;   /* request bodies buffered */
    uint64_t owed;         /* connection window not yet given back */
    int gstate;
    bool eof;              /* the client shut its side */
    bool fatal;            /* the session failed: close */
    bool quiet;            /* ... without a GOAWAY */
    bool in_recv;          /* inside mem_recv */
    bool want_graceful;    /* start the GOAWAY sequence at the next run */
    bool final_due;        /* the drain PING came back: final GOAWAY */
    struct hs_h2_stream *dirty; /* under w->mu */
    /* On the drain PING fallback list. */
    struct h2_wait ping;
    /* Flood and fallback budgets. */
    double glitch, resets;
    uint64_t glitch_at, resets_at;
    unsigned ncont;
#ifndef HANDOFF_HAVE_NGHTTP2_MAX_CONTINUATIONS
    uint8_t chdr[9];   /* count_continuations(): a frame header so far */
    size_t chlen, cskip;
#endif
    /* The peer's address when it does not fit in the connection's (a bound
     * unix socket), read once; NULL otherwise (c->peer). */
    struct sockaddr_storage *peer;
    socklen_t peer_len;
    /* nghttp2's large blocks (see h2_trim()). */
    struct {
        void *p;
        size_t size;
        bool framebuf;
    } big[H2_BIG];
    bool in_new;   /* inside nghttp2_session_server_new3() */
    /* What nghttp2 allocates in session_new (see "Memory"): H2_ARENA bytes,
     * page-aligned, arena_used of them handed out; the frame buffer's
     * place in it (fb_len 0: none); while packed, its non-zero bytes. */
    char *arena;
    size_t arena_used;
    uint32_t fb_off, fb_len;
    unsigned char *pack;
    size_t pack_len;
    bool packed;
    bool trimmed;  /* the large blocks were given back since the last use */
    bool used;     /* input or output since update_timer() last ran */
    /* On the trim list (idle connections, by the time they fell idle). */
    struct h2_wait trim;
};

/* Per worker (w->h2). */
struct hs_h2_worker {
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    nghttp2_settings_entry iv[4];
    size_t niv;
    char *wbuf;
    struct h2_list rd, wr;
    struct h2_waits ping, trim;
    struct hs_h2_stream *pool;
    unsigned npool;
    uint64_t tick_at;   /* the earliest pending tick, 0 if none */
    /* The packing template (see "Memory"): a copy of the first arena
     * packed, and where that arena and its connection were. */
    char *tmpl;
    size_t tmpl_len;
    uintptr_t tmpl_arena, tmpl_h;
};

static void h2_close(struct hs_h2 *h);
static void stream_pump(struct hs_h2_stream *s);
static void graceful(struct hs_h2 *h);
static int respond_simple(struct hs_h2_stream *s, int status);

static struct hs_h2_worker *hw(const struct hs_conn *c)
{
    return c->w->h2;
}

static handoff_http_server *srv_of(const struct hs_h2 *h)
{
    return hs_server_of(h->c->w);
}

static struct hs_h2 *h2_of(const struct hs_conn *c)
{
    return c->p;
}

static void tick_need(struct hs_worker *w, uint64_t at);

/* ------------------------------------------------------------------------ */
/* Memory                                                                   */
/*
 * An idle HTTP/2 connection would hold some 25 KB of nghttp2's although
 * almost none of it means anything then: its 16 KiB frame buffer only
 * carries the frame being serialised, the 4 KiB stream map of a session
 * without streams is all zeros, so are the HPACK tables' 1 KiB rings
 * (responses use no dynamic table; a client's indexed fields are kept
 * apart), and of the session's own 2.9 KB, 0.4 KB are not zero.
 *
 * nghttp2 allocates through these functions. What it allocates while the
 * session is created (all of the above) comes from one page-aligned arena
 * per connection. Once the connection has stayed idle for H2_TRIM_USEC
 * (the trim list, checked by the tick), h2_trim() packs what of the arena
 * matters (below: tens of bytes) into a small block and gives every page
 * of the arena back to the kernel
 * (MADV_DONTNEED: they read as zeros when touched again); h2_unpack()
 * writes them back before nghttp2 is called again, at every entry point
 * (h2_run(), h2_timeout(), notice(), graceful(), h2_cut()).
 *
 * Later blocks of H2_BIG_MIN bytes or more (a grown map or frame buffer)
 * are page-aligned and remembered, and given back too when idle: the frame
 * buffer always, any other only if it is all zeros anyway.
 */

/* The arena: each block is preceded by its size (H2_AHDR bytes). */
#define H2_ARENA ((size_t)7 * 4096)
#define H2_AHDR 16

static bool in_arena(const struct hs_h2 *h, const void *p)
{
    const char *c = p;
    return h->arena && c >= h->arena && c < h->arena + H2_ARENA;
}

static size_t arena_size(const void *p)
{
    size_t n;
    memcpy(&n, (const char *)p - H2_AHDR, sizeof n);
    return n;
}

static void *arena_alloc(struct hs_h2 *h, size_t size)
{
    size_t off = h->arena_used + H2_AHDR;
    if (size > H2_ARENA || off > H2_ARENA - size)
        return NULL;
    memcpy(h->arena + off - H2_AHDR, &size, sizeof size);
    h->arena_used = off + ((size + H2_AHDR - 1) & ~(size_t)(H2_AHDR - 1));
    if (size >= 16384 && !h->fb_len) { /* the frame buffer */
        h->fb_off = (uint32_t)off;
        h->fb_len = (uint32_t)size;
    }
    return h->arena + off;
}

/* A block of the arena is freed: zeros (they need not be packed). */
static void arena_free(struct hs_h2 *h, void *p)
{
    if ((char *)p == h->arena + h->fb_off && h->fb_len)
        h->fb_len = 0;
    else
        memset(p, 0, arena_size(p));
}

static void big_forget(struct hs_h2 *h, const void *p)
{
    for (int i = 0; i < H2_BIG; i++)
        if (h->big[i].p == p) {
            h->big[i].p = NULL;
            return;
        }
}

static void *big_alloc(struct hs_h2 *h, size_t size)
{
    void *p;
    if (h->in_new && h->arena && (p = arena_alloc(h, size)) != NULL)
        return p;
    if (size < H2_BIG_MIN || posix_memalign(&p, 4096, size) != 0)
        return malloc(size);
    for (int i = 0; i < H2_BIG; i++)
        if (!h->big[i].p) {
            h->big[i].p = p;
            h->big[i].size = size;
            h->big[i].framebuf = h->in_new && size >= 16384;
            break;
        }
    return p;
}

static void *mem_malloc(size_t size, void *ud)
{
    return big_alloc(ud, size);
}

static void mem_free(void *p, void *ud)
{
    struct hs_h2 *h = ud;
    if (!p)
        return;
    if (in_arena(h, p)) {
        arena_free(h, p);
        return;
    }
    big_forget(h, p);
    free(p);
}

static void *mem_calloc(size_t n, size_t size, void *ud)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    void *p = big_alloc(ud, n * size);
    if (p)
        memset(p, 0, n * size);
    return p;
}

static void big_set_framebuf(struct hs_h2 *h, const void *p)
{
    for (int k = 0; k < H2_BIG; k++)
        if (h->big[k].p == p)
            h->big[k].framebuf = true;
}

static void *mem_realloc(void *p, size_t size, void *ud)
{
    struct hs_h2 *h = ud;
    if (!p)
        return big_alloc(h, size);
    if (in_arena(h, p)) {
        size_t old = arena_size(p);
        if (size <= old)
            return p;
        /* It grows: out of the arena (a frame buffer stays one). */
        bool fb = (char *)p == h->arena + h->fb_off && h->fb_len;
        void *q = big_alloc(h, size);
        if (!q)
            return NULL;
        memcpy(q, p, old);
        arena_free(h, p);
        if (fb)
            big_set_framebuf(h, q);
        return q;
    }
    for (int i = 0; i < H2_BIG; i++) {
        if (h->big[i].p != p)
            continue;
        /* A tracked block: move it to a new tracked one. */
        void *q = big_alloc(h, size);
        if (!q)
            return NULL;
        memcpy(q, p, h->big[i].size < size ? h->big[i].size : size);
        bool fb = h->big[i].framebuf;
        big_forget(h, p);
        free(p);
        if (fb)
            big_set_framebuf(h, q);
        return q;
    }
    return realloc(p, size);
}

static bool all_zero(const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i])
            return false;
    return true;
}

/* Packing. Sessions of one worker are created alike, so their arenas
 * differ in few words: the first arena a worker packs is kept as its
 * template (tmpl, the frame buffer's bytes zeroed), and an arena is packed
 * as the words that its template does not predict. The template predicts
 * a word by its own, moved by the distance between the two arenas when it
 * pointed into the template's arena, or between the two connections when
 * it pointed into the template's connection (nghttp2 keeps pointers to
 * its blocks and to its user data). The frame buffer's words are dead:
 * always predicted. */

static uint64_t word_at(const void *p, size_t i)
{
    uint64_t v;
    memcpy(&v, (const char *)p + i * 8, sizeof v);
    return v;
}

/* The template's word i moved for h. */
static uint64_t predict(const struct hs_h2_worker *x, const struct hs_h2 *h, size_t i)
{
    if (i >= x->tmpl_len / 8)
        return 0;
    uint64_t t = word_at(x->tmpl, i);
    if (t >= x->tmpl_arena && t - x->tmpl_arena < H2_ARENA)
        return t - x->tmpl_arena + (uintptr_t)h->arena;
    if (t >= x->tmpl_h && t - x->tmpl_h < sizeof *h)
        return t - x->tmpl_h + (uintptr_t)h;
    return t;
}

static bool predicted(const struct hs_h2_worker *x, const struct hs_h2 *h, size_t i)
{
    if (i * 8 >= h->fb_off && i * 8 < (size_t)h->fb_off + h->fb_len)
        return true; /* the frame buffer's: dead */
    return word_at(h->arena, i) == predict(x, h, i);
}

/* The worker's first packed arena becomes its template. */
static void tmpl_take(struct hs_h2_worker *x, const struct hs_h2 *h)
{
    if (x->tmpl || !(x->tmpl = malloc(h->arena_used)))
        return;
    memcpy(x->tmpl, h->arena, h->arena_used);
    if (h->fb_len)
        memset(x->tmpl + h->fb_off, 0, h->fb_len);
    x->tmpl_len = h->arena_used & ~(size_t)7;
    x->tmpl_arena = (uintptr_t)h->arena;
    x->tmpl_h = (uintptr_t)h;
}

static size_t put_var(unsigned char *out, size_t v)
{
    size_t n = 0;
    do {
        unsigned char b = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (out)
            out[n] = (unsigned char)(b | (v ? 0x80 : 0));
        n++;
    } while (v);
    return n;
}

static size_t get_var(const unsigned char **p)
{
    size_t v = 0;
    unsigned shift = 0;
    for (;;) {
        unsigned char b = *(*p)++;
        v |= (size_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return v;
        shift += 7;
    }
}

/* Encodes the arena as runs: words predicted, then words not (both counts
 * varints), those words after. Returns the length; writes only when out
 * is not NULL. */
static size_t arena_encode(const struct hs_h2_worker *x, const struct hs_h2 *h,
                           unsigned char *out)
{
    size_t n = 0, i = 0, end = h->arena_used / 8;
    while (i < end) {
        size_t from = i;
        while (i < end && predicted(x, h, i))
            i++;
        if (i == end)
            break;
        size_t lit = i;
        while (i < end && !predicted(x, h, i))
            i++;
        n += put_var(out ? out + n : NULL, lit - from);
        n += put_var(out ? out + n : NULL, i - lit);
        if (out)
            memcpy(out + n, h->arena + lit * 8, (i - lit) * 8);
        n += (i - lit) * 8;
    }
    return n;
}

/* Writes h's packed arena to dst, which reads as zeros: only the words
 * that are not zero are written. */
static void arena_decode(const struct hs_h2_worker *x, const struct hs_h2 *h, char *dst)
{
    const unsigned char *p = h->pack, *end = p ? p + h->pack_len : NULL;
    size_t i = 0, last = h->arena_used / 8;
    while (i < last) {
        size_t skip = p < end ? get_var(&p) : last - i;
        for (size_t k = i + skip; i < k; i++) {
            uint64_t v = predict(x, h, i);
            if (v)
                memcpy(dst + i * 8, &v, sizeof v);
        }
        if (p >= end)
            break;
        size_t lit = get_var(&p);
        memcpy(dst + i * 8, p, lit * 8);
        p += lit * 8;
        i += lit;
    }
}

#ifndef NDEBUG
/* Debug builds (the sanitizer runs) check every pack: decoded, it gives
 * the arena back but for the frame buffer's dead bytes. */
static void pack_check(const struct hs_h2_worker *x, const struct hs_h2 *h)
{
    char *copy = calloc(1, h->arena_used);
    if (!copy)
        return;
    arena_decode(x, h, copy);
    if (h->fb_len)
        memcpy(copy + h->fb_off, h->arena + h->fb_off, h->fb_len);
    if (memcmp(copy, h->arena, h->arena_used) != 0) {
        fprintf(stderr, "h2: an nghttp2 arena does not survive its packing\n");
        abort();
    }
    free(copy);
}
#endif

/* nghttp2 is about to run: the packed arena comes back. */
static void h2_unpack(struct hs_h2 *h)
{
    if (!h->packed)
        return;
    arena_decode(hw(h->c), h, h->arena);
    free(h->pack);
    h->pack = NULL;
    h->pack_len = 0;
    h->packed = false;
    /* Resident again: trimmed again if it stays idle. */
    h->trimmed = false;
    h->used = true;
}

/* The connection has been idle (no stream, nothing to send) for
 * H2_TRIM_USEC: the trim list's tick (run_due()). */
static void h2_trim(struct hs_h2 *h)
{
    if (h->trimmed || !h->ng || h->packed)
        return;
    if (h->woff < h->out.len || h->nstreams || nghttp2_session_want_write(h->ng))
        return; /* not idle after all: listed again when it is */
    h->trimmed = true;
    struct hs_h2_worker *x = hw(h->c);
    tmpl_take(x, h);
    if (h->arena && x->tmpl) {
        size_t n = arena_encode(x, h, NULL);
        unsigned char *pk = n ? malloc(n) : NULL;
        if (pk || !n) {
            if (n)
                (void)arena_encode(x, h, pk);
            h->pack = pk;
            h->pack_len = n;
            h->packed = true;
#ifndef NDEBUG
            pack_check(x, h);
#endif
            (void)madvise(h->arena, H2_ARENA, MADV_DONTNEED);
        }
    }
    for (int i = 0; i < H2_BIG; i++) {
        size_t len = h->big[i].size & ~(size_t)4095;
        if (!h->big[i].p || !len)
            continue;
        if (!h->big[i].framebuf && !all_zero(h->big[i].p, len))
            continue;
        (void)madvise(h->big[i].p, len, MADV_DONTNEED);
    }
}

/* ------------------------------------------------------------------------ */
/* Timer lists                                                              */

static void tl_del(struct hs_h2_stream *s)
{
    if (s->tkind == T_NONE || !s->h)
        return;
    struct hs_h2_worker *x = hw(s->h->c);
    struct h2_list *l = s->tkind == T_READ ? &x->rd : &x->wr;
    HS_LIST_UNLINK(l->head, l->tail, s, tprev, tnext);
    s->tkind = T_NONE;
}

static void tl_set(struct hs_h2_stream *s, int kind)
{
    tl_del(s);
    if (kind == T_NONE || !s->h)
        return;
    struct hs_h2_worker *x = hw(s->h->c);
    struct h2_list *l = kind == T_READ ? &x->rd : &x->wr;
    struct hs_worker *w = s->h->c->w;
    s->tkind = kind;
    s->tsince = w->now;
    /* A tick is due at or before the head's deadline, if any. */
    if (!l->head) {
        const handoff_http_options *o = &srv_of(s->h)->o;
        tick_need(w, hs_sat_add(w->now, kind == T_READ ? o->read_timeout_usec
                                                       : o->write_timeout_usec));
    }
    HS_LIST_APPEND(l->head, l->tail, s, tprev, tnext);
}

static void wait_del(struct h2_waits *l, struct h2_wait *k)
{
    if (!k->on)
        return;
    HS_LIST_UNLINK(l->head, l->tail, k, prev, next);
    k->on = false;
}

/* k waits from now (again, if it was waiting). */
static void wait_add(struct hs_worker *w, struct h2_waits *l, struct h2_wait *k)
{
    wait_del(l, k);
    k->on = true;
    k->since = w->now;
    if (!l->head)
        tick_need(w, k->since + l->dur); /* else one is due for the head */
    HS_LIST_APPEND(l->head, l->tail, k, prev, next);
}

/* The first of l whose deadline has come, or NULL. */
static struct hs_h2 *wait_due(const struct h2_waits *l, uint64_t now)
{
    return l->head && l->head->since + l->dur <= now ? l->head->h : NULL;
}

static void ping_del(struct hs_h2 *h)
{
    wait_del(&hw(h->c)->ping, &h->ping);
}

static void ping_add(struct hs_h2 *h)
{
    wait_add(h->c->w, &hw(h->c)->ping, &h->ping);
}

static void trim_cancel(struct hs_h2 *h)
{
    wait_del(&hw(h->c)->trim, &h->trim);
}

/* The connection is idle from now: trimmed H2_TRIM_USEC later unless it
 * is used meanwhile. */
static void trim_later(struct hs_h2 *h)
{
    wait_add(h->c->w, &hw(h->c)->trim, &h->trim);
}

/* ------------------------------------------------------------------------ */
/* Streams                                                                  */

static void buf_trim(hs_buf *b)
{
    b->len = 0;
    if (b->cap > H2_KEEP)
        hs_buf_free(b);
}

static struct hs_h2_stream *stream_new(struct hs_h2 *h, int32_t id)
{
    struct hs_h2_worker *x = hw(h->c);
    struct hs_h2_stream *s = x->pool;
    if (s) {
        x->pool = s->anext;
        x->npool--;
    } else {
        s = calloc(1, sizeof *s);
        if (!s)
            return NULL;
    }
    hs_buf arena = s->arena, fields = s->fields, body = s->body, outq = s->outq;
    hs_buf hdrs = s->res.a_hdrs, abody = s->res.a_body;
    memset(s, 0, sizeof *s);
    s->arena = arena;
    s->fields = fields;
    s->body = body;
    s->outq = outq;
    s->res.a_hdrs = hdrs;
    s->res.a_body = abody;
    s->h = h;
    s->id = id;
    hs_res_init(&s->res, h->c, s, &s->req);
    hs_res_reset(&s->res);
    s->req.internal_ = &s->hreq;
    s->anext = h->all;
    if (h->all)
        h->all->aprev = s;
    h->all = s;
    h->nstreams++;
    return s;
}

/* Gives s back to the pool: only when nghttp2 is done with it and the
 * application too. */
static void stream_notify(struct hs_h2_stream *s);

static void stream_destroy(struct hs_h2_stream *s)
{
    hs_buf_free(&s->arena);
    hs_buf_free(&s->fields);
    hs_buf_free(&s->body);
    hs_buf_free(&s->outq);
    hs_buf_free(&s->res.a_hdrs);
    hs_buf_free(&s->res.a_body);
    free(s);
}

static void stream_free(struct hs_h2_stream *s)
{
    struct hs_h2 *h = s->h;
    struct hs_conn *c = s->res.c;
    struct hs_h2_worker *x = hw(c);
    tl_del(s);
    if (h) {
        if (s->aprev)
            s->aprev->anext = s->anext;
        else
            h->all = s->anext;
        if (s->anext)
            s->anext->aprev = s->aprev;
        h->nstreams--;
        /* Its body no longer counts: give the window back. */
        size_t blen = s->body.len;
        if (blen && h->ng) {
            h->body_bytes -= blen;
            uint64_t budget = 2 * srv_of(h)->o.max_body_bytes;
            if (h->owed && h->body_bytes < budget) {
                uint64_t give = h->owed;
                (void)nghttp2_session_consume_connection(h->ng, (size_t)give);
                h->owed = 0;
            }
        }
    }
    buf_trim(&s->arena);
    buf_trim(&s->fields);
    buf_trim(&s->body);
    buf_trim(&s->outq);
    buf_trim(&s->res.a_hdrs);
    buf_trim(&s->res.a_body);
    if (x && x->npool < H2_POOL) {
        s->anext = x->pool;
        x->pool = s;
        x->npool++;
    } else {
        stream_destroy(s);
    }
}

/* The stream is over for nghttp2; free it unless the application holds
 * its response, which then learns of it through -EPIPE. */
static void stream_detach(struct hs_h2_stream *s)
{
    if (!s->attached)
        return;
    s->attached = false;
    tl_del(s);
    if (s->app_held) {
        atomic_store(&s->res.stream_gone, true);
        stream_notify(s); /* a producer waiting for room learns it */
        return;
    }
    stream_free(s);
}

static size_t unsent(const struct hs_h2_stream *s)
{
    if (s->buffered)
        return s->res.a_body.len - s->boff;
    return s->outq.len - s->outoff;
}

/* ------------------------------------------------------------------------ */
/* Output                                                                   */

static long sock_write(struct hs_conn *c, const char *p, size_t n)
{
    if (c->ssl)
        return hs_tls_write(c->ssl, p, n);
    for (;;) {
        ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        return -1;
    }
}

/* Writes p[0..n); keeps what the socket does not take in the tail.
 * Returns 1 when all went, 0 when some is left, -1 on error. */
static int write_or_keep(struct hs_h2 *h, const char *p, size_t n)
{
    struct hs_conn *c = h->c;
    size_t done = 0;
    while (done < n) {
        long r = sock_write(c, p + done, n - done);
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        done += (size_t)r;
    }
    if (done < n) {
        if (hs_buf_append(&h->out, p + done, n - done) < 0)
            return -1;
        return 0;
    }
    return 1;
}

/* Sends the tail, then whatever nghttp2 has. Returns 1 when everything is
 * out, 0 when the socket is full, -1 on error. */
static int h2_flush(struct hs_h2 *h)
{
    struct hs_conn *c = h->c;
    while (h->woff < h->out.len) {
        long r = sock_write(c, h->out.p + h->woff, h->out.len - h->woff);
        if (r < 0)
            return -1;
        if (r == 0)
            return 0;
        h->woff += (size_t)r;
        if (c->h.tclass == HS_T_WRITE)
            hs_tset(c->w, &c->h, HS_T_WRITE, true); /* progress */
    }
    hs_buf_free(&h->out);
    h->woff = 0;
    if (!h->ng)
        return 1;
    char *wb = hw(c)->wbuf;
    for (;;) {
        size_t len = 0;
        bool more = true;
        while (len < H2_WBUF) {
            const uint8_t *p;
            ssize_t n = nghttp2_session_mem_send(h->ng, &p);
            if (n < 0) {
                h->fatal = true;
                return -1;
            }
            if (n == 0) {
                more = false;
                break;
            }
            h->trimmed = false; /* the frame buffer is in use again */
            h->used = true;
            size_t room = H2_WBUF - len;
            if ((size_t)n <= room) {
                memcpy(wb + len, p, (size_t)n);
                len += (size_t)n;
                continue;
            }
            /* It does not fit: write what we have, then this piece; the
             * pointer dies at the next mem_send, so keep all of it. */
            int r = len ? write_or_keep(h, wb, len) : 1;
            if (r < 0)
                return -1;
            if (r == 0) {
                if (hs_buf_append(&h->out, p, (size_t)n) < 0)
                    return -1;
                return 0;
            }
            len = 0;
            r = write_or_keep(h, (const char *)p, (size_t)n);
            if (r <= 0)
                return r;
        }
        if (len) {
            int r = write_or_keep(h, wb, len);
            if (r <= 0)
                return r;
        }
        if (!more)
            return 1;
    }
}

/* ------------------------------------------------------------------------ */
/* nghttp2 callbacks                                                        */

static bool glitch(struct hs_h2 *h)
{
    uint64_t now = h->c->w->now;
    h->glitch += (double)(now - h->glitch_at) * H2_GLITCH_RATE / 1e6;
    h->glitch_at = now;
    if (h->glitch > H2_GLITCH_BURST)
        h->glitch = H2_GLITCH_BURST;
    h->glitch -= 1.0;
    if (h->glitch >= 0)
        return false;
    /* Too many frames that cost work and carry nothing: RFC 9113 5.4.1. */
    (void)nghttp2_session_terminate_session(h->ng, NGHTTP2_ENHANCE_YOUR_CALM);
    return true;
}

#ifndef HANDOFF_HAVE_NGHTTP2_MAX_CONTINUATIONS
/* CVE-2024-28182 without Debian's backport: count the CONTINUATION frames
 * of each header block in the input, before nghttp2 sees it (1.52 calls
 * no callback per CONTINUATION frame). Only frame headers are looked at:
 * nghttp2 still parses everything. Returns true on a flood. */
static bool count_continuations(struct hs_h2 *h, const uint8_t *p, size_t n)
{
    while (n) {
        if (h->cskip) { /* the preface, or a frame's payload */
            size_t k = n < h->cskip ? n : h->cskip;
            h->cskip -= k;
            p += k;
            n -= k;
            continue;
        }
        size_t k = 9 - h->chlen < n ? 9 - h->chlen : n;
        memcpy(h->chdr + h->chlen, p, k);
        h->chlen += k;
        p += k;
        n -= k;
        if (h->chlen < 9)
            break;
        h->chlen = 0;
        h->cskip = (size_t)h->chdr[0] << 16 | (size_t)h->chdr[1] << 8 | h->chdr[2];
        uint8_t type = h->chdr[3], flags = h->chdr[4];
        if (type == NGHTTP2_HEADERS || type == NGHTTP2_PUSH_PROMISE)
            h->ncont = 0;
        else if (type == NGHTTP2_CONTINUATION && ++h->ncont > H2_MAX_CONTINUATIONS)
            return true;
        (void)flags;
    }
    return false;
}
#endif

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct hs_h2 *h = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct hs_h2_stream *s = stream_new(h, f->hd.stream_id);
    if (!s)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM */
    s->attached = true;
    (void)nghttp2_session_set_stream_user_data(ng, f->hd.stream_id, s);
    tl_set(s, T_READ);
    h->nreq++;
    if (h->nreq >= srv_of(h)->o.max_keepalive_requests)
        h->want_graceful = true;
    return 0;
}

static bool lc_eq(const uint8_t *p, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n == l && memcmp(p, lit, l) == 0;
}

static int put_ref(struct hs_h2_stream *s, const uint8_t *p, size_t n, struct fref_pair *r)
{
    if (hs_buf_append(&s->arena, p, n) < 0)
        return -1;
    r->off = (uint32_t)(s->arena.len - n);
    r->len = (uint32_t)n;
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud)
{
    (void)flags;
    (void)ud;
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct hs_h2_stream *s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!s || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* trailers: validated by nghttp2, then dropped */
    if (s->too_large)
        return 0; /* keep decoding (the HPACK state), store nothing */
    handoff_http_server *srv = srv_of(s->h);
    s->hlist += namelen + valuelen + 32;
    if (s->hlist > srv->o.max_header_bytes) {
        s->too_large = true;
        return 0;
    }
    int r = 0;
    if (namelen && name[0] == ':') {
        /* nghttp2 has checked them: known, once each, before the rest. */
        if (lc_eq(name, namelen, ":method")) {
            r = put_ref(s, value, valuelen, &s->method);
            s->have_method = true;
        } else if (lc_eq(name, namelen, ":path")) {
            r = put_ref(s, value, valuelen, &s->path);
            s->have_path = true;
        } else if (lc_eq(name, namelen, ":authority")) {
            r = put_ref(s, value, valuelen, &s->authority);
            s->have_authority = true;
        } else if (lc_eq(name, namelen, ":scheme")) {
            r = put_ref(s, value, valuelen, &s->scheme);
        }
        return r < 0 ? NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE : 0;
    }
    if (s->nfields >= H2_MAX_FIELDS) {
        s->too_large = true;
        return 0;
    }
    struct fref fr;
    if (hs_buf_reserve(&s->arena, namelen + valuelen) < 0 ||
        hs_buf_reserve(&s->fields, sizeof fr) < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    fr.noff = (uint32_t)s->arena.len;
    fr.nlen = (uint32_t)namelen;
    memcpy(s->arena.p + s->arena.len, name, namelen);
    s->arena.len += namelen;
    fr.voff = (uint32_t)s->arena.len;
    fr.vlen = (uint32_t)valuelen;
    memcpy(s->arena.p + s->arena.len, value, valuelen);
    s->arena.len += valuelen;
    memcpy(s->fields.p + s->fields.len, &fr, sizeof fr);
    s->fields.len += sizeof fr;
    s->nfields++;
    return 0;
}

/* RFC 9113 8.2.1: a field with characters outside the allowed ones makes
 * the request malformed (nghttp2 would otherwise drop just the field). */
static int on_invalid_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                             size_t namelen, const uint8_t *value, size_t valuelen,
                             uint8_t flags, void *ud)
{
    (void)ng;
    (void)f;
    (void)name;
    (void)namelen;
    (void)value;
    (void)valuelen;
    (void)flags;
    (void)ud;
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)flags;
    struct hs_h2 *h = ud;
    struct hs_h2_stream *s = nghttp2_session_get_stream_user_data(ng, id);
    (void)nghttp2_session_consume_stream(ng, id, len);
    if (!s || s->answered || s->too_large) {
        (void)nghttp2_session_consume_connection(ng, len);
        return 0;
    }
    handoff_http_server *srv = srv_of(h);
    if (s->body.len + len > srv->o.max_body_bytes) {
        (void)nghttp2_session_consume_connection(ng, len);
        s->body_over = true;
        return 0;
    }
    if (hs_buf_append(&s->body, data, len) < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    h->body_bytes += len;
    /* Give the connection window back only while the buffered bodies of
     * all streams stay under the budget (see stream_free()). */
    if (h->body_bytes <= 2 * srv->o.max_body_bytes)
        (void)nghttp2_session_consume_connection(ng, len);
    else
        h->owed += len;
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud)
{
    (void)code;
    (void)ud;
    struct hs_h2_stream *s = nghttp2_session_get_stream_user_data(ng, id);
    if (s)
        stream_detach(s);
    return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    (void)ng;
    struct hs_h2 *h = ud;
    /* A client downloading sends WINDOW_UPDATEs in proportion. */
    if (f->hd.type == NGHTTP2_DATA && h->glitch < H2_GLITCH_BURST)
        h->glitch += 1.0;
    return 0;
}

static void build_request(struct hs_h2_stream *s, int *status);

static void dispatch(struct hs_h2_stream *s);

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct hs_h2 *h = ud;
    struct hs_h2_stream *s = NULL;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
        if (!s)
            return 0;
        if (f->headers.cat == NGHTTP2_HCAT_REQUEST) {
            s->headers_done = true;
            if (s->too_large) {
                (void)respond_simple(s, 431);
                return 0;
            }
            if (s->have_method && s->method.len == 7 &&
                memcmp(s->arena.p + s->method.off, "CONNECT", 7) == 0) {
                (void)respond_simple(s, 501); /* no tunnels over HTTP/2 */
                return 0;
            }
            if (!(f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
                /* A body follows: refuse it early if it is declared too big;
                 * answer Expect: 100-continue. */
                size_t n = s->fields.len / sizeof(struct fref);
                for (size_t i = 0; i < n; i++) {
                    struct fref fr;
                    memcpy(&fr, s->fields.p + i * sizeof fr, sizeof fr);
                    const char *nm = s->arena.p + fr.noff, *v = s->arena.p + fr.voff;
                    if (fr.nlen == 14 && memcmp(nm, "content-length", 14) == 0) {
                        uint64_t len = 0;
                        for (uint32_t k = 0; k < fr.vlen && len <= UINT64_MAX / 10; k++)
                            len = len * 10 + (uint64_t)(v[k] - '0');
                        if (len > srv_of(h)->o.max_body_bytes) {
                            (void)respond_simple(s, 413);
                            return 0;
                        }
                    } else if (fr.nlen == 6 && memcmp(nm, "expect", 6) == 0 &&
                               fr.vlen == 12 && strncasecmp(v, "100-continue", 12) == 0) {
                        static const nghttp2_nv cont[] = {
                            {(uint8_t *)":status", (uint8_t *)"100", 7, 3, NGHTTP2_NV_FLAG_NONE}};
                        (void)nghttp2_submit_headers(ng, NGHTTP2_FLAG_NONE, s->id, NULL, cont,
                                                     1, NULL);
                    }
                }
                return 0;
            }
        }
        break;
    case NGHTTP2_DATA:
        s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
        if (!s)
            return 0;
        if (f->hd.length == 0 && !(f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
            (void)glitch(h); /* an empty DATA frame carries nothing */
            return 0;
        }
        if (s->body_over && !s->answered) {
            (void)respond_simple(s, 413);
            return 0;
        }
        break;
    case NGHTTP2_PING:
        if ((f->hd.flags & NGHTTP2_FLAG_ACK) &&
            memcmp(f->ping.opaque_data, drain_ping, sizeof drain_ping) == 0) {
            /* One RTT after the notice: the final GOAWAY, but only once the
             * input read so far is processed and before more is read. Its
             * last stream id is taken when it is submitted, and nghttp2
             * accepts new streams until it has been sent: a HEADERS frame
             * after this PING ACK in the same read would be processed
             * while the GOAWAY says it was not. */
            if (h->gstate == G_NOTICE)
                h->final_due = true;
            return 0;
        }
        (void)glitch(h);
        return 0;
    case NGHTTP2_SETTINGS:
        if (!(f->hd.flags & NGHTTP2_FLAG_ACK))
            (void)glitch(h);
        return 0;
    case NGHTTP2_WINDOW_UPDATE:
    case NGHTTP2_PRIORITY:
        (void)glitch(h);
        return 0;
#ifndef HANDOFF_HAVE_NGHTTP2_STREAM_RESET_RATE_LIMIT
    case NGHTTP2_RST_STREAM: {
        /* CVE-2023-44487 without Debian's backport: the same bucket. */
        uint64_t now = h->c->w->now;
        h->resets += (double)(now - h->resets_at) * H2_RESET_RATE / 1e6;
        h->resets_at = now;
        if (h->resets > H2_RESET_BURST)
            h->resets = H2_RESET_BURST;
        h->resets -= 1.0;
        if (h->resets < 0)
            (void)nghttp2_session_terminate_session(ng, NGHTTP2_INTERNAL_ERROR);
        return 0;
    }
#endif
    default:
        return 0;
    }
    if (s && (f->hd.flags & NGHTTP2_FLAG_END_STREAM) && !s->answered && s->headers_done)
        dispatch(s);
    return 0;
}

static ssize_t data_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)ng;
    (void)id;
    (void)ud;
    struct hs_h2_stream *s = src->ptr;
    const char *p;
    size_t avail;
    if (s->buffered) {
        p = s->res.a_body.p + s->boff;
        avail = s->res.a_body.len - s->boff;
    } else {
        p = s->outq.p + s->outoff;
        avail = s->outq.len - s->outoff;
    }
    if (avail == 0 && !s->taken_end) {
        s->deferred = true;
        tl_set(s, T_NONE); /* nothing of ours is stuck: the application is slow */
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = avail < length ? avail : length;
    if (n)
        memcpy(buf, p, n);
    if (s->buffered) {
        s->boff += n;
    } else {
        s->outoff += n;
        if (s->outoff == s->outq.len)
            s->outq.len = s->outoff = 0;
    }
    if (s->taken_end && unsent(s) == 0) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        tl_set(s, T_NONE);
    } else {
        tl_set(s, T_WRITE); /* progress: the stall clock restarts */
    }
    return (ssize_t)n;
}

static int on_error(nghttp2_session *ng, int code, const char *msg, size_t len, void *ud)
{
    (void)ng;
    (void)code;
    (void)msg;
    (void)len;
    (void)ud;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Requests and responses                                                   */

static bool is_conn_specific(const char *n, size_t l)
{
    static const char *const names[] = {"connection", "keep-alive", "proxy-connection",
                                        "transfer-encoding", "upgrade", "te", "http2-settings"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == l && strncasecmp(n, names[i], l) == 0)
            return true;
    return false;
}

/* Turns the collected fields into the request the handler sees. *status
 * is set to 400 if the request is malformed in a way nghttp2 lets pass. */
static void build_request(struct hs_h2_stream *s, int *status)
{
    *status = 0;
    size_t n = s->fields.len / sizeof(struct fref);
    struct fref stackfr[32], *fr = stackfr;
    if (n > 32) {
        fr = malloc(n * sizeof *fr);
        if (!fr) {
            *status = 503;
            return;
        }
    }
    if (n)
        memcpy(fr, s->fields.p, n * sizeof *fr);
    /* Join cookies (RFC 9113 8.2.3) into the first cookie field. */
    size_t first_cookie = SIZE_MAX, ncookie = 0, host = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        const char *nm = s->arena.p + fr[i].noff;
        if (fr[i].nlen == 6 && memcmp(nm, "cookie", 6) == 0) {
            if (first_cookie == SIZE_MAX)
                first_cookie = i;
            ncookie++;
        } else if (fr[i].nlen == 4 && memcmp(nm, "host", 4) == 0 && host == SIZE_MAX) {
            host = i;
        }
    }
    if (ncookie > 1) {
        size_t start = s->arena.len;
        for (size_t i = first_cookie; i < n; i++) {
            if (fr[i].nlen != 6 || memcmp(s->arena.p + fr[i].noff, "cookie", 6) != 0)
                continue;
            if (s->arena.len > start && hs_buf_append(&s->arena, "; ", 2) < 0)
                goto oom;
            if (hs_buf_reserve(&s->arena, fr[i].vlen) < 0)
                goto oom;
            memcpy(s->arena.p + s->arena.len, s->arena.p + fr[i].voff, fr[i].vlen);
            s->arena.len += fr[i].vlen;
        }
        fr[first_cookie].voff = (uint32_t)start;
        fr[first_cookie].vlen = (uint32_t)(s->arena.len - start);
    }
    if (host != SIZE_MAX && s->have_authority &&
        (fr[host].vlen != s->authority.len ||
         strncasecmp(s->arena.p + fr[host].voff, s->arena.p + s->authority.off,
                     s->authority.len) != 0)) {
        *status = 400; /* RFC 9113 8.3.1: Host and :authority disagree */
        if (fr != stackfr)
            free(fr);
        return;
    }
    /* The header array: host (from :authority) first if absent. */
    size_t total = n - (ncookie > 1 ? ncookie - 1 : 0) +
                   (host == SIZE_MAX && s->have_authority ? 1 : 0);
    s->fields.len = 0;
    if (hs_buf_reserve(&s->fields, (total ? total : 1) * sizeof(hh_header)) < 0)
        goto oom;
    hh_header *hd = (hh_header *)(void *)s->fields.p;
    const char *base = s->arena.p;
    size_t k = 0;
    if (host == SIZE_MAX && s->have_authority) {
        hd[k].name = (hh_str){"host", 4};
        hd[k].value = (hh_str){base + s->authority.off, s->authority.len};
        k++;
    }
    for (size_t i = 0; i < n; i++) {
        if (ncookie > 1 && i != first_cookie && fr[i].nlen == 6 &&
            memcmp(base + fr[i].noff, "cookie", 6) == 0)
            continue;
        hd[k].name = (hh_str){base + fr[i].noff, fr[i].nlen};
        hd[k].value = (hh_str){base + fr[i].voff, fr[i].vlen};
        k++;
    }
    if (fr != stackfr)
        free(fr);
    s->fields.len = k * sizeof(hh_header);

    hh_request *hr = &s->hreq;
    memset(hr, 0, sizeof *hr);
    hr->method = (hh_str){base + s->method.off, s->method.len};
    hr->target = (hh_str){base + s->path.off, s->path.len};
    const char *q = memchr(hr->target.p, '?', hr->target.len);
    if (q) {
        hr->path = (hh_str){hr->target.p, (size_t)(q - hr->target.p)};
        hr->query = (hh_str){q + 1, hr->target.len - hr->path.len - 1};
    } else {
        hr->path = hr->target;
    }
    hr->minor_version = 1;
    hr->headers = hd;
    hr->num_headers = k;
    hr->keep_alive = 1;

    handoff_http_request *r = &s->req;
    struct hs_conn *c = s->res.c;
    r->method = (handoff_http_str){hr->method.p, hr->method.len};
    r->target = (handoff_http_str){hr->target.p, hr->target.len};
    r->path = (handoff_http_str){hr->path.p, hr->path.len};
    r->query = (handoff_http_str){hr->query.p, hr->query.len};
    r->minor_version = 1;
    r->http_version = 20;
    r->keep_alive = 1;
    r->upgrade = 0;
    r->tls = c->ssl != NULL;
    r->body_len = s->body.len;
    r->body = s->body.len ? s->body.p : NULL;
    if (s->h->peer) {
        r->peer = (const struct sockaddr *)s->h->peer;
        r->peer_len = s->h->peer_len;
    } else {
        r->peer = &c->peer.sa;
        r->peer_len = c->peer_len;
    }
    r->internal_ = &s->hreq;
    s->is_head = hr->method.len == 4 && memcmp(hr->method.p, "HEAD", 4) == 0;
    return;
oom:
    if (fr != stackfr)
        free(fr);
    *status = 503;
}

static void dispatch(struct hs_h2_stream *s)
{
    tl_del(s);
    int st;
    build_request(s, &st);
    if (st) {
        (void)respond_simple(s, st);
        return;
    }
    s->answered = true;
    s->app_held = true;
    s->h->held++;
    /* The health path or the handler; ended on this thread, or owned by
     * another from now on (res.async). */
    hs_res_run(&s->res, &s->req);
    stream_pump(s);
}

/* Status line, fields in the order added (names lowercased, connection-
 * specific ones dropped), date, content-length. */
static int submit_head(struct hs_h2_stream *s, int status, bool with_body, bool has_len,
                       size_t clen)
{
    struct hs_h2 *h = s->h;
    const hs_buf *hb = &s->res.a_hdrs;
    size_t lines = 0;
    for (size_t i = 0; i < hb->len; i++)
        if (hb->p[i] == '\n')
            lines++;
    size_t nvmax = lines + 4;
    nghttp2_nv stackv[24], *nv = stackv;
    char stackn[1024], *names = stackn;
    if (nvmax > sizeof stackv / sizeof stackv[0]) {
        nv = malloc(nvmax * sizeof *nv);
        if (!nv)
            return -1;
    }
    if (hb->len > sizeof stackn) {
        names = malloc(hb->len);
        if (!names) {
            if (nv != stackv)
                free(nv);
            return -1;
        }
    }
    char sbuf[4], lbuf[24];
    unsigned st = (unsigned)status % 1000; /* 200..999, checked by _status() */
    sbuf[0] = (char)('0' + st / 100);
    sbuf[1] = (char)('0' + st / 10 % 10);
    sbuf[2] = (char)('0' + st % 10);
    sbuf[3] = '\0';
    size_t k = 0;
    nv[k++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)sbuf, 7, 3, NGHTTP2_NV_FLAG_NONE};
    const char *p = hb->p, *end = hb->len ? hb->p + hb->len : hb->p;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            break;
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon) {
            size_t nl = (size_t)(colon - p);
            const char *v = colon + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = eol;
            if (ve > v && ve[-1] == '\r')
                ve--;
            if (!is_conn_specific(p, nl)) {
                char *lname = names + (p - hb->p);
                for (size_t i = 0; i < nl; i++) {
                    char ch = p[i];
                    lname[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
                }
                nv[k++] = (nghttp2_nv){(uint8_t *)lname, (uint8_t *)v, nl,
                                       (size_t)(ve - v), NGHTTP2_NV_FLAG_NONE};
            }
        }
        p = eol + 1;
    }
    nv[k++] = (nghttp2_nv){(uint8_t *)"date", (uint8_t *)h->c->w->date, 4, 29,
                           NGHTTP2_NV_FLAG_NONE};
    if (has_len) {
        int l = snprintf(lbuf, sizeof lbuf, "%zu", clen);
        nv[k++] = (nghttp2_nv){(uint8_t *)"content-length", (uint8_t *)lbuf, 14, (size_t)l,
                               NGHTTP2_NV_FLAG_NONE};
    }
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = data_read};
    int r = nghttp2_submit_response(h->ng, s->id, nv, k, with_body ? &prd : NULL);
    if (nv != stackv)
        free(nv);
    if (names != stackn)
        free(names);
    return r;
}

/* A response made by the library (errors, 431, 413...). The stream is
 * not dispatched; nghttp2 resets what the client still sends with
 * NO_ERROR once the response is complete (RFC 9113 8.1). */
static int respond_simple(struct hs_h2_stream *s, int status)
{
    tl_del(s);
    s->answered = true;
    char body[64];
    int n;
    switch (status) {
    case 400: n = snprintf(body, sizeof body, "Bad Request\n"); break;
    case 408: n = snprintf(body, sizeof body, "Request Timeout\n"); break;
    case 413: n = snprintf(body, sizeof body, "Content Too Large\n"); break;
    case 431: n = snprintf(body, sizeof body, "Request Header Fields Too Large\n"); break;
    case 501: n = snprintf(body, sizeof body, "Not Implemented\n"); break;
    default: n = snprintf(body, sizeof body, "Service Unavailable\n"); break;
    }
    hs_res_reset(&s->res);
    s->res.a_hdrs.len = 0;
    s->res.a_body.len = 0;
    if (hs_buf_append(&s->res.a_hdrs, "content-type: text/plain\r\n", 26) < 0 ||
        hs_buf_append(&s->res.a_body, body, (size_t)n) < 0) {
        s->res.a_hdrs.len = 0;
        s->res.a_body.len = 0;
    }
    s->buffered = true;
    s->taken_end = true;
    s->head_sent = true;
    s->boff = 0;
    int r = submit_head(s, status, s->res.a_body.len > 0, true, s->res.a_body.len);
    if (r < 0)
        (void)nghttp2_submit_rst_stream(s->h->ng, NGHTTP2_FLAG_NONE, s->id,
                                        NGHTTP2_INTERNAL_ERROR);
    else if (s->res.a_body.len)
        tl_set(s, T_WRITE);
    return r;
}

static bool status_has_body(int status)
{
    return status != 204 && status != 304 && status >= 200;
}

/* Turns what the application did to s's response into nghttp2 calls:
 * the HEADERS (with a data provider when a body follows), streamed data
 * taken into the stream's queue, a deferred provider resumed. */
static void stream_pump(struct hs_h2_stream *s)
{
    struct hs_h2 *h = s->h;
    handoff_http_response *res = &s->res;
    struct hs_worker *w = res->c->w;
    bool live = h && s->attached && h->ng;
    bool locked = res->async;
    if (locked)
        pthread_mutex_lock(&w->mu);
    bool ended = res->a_ended != 0;
    bool streaming = res->a_streaming != 0;
    if (streaming && res->a_body.len) {
        /* Into the stream's queue; dropped if nobody is to get it. */
        if (live && !s->is_head && status_has_body(res->a_status)) {
            if (s->outoff == s->outq.len) {
                hs_buf t = s->outq;
                s->outq = res->a_body;
                res->a_body = t;
                s->outoff = 0;
            } else if (hs_buf_append(&s->outq, res->a_body.p, res->a_body.len) < 0) {
                res->a_oom = 1;
            }
        }
        res->a_body.len = 0;
    }
    if (locked)
        pthread_mutex_unlock(&w->mu);

    if (ended && s->app_held) {
        s->app_held = false;
        if (h)
            h->held--;
    }
    if (!live) {
        if (ended)
            stream_free(s); /* cut off earlier; now the application is done */
        else
            hs_res_writable(res, 0, locked); /* tell a waiting producer */
        return;
    }
    if (!ended && !streaming)
        return;
    if (ended)
        s->taken_end = true; /* write() after end() is not allowed */
    if (streaming && !ended) {
        s->streaming = true;
        hs_res_writable(res, unsent(s), locked);
    }
    if (res->a_close)
        h->want_graceful = true; /* "Connection: close": GOAWAY for this one */

    if (!s->head_sent) {
        int status = res->a_status;
        if (res->a_oom) {
            (void)respond_simple(s, 500);
            return;
        }
        bool body_ok = !s->is_head && status_has_body(status);
        bool with_body;
        int r;
        s->head_sent = true;
        if (streaming) {
            with_body = body_ok;
            r = submit_head(s, status, with_body, false, 0);
        } else {
            s->buffered = true;
            s->boff = 0;
            with_body = body_ok && res->a_body.len > 0;
            r = submit_head(s, status, with_body, status_has_body(status), res->a_body.len);
        }
        if (r < 0)
            (void)nghttp2_submit_rst_stream(h->ng, NGHTTP2_FLAG_NONE, s->id,
                                            NGHTTP2_INTERNAL_ERROR);
        else if (with_body && unsent(s))
            tl_set(s, T_WRITE);
        return;
    }
    if (res->a_oom) {
        (void)nghttp2_submit_rst_stream(h->ng, NGHTTP2_FLAG_NONE, s->id,
                                        NGHTTP2_INTERNAL_ERROR);
        return;
    }
    if (s->deferred && (unsent(s) || s->taken_end)) {
        s->deferred = false;
        (void)nghttp2_session_resume_data(h->ng, s->id);
        if (unsent(s))
            tl_set(s, T_WRITE);
    }
}

static void pump_dirty(struct hs_h2 *h)
{
    struct hs_worker *w = h->c->w;
    /* One at a time: another thread may mark a stream dirty again (and
     * rewrite its dnext) as soon as it has left the list. */
    for (;;) {
        pthread_mutex_lock(&w->mu);
        struct hs_h2_stream *s = h->dirty;
        if (s) {
            h->dirty = s->dnext;
            s->dnext = NULL;
            s->dirty = false;
        }
        pthread_mutex_unlock(&w->mu);
        if (!s)
            return;
        stream_pump(s);
    }
}

/* Notes that s's response changed (w->mu held): the worker pumps it. */
static void mark_dirty_locked(struct hs_h2_stream *s)
{
    if (!s->h || s->dirty)
        return;
    s->dirty = true;
    s->dnext = s->h->dirty;
    s->h->dirty = s;
}

/* hs_proto.changed_locked: the application wrote, ended, or asked for
 * on_writable. */
static void h2_changed_locked(handoff_http_response *res)
{
    mark_dirty_locked(res->stream);
}

/* The library changed s (cut off): the application learns it when the
 * connection's turn pumps it. */
static void stream_notify(struct hs_h2_stream *s)
{
    struct hs_conn *c = s->res.c;
    pthread_mutex_lock(&c->w->mu);
    mark_dirty_locked(s);
    pthread_mutex_unlock(&c->w->mu);
    hs_ready_push(c->w, &c->h);
}

/* ------------------------------------------------------------------------ */
/* The connection                                                           */

/* The GOAWAY sequence of RFC 9113 6.8, step 1: a GOAWAY with the largest
 * stream id, and a PING whose ACK tells that it has reached the client. */
static void notice(struct hs_h2 *h)
{
    if (h->gstate != G_OPEN || !h->ng)
        return;
    h2_unpack(h);
    h->gstate = G_NOTICE;
    (void)nghttp2_submit_shutdown_notice(h->ng);
    (void)nghttp2_submit_ping(h->ng, NGHTTP2_FLAG_NONE, drain_ping);
    ping_add(h);
}

/* Step 2: the final GOAWAY with the last stream processed; nghttp2 ignores
 * streams the client opens after it. */
static void graceful(struct hs_h2 *h)
{
    ping_del(h);
    h->final_due = false;
    if (h->gstate == G_FINAL || !h->ng)
        return;
    h2_unpack(h);
    h->gstate = G_FINAL;
    (void)nghttp2_submit_goaway(h->ng, NGHTTP2_FLAG_NONE,
                                nghttp2_session_get_last_proc_stream_id(h->ng),
                                NGHTTP2_NO_ERROR, NULL, 0);
}

/* Cuts every stream off the session and deletes it (nghttp2_session_del()
 * calls no callbacks). Streams the application holds stay until it ends
 * them; their writes fail with -EPIPE. */
static void h2_cut(struct hs_h2 *h)
{
    ping_del(h);
    trim_cancel(h);
    struct hs_h2_stream *s = h->all;
    while (s) {
        struct hs_h2_stream *next = s->anext;
        if (s->attached) {
            s->attached = false;
            tl_del(s);
            if (s->app_held) {
                atomic_store(&s->res.stream_gone, true);
                stream_notify(s);
            } else {
                stream_free(s);
            }
        }
        s = next;
    }
    if (h->ng) {
        h2_unpack(h);
        nghttp2_session_del(h->ng);
        h->ng = NULL;
    }
    free(h->arena); /* nothing of nghttp2's is left in it */
    h->arena = NULL;
}

/* mem_recv() failed: the connection is over. Say why when it still
 * makes sense (nghttp2 queues no GOAWAY for these itself). */
static void recv_failed(struct hs_h2 *h, ssize_t rv)
{
    uint32_t code = NGHTTP2_PROTOCOL_ERROR;
    h->fatal = true;
    switch (rv) {
    case NGHTTP2_ERR_FLOODED:       /* not reading: it would not read this either */
    case NGHTTP2_ERR_BAD_CLIENT_MAGIC: /* not HTTP/2 at all */
    case NGHTTP2_ERR_NOMEM:
        h->quiet = true;
        return;
#ifdef HANDOFF_HAVE_NGHTTP2_MAX_CONTINUATIONS
    case NGHTTP2_ERR_TOO_MANY_CONTINUATIONS:
        code = NGHTTP2_ENHANCE_YOUR_CALM;
        break;
#endif
    default:
        break;
    }
    (void)nghttp2_session_terminate_session(h->ng, code);
}

/* Done: a lingering close (the client may still be sending; closing with
 * unread input would reset the connection and could destroy our last
 * frames, GOAWAY included). */
static void h2_close(struct hs_h2 *h)
{
    struct hs_conn *c = h->c;
    h2_cut(h);
    hs_buf_free(&h->out);
    h->woff = 0;
    hs_conn_linger(c);
}

static void update_timer(struct hs_h2 *h)
{
    struct hs_conn *c = h->c;
    int cls;
    if (h->woff < h->out.len)
        cls = HS_T_WRITE;
    else if (h->nstreams)
        cls = HS_T_NONE;
    else if (h->nreq == 0)
        cls = HS_T_NEW;
    else
        cls = HS_T_IDLE;
    hs_tset(c->w, &c->h, cls, false);
    /* Never trimmed here, on the request path: only once it has stayed
     * idle (the tick). Used since it fell idle: its wait starts again. */
    if (cls == HS_T_IDLE && !nghttp2_session_want_write(h->ng)) {
        if (!h->trimmed && (h->used || !h->trim.on))
            trim_later(h);
    } else {
        trim_cancel(h);
    }
    h->used = false;
}

/* Makes all the progress possible: responses changed by the application
 * (dirty streams), input, output. Also for a closed connection whose
 * streams the application still held (HS_C_DEAD). */
static void h2_run(struct hs_conn *c)
{
    struct hs_h2 *h = h2_of(c);
    if (!h)
        return;
    h2_unpack(h);
    pump_dirty(h);
    if (c->state != HS_C_OPEN) {
        /* Closed: only the application's responses were left. */
        if (c->state == HS_C_DEAD && h->held == 0)
            hs_conn_gone(c);
        return;
    }
    if (h->want_graceful && h->gstate == G_OPEN)
        notice(h);
    unsigned budget = H2_BUDGET;
    char buf[H2_RBUF];
    for (;;) {
        int f = h2_flush(h);
        if (f < 0) {
            hs_conn_close(c);
            return;
        }
        if (f == 0 || h->fatal || h->eof || !c->read_more)
            break; /* the socket is full (no reading meanwhile), or no input */
        if (nghttp2_session_get_outbound_queue_size(h->ng) >= H2_OUTQ_HIGH)
            break;
        if (--budget == 0) {
            hs_ready_push(c->w, &c->h); /* let other connections in */
            break;
        }
        long n = hs_conn_read(c, buf, sizeof buf);
        if (n > 0) {
            h->trimmed = false;
            h->used = true;
#ifndef HANDOFF_HAVE_NGHTTP2_MAX_CONTINUATIONS
            if (count_continuations(h, (const uint8_t *)buf, (size_t)n)) {
                (void)nghttp2_session_terminate_session(h->ng, NGHTTP2_ENHANCE_YOUR_CALM);
                continue; /* nghttp2 ignores the rest; the GOAWAY goes out */
            }
#endif
            h->in_recv = true;
            ssize_t r = nghttp2_session_mem_recv(h->ng, (const uint8_t *)buf, (size_t)n);
            h->in_recv = false;
            if (r < 0)
                recv_failed(h, r); /* bad preface, flood, a callback's failure */
            if (h->want_graceful && h->gstate == G_OPEN)
                notice(h);
            if (h->final_due)
                graceful(h); /* and h2_flush() sends it before the next read */
            continue;
        }
        if (n == 0)
            break;
        if (n == -1) {
            h->eof = c->eof = true;
            c->read_more = false;
            continue; /* flush what is left */
        }
        hs_conn_close(c);
        return;
    }
    /* Streamed responses waiting for room: DATA went out meanwhile. */
    for (struct hs_h2_stream *s = h->all; s && !h->fatal; s = s->anext)
        if (s->streaming && s->attached && !s->taken_end)
            hs_res_writable(&s->res, unsent(s), s->res.async);
    if (h->fatal) {
        if (!h->quiet)
            (void)h2_flush(h); /* the GOAWAY saying why */
        h2_close(h);
        return;
    }
    bool idle_out = h->woff >= h->out.len && !nghttp2_session_want_write(h->ng);
    if (idle_out && !nghttp2_session_want_read(h->ng)) {
        h2_close(h); /* GOAWAY sent or received and no stream left */
        return;
    }
    if (h->eof && idle_out && h->held == 0) {
        h2_close(h); /* nothing more can come in, nothing more to go out */
        return;
    }
    update_timer(h);
}

static void h2_io(struct hs_handle *hd, uint32_t events)
{
    struct hs_conn *c = hs_conn_of(hd);
    if (hs_conn_begin(c, events))
        return; /* lingering, or closed */
    h2_run(c);
}

static void h2_turn(struct hs_handle *hd)
{
    h2_run(hs_conn_of(hd));
}

static void h2_timeout(struct hs_handle *hd, int cls)
{
    struct hs_conn *c = hs_conn_of(hd);
    if (hs_conn_timeout_common(c, cls))
        return; /* write stall (reset), linger */
    /* Idle, or no request since the preface: a graceful goodbye. */
    struct hs_h2 *h = h2_of(c);
    if (h->ng) {
        h2_unpack(h);
        ping_del(h);
        h->gstate = G_FINAL;
        (void)nghttp2_submit_goaway(h->ng, NGHTTP2_FLAG_NONE,
                                    nghttp2_session_get_last_proc_stream_id(h->ng),
                                    NGHTTP2_NO_ERROR, NULL, 0);
    }
    h2_run(c);
}

void hs_h2_drain_worker(struct hs_worker *w)
{
    for (struct hs_handle *hd = w->handles; hd; hd = hd->next) {
        if (hd->ops != &hs_h2_proto.h)
            continue;
        struct hs_conn *c = hs_conn_of(hd);
        if (c->state != HS_C_OPEN || !h2_of(c))
            continue;
        notice(h2_of(c));
        hs_ready_push(w, hd);
    }
}

/* The socket was closed: every stream is cut off. The connection must
 * outlive the responses the application still holds (HS_C_DEAD). */
static bool h2_closed(struct hs_conn *c)
{
    struct hs_h2 *h = h2_of(c);
    if (!h)
        return false;
    h2_cut(h);
    hs_buf_free(&h->out);
    h->woff = 0;
    return h->held > 0;
}

static void h2_release(struct hs_conn *c)
{
    struct hs_h2 *h = h2_of(c);
    if (!h)
        return;
    h2_cut(h);
    /* Whatever the application still held (only at server_free). */
    while (h->all) {
        struct hs_h2_stream *s = h->all;
        s->app_held = false;
        stream_free(s);
    }
    hs_buf_free(&h->out);
    free(h->peer);
    free(h);
    c->p = NULL;
}

const struct hs_proto hs_h2_proto = {
    .h = {.io = h2_io,
          .run = h2_turn,
          .queued = h2_turn,
          .timeout = h2_timeout,
          .stop = hs_conn_stop,
          .destroy = hs_conn_destroy},
    .name = "h2",
    .closed = h2_closed,
    .release = h2_release,
    .changed_locked = h2_changed_locked,
};

/* ------------------------------------------------------------------------ */
/* Per worker                                                               */

static struct hs_h2_worker *worker_state(struct hs_worker *w)
{
    if (w->h2)
        return w->h2;
    handoff_http_server *srv = hs_server_of(w);
    struct hs_h2_worker *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->wbuf = malloc(H2_WBUF);
    if (!x->wbuf || nghttp2_session_callbacks_new(&x->cbs) != 0 ||
        nghttp2_option_new(&x->opt) != 0) {
        free(x->wbuf);
        nghttp2_session_callbacks_del(x->cbs);
        free(x);
        return NULL;
    }
    nghttp2_session_callbacks *cb = x->cbs;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_invalid_header_callback(cb, on_invalid_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_error_callback2(cb, on_error);

    nghttp2_option *o = x->opt;
    /* Request bodies: the windows follow what we buffered (see
     * on_data_chunk()). */
    nghttp2_option_set_no_auto_window_update(o, 1);
    /* No closed streams kept for the RFC 7540 priority tree. */
    nghttp2_option_set_no_closed_streams(o, 1);
    /* Responses use HPACK's static table and literals, not a dynamic table
     * (as nginx does): no memory per connection for it, and the client's
     * copy of it stays empty. */
    nghttp2_option_set_max_deflate_dynamic_table_size(o, 0);
#ifdef HANDOFF_HAVE_NGHTTP2_STREAM_RESET_RATE_LIMIT
    nghttp2_option_set_stream_reset_rate_limit(o, 1000, 33);
#endif
#ifdef HANDOFF_HAVE_NGHTTP2_MAX_CONTINUATIONS
    nghttp2_option_set_max_continuations(o, H2_MAX_CONTINUATIONS);
#endif
#ifdef HANDOFF_NGHTTP2_DISABLE_BACKPORTS
    /* A build that tests the module's own limits (cmake/Nghttp2.cmake). */
    nghttp2_option_set_stream_reset_rate_limit(o, UINT32_MAX, UINT32_MAX);
    nghttp2_option_set_max_continuations(o, SIZE_MAX);
#endif
    const handoff_http_options *op = &srv->o;
    x->iv[0] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
                                        op->http2_max_concurrent_streams};
    x->iv[1] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE,
                                        op->http2_initial_window};
    x->iv[2] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_FRAME_SIZE,
                                        op->http2_max_frame_size};
    x->iv[3] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
                                        (uint32_t)op->max_header_bytes};
    x->niv = 4;
    x->ping.dur = H2_PING_USEC;
    x->trim.dur = H2_TRIM_USEC;
    w->h2 = x;
    return x;
}

void hs_h2_worker_free(struct hs_worker *w)
{
    struct hs_h2_worker *x = w->h2;
    if (!x)
        return;
    while (x->pool) {
        struct hs_h2_stream *s = x->pool;
        x->pool = s->anext;
        stream_destroy(s);
    }
    nghttp2_session_callbacks_del(x->cbs);
    nghttp2_option_del(x->opt);
    free(x->tmpl);
    free(x->wbuf);
    free(x);
    w->h2 = NULL;
}

static uint64_t next_deadline(struct hs_worker *w)
{
    struct hs_h2_worker *x = w->h2;
    uint64_t next = UINT64_MAX;
    const handoff_http_options *o = &hs_server_of(w)->o;
    if (x->rd.head && hs_sat_add(x->rd.head->tsince, o->read_timeout_usec) < next)
        next = hs_sat_add(x->rd.head->tsince, o->read_timeout_usec);
    if (x->wr.head && hs_sat_add(x->wr.head->tsince, o->write_timeout_usec) < next)
        next = hs_sat_add(x->wr.head->tsince, o->write_timeout_usec);
    if (x->ping.head && x->ping.head->since + x->ping.dur < next)
        next = x->ping.head->since + x->ping.dur;
    if (x->trim.head && x->trim.head->since + x->trim.dur < next)
        next = x->trim.head->since + x->trim.dur;
    return next;
}

static void run_due(struct hs_worker *w);

/* The tick: the stream and PING deadlines that are due, then the next. */
static void tick_run(void *obj, void (*fn)(void), void *arg)
{
    (void)fn;
    (void)arg;
    struct hs_worker *w = obj;
    struct hs_h2_worker *x = w->h2;
    if (!x)
        return;
    /* This tick was pending, so the earliest pending one is due too: it
     * is this one. Later ones may still be pending (harmless). */
    if (x->tick_at && x->tick_at <= w->now)
        x->tick_at = 0;
    run_due(w);
    tick_need(w, next_deadline(w));
}

/* Makes sure a tick is pending at or before at. */
static void tick_need(struct hs_worker *w, uint64_t at)
{
    struct hs_h2_worker *x = w->h2;
    if (at == UINT64_MAX || (x->tick_at && x->tick_at <= at))
        return;
    if (hs_timer_add(w, at, tick_run, w, NULL, NULL) == 0)
        x->tick_at = at;
}

static void run_due(struct hs_worker *w)
{
    struct hs_h2_worker *x = w->h2;
    const handoff_http_options *o = &hs_server_of(w)->o;
    struct hs_h2_stream *s;
    while ((s = x->rd.head) && hs_sat_add(s->tsince, o->read_timeout_usec) <= w->now) {
        struct hs_h2 *h = s->h;
        tl_del(s);
        if (s->headers_done) {
            (void)respond_simple(s, 408); /* the body did not come */
        } else {
            /* Stuck in a header block: the connection can do nothing else. */
            (void)nghttp2_session_terminate_session(h->ng, NGHTTP2_NO_ERROR);
        }
        hs_ready_push(h->c->w, &h->c->h);
    }
    while ((s = x->wr.head) && hs_sat_add(s->tsince, o->write_timeout_usec) <= w->now) {
        struct hs_h2 *h = s->h;
        tl_del(s);
        /* No progress (a zero window, a client not reading): this stream
         * goes, the others of the connection carry on. */
        (void)nghttp2_submit_rst_stream(h->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
        hs_ready_push(h->c->w, &h->c->h);
    }
    struct hs_h2 *h;
    while ((h = wait_due(&x->ping, w->now)) != NULL) {
        ping_del(h);
        graceful(h); /* no PING ACK within a second: GOAWAY anyway */
        hs_ready_push(h->c->w, &h->c->h);
    }
    while ((h = wait_due(&x->trim, w->now)) != NULL) {
        trim_cancel(h);
        h2_trim(h); /* idle all along: it left the list when it was not */
    }
}

/* ------------------------------------------------------------------------ */

/* RFC 9113 9.2.2: HTTP/2 over TLS 1.2 needs an ephemeral key exchange and
 * an AEAD cipher. */
static bool tls_adequate(struct hs_conn *c)
{
    if (!c->ssl || SSL_version(c->ssl) != TLS1_2_VERSION)
        return true;
    const SSL_CIPHER *ci = SSL_get_current_cipher(c->ssl);
    if (!ci || !SSL_CIPHER_is_aead(ci))
        return false;
    int kx = SSL_CIPHER_get_kx_nid(ci);
    return kx == NID_kx_ecdhe || kx == NID_kx_dhe;
}

int hs_h2_start(struct hs_conn *c, const char *pre, size_t len)
{
    /* pre may be in the old protocol's buffer: copy it, then release
     * what that protocol holds for c. */
    char *copy = len ? malloc(len) : NULL;
    if (len && !copy) {
        hs_conn_close(c);
        return -1;
    }
    if (len)
        memcpy(copy, pre, len);
    hs_conn_proto(c)->release(c);
    c->p = NULL;
    pre = copy;
    struct hs_h2_worker *x = worker_state(c->w);
    struct hs_h2 *h = x ? calloc(1, sizeof *h) : NULL;
    if (!h) {
        free(copy);
        hs_conn_close(c);
        return -1;
    }
    h->c = c;
    h->ping.h = h->trim.h = h;
    if (!c->peer_len && (h->peer = calloc(1, sizeof *h->peer)) != NULL) {
        h->peer_len = sizeof *h->peer; /* a bound unix socket: did not fit */
        if (getpeername(c->fd, (struct sockaddr *)h->peer, &h->peer_len) < 0)
            h->peer_len = 0;
    }
    h->glitch = H2_GLITCH_BURST;
    h->resets = H2_RESET_BURST;
    h->glitch_at = h->resets_at = c->w->now;
    nghttp2_mem mem = {h, mem_malloc, mem_free, mem_calloc, mem_realloc};
    void *arena;
    if (posix_memalign(&arena, 4096, H2_ARENA) == 0)
        h->arena = arena; /* else: nghttp2's blocks come from malloc */
    h->in_new = true;
    int rv = nghttp2_session_server_new3(&h->ng, x->cbs, h, x->opt, &mem);
    h->in_new = false;
    if (rv != 0) {
        free(h->arena);
        free(h);
        free(copy);
        hs_conn_close(c);
        return -1;
    }
    c->p = h;
    c->pstate = 0;
    c->h.ops = &hs_h2_proto.h;
    (void)nghttp2_submit_settings(h->ng, NGHTTP2_FLAG_NONE, x->iv, x->niv);
    if (c->w->draining)
        notice(h); /* a connection that turned HTTP/2 during the drain */
    if (!tls_adequate(c))
        (void)nghttp2_session_terminate_session(h->ng, NGHTTP2_INADEQUATE_SECURITY);
#ifndef HANDOFF_HAVE_NGHTTP2_MAX_CONTINUATIONS
    h->cskip = HS_H2_PREFACE_LEN; /* frames start after the client preface */
    if (len && count_continuations(h, (const uint8_t *)pre, len))
        (void)nghttp2_session_terminate_session(h->ng, NGHTTP2_ENHANCE_YOUR_CALM);
#endif
    if (len) {
        ssize_t r = nghttp2_session_mem_recv(h->ng, (const uint8_t *)pre, len);
        if (r < 0)
            recv_failed(h, r);
    }
    free(copy);
    c->read_more = true; /* data may have come with the handshake */
    h2_run(c);
    return c->state == HS_C_OPEN ? 0 : -1;
}
