/*
 * it-http-server - the server driven by it-http.py: one endpoint per
 * feature of libhandoff-http, every option on the command line.
 *
 *   /                "Hello, World!"
 *   /echo            the request body back (X-Body-Length, X-Method)
 *   /info            method, path, query, version, tls, keep-alive, peer
 *   /header?NAME     the value of request header NAME (404 if absent)
 *   /headers         every request header, one "name: value" per line
 *   /stream?N        N chunks written from the handler
 *   /stream-thread?N N chunks written from another thread, 50 ms apart
 *   /thread?MS       answered from another thread after MS ms
 *   /defer?MS        answered from a worker timer after MS ms
 *   /slow            /defer?2000
 *   /close           adds "Connection: close"
 *   /status?N        status N
 *   /big?N           N bytes of 'x'
 *   /ws              with Connection: upgrade, hijacks the connection and
 *                    echoes bytes after a 101 (closed on drain)
 *   /tick?N          N chunks, one every 50 ms, from re-armed worker timers
 *   /stats           counters: streams stopped early by -EPIPE / -ECANCELED
 *   /firehose?N      N bytes (a pattern) streamed as fast as the client
 *                    takes them: 64 KiB writes, waiting on -EAGAIN with
 *                    handoff_http_response_on_writable(); /stats counts
 *                    the waits (firehose_waits)
 *   /firehose-thread?N  the same from another thread (which waits for
 *                    on_writable's callback on a condition variable)
 *   /block?MS        sleeps MS ms in the handler, blocking its worker (what
 *                    a handler must never do; the drain tests need it)
 *
 * --on-signal TAG passes SIGUSR1/SIGUSR2 to handoff_http_serve_options'
 * on_signal, which logs "on_signal: SIGNO TAG main|other" to stderr (main:
 * called on the thread that called handoff_http_serve()).
 *
 * --crash-after-ready MS makes the process die (SIGKILL) MS ms after it
 * has become the serving generation (its pid is in the --pid-file): a new
 * version that fails right after taking over, for the resume window.
 * --crash-after-adopt N: it dies (SIGKILL) once it has adopted N or more
 * connections from its predecessor; --stall-after-adopt MS: its loop
 * sleeps MS ms after its first adoption (both log at the info level).
 *
 * --no-migrate 1 turns connection migration off; --no-migrate-if PATH
 * does when PATH exists as the process starts (a successor that does not
 * adopt, next to a predecessor that migrates).
 *
 * it-http-server --check-listen-failure ADDR CERT KEY runs no server: it
 * drives layer 2 (handoff_http_server_listen()) through failures that
 * happen after the socket was bound (CERT/KEY must not load), checks that
 * each leaves nothing behind (the address is free, listening again works)
 * and prints one line per step; exit status 0 if all held.
 */
#include <errno.h>
#include <fcntl.h>
#include <handoff/http.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_LISTEN 8
#define MAX_WS 64

static atomic_int stream_epipe, tick_canceled, handled, firehose_waits;
static int log_requests; /* --log-requests 1: each request's target to stderr */
static pthread_mutex_t ws_mu = PTHREAD_MUTEX_INITIALIZER;
static int ws_fds[MAX_WS];
static int ws_n;

static int eq(handoff_http_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.p, lit, n) == 0;
}

