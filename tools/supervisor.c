/*
 * supervisor.c - `handoff run`: the stable process that owns the sockets
 * and runs the server command as generations (the model is in
 * supervisor.h). This file sets everything up, runs the loop, and handles
 * signals, control commands, the stop and the timers; reloads are
 * reload.c's, exits exits.c's.
 *
 * All waiting is on one epoll set: a signalfd, the workers' notify
 * socket, the control socket and its connections; timeouts come from the
 * earliest deadline of the state.
 */
#include "supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <unistd.h>

/* epoll data: a tag in the high 32 bits, an fd in the low ones. */
#define TAG_SIGNAL ((uint64_t)1 << 32)
#define TAG_NOTIFY ((uint64_t)2 << 32)
#define TAG_CONTROL ((uint64_t)3 << 32)
#define TAG_PRELOAD ((uint64_t)4 << 32)

/* ---- stop ---- */

static void begin_stop(struct supervisor *sv, int signo, uint64_t now)
{
    const struct config *cfg = sv->cfg;
    unsigned n = 0;
    char d[32];

    sv->term_count++;
    if (sv->stopping) {
        if (sv->term_count >= 2 && signo) {
            log_warn("second SIG%s: killing every process now", sig_abbrev(signo));
            for (size_t i = 0; i < sv->nprocs; i++)
                proc_kill(sv->procs[i]);
        }
        return;
    }
    sv->stopping = true;
    notify_systemd(sv, "STOPPING=1\nSTATUS=stopping");
    if (sv->reload_pending) {
        sv->reload_pending = false;
        control_reload_done(sv->ctl, sv->next_seq, false, "the supervisor is stopping");
    }
    if (sv->reloading && sv->failing == 0)
        reload_fail(sv, "the supervisor is stopping");
    for (int i = 0; i < cfg->workers; i++) {
        struct slot *s = &sv->slots[i];
        s->respawn_at = 0;
        if (s->cur) {
            s->cur->counts = true;
            if (s->cur->state == PS_STARTING || s->cur->state == PS_READY)
                n++;
            proc_stop(sv, s->cur, now);
        }
    }
    for (size_t i = 0; i < sv->nprocs; i++)
        if (sv->procs[i]->kind == PK_WORKER)
            proc_stop(sv, sv->procs[i], now);
    log_info("stopping%s%s: SIG%s sent to %u process%s; SIGKILL after %s", signo ? " on SIG" : "",
             signo ? sig_abbrev(signo) : "", sig_abbrev(cfg->stop_signal), n, n == 1 ? "" : "es",
             cfg->drain_timeout == HANDOFF_NO_TIMEOUT ? "never" : dur(cfg->drain_timeout, d, sizeof d));
}

/* ---- signals ---- */

/* Signals whose default action is to be ignored: forwarding them can
 * never hurt a worker. */
static bool default_ignored(int signo)
{
    return signo == SIGCHLD || signo == SIGCONT || signo == SIGURG || signo == SIGWINCH;
}

/* A forwarded signal goes to every current worker that handles it
 * (catches, ignores or blocks it: /proc), never to one that would take its
 * default action and die (or stop) of it: `kill -USR1 <supervisor>` must
 * not take the service down. */
static void forward_signal(struct supervisor *sv, int signo, pid_t from)
{
    unsigned sent = 0, skipped = 0;
    char nm[96];

    for (int j = 0; j < sv->cfg->workers; j++) {
        struct proc *p = sv->slots[j].cur;
        if (!p || !p->alive)
            continue;
        if (!default_ignored(signo) && !proc_handles_signal(p->pid, signo)) {
            skipped++;
            log_warn("not forwarding SIG%s to %s: it does not handle it and would %s", sig_abbrev(signo),
                     wname(sv, p, nm, sizeof nm),
                     signo == SIGTSTP || signo == SIGTTIN || signo == SIGTTOU ? "stop" : "die");
            continue;
        }
        if (kill(p->pid, signo) == 0)
            sent++;
    }
    log_info("SIG%s from pid %ld: forwarded to %u process%s%s", sig_abbrev(signo), (long)from, sent,
             sent == 1 ? "" : "es", skipped ? " (not to those that do not handle it)" : "");
}

