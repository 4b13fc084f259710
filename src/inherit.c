/*
 * inherit.c - consuming the inheritance protocol at start-up.
 *
 * LISTEN_PID / LISTEN_FDS / LISTEN_FDNAMES follow sd_listen_fds(3): the fds
 * are 3..3+LISTEN_FDS-1 and only valid if LISTEN_PID is our own pid (so a
 * grandchild that inherited a stale environment never adopts fds that are
 * not meant for it). A previous handoff generation adds HANDOFF_READY_FD,
 * the handshake socket, and HANDOFF_GENERATION. Everything is removed from
 * the environment once read, so processes we spawn never see it.
 */
#include "inherit.h"
#include "handshake.h"
#include "listeners.h"
#include "log.h"
#include "migrate.h"
#include "shared/protocol.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Strict decimal: digits only, no sign, no spaces, no overflow past max. */
static int parse_ulong(const char *s, unsigned long max, unsigned long *out)
{
    unsigned long v = 0;

    if (!s || !*s || strlen(s) > 20)
        return -EINVAL;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -EINVAL;
        if (v > (max - (unsigned long)(*s - '0')) / 10)
            return -ERANGE;
        v = v * 10 + (unsigned long)(*s - '0');
    }
    *out = v;
    return 0;
}

void handoff__listen_env_done(struct hf_listen_env *e)
{
    if (e->names) {
        for (int i = 0; i < e->nfds; i++)
            free(e->names[i]);
        free(e->names);
    }
    e->names = NULL;
    e->nfds = 0;
}

__attribute__((format(printf, 4, 5))) static int env_err(char *err, size_t errlen, int r,
                                                        const char *fmt, ...)
{
    va_list ap;

    if (err && errlen) {
        va_start(ap, fmt);
        handoff__vformat(err, errlen, fmt, ap);
        va_end(ap);
    }
    return r;
}

int handoff__parse_listen_env(const char *pid, const char *fds,
                              const char *names, pid_t self,
                              struct hf_listen_env *out, char *err,
                              size_t errlen)
{
    unsigned long vpid, n;
    char selfbuf[24];

    memset(out, 0, sizeof *out);
    if (err && errlen)
        err[0] = '\0';
    if (!fds)
        return 0;
    if (!pid)
        return env_err(err, errlen, -EINVAL,
                       "LISTEN_FDS=%.32s without LISTEN_PID; ignored%s", fds, "");
    if (parse_ulong(pid, (unsigned long)INT32_MAX, &vpid) < 0 || vpid == 0)
        return env_err(err, errlen, -EINVAL, "LISTEN_PID=\"%.32s\" is not a pid; ignored%s", pid,
                       "");
    if ((pid_t)vpid != self) {
        (void)snprintf(selfbuf, sizeof selfbuf, "%ld", (long)self);
        return env_err(err, errlen, -ESRCH,
                       "LISTEN_PID=%.32s is not this process (%s); fds ignored", pid, selfbuf);
    }
    if (parse_ulong(fds, HF_MAX_INHERIT, &n) < 0)
        return env_err(err, errlen, -EINVAL,
                       "LISTEN_FDS=\"%.32s\" is not a count from 0 to 4096; ignored%s", fds, "");
    out->nfds = (int)n;
    if (n == 0 || !names)
        return (int)n;

    /* LISTEN_FDNAMES: exactly n colon-separated names. A mismatch means the
     * names cannot be trusted: keep the fds but match them by address only. */
    size_t count = 1;
    for (const char *p = names; *p; p++)
        count += *p == ':';
    if (count != n) {
        char c[24];
        (void)snprintf(c, sizeof c, "%zu", count);
        env_err(err, errlen, 0,
                "LISTEN_FDNAMES has %s names for LISTEN_FDS=%s; names ignored", c, fds);
        return (int)n;
    }
    out->names = calloc(n, sizeof *out->names);
    if (!out->names)
        return -ENOMEM;
    const char *p = names;
    for (unsigned long i = 0; i < n; i++) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        out->names[i] = strndup(p, len);
        if (!out->names[i]) {
            handoff__listen_env_done(out);
            return -ENOMEM;
        }
        if (len > 0 && !handoff__valid_name(out->names[i])) {
            env_err(err, errlen, 0, "LISTEN_FDNAMES entry \"%.64s\" is invalid%s; using \"unknown\"",
                    out->names[i], "");
            out->names[i][0] = '\0';
        }
        p = end ? end + 1 : p + len;
    }
    out->nfds = (int)n;
    return (int)n;
}

/* Server::Starter's format: ';'-separated KEY=FD, KEY being a port,
 * host:port, [v6]:port or a unix socket path; the empty string means no
 * sockets. Returns the number of entries or -EINVAL (err says why). */
