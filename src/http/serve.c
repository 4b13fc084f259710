/*
 * serve.c - the endless-style layer: create the handoff handle and the
 * servers, declare readiness, and turn the core's events into drains,
 * resumes and stops until the process is done. It owns the process, so
 * it logs (to stderr unless given a log function) and decides what
 * signals do. It uses the public API of both libraries, and of the server
 * object only the names of the listeners it opened and the migration
 * counters (server.h).
 *
 * Lame duck: on a shutdown (not on a restart, where the successor already
 * serves) the servers keep serving with their health path answering 503
 * for the lame-duck delay, so that load balancers take the instance out
 * before it stops accepting. One unit of work is held in the core's
 * connection count meanwhile, so that HANDOFF_STOP_DRAINED cannot fire
 * while nothing is connected; the core's drain timeout is raised by the
 * delay, since its hammer timer starts at the DRAIN event.
 */
#include "server.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_HAMMER (30 * HANDOFF_USEC_PER_SEC)

/* The layer that owns the process logs to stderr unless told otherwise
 * (the core library itself stays silent without a log function). */
static void stderr_log(void *userdata, int level, const char *msg)
{
    (void)userdata;
    (void)level;
    (void)fprintf(stderr, "handoff[%ld]: %s\n", (long)getpid(), msg);
}

struct logger {
    handoff_log_fn fn;
    void *userdata;
    int level;
};