/* Signals whose default action would end (or core-dump) the supervisor
 * and that only ever come from someone's kill: read from the signalfd
 * and logged, never fatal. (Faults - SEGV, BUS, ILL, FPE, ABRT, TRAP, SYS
 * - keep their default action.) */
static const int stray_signals[] = {
    SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGPWR, SIGXCPU, SIGXFSZ, SIGWINCH,
#ifdef SIGSTKFLT
    SIGSTKFLT,
#endif
};

static void on_signals(struct supervisor *sv, uint64_t now)
{
    struct signalfd_siginfo si[16];
    ssize_t n;

    while ((n = read(sv->sigfd, si, sizeof si)) > 0) {
        for (size_t i = 0; i < (size_t)n / sizeof si[0]; i++) {
            int signo = (int)si[i].ssi_signo;
            pid_t from = (pid_t)si[i].ssi_pid;
            if (signo == SIGCHLD) {
                reap_all(sv, now);
            } else if (signo == SIGHUP) {
                const char *why = NULL;
                log_info("SIGHUP from pid %ld: reload%s", (long)from,
                         sv->reloading ? " (queued after the one in progress)" : "");
                if (!request_reload(sv, &why))
                    log_warn("SIGHUP ignored: %s", why);
            } else if (signo == SIGTERM || signo == SIGINT || signo == SIGQUIT) {
                begin_stop(sv, signo, now);
            } else if (signo < 64 && (sv->cfg->forward & ((uint64_t)1 << signo))) {
                forward_signal(sv, signo, from);
            } else {
                log_info("SIG%s from pid %ld ignored (not forwarded: see --forward)", sig_abbrev(signo),
                         (long)from);
            }
        }
    }
}

static int signals_setup(struct supervisor *sv)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGQUIT);
    sigaddset(&set, SIGCHLD);
    for (size_t i = 0; i < sizeof stray_signals / sizeof stray_signals[0]; i++)
        sigaddset(&set, stray_signals[i]);
    for (int s = SIGRTMIN; s <= SIGRTMAX; s++)
        sigaddset(&set, s);
    for (int s = 1; s < 64; s++)
        if (sv->cfg->forward & ((uint64_t)1 << s))
            sigaddset(&set, s);
    sv->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sv->sigfd < 0)
        return -errno;
    /* SIGPIPE is blocked, not ignored: a closed control client must not
     * kill us, and blocking (unlike SIG_IGN) is not inherited by exec. */
    sigaddset(&set, SIGPIPE);
    return sigprocmask(SIG_BLOCK, &set, NULL) < 0 ? -errno : 0;
}

/* ---- control commands ---- */

static void on_control(struct supervisor *sv, int fd, uint64_t now)
{
    struct control_req rq;

    if (control_on_event(sv->ctl, fd, &rq) <= 0)
        return;
    if (strcmp(rq.cmd, "status") == 0) {
        struct sbuf b = {0};
        sup_status(sv, &b);
        sbuf_printf(&b, "OK\n");
        if (b.oom) {
            log_warn("control: out of memory for the status");
            control_answer(sv->ctl, rq.conn, "ERR out of memory\n", 18);
        } else {
            control_answer(sv->ctl, rq.conn, b.p, b.len);
        }
        sbuf_free(&b);
    } else if (strcmp(rq.cmd, "reload") == 0) {
        const char *why = NULL;
        uint64_t seq = request_reload(sv, &why);
        char line[256];
        if (seq) {
            control_wait(sv->ctl, rq.conn, seq); /* answered by control_reload_done() */
            return;
        }
        (void)snprintf(line, sizeof line, "ERR %s\n", why ? why : "cannot reload");
        control_answer(sv->ctl, rq.conn, line, strlen(line));
    } else if (strcmp(rq.cmd, "stop") == 0) {
        control_answer(sv->ctl, rq.conn, "OK stopping\n", 12);
        begin_stop(sv, 0, now);
    }
}

/* ---- timers ---- */

