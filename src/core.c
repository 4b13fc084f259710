/*
 * core.c - the handle: creation and destruction, accessors, and connection
 * tracking. The state machine that moves a generation along is machine.c;
 * the epoll/timer/event plumbing under both is loop.c.
 */
#include "handle.h"
#include "inherit.h"
#include "listeners.h"
#include "log.h"
#include "loop.h"
#include "manager.h"
#include "migrate.h"
#include "shared/trace.h"
#include "signals.h"
#include "successor.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* One handle per process: signals and the environment are process-wide. */
static atomic_bool g_handle_exists;

static char **argv_from_proc(void)
{
    char buf[65536];
    size_t len = 0, count = 0;
    ssize_t n;
    char **argv;
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return NULL;
    while (len < sizeof buf - 1 && (n = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)n;
    (void)close(fd);
    if (len == 0)
        return NULL;
    if (buf[len - 1] != '\0')
        buf[len++] = '\0';
    for (size_t i = 0; i < len; i++)
        count += buf[i] == '\0';
    argv = calloc(count + 1, sizeof *argv);
    if (!argv)
        return NULL;
    for (size_t i = 0, k = 0; i < len && k < count; k++) {
        argv[k] = strdup(buf + i);
        if (!argv[k])
            goto oom;
        i += strlen(buf + i) + 1;
    }
    return argv;
oom:
    for (size_t k = 0; argv[k]; k++)
        free(argv[k]);
    free(argv);
    return NULL;
}

static char **argv_copy(char *const *src)
{
    size_t n = 0;
    char **argv;

    while (src[n])
        n++;
    argv = calloc(n + 1, sizeof *argv);
    if (!argv)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        argv[i] = strdup(src[i]);
        if (!argv[i]) {
            for (size_t k = 0; k < i; k++)
                free(argv[k]);
            free(argv);
            return NULL;
        }
    }
    return argv;
}

static void handle_destroy(handoff_t *h)
{
    handoff__mig_free(h);
    if (h->argv) {
        for (size_t i = 0; h->argv[i]; i++)
            free(h->argv[i]);
        free(h->argv);
    }
    for (size_t i = 0; i < h->ninh; i++) {
        if (h->inh[i].fd >= 0 && !h->inh[i].claimed)
            (void)close(h->inh[i].fd);
        free(h->inh[i].name);
    }
    free(h->inh);
    handoff__preds_free(h);
    if (h->ready_fd >= 0)
        (void)close(h->ready_fd);
    handoff__notify_done(h);
    handoff__loop_done(&h->loop);
    free(h->cwd);
    free(h->pid_file);
    free(h->notify_socket);
    free(h);
}