static long qnum(const handoff_http_request *req, long dflt)
{
    if (!req->query.len || req->query.len > 19)
        return dflt;
    char buf[20];
    memcpy(buf, req->query.p, req->query.len);
    buf[req->query.len] = 0;
    return strtol(buf, NULL, 10);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void text(handoff_http_response *res, int status, const char *s)
{
    (void)handoff_http_response_send(res, status, "text/plain", s, strlen(s));
}

struct job {
    handoff_http_response *res;
    long n;
};

static void *thread_answer(void *arg)
{
    struct job *j = arg;
    sleep_ms(j->n);
    text(j->res, 200, "thread done\n");
    free(j);
    return NULL;
}

static void *thread_stream(void *arg)
{
    struct job *j = arg;
    for (long i = 0; i < j->n; i++) {
        char line[32];
        int len = snprintf(line, sizeof line, "chunk %ld\n", i);
        if (handoff_http_response_write(j->res, line, (size_t)len) == -EPIPE) {
            atomic_fetch_add(&stream_epipe, 1);
            break; /* the client left */
        }
        sleep_ms(50);
    }
    (void)handoff_http_response_end(j->res);
    free(j);
    return NULL;
}

static void spawn(void *(*fn)(void *), handoff_http_response *res, long n)
{
    struct job *j = malloc(sizeof *j);
    pthread_t t;
    if (!j) {
        text(res, 500, "oom\n");
        return;
    }
    j->res = res;
    j->n = n;
    if (pthread_create(&t, NULL, fn, j) != 0) {
        free(j);
        text(res, 500, "no thread\n");
        return;
    }
    pthread_detach(t);
}

static void deferred(handoff_http_response *res, void *arg)
{
    (void)arg;
    text(res, 200, "deferred\n");
}

/* /tick: one chunk per timer; the timer re-arms itself until done. */
static void tick(handoff_http_response *res, void *arg)
{
    long left = (long)(intptr_t)arg;
    char line[32];
    int len = snprintf(line, sizeof line, "tick %ld\n", left);
    if (left <= 0 || handoff_http_response_write(res, line, (size_t)len) < 0) {
        (void)handoff_http_response_end(res);
        return;
    }
    int r = handoff_http_response_defer(res, 50000, tick, (void *)(intptr_t)(left - 1));
    if (r < 0) {
        if (r == -ECANCELED)
            atomic_fetch_add(&tick_canceled, 1);
        (void)handoff_http_response_end(res);
    }
}

/* /firehose: a producer faster than the client. */
struct firehose {
    long left, off;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ready;
};

static void firehose_fill(char *buf, long off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)('a' + (off + (long)i) % 26);
}

static void firehose_step(handoff_http_response *res, void *arg)
{
    struct firehose *f = arg;
    static _Thread_local char buf[65536];
    while (f->left > 0) {
        size_t n = f->left < (long)sizeof buf ? (size_t)f->left : sizeof buf;
        firehose_fill(buf, f->off, n);
        int r = handoff_http_response_write(res, buf, n);
        if (r == -EAGAIN) {
            atomic_fetch_add(&firehose_waits, 1);
            if (handoff_http_response_on_writable(res, firehose_step, f) == 0)
                return;
        }
        if (r < 0)
            break; /* -EPIPE: the client left */
        f->left -= (long)n;
        f->off += (long)n;
    }
    (void)handoff_http_response_end(res);
    free(f);
}