static uint64_t next_deadline(const struct supervisor *sv)
{
    uint64_t d = control_deadline(sv->ctl);

    if (reload_wait_deadline(sv) < d)
        d = reload_wait_deadline(sv);
    if (sv->watchdog_usec && sv->watchdog_next < d)
        d = sv->watchdog_next;
    for (size_t i = 0; i < sv->nprocs; i++) {
        const struct proc *p = sv->procs[i];
        if (p->deadline < d)
            d = p->deadline;
        if (p->kind == PK_WORKER && p->state == PS_STARTING && p->next_check && !p->check &&
            p->next_check < d)
            d = p->next_check;
    }
    for (int i = 0; i < sv->cfg->workers; i++)
        if (sv->slots[i].respawn_at && sv->slots[i].respawn_at < d)
            d = sv->slots[i].respawn_at;
    return d;
}

/* A starting worker's ready timeout has passed. */
static void ready_timeout(struct supervisor *sv, struct proc *p)
{
    char d[32], why[96], w[96];

    (void)snprintf(why, sizeof why, "it did not become ready within %s", dur(sv->cfg->ready_timeout, d, sizeof d));
    if (sv->slots[p->slot].next == p) {
        reload_fail(sv, "%s: %s", wshort(sv, p, w, sizeof w), why);
    } else {
        /* A restart that never gets ready counts as a crash. */
        log_warn("%s: %s; killing it", wname(sv, p, w, sizeof w), why);
        proc_kill(p); /* exits.c then takes it as a crash */
    }
}

static void on_timers(struct supervisor *sv, uint64_t now)
{
    const struct config *cfg = sv->cfg;
    char d[32], nm[96];

    control_on_timer(sv->ctl, now);
    if (sv->watchdog_usec && now >= sv->watchdog_next) {
        notify_systemd(sv, "WATCHDOG=1");
        sv->watchdog_next = now + sv->watchdog_usec / 2;
    }
    for (size_t i = 0; i < sv->nprocs; i++) {
        struct proc *p = sv->procs[i];
        if (p->kind != PK_WORKER)
            continue;
        if (p->state == PS_STARTING && now >= p->deadline) {
            ready_timeout(sv, p);
        } else if (p->state == PS_STARTING && p->next_check && now >= p->next_check && !p->check) {
            if (cfg->ready_mode == READY_DELAY)
                proc_ready(sv, p, now, "--ready-delay elapsed");
            else if (cfg->ready_mode == READY_COMMAND)
                start_check(sv, p, now);
        } else if ((p->state == PS_STOPPING || p->state == PS_GONE) && now >= p->deadline) {
            log_warn("%s still running %s after SIG%s: SIGKILL", wname(sv, p, nm, sizeof nm),
                     dur(now - p->stop_at, d, sizeof d), sig_abbrev(cfg->stop_signal));
            proc_kill(p);
        }
    }
    respawn_due(sv, now);
}

/* ---- the loop ---- */

static void loop(struct supervisor *sv)
{
    while (!sv->stopping || sv->nprocs > 0) {
        struct epoll_event evs[32];
        uint64_t now = handoff_now_usec(), d;
        int timeout = -1, n;

        if (sv->reload_pending && !sv->reloading && !sv->stopping && reload_may_start(sv, now))
            reload_start(sv, now);
        d = next_deadline(sv);
        if (d != UINT64_MAX) {
            uint64_t ms = d <= now ? 0 : (d - now + 999) / 1000;
            timeout = ms > 3600000 ? 3600000 : (int)ms;
        }
        n = epoll_wait(sv->epfd, evs, 32, timeout);
        if (n < 0 && errno != EINTR) {
            log_err("epoll_wait: %s", strerror(errno));
            break;
        }
        now = handoff_now_usec();
        for (int i = 0; i < n; i++) {
            uint64_t v = evs[i].data.u64;
            uint64_t tag = v & ~(uint64_t)0xffffffffu;
            if (tag == TAG_SIGNAL)
                on_signals(sv, now);
            else if (tag == TAG_NOTIFY)
                on_notify(sv, now);
            else if (tag == TAG_CONTROL)
                on_control(sv, (int)(uint32_t)v, now);
            else if (tag == TAG_PRELOAD)
                preload_on_event(sv, now);
        }
        on_timers(sv, now);
    }
}

/* ---- set-up and tear-down ---- */

/* The pid file is removed at exit only if it still names this process:
 * someone may have replaced it (another instance, a deploy). */