int handoff__parse_starter_port(const char *v, struct hf_starter_entry *out, size_t max,
                                char *err, size_t errlen)
{
    size_t n = 0;
    const char *p = v;

    if (err && errlen)
        err[0] = '\0';
    if (!v)
        return 0;
    while (*p) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        unsigned long fd;
        char num[16];

        if (len == 0) { /* tolerate a trailing or doubled ';' */
            p = end ? end + 1 : p + len;
            continue;
        }
        if (!eq || eq == p || (size_t)(eq - p) >= sizeof out[0].key)
            return env_err(err, errlen, -EINVAL,
                           "SERVER_STARTER_PORT entry \"%.*s\" is not KEY=FD; ignored",
                           (int)(len > 64 ? 64 : len), p);
        size_t nlen = len - (size_t)(eq - p) - 1;
        if (nlen == 0 || nlen >= sizeof num)
            return env_err(err, errlen, -EINVAL, "SERVER_STARTER_PORT: bad fd in \"%.*s\"; ignored",
                           (int)(len > 64 ? 64 : len), p);
        memcpy(num, eq + 1, nlen);
        num[nlen] = '\0';
        if (parse_ulong(num, 65535, &fd) < 0)
            return env_err(err, errlen, -EINVAL, "SERVER_STARTER_PORT: bad fd \"%s\"; ignored", num);
        if (n == max)
            return env_err(err, errlen, -EINVAL, "SERVER_STARTER_PORT: more than %zu sockets; ignored",
                           max);
        for (size_t i = 0; i < n; i++)
            if (out[i].fd == (int)fd)
                return env_err(err, errlen, -EINVAL,
                               "SERVER_STARTER_PORT names fd %lu twice; ignored", fd);
        memcpy(out[n].key, p, (size_t)(eq - p));
        out[n].key[eq - p] = '\0';
        for (char *k = out[n].key; *k; k++)
            if ((unsigned char)*k < 0x20 || *k == 0x7f)
                return env_err(err, errlen, -EINVAL,
                               "SERVER_STARTER_PORT: control character in a key; ignored%s", "");
        out[n].fd = (int)fd;
        n++;
        p = end ? end + 1 : p + len;
    }
    return (int)n;
}

static int inh_add(handoff_t *h, int fd, const char *name)
{
    struct hf_inh *n = realloc(h->inh, (h->ninh + 1) * sizeof *n);

    if (!n)
        return -ENOMEM;
    h->inh = n;
    n[h->ninh].fd = fd;
    n[h->ninh].claimed = false;
    n[h->ninh].name = strdup(name && *name ? name : "unknown");
    if (!n[h->ninh].name)
        return -ENOMEM;
    h->ninh++;
    return 0;
}