static void firehose_wake(handoff_http_response *res, void *arg)
{
    (void)res;
    struct firehose *f = arg;
    pthread_mutex_lock(&f->mu);
    f->ready = 1;
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

struct fh_job {
    handoff_http_response *res;
    struct firehose f;
};

static void *firehose_thread(void *arg)
{
    struct fh_job *j = arg;
    struct firehose *f = &j->f;
    char *buf = malloc(65536);
    while (buf && f->left > 0) {
        size_t n = f->left < 65536 ? (size_t)f->left : 65536;
        firehose_fill(buf, f->off, n);
        int r = handoff_http_response_write(j->res, buf, n);
        if (r == -EAGAIN) {
            atomic_fetch_add(&firehose_waits, 1);
            pthread_mutex_lock(&f->mu);
            f->ready = 0;
            pthread_mutex_unlock(&f->mu);
            if (handoff_http_response_on_writable(j->res, firehose_wake, f) < 0)
                break;
            pthread_mutex_lock(&f->mu);
            while (!f->ready)
                pthread_cond_wait(&f->cv, &f->mu);
            pthread_mutex_unlock(&f->mu);
            continue;
        }
        if (r < 0)
            break;
        f->left -= (long)n;
        f->off += (long)n;
    }
    free(buf);
    (void)handoff_http_response_end(j->res);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(j);
    return NULL;
}

struct ws {
    handoff_http_server *srv;
    handoff_http_hijack hj;
};

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void *ws_thread(void *arg)
{
    struct ws *ws = arg;
    int fd = ws->hj.fd;
    static const char hello[] =
        "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n";
    /* The socket comes non-blocking; this simple echo blocks (10 s at
     * most per read). */
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    struct timeval tv = {.tv_sec = 10};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int ok = write_all(fd, hello, sizeof hello - 1) == 0 &&
             (ws->hj.buffered_len == 0 ||
              write_all(fd, ws->hj.buffered, ws->hj.buffered_len) == 0);
    char buf[4096];
    while (ok) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || write_all(fd, buf, (size_t)n) < 0)
            break;
    }
    pthread_mutex_lock(&ws_mu);
    for (int i = 0; i < ws_n; i++)
        if (ws_fds[i] == fd) {
            ws_fds[i] = ws_fds[--ws_n];
            break;
        }
    pthread_mutex_unlock(&ws_mu);
    (void)close(fd);
    handoff_http_hijack_end(ws->srv);
    free(ws->hj.buffered);
    free(ws);
    return NULL;
}

static void on_drain(handoff_http_server *srv, void *userdata)
{
    (void)srv;
    (void)userdata;
    pthread_mutex_lock(&ws_mu);
    for (int i = 0; i < ws_n; i++)
        (void)shutdown(ws_fds[i], SHUT_RDWR);
    pthread_mutex_unlock(&ws_mu);
}

static void ws_start(const handoff_http_request *req, handoff_http_response *res)
{
    if (!req->upgrade) {
        text(res, 426, "upgrade required\n");
        return;
    }
    struct ws *ws = calloc(1, sizeof *ws);
    if (!ws) {
        text(res, 500, "oom\n");
        return;
    }
    ws->srv = handoff_http_response_server(res);
    int r = handoff_http_response_hijack(res, &ws->hj);
    if (r < 0) {
        free(ws);
        char msg[64];
        snprintf(msg, sizeof msg, "hijack failed: %s\n", strerror(-r));
        text(res, 500, msg);
        return;
    }
    pthread_mutex_lock(&ws_mu);
    if (ws_n < MAX_WS)
        ws_fds[ws_n++] = ws->hj.fd;
    pthread_mutex_unlock(&ws_mu);
    pthread_t t;
    if (pthread_create(&t, NULL, ws_thread, ws) != 0) {
        (void)close(ws->hj.fd);
        handoff_http_hijack_end(ws->srv);
        free(ws->hj.buffered);
        free(ws);
        return;
    }
    pthread_detach(t);
}

static void info(const handoff_http_request *req, handoff_http_response *res)
{
    char peer[INET6_ADDRSTRLEN] = "?";
    if (req->peer->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)req->peer)->sin_addr,
                  peer, sizeof peer);
    else if (req->peer->sa_family == AF_INET6)
        inet_ntop(AF_INET6,
                  &((const struct sockaddr_in6 *)(const void *)req->peer)->sin6_addr, peer,
                  sizeof peer);
    char out[1024];
    int n = snprintf(out, sizeof out,
                     "method=%.*s\npath=%.*s\nquery=%.*s\ntarget=%.*s\nversion=%d.%d\n"
                     "tls=%d\nkeepalive=%d\npeer=%s\npid=%ld\n",
                     (int)req->method.len, req->method.p, (int)req->path.len, req->path.p,
                     (int)req->query.len, req->query.p, (int)req->target.len,
                     req->target.p, req->http_version / 10,
                     req->http_version == 20 ? 0 : req->minor_version, req->tls,
                     req->keep_alive, peer,
                     (long)getpid());
    (void)handoff_http_response_send(res, 200, "text/plain", out, (size_t)n);
}