static void say(const struct logger *lg, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(const struct logger *lg, int level, const char *fmt, ...)
{
    if (level > lg->level)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(line, sizeof line, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
    va_end(ap);
    lg->fn(lg->userdata, level, line);
}

/* Signals whose default action would end the process although a server
 * has no use for them: a stray one (a log rotation script's USR1, a
 * supervisor forwarding what it got) must not kill the server with its
 * requests in flight. Those still at their default action are watched
 * through the handle (and passed to on_signal, or ignored with a
 * warning); a handler or SIG_IGN the application set before is left
 * alone. */
static const int quiet_signals[] = {SIGUSR1, SIGUSR2};

static void watch_quiet_signals(handoff_t *h)
{
    for (size_t i = 0; i < sizeof quiet_signals / sizeof quiet_signals[0]; i++) {
        struct sigaction sa;
        if (sigaction(quiet_signals[i], NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
            (void)handoff_watch_signal(h, quiet_signals[i]); /* -ENOTSUP: NO_SIGNALS */
    }
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static void each(handoff_http_server **s, size_t n, int (*fn)(handoff_http_server *))
{
    for (size_t i = 0; i < n; i++)
        if (s[i])
            (void)fn(s[i]);
}

/* Drains every server. On a shutdown nothing will ever accept on the
 * listeners again: give them back to the core, which closes them (our
 * copies only: a socket systemd holds stays open), so that clients are
 * refused at once instead of waiting in the backlog until the exit. The
 * drain has taken them out of every worker by then. */
static void drain_all(handoff_t *h, handoff_http_server **s, size_t n, int reason)
{
    /* On an upgrade the successor serves meanwhile: what does not migrate
     * is not closed while idle (its next response says "Connection:
     * close"); a shutdown closes idle connections after a short grace. */
    for (size_t i = 0; i < n; i++)
        if (s[i])
            (void)hs_server_drain(s[i], reason == HANDOFF_DRAIN_SHUTDOWN);
    if (reason != HANDOFF_DRAIN_SHUTDOWN)
        return;
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; s[i] && k < s[i]->nls; k++) {
            struct hs_listener *l = &s[i]->ls[k];
            if (l->name) {
                (void)handoff_remove(h, l->name);
                free(l->name);
                l->name = NULL;
            }
        }
    }
}

/* HANDOFF_EVENT_ADOPT: connections from the predecessor, or our own back
 * from the successor. The info line gives the running total and the time
 * since this process's handoff_ready() (how long a hand-over takes). */
static void adopt(handoff_t *h, handoff_http_server **s, size_t n, const struct logger *lg,
                  uint64_t ready_at, unsigned long *total)
{
    handoff_http_adopt_counts k = {0, 0, 0};
    int r = handoff_http_adopt(h, s, n, &k);
    if (r < 0)
        say(lg, HANDOFF_LOG_ERR, "adopting connections: %s", strerror(-r));
    *total += k.adopted;
    if (k.adopted || k.returned)
        say(lg, HANDOFF_LOG_INFO,
            "adopted %lu connections (total %lu, %llu us after ready), %lu returned by the "
            "successor",
            k.adopted, *total, (unsigned long long)(handoff_now_usec() - ready_at), k.returned);
    if (k.refused)
        say(lg, HANDOFF_LOG_WARNING,
            "%lu adopted connections closed (unreadable state or no plain listener for them)",
            k.refused);
}

/* Creates the servers and their listeners. Returns 0 or -errno (logged). */
static int setup(handoff_t *h, const handoff_http_site *sites, size_t n,
                 handoff_http_server **srv, const struct logger *lg)
{
    for (size_t i = 0; i < n; i++) {
        if (!sites[i].options || (sites[i].num_listen && !sites[i].listen)) {
            say(lg, HANDOFF_LOG_ERR, "server %zu: no options or listeners", i);
            return -EINVAL;
        }
        int r = handoff_http_server_new(h, sites[i].options, &srv[i]);
        if (r < 0) {
            say(lg, HANDOFF_LOG_ERR, "server %zu: %s", i, strerror(-r));
            return r;
        }
        for (size_t k = 0; k < sites[i].num_listen; k++) {
            const handoff_http_listen_spec *ls = &sites[i].listen[k];
            r = handoff_http_server_listen(srv[i], ls->addr, ls->tls_cert_file,
                                           ls->tls_key_file);
            if (r >= 0 && ls->h2c && !ls->tls_cert_file)
                r = handoff_http_server_listener_flags(srv[i], r, HANDOFF_HTTP_H2C);
            if (r < 0) {
                say(lg, HANDOFF_LOG_ERR, "listen %s: %s", ls->addr ? ls->addr : "(null)",
                    handoff_http_server_errmsg(srv[i]));
                return r;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        int r = handoff_http_server_start(srv[i]);
        if (r < 0) {
            say(lg, HANDOFF_LOG_ERR, "%s", handoff_http_server_errmsg(srv[i]));
            return r;
        }
    }
    return 0;
}

int handoff_http_serve(const handoff_http_serve_options *opts, const handoff_http_site *sites,
                       size_t n)
{
    if (!sites || n == 0)
        return -EINVAL;
    handoff_http_serve_options po = HANDOFF_HTTP_SERVE_OPTIONS_INIT;
    if (opts)
        po = *opts;
    handoff_options co = HANDOFF_OPTIONS_INIT;
    if (po.core)
        co = *po.core;
    uint64_t hammer = po.hammer_timeout_usec ? po.hammer_timeout_usec
                      : co.drain_timeout_usec ? co.drain_timeout_usec
                                              : DEFAULT_HAMMER;
    uint64_t lame = po.lame_duck_usec;
    co.drain_timeout_usec = hammer == HANDOFF_NO_TIMEOUT ? HANDOFF_NO_TIMEOUT
                                                          : sat_add(hammer, lame);
    /* Connections migrate unless no server wants it, or a resume window
     * is set: a connection handed to a successor that then dies would be
     * lost, while the resumed process could have kept serving it. */
    bool migrate = co.resume_window_usec == 0;
    if (migrate) {
        migrate = false;
        for (size_t i = 0; i < n; i++)
            if (sites[i].options && !sites[i].options->no_migrate)
                migrate = true;
    }
    if (migrate)
        co.flags |= HANDOFF_MIGRATE;
    if (!co.log) {
        co.log = stderr_log;
        co.log_userdata = NULL;
    }
    struct logger lg = {co.log, co.log_userdata,
                        co.log_level ? co.log_level : HANDOFF_LOG_WARNING};

    handoff_t *h = NULL;
    int r = handoff_new(&co, &h);
    if (r < 0) {
        say(&lg, HANDOFF_LOG_ERR, "handoff_new: %s", strerror(-r));
        return r;
    }
    handoff_http_server **srv = calloc(n, sizeof(handoff_http_server *));
    if (!srv) {
        handoff_free(h);
        return -ENOMEM;
    }
    watch_quiet_signals(h);
    r = setup(h, sites, n, srv, &lg);
    if (r >= 0) {
        r = handoff_ready(h);
        if (r < 0)
            say(&lg, HANDOFF_LOG_ERR, "handoff_ready: %s", handoff_errmsg(h));
    }
    uint64_t ready_at = handoff_now_usec();
    unsigned long adopted = 0;

    uint64_t lame_until = HANDOFF_NO_TIMEOUT;
    bool held = false;
    while (r >= 0) {
        handoff_event ev;
        int e = handoff_wait_event(h, &ev, lame_until);
        if (e < 0) {
            r = e;
            say(&lg, HANDOFF_LOG_ERR, "handoff_wait_event: %s", strerror(-e));
            break;
        }
        if (e == 0) {
            /* The lame-duck delay is over. */
            lame_until = HANDOFF_NO_TIMEOUT;
            drain_all(h, srv, n, HANDOFF_DRAIN_SHUTDOWN);
            if (held)
                handoff_conn_end(h);
            held = false;
            continue;
        }
        if (ev.type == HANDOFF_EVENT_DRAIN) {
            if (ev.reason == HANDOFF_DRAIN_SHUTDOWN && lame > 0) {
                each(srv, n, handoff_http_server_lame_duck);
                handoff_conn_begin(h);
                held = true;
                lame_until = sat_add(handoff_now_usec(), lame);
            } else {
                drain_all(h, srv, n, ev.reason);
            }
        } else if (ev.type == HANDOFF_EVENT_ADOPT) {
            adopt(h, srv, n, &lg, ready_at, &adopted);
        } else if (ev.type == HANDOFF_EVENT_RESUME) {
            /* The successor died within the resume window: serve again. */
            each(srv, n, handoff_http_server_resume);
        } else if (ev.type == HANDOFF_EVENT_SIGNAL) {
            if (po.on_signal) {
                po.on_signal(ev.signo, po.userdata);
            } else {
                const char *name = sigabbrev_np(ev.signo);
                say(&lg, HANDOFF_LOG_WARNING, "SIG%s from pid %ld ignored (no handler)",
                    name ? name : "?", (long)ev.pid);
            }
        } else if (ev.type == HANDOFF_EVENT_STOP) {
            r = ev.reason == HANDOFF_STOP_DRAINED   ? 0
                : ev.reason == HANDOFF_STOP_TIMEOUT ? -ETIMEDOUT
                                                    : -EINTR;
            break;
        }
    }
    if (held)
        handoff_conn_end(h);
    unsigned long moved = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (srv[i]) {
            moved += atomic_load(&srv[i]->mig_out);
            failed += atomic_load(&srv[i]->mig_failed);
        }
    }
    if (moved || failed)
        say(&lg, failed ? HANDOFF_LOG_WARNING : HANDOFF_LOG_INFO,
            "%lu connections handed to the successor, %lu kept (hand-over failed)", moved,
            failed);
    each(srv, n, handoff_http_server_stop);
    for (size_t i = 0; i < n; i++)
        handoff_http_server_free(srv[i]);
    free(srv);
    handoff_free(h);
    return r;
}

int handoff_http_listen_and_serve(const char *addr, handoff_http_handler handler,
                                  void *userdata)
{
    return handoff_http_listen_and_serve_tls(addr, NULL, NULL, handler, userdata);
}

int handoff_http_listen_and_serve_tls(const char *addr, const char *cert_file,
                                      const char *key_file, handoff_http_handler handler,
                                      void *userdata)
{
    if (!addr || !handler)
        return -EINVAL;
    handoff_http_listen_spec l = {
        .addr = addr, .tls_cert_file = cert_file, .tls_key_file = key_file};
    handoff_http_options o = HANDOFF_HTTP_OPTIONS_INIT;
    o.handler = handler;
    o.userdata = userdata;
    handoff_http_site site = {.options = &o, .listen = &l, .num_listen = 1};
    return handoff_http_serve(NULL, &site, 1);
}