int handoff__inherit(handoff_t *h)
{
    struct hf_listen_env e;
    char err[256];
    const char *v;
    int n, r = 0;

    n = handoff__parse_listen_env(getenv(HF_ENV_LISTEN_PID), getenv(HF_ENV_LISTEN_FDS),
                                  getenv(HF_ENV_LISTEN_FDNAMES), getpid(), &e, err, sizeof err);
    if (n == -ENOMEM)
        return -ENOMEM;
    if (err[0])
        handoff__log(h, HANDOFF_LOG_WARNING, "%s", err);
    for (int i = 0; i < n; i++) {
        int fd = HANDOFF_LISTEN_FDS_START + i;
        int flags = fcntl(fd, F_GETFD);
        if (flags < 0) {
            handoff__log(h, HANDOFF_LOG_WARNING, "LISTEN_FDS names fd %d, which is not open; skipped",
                         fd);
            continue;
        }
        /* O_CLOEXEC on adoption: nothing we exec later may see it unless
         * we pass it deliberately. O_NONBLOCK is left as it was. */
        (void)fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
        r = inh_add(h, fd, e.names ? e.names[i] : NULL);
        if (r < 0)
            break;
    }
    handoff__listen_env_done(&e);
    if (r < 0)
        return r;

    /* Server::Starter (start_server, and handoff run, which sets both):
     * used only when LISTEN_FDS gave us nothing. The fds are not at 3..,
     * so each must be an open socket. Names: the key with ':' -> '_'. */
    v = getenv(HF_ENV_STARTER_PORT);
    if (v && n <= 0 && !getenv(HF_ENV_LISTEN_FDS)) {
        struct hf_starter_entry ent[64] = {0};
        int k = handoff__parse_starter_port(v, ent, 64, err, sizeof err);
        if (k < 0)
            handoff__log(h, HANDOFF_LOG_WARNING, "%s", err);
        for (int i = 0; i < k && r == 0; i++) {
            int type, flags = fcntl(ent[i].fd, F_GETFD);
            socklen_t tl = sizeof type;
            if (ent[i].fd < 3 || flags < 0 ||
                getsockopt(ent[i].fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0) {
                handoff__log(h, HANDOFF_LOG_WARNING,
                             "SERVER_STARTER_PORT names fd %d, which is not an open socket; skipped",
                             ent[i].fd);
                continue;
            }
            (void)fcntl(ent[i].fd, F_SETFD, flags | FD_CLOEXEC);
            for (char *c = ent[i].key; *c; c++)
                if (*c == ':' || *c == ' ')
                    *c = '_';
            r = inh_add(h, ent[i].fd, handoff__valid_name(ent[i].key) ? ent[i].key : NULL);
            /* start_server re-sends SIGTERM to old workers at each restart:
             * a repeated one must not cut the drain short. */
            h->flags |= HANDOFF_TERM_GRACEFUL_ONLY;
        }
        if (r < 0)
            return r;
    }

    /* The handshake socket is only trusted with a LISTEN_PID that is ours,
     * and must be an AF_UNIX SOCK_SEQPACKET socket right after the fds. */
    v = getenv(HF_ENV_READY_FD);
    if (v && n >= 0 && getenv(HF_ENV_LISTEN_FDS)) {
        unsigned long rfd;
        int type = 0, dom = 0;
        socklen_t l1 = sizeof type, l2 = sizeof dom;
        if (parse_ulong(v, 65535, &rfd) < 0 || (int)rfd != HANDOFF_LISTEN_FDS_START + n ||
            getsockopt((int)rfd, SOL_SOCKET, SO_TYPE, &type, &l1) < 0 ||
            getsockopt((int)rfd, SOL_SOCKET, SO_DOMAIN, &dom, &l2) < 0 ||
            type != SOCK_SEQPACKET || dom != AF_UNIX) {
            handoff__log(h, HANDOFF_LOG_WARNING,
                         "%s=\"%.16s\" does not name our handshake socket; ignored",
                         HF_ENV_READY_FD, v);
        } else {
            h->ready_fd = (int)rfd;
            (void)fcntl(h->ready_fd, F_SETFD, FD_CLOEXEC);
            h->has_parent = true;
            h->parent_pid = getppid();
            h->parent_caps = handoff__mig_caps_parse(getenv(HF_ENV_CAPS), h->parent_pid);
            /* The parent queued HELLO before it forked us (an older one
             * sends none): the generations that drain once we are ready. */
            int hr = handoff__hello_recv(h->ready_fd, &h->preds, &h->npreds);
            if (hr == -ENOMEM)
                return hr;
            if (hr < 0)
                handoff__log(h, HANDOFF_LOG_WARNING, "handshake: malformed hello ignored");
        }
    } else if (v) {
        handoff__log(h, HANDOFF_LOG_WARNING, "%s set without a matching LISTEN_PID; ignored",
                     HF_ENV_READY_FD);
    }
    /* The generation number is informational (events, STATUS=): a
     * supervisor such as `handoff run` passes its own count without a
     * handshake. Only a handshake parent makes this process part of a
     * handoff chain, which owns the unix socket paths it inherits. */
    {
        unsigned long g;
        v = getenv(HF_ENV_GENERATION);
        if (v && parse_ulong(v, 1000000000UL, &g) == 0 && g >= (h->has_parent ? 2 : 1))
            h->generation = (unsigned)g;
        else if (h->has_parent)
            h->generation = 2;
        h->chain = h->has_parent;
    }
    v = getenv(HF_ENV_NOTIFY_SOCKET);
    if (v && *v) {
        h->notify_socket = strdup(v);
        if (!h->notify_socket)
            return -ENOMEM;
    }
    /* The variables consumed here (shared/protocol.c); the others of the
     * table are only kept out of the children's environments. */
    if (!(h->flags & HANDOFF_KEEP_ENV))
        for (const struct handoff__protocol_var *pv = handoff__protocol_vars; pv->name; pv++)
            if (pv->flags & HF_VAR_CONSUMED)
                (void)unsetenv(pv->name);
    return 0;
}

/* At handoff_ready(): what the new generation did not claim is closed, and
 * a unix socket file no longer used by anyone is removed. */
void handoff__close_unclaimed(handoff_t *h)
{
    for (size_t i = 0; i < h->ninh; i++) {
        struct hf_inh *e = &h->inh[i];
        struct sockaddr_un sun = {0};
        socklen_t len = sizeof sun;
        int acc = 0;
        socklen_t alen = sizeof acc;

        if (e->claimed || e->fd < 0)
            continue;
        /* Only a handoff chain owns the paths it inherits; a socket from
         * systemd or a supervisor keeps its file (see handoff__regs_free). */
        if (h->chain &&
            getsockname(e->fd, (struct sockaddr *)&sun, &len) == 0 && sun.sun_family == AF_UNIX &&
            len > offsetof(struct sockaddr_un, sun_path) && sun.sun_path[0] != '\0' &&
            getsockopt(e->fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &alen) == 0 && acc) {
            char path[sizeof sun.sun_path + 1];
            bool used = false;
            size_t plen = strnlen(sun.sun_path, len - offsetof(struct sockaddr_un, sun_path));
            memcpy(path, sun.sun_path, plen);
            path[plen] = '\0';
            for (size_t j = 0; j < h->nregs; j++)
                used |= h->regs[j].unix_path && strcmp(h->regs[j].unix_path, path) == 0;
            if (!used)
                (void)unlink(path);
        }
        handoff__log(h, HANDOFF_LOG_INFO, "closing unclaimed inherited fd %d (\"%s\")", e->fd,
                     e->name);
        (void)close(e->fd);
        e->fd = -1;
        e->claimed = true;
    }
}