static void handle(const handoff_http_request *req, handoff_http_response *res, void *ud)
{
    (void)ud;
    handoff_http_str p = req->path;
    atomic_fetch_add(&handled, 1);
    if (log_requests)
        fprintf(stderr, "request %.*s\n", (int)req->target.len, req->target.p);
    if (eq(p, "/")) {
        text(res, 200, "Hello, World!");
    } else if (eq(p, "/echo")) {
        char len[32];
        snprintf(len, sizeof len, "%zu", req->body_len);
        char method[32];
        snprintf(method, sizeof method, "%.*s", (int)req->method.len, req->method.p);
        (void)handoff_http_response_header(res, "X-Body-Length", len);
        (void)handoff_http_response_header(res, "X-Method", method);
        (void)handoff_http_response_send(res, 200, "application/octet-stream", req->body,
                                         req->body_len);
    } else if (eq(p, "/info")) {
        info(req, res);
    } else if (eq(p, "/header")) {
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)req->query.len, req->query.p);
        size_t len = 0;
        const char *v = handoff_http_request_header(req, name, &len);
        if (v)
            (void)handoff_http_response_send(res, 200, "text/plain", v, len);
        else
            text(res, 404, "no such header\n");
    } else if (eq(p, "/headers")) {
        handoff_http_str n, v;
        for (size_t i = 0; handoff_http_request_header_at(req, i, &n, &v); i++) {
            (void)handoff_http_response_body(res, n.p, n.len);
            (void)handoff_http_response_body(res, ": ", 2);
            (void)handoff_http_response_body(res, v.p, v.len);
            (void)handoff_http_response_body(res, "\n", 1);
        }
        (void)handoff_http_response_end(res);
    } else if (eq(p, "/stream")) {
        long n = qnum(req, 3);
        (void)handoff_http_response_header(res, "Content-Type", "text/plain");
        for (long i = 0; i < n; i++) {
            char line[32];
            int len = snprintf(line, sizeof line, "chunk %ld\n", i);
            (void)handoff_http_response_write(res, line, (size_t)len);
        }
        (void)handoff_http_response_end(res);
    } else if (eq(p, "/stream-thread")) {
        (void)handoff_http_response_header(res, "Content-Type", "text/plain");
        spawn(thread_stream, res, qnum(req, 3));
    } else if (eq(p, "/thread")) {
        spawn(thread_answer, res, qnum(req, 100));
    } else if (eq(p, "/defer") || eq(p, "/slow")) {
        long ms = eq(p, "/slow") ? 2000 : qnum(req, 100);
        if (handoff_http_response_defer(res, (uint64_t)ms * 1000, deferred, NULL) < 0)
            text(res, 500, "defer failed\n");
    } else if (eq(p, "/close")) {
        (void)handoff_http_response_header(res, "Connection", "close");
        text(res, 200, "closing\n");
    } else if (eq(p, "/status")) {
        char msg[32];
        long st = qnum(req, 200);
        snprintf(msg, sizeof msg, "status %ld\n", st);
        if (handoff_http_response_status(res, (int)st) < 0)
            text(res, 500, "bad status\n");
        else
            text(res, (int)st, msg);
    } else if (eq(p, "/big")) {
        long n = qnum(req, 1 << 20);
        char *b = malloc(n > 0 ? (size_t)n : 1);
        if (!b) {
            text(res, 500, "oom\n");
            return;
        }
        memset(b, 'x', n > 0 ? (size_t)n : 0);
        (void)handoff_http_response_send(res, 200, "application/octet-stream", b,
                                         n > 0 ? (size_t)n : 0);
        free(b);
    } else if (eq(p, "/tick")) {
        (void)handoff_http_response_header(res, "Content-Type", "text/plain");
        tick(res, (void *)(intptr_t)qnum(req, 3));
    } else if (eq(p, "/stats")) {
        char out[128];
        snprintf(out, sizeof out,
                 "stream_epipe=%d\ntick_canceled=%d\nhandled=%d\nfirehose_waits=%d\n",
                 atomic_load(&stream_epipe), atomic_load(&tick_canceled),
                 atomic_load(&handled), atomic_load(&firehose_waits));
        text(res, 200, out);
    } else if (eq(p, "/firehose")) {
        struct firehose *f = calloc(1, sizeof *f);
        if (!f) {
            text(res, 500, "oom\n");
            return;
        }
        f->left = qnum(req, 1 << 20);
        (void)handoff_http_response_header(res, "Content-Type", "application/octet-stream");
        firehose_step(res, f);
    } else if (eq(p, "/firehose-thread")) {
        struct fh_job *j = calloc(1, sizeof *j);
        pthread_t t;
        if (!j) {
            text(res, 500, "oom\n");
            return;
        }
        j->res = res;
        j->f.left = qnum(req, 1 << 20);
        pthread_mutex_init(&j->f.mu, NULL);
        pthread_cond_init(&j->f.cv, NULL);
        (void)handoff_http_response_header(res, "Content-Type", "application/octet-stream");
        if (pthread_create(&t, NULL, firehose_thread, j) != 0) {
            free(j);
            text(res, 500, "no thread\n");
            return;
        }
        pthread_detach(t);
    } else if (eq(p, "/block")) {
        sleep_ms(qnum(req, 100));
        text(res, 200, "unblocked\n");
    } else if (eq(p, "/ws")) {
        ws_start(req, res);
    } else {
        text(res, 404, "Not Found\n");
    }
}