int handoff_new(const handoff_options *opts, handoff_t **out)
{
    handoff_options def = HANDOFF_OPTIONS_INIT;
    handoff_t *h;
    int r;

    handoff__trace("C1-new");
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!opts)
        opts = &def;
    if (opts->upgrade_signal != 0 && opts->upgrade_signal != -1 &&
        (opts->upgrade_signal < 1 || opts->upgrade_signal >= HF_NSIG ||
         opts->upgrade_signal == SIGKILL || opts->upgrade_signal == SIGSTOP ||
         opts->upgrade_signal == SIGTERM || opts->upgrade_signal == SIGINT))
        return -EINVAL;
    if (opts->flags & ~(unsigned)(HANDOFF_NO_SIGNALS | HANDOFF_NO_NOTIFY | HANDOFF_KEEP_ENV |
                                  HANDOFF_TERM_GRACEFUL_ONLY | HANDOFF_MIGRATE))
        return -EINVAL;
    if (opts->pid_file && !*opts->pid_file)
        return -EINVAL;
    if (opts->max_draining < -1)
        return -EINVAL;
    if (opts->argv && (!opts->argv[0] || !*opts->argv[0]))
        return -EINVAL;
    if (atomic_exchange(&g_handle_exists, true))
        return -EBUSY;

    h = calloc(1, sizeof *h);
    if (!h) {
        atomic_store(&g_handle_exists, false);
        return -ENOMEM;
    }
    h->loop.epfd = h->loop.timerfd = h->loop.wakefd = -1;
    h->sig.fd = -1;
    h->notifier.fd = -1;
    h->ready_fd = -1;
    h->child.pidfd = h->child.sock = h->succ.pidfd = h->succ.sock = -1;
    h->generation = 1;
    h->upgrade_timeout = opts->upgrade_timeout_usec ? opts->upgrade_timeout_usec
                                                    : 60 * HANDOFF_USEC_PER_SEC;
    h->drain_timeout = opts->drain_timeout_usec ? opts->drain_timeout_usec
                                                : 30 * HANDOFF_USEC_PER_SEC;
    h->resume_window = opts->resume_window_usec;
    h->max_draining = opts->max_draining == 0 ? HANDOFF_MAX_DRAINING_DEFAULT
                      : opts->max_draining < 0 ? 0 : opts->max_draining;
    h->flags = opts->flags;
    h->log = opts->log;
    h->log_userdata = opts->log_userdata;
    h->log_level = opts->log_level ? opts->log_level : HANDOFF_LOG_WARNING;
    atomic_init(&h->conns, 0);
    atomic_init(&h->draining, false);

    errno = 0;
    h->argv = opts->argv ? argv_copy(opts->argv) : argv_from_proc();
    if (!h->argv || !h->argv[0]) {
        /* /proc/self/cmdline unreadable or empty: pass opts->argv. */
        r = errno == ENOMEM || errno == 0 ? -ENOMEM : -errno;
        goto fail;
    }
    h->cwd = getcwd(NULL, 0);
    if (!h->cwd) {
        r = -errno;
        goto fail;
    }
    r = -ENOMEM;
    if (opts->pid_file && !(h->pid_file = strdup(opts->pid_file)))
        goto fail;

    r = handoff__inherit(h);
    if (r < 0)
        goto fail;
    r = handoff__loop_init(&h->loop);
    if (r < 0)
        goto fail;
    for (size_t i = 0; i < h->npreds; i++)
        if ((r = handoff__loop_add(&h->loop, h->preds[i].pidfd, HF_TAG_PRED_PIDFD)) < 0)
            goto fail;
    r = handoff__signals_init(&h->sig, &h->loop,
                              opts->upgrade_signal == 0 ? SIGHUP : opts->upgrade_signal,
                              !(h->flags & HANDOFF_NO_SIGNALS));
    if (r < 0) {
        handoff__signals_done(&h->sig);
        goto fail;
    }
    r = handoff__mig_new(h);
    if (r < 0) {
        handoff__signals_done(&h->sig);
        goto fail;
    }
    handoff__notify_init(h);
    *out = h;
    handoff__trace("C2-new-done");
    return 0;
fail:
    handle_destroy(h);
    atomic_store(&g_handle_exists, false);
    return r;
}

handoff_t *handoff_free(handoff_t *h)
{
    bool last;

    if (!h)
        return NULL;
    if (h->child.pid > 0) {
        struct hf_exit ex;
        (void)handoff__child_reap(h, true, &ex);
    }
    if (h->succ.pidfd >= 0)
        (void)close(h->succ.pidfd);
    /* This process is the last generation using the pid file and the unix
     * socket paths unless it handed them over, or it is a successor that
     * never became ready (its parent still serves with them). */
    last = !h->handed_over && (h->ready || !h->has_parent);
    if (last)
        handoff__pidfile_remove(h);
    handoff__regs_free(h, last);
    handoff__signals_done(&h->sig);
    handle_destroy(h);
    atomic_store(&g_handle_exists, false);
    return NULL;
}

int handoff_has_parent(const handoff_t *h)
{
    return h && h->has_parent;
}

unsigned handoff_generation(const handoff_t *h)
{
    return h ? h->generation : 0;
}

int handoff_event_fd(const handoff_t *h)
{
    return h ? h->loop.epfd : -EINVAL;
}

void handoff_conn_begin(handoff_t *h)
{
    if (h)
        atomic_fetch_add(&h->conns, 1);
}

void handoff_conn_end(handoff_t *h)
{
    if (!h)
        return;
    /* The wake-up is async-signal-safe and thread-safe; the loop thread
     * then sees the zero count in handoff_next_event(). */
    if (atomic_fetch_sub(&h->conns, 1) == 1 && atomic_load(&h->draining))
        handoff__loop_wake(&h->loop);
}

unsigned long handoff_conn_count(const handoff_t *h)
{
    return h ? atomic_load(&h->conns) : 0;
}

int handoff_accept(handoff_t *h, int listen_fd, int nonblock)
{
    int fd;

    if (!h || listen_fd < 0)
        return -EINVAL;
    fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0));
    if (fd < 0)
        return -errno;
    handoff_conn_begin(h);
    return fd;
}