static void pidfile_remove(const char *path)
{
    char buf[32];
    ssize_t n = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd >= 0) {
        n = read(fd, buf, sizeof buf - 1);
        (void)close(fd);
    }
    if (n <= 0) {
        log_warn("--pid-file %s: %s at exit; left as is", path, n < 0 ? strerror(errno) : "empty");
        return;
    }
    buf[n] = '\0';
    if (strtol(buf, NULL, 10) != (long)getpid()) {
        log_warn("--pid-file %s names another process at exit; left as is", path);
        return;
    }
    if (unlink(path) < 0)
        log_warn("--pid-file %s: cannot remove it: %s", path, strerror(errno));
}

/* What systemd gave the supervisor itself: its watchdog (if meant for
 * this pid: sd_watchdog_enabled()'s rule) and its NOTIFY_SOCKET, spoken
 * to by notify_systemd(). Neither is ever passed to a worker. */
static void systemd_setup(struct supervisor *sv)
{
    const char *u = getenv("WATCHDOG_USEC"), *wp = getenv("WATCHDOG_PID");
    const char *ns = getenv("NOTIFY_SOCKET");
    int r;

    if (u && (!wp || strtol(wp, NULL, 10) == (long)getpid())) {
        sv->watchdog_usec = strtoull(u, NULL, 10);
        sv->watchdog_next = sv->start_time;
    }
    if (ns && *ns) {
        (void)snprintf(sv->sd_path, sizeof sv->sd_path, "%s", ns);
        if ((r = handoff__notifier_open(&sv->sd, ns)) < 0)
            log_warn("NOTIFY_SOCKET=%s: %s; systemd will not be notified", sv->sd_path, strerror(-r));
    }
}

/* The library (for --listen and systemd's sockets), the sockets, the
 * control and notify sockets, the pid file, signals and epoll. 0, or -1
 * after logging why. */
static int setup(struct supervisor *sv)
{
    const struct config *cfg = sv->cfg;
    handoff_options o = HANDOFF_OPTIONS_INIT;
    struct epoll_event e;
    char err[300];
    int r;

    /* The library stays silent but through our logger (its info lines
     * with -v), and neither handles signals nor speaks to systemd: the
     * supervisor does both itself. */
    o.flags = HANDOFF_NO_SIGNALS | HANDOFF_NO_NOTIFY;
    o.argv = cfg->argv;
    o.log = tool_lib_log;
    o.log_level = cfg->verbosity >= 2 ? HANDOFF_LOG_DEBUG : HANDOFF_LOG_WARNING;
    if ((r = handoff_new(&o, &sv->h)) < 0) {
        log_err("handoff_new: %s", strerror(-r));
        return -1;
    }
    if (open_listeners(sv->h, cfg, sv->ls, &sv->nls) < 0 || preload_open(sv) < 0)
        return -1;
    if (cfg->control) {
        (void)snprintf(sv->control_path, sizeof sv->control_path, "%s", cfg->control);
    } else if ((r = default_control_path(cfg->name, sv->control_path, sizeof sv->control_path, true)) < 0) {
        log_err("cannot set up the control socket directory for \"%s\": %s (use --control)", cfg->name,
                strerror(-r));
        return -1;
    }
    if (control_open(sv->control_path, &sv->ctl, err, sizeof err) < 0) {
        log_err("%s", err);
        return -1;
    }
    if ((r = notify_open(&sv->notify)) < 0) {
        log_err("cannot create the workers' notify socket: %s (set XDG_RUNTIME_DIR to a directory of yours)",
                strerror(-r));
        return -1;
    }
    /* Written once, atomically (temporary file + rename); a pid file that
     * cannot be written is a deploy error: nothing has started yet. */
    if (cfg->pid_file) {
        if ((r = handoff_pidfile_write(cfg->pid_file, getpid())) < 0) {
            log_err("--pid-file %s: cannot write it: %s; not starting", cfg->pid_file, strerror(-r));
            return -1;
        }
        sv->pidfile_written = true;
    }
    if ((r = signals_setup(sv)) < 0) {
        log_err("signals: %s", strerror(-r));
        return -1;
    }
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
        log_warn("PR_SET_CHILD_SUBREAPER: %s (orphans will not be reaped here)", strerror(errno));
    sv->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (sv->epfd < 0) {
        log_err("epoll_create1: %s", strerror(errno));
        return -1;
    }
    e = (struct epoll_event){.events = EPOLLIN, .data.u64 = TAG_SIGNAL};
    (void)epoll_ctl(sv->epfd, EPOLL_CTL_ADD, sv->sigfd, &e);
    e = (struct epoll_event){.events = EPOLLIN, .data.u64 = TAG_NOTIFY};
    (void)epoll_ctl(sv->epfd, EPOLL_CTL_ADD, sv->notify.fd, &e);
    control_set_epoll(sv->ctl, sv->epfd, TAG_CONTROL);
    if (preload_fd(sv) >= 0) {
        e = (struct epoll_event){.events = EPOLLIN, .data.u64 = TAG_PRELOAD};
        (void)epoll_ctl(sv->epfd, EPOLL_CTL_ADD, preload_fd(sv), &e);
    }
    sv->slots = calloc((size_t)cfg->workers, sizeof *sv->slots);
    if (!sv->slots) {
        log_err("out of memory");
        return -1;
    }
    return 0;
}