/* 1 if something accepts connections on addr. */
static int accepting(const char *spec)
{
    handoff_addr a;
    if (handoff_addr_parse(spec, &a, NULL, 0) < 0)
        return -1;
    int fd = socket(a.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int r = connect(fd, (const struct sockaddr *)(const void *)a.sa.raw, (socklen_t)a.len);
    (void)close(fd);
    return r == 0;
}

static int check_listen_failure(const char *spec, const char *cert, const char *key)
{
    handoff_t *h = NULL;
    handoff_http_server *srv = NULL;
    handoff_http_options o = HANDOFF_HTTP_OPTIONS_INIT;
    o.handler = handle;
    o.threads = 1;
    int ok = 1;
    if (handoff_new(NULL, &h) < 0 || handoff_http_server_new(h, &o, &srv) < 0) {
        fprintf(stderr, "setup failed\n");
        return 1;
    }
    /* Each failure twice: the second time finds no stale registration. */
    const char *files[][2] = {{cert, key}, {cert, key}, {key, cert}, {"/nonexistent.pem", key}};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        int r = handoff_http_server_listen(srv, spec, files[i][0], files[i][1]);
        int acc = accepting(spec);
        printf("bad listen %zu: %s (%s); accepting=%d\n", i, r < 0 ? strerror(-r) : "ok",
               handoff_http_server_errmsg(srv), acc);
        if (r < 0 && !handoff_http_server_errmsg(srv)[0])
            ok = 0; /* a failure says why */
        if (r >= 0 || r == -EEXIST || acc != 0)
            ok = 0;
    }
    int fd = handoff_http_server_listen(srv, spec, NULL, NULL);
    int acc = accepting(spec);
    printf("good listen: %s; accepting=%d\n", fd < 0 ? strerror(-fd) : "ok", acc);
    if (fd < 0 || acc != 1)
        ok = 0;
    /* A started server refuses new listeners without binding anything. */
    if (handoff_http_server_start(srv) == 0) {
        int r = handoff_http_server_listen(srv, "127.0.0.1:0", NULL, NULL);
        printf("listen after start: %s\n", r < 0 ? strerror(-r) : "ok");
        if (r != -EBUSY)
            ok = 0;
        r = handoff_http_server_start(srv);
        printf("second start: %s (%s)\n", r < 0 ? strerror(-r) : "ok",
               handoff_http_server_errmsg(srv));
        if (r != -EALREADY || !handoff_http_server_errmsg(srv)[0])
            ok = 0;
    } else {
        ok = 0;
    }
    handoff_http_server_free(srv);
    handoff_free(h);
    printf("%s\n", ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
}

struct crash {
    const char *pid_file;
    long ms;
};

/* Polls the pid file until it names this process, then dies. Created
 * before handoff_http_serve() with every signal blocked, so that it never
 * takes a signal meant for the server's loop. */
static void *crash_thread(void *arg)
{
    struct crash *cr = arg;
    char want[32];
    snprintf(want, sizeof want, "%ld\n", (long)getpid());
    for (;;) {
        char buf[32] = "";
        FILE *f = fopen(cr->pid_file, "r");
        if (f) {
            if (!fgets(buf, sizeof buf, f))
                buf[0] = '\0';
            fclose(f);
        }
        if (strcmp(buf, want) == 0)
            break;
        sleep_ms(5);
    }
    sleep_ms(cr->ms);
    (void)kill(getpid(), SIGKILL);
    return NULL;
}

static int start_crash_thread(struct crash *cr)
{
    sigset_t all, old;
    pthread_t t;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = pthread_create(&t, NULL, crash_thread, cr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r == 0)
        pthread_detach(t);
    return r == 0 ? 0 : -1;
}

/* --crash-after-adopt N: the core's log function, which also dies by
 * SIGKILL once handoff_http_serve() reports N or more connections adopted
 * from the predecessor (right after handoff_http_adopt(): those were
 * acknowledged, so they die with this process). */
static unsigned long crash_after_adopt;
/* --stall-after-adopt MS: the loop thread sleeps MS ms after its first
 * adoption (a successor slow to adopt the rest). */
static long stall_after_adopt = -1;

static void crash_log(void *userdata, int level, const char *msg)
{
    (void)userdata;
    (void)level;
    fprintf(stderr, "handoff[%ld]: %s\n", (long)getpid(), msg);
    unsigned long got, total;
    if (sscanf(msg, "adopted %lu connections (total %lu", &got, &total) != 2)
        return;
    if (stall_after_adopt >= 0) {
        fprintf(stderr, "it-http-server[%ld]: stalling %ld ms after adopting %lu connections\n",
                (long)getpid(), stall_after_adopt, total);
        sleep_ms(stall_after_adopt);
        stall_after_adopt = -1;
    }
    if (crash_after_adopt && total >= crash_after_adopt) {
        fprintf(stderr, "it-http-server[%ld]: crashing after adopting %lu connections\n",
                (long)getpid(), total);
        (void)kill(getpid(), SIGKILL);
    }
}

static uint64_t num(const char *s)
{
    return strtoull(s, NULL, 10);
}

/* Milliseconds as microseconds; "never" is HANDOFF_NO_TIMEOUT. */
static uint64_t usec(const char *s)
{
    return strcmp(s, "never") == 0 ? HANDOFF_NO_TIMEOUT : num(s) * 1000;
}

static pthread_t main_thread;

static void on_signal(int signo, void *userdata)
{
    fprintf(stderr, "on_signal: %d %s %s\n", signo, (const char *)userdata,
            pthread_equal(pthread_self(), main_thread) ? "main" : "other");
}

int main(int argc, char **argv)
{
    handoff_http_listen_spec ls[MAX_LISTEN];
    size_t nls = 0;
    int h2c = 0;
    const char *cert = NULL, *key = NULL;
    handoff_options core = HANDOFF_OPTIONS_INIT;
    handoff_http_serve_options so = HANDOFF_HTTP_SERVE_OPTIONS_INIT;
    handoff_http_options o = HANDOFF_HTTP_OPTIONS_INIT;
    struct crash crash = {NULL, -1};
    so.core = &core;
    o.handler = handle;
    o.on_drain = on_drain;
    o.health_path = "/healthz";
    if (argc == 5 && !strcmp(argv[1], "--check-listen-failure"))
        return check_listen_failure(argv[2], argv[3], argv[4]);
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--listen") && nls < MAX_LISTEN)
            ls[nls++] = (handoff_http_listen_spec){.addr = v};
        else if (!strcmp(a, "--tls-cert"))
            cert = v;
        else if (!strcmp(a, "--tls-key"))
            key = v;
        else if (!strcmp(a, "--pid-file"))
            core.pid_file = v;
        else if (!strcmp(a, "--threads"))
            o.threads = (unsigned)num(v);
        else if (!strcmp(a, "--max-body"))
            o.max_body_bytes = num(v);
        else if (!strcmp(a, "--max-header"))
            o.max_header_bytes = (size_t)num(v);
        else if (!strcmp(a, "--max-keepalive"))
            o.max_keepalive_requests = (unsigned)num(v);
        else if (!strcmp(a, "--read-timeout-ms"))
            o.read_timeout_usec = usec(v);
        else if (!strcmp(a, "--write-timeout-ms"))
            o.write_timeout_usec = usec(v);
        else if (!strcmp(a, "--idle-timeout-ms"))
            o.idle_timeout_usec = usec(v);
        else if (!strcmp(a, "--tls-timeout-ms"))
            o.tls_handshake_timeout_usec = usec(v);
        else if (!strcmp(a, "--lame-duck-ms"))
            so.lame_duck_usec = usec(v);
        else if (!strcmp(a, "--drain-timeout-ms"))
            so.hammer_timeout_usec = usec(v);
        else if (!strcmp(a, "--resume-window-ms"))
            core.resume_window_usec = usec(v);
        else if (!strcmp(a, "--crash-after-ready"))
            crash.ms = (long)num(v);
        else if (!strcmp(a, "--crash-after-adopt") || !strcmp(a, "--stall-after-adopt")) {
            if (a[2] == 'c')
                crash_after_adopt = (unsigned long)num(v);
            else
                stall_after_adopt = (long)num(v);
            core.log = crash_log;
            core.log_level = HANDOFF_LOG_INFO;
        }
        else if (!strcmp(a, "--stream-buffer"))
            o.stream_buffer_bytes = (size_t)num(v);
        else if (!strcmp(a, "--log-requests"))
            log_requests = (int)num(v);
        else if (!strcmp(a, "--http2"))
            o.http2 = (int)num(v);
        else if (!strcmp(a, "--h2c"))
            h2c = (int)num(v);
        else if (!strcmp(a, "--h2-streams"))
            o.http2_max_concurrent_streams = (uint32_t)num(v);
        else if (!strcmp(a, "--h2-window"))
            o.http2_initial_window = (uint32_t)num(v);
        else if (!strcmp(a, "--h2-frame"))
            o.http2_max_frame_size = (uint32_t)num(v);
        else if (!strcmp(a, "--no-migrate"))
            o.no_migrate = (int)num(v);
        else if (!strcmp(a, "--no-migrate-if"))
            o.no_migrate = access(v, F_OK) == 0;
        else if (!strcmp(a, "--on-signal")) {
            so.on_signal = on_signal;
            so.userdata = (void *)(uintptr_t)v;
        } else {
            fprintf(stderr, "it-http-server: bad option %s\n", a);
            return 100;
        }
    }
    for (size_t i = 0; i < nls; i++) {
        ls[i].tls_cert_file = cert;
        ls[i].tls_key_file = key;
        ls[i].h2c = h2c && !cert;
    }
    handoff_http_site site = {.options = &o, .listen = ls, .num_listen = nls};
    if (crash.ms >= 0) {
        crash.pid_file = core.pid_file;
        if (!crash.pid_file || start_crash_thread(&crash) < 0) {
            fprintf(stderr, "it-http-server: --crash-after-ready needs --pid-file\n");
            return 100;
        }
    }
    main_thread = pthread_self();
    int r = handoff_http_serve(&so, &site, 1);
    if (r < 0)
        fprintf(stderr, "it-http-server: %s\n", strerror(-r));
    return r == 0 ? 0 : 1;
}