/* Generation 1 in every slot. 0, or -1 (the command cannot be started:
 * a usage error, not a crash to retry; what started is killed). */
static int start_first(struct supervisor *sv)
{
    const struct config *cfg = sv->cfg;
    char err[300], d[32];

    sv->gen_last = 1;
    *gen_info(sv, 1) = (struct gen_info){.id = 1, .started = sv->start_time};
    for (int i = 0; i < cfg->workers; i++) {
        sv->slots[i].backoff = cfg->backoff_min;
        sv->slots[i].cur = start_worker(sv, i, 1, err, sizeof err);
        if (!sv->slots[i].cur) {
            log_err("%s", err);
            sv->stopping = true;
            for (int k = 0; k < i; k++)
                proc_kill(sv->slots[k].cur);
            reap_until_empty(sv);
            return -1;
        }
    }
    log_info("started generation 1: %d worker%s (pid %ld%s), %d socket%s, ready=%s, control %s", cfg->workers,
             cfg->workers > 1 ? "s" : "", (long)sv->slots[0].cur->pid, cfg->workers > 1 ? ", ..." : "",
             sv->nls, sv->nls == 1 ? "" : "s",
             cfg->ready_mode == READY_NOTIFY    ? "notify"
             : cfg->ready_mode == READY_COMMAND ? "command"
                                                : dur(cfg->ready_delay, d, sizeof d),
             sv->control_path);
    return 0;
}

static void teardown(struct supervisor *sv)
{
    if (sv->ctl)
        control_close(sv->ctl);
    if (sv->pidfile_written)
        pidfile_remove(sv->cfg->pid_file);
    for (size_t i = 0; i < sv->nprocs; i++)
        free(sv->procs[i]);
    free(sv->procs);
    free(sv->slots);
    for (int i = 0; i < sv->nls; i++)
        if (sv->ls[i].owned)
            (void)close(sv->ls[i].fd);
    (void)handoff_free(sv->h); /* closes the --listen sockets */
    notify_close(&sv->notify);
    preload_close(sv);
    if (sv->sigfd >= 0)
        (void)close(sv->sigfd);
    if (sv->epfd >= 0)
        (void)close(sv->epfd);
    handoff__notifier_close(&sv->sd);
}

int sup_run(struct config *cfg)
{
    struct supervisor *sv = calloc(1, sizeof *sv); /* large: the listener table */
    int code = EXIT_FAILED;

    if (!sv) {
        log_err("out of memory");
        return code;
    }
    sv->cfg = cfg;
    sv->epfd = sv->sigfd = sv->notify.fd = -1;
    sv->sd = (struct handoff__notifier)HANDOFF__NOTIFIER_INIT;
    sv->next_seq = 1;
    sv->start_time = handoff_now_usec();
    (void)sigprocmask(SIG_BLOCK, NULL, &sv->orig_mask);
    systemd_setup(sv);
    if (setup(sv) == 0 && start_first(sv) == 0) {
        loop(sv);
        code = sv->exit_code;
        log_info("exiting with status %d", code);
    }
    teardown(sv);
    free(sv);
    return code;
}
