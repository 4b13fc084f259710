/*
 * listen.c - listeners and named fds: adopt what the previous generation
 * (or systemd) passed, bind what is new, and keep the registry of fds that
 * the next generation will inherit.
 */
#include "listeners.h"
#include "log.h"
#include "shared/sockaddr.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

bool handoff__valid_name(const char *name)
{
    size_t n = 0;

    if (!name)
        return false;
    for (const char *p = name; *p; p++, n++)
        if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e || *p == ':')
            return false;
    return n >= 1 && n <= HF_NAME_MAX;
}

struct hf_reg *handoff__reg_find(handoff_t *h, const char *name)
{
    for (size_t i = 0; i < h->nregs; i++)
        if (strcmp(h->regs[i].name, name) == 0)
            return &h->regs[i];
    return NULL;
}

static struct hf_reg *reg_add(handoff_t *h, const char *name, int fd)
{
    struct hf_reg *n = realloc(h->regs, (h->nregs + 1) * sizeof *n), *r;

    if (!n)
        return NULL;
    h->regs = n;
    r = &h->regs[h->nregs];
    memset(r, 0, sizeof *r);
    r->name = strdup(name);
    if (!r->name)
        return NULL;
    r->fd = fd;
    h->nregs++;
    return r;
}

/* The filesystem path of a unix address (malloc'd), or NULL if it has
 * none (abstract) or memory ran out. */
static char *unix_path_of(const handoff_addr *a)
{
    char buf[sizeof ((struct sockaddr_un *)0)->sun_path + 1];

    if (handoff__unix_path(a, buf, sizeof buf) <= 0)
        return NULL;
    return strdup(buf);
}

/* A stale filesystem unix socket (its server died) is replaced. */
static int unix_unlink_stale(const handoff_addr *a)
{
    char buf[sizeof ((struct sockaddr_un *)0)->sun_path + 1];

    if (handoff__unix_path(a, buf, sizeof buf) <= 0)
        return -EADDRINUSE;
    return handoff__unix_unlink_stale(buf);
}

/* Applies mode and owner to the socket file just bound at path, without
 * following a path someone may have swapped since bind() (a directory
 * others can write): the file is opened with O_PATH|O_NOFOLLOW and must be
 * a socket owned by us, and every change goes through that fd. Returns 0,
 * or -errno with *step naming what failed (-EPERM: the file was
 * replaced). */
static int set_perms(const char *path, const handoff_listen_options *o, const char **step)
{
    char proc[64];
    struct stat st;
    int fd, r = 0;

    *step = "open";
    fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ELOOP ? -EPERM : -errno;
    *step = "fstat";
    if (fstat(fd, &st) < 0) {
        r = -errno;
    } else if (!S_ISSOCK(st.st_mode) || st.st_uid != geteuid()) {
        *step = "check (the socket file was replaced after bind)";
        r = -EPERM;
    }
    /* An O_PATH fd cannot be fchmod()ed; its /proc link reaches the same
     * inode without resolving the path again. */
    if (r == 0 && o->mode) {
        *step = "chmod";
        (void)snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        if (chmod(proc, (mode_t)o->mode) < 0)
            r = -errno;
    }
    if (r == 0 && o->set_owner) {
        *step = "chown";
        if (fchownat(fd, "", o->uid, o->gid, AT_EMPTY_PATH) < 0)
            r = -errno;
    }
    (void)close(fd);
    return r;
}

static int bind_new(handoff_t *h, const char *name, const char *spec,
                    const handoff_addr *a, const handoff_listen_options *o)
{
    int type = a->socktype | SOCK_CLOEXEC;
    int one = 1, fd, r;
    const char *step;

    if (!(o->flags & HANDOFF_LISTEN_BLOCKING))
        type |= SOCK_NONBLOCK;
    fd = socket(a->family, type, 0);
    if (fd < 0) {
        r = -errno;
        return handoff__fail(h, r, "listen \"%s\" on %s: socket: %s", name, spec, strerror(-r));
    }
    step = "setsockopt";
    if (a->family != AF_UNIX && a->socktype == SOCK_STREAM &&
        !(o->flags & HANDOFF_LISTEN_NO_REUSEADDR) &&
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        goto fail;
    if ((o->flags & HANDOFF_LISTEN_REUSEPORT) &&
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
        goto fail;
    if (a->family == AF_INET6 && o->v6only != 0) {
        int v = o->v6only > 0;
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, sizeof v) < 0)
            goto fail;
    }
    step = "bind";
    if (bind(fd, (const struct sockaddr *)a->sa.raw, a->len) < 0) {
        if (errno != EADDRINUSE || a->family != AF_UNIX || unix_unlink_stale(a) < 0 ||
            bind(fd, (const struct sockaddr *)a->sa.raw, a->len) < 0)
            goto fail;
    }
    if (a->family == AF_UNIX && (o->mode || o->set_owner)) {
        char path[sizeof ((struct sockaddr_un *)0)->sun_path + 1];
        if (handoff__unix_path(a, path, sizeof path) > 0 && (r = set_perms(path, o, &step)) < 0) {
            errno = -r;
            goto fail;
        }
    }
    step = "listen";
    if (a->socktype == SOCK_STREAM && listen(fd, o->backlog > 0 ? o->backlog : SOMAXCONN) < 0)
        goto fail;
    return fd;
fail:
    r = -errno;
    /* Our socket file goes with the failure - unless it is not ours any
     * more (replaced after bind: whatever is there now is left alone). */
    if (a->family == AF_UNIX && strcmp(step, "bind") != 0 &&
        !(r == -EPERM && (strcmp(step, "open") == 0 || strncmp(step, "check", 5) == 0))) {
        char *path = unix_path_of(a);
        if (path)
            (void)unlink(path);
        free(path);
    }
    (void)close(fd);
    return handoff__fail(h, r, "listen \"%s\" on %s: %s: %s", name, spec, step, strerror(-r));
}

/* Finds an unclaimed inherited socket for (name, addr): first by name with
 * a matching address (any port when the spec asked for port 0), then by
 * address alone. A name whose socket no longer matches is left alone; it is
 * closed at handoff_ready() with the other unclaimed fds. */
static struct hf_inh *inh_match(handoff_t *h, const char *name,
                                const handoff_addr *want, bool port0)
{
    handoff_addr got = {0};

    for (size_t i = 0; i < h->ninh; i++) {
        struct hf_inh *e = &h->inh[i];
        if (e->claimed || strcmp(e->name, name) != 0)
            continue;
        if (handoff__fd_addr(e->fd, &got) == 0 && handoff__addr_equal(&got, want, port0))
            return e;
        handoff__log(h, HANDOFF_LOG_NOTICE,
                     "inherited fd %d named \"%s\" has another address; binding anew",
                     e->fd, name);
    }
    if (port0)
        return NULL;
    for (size_t i = 0; i < h->ninh; i++) {
        struct hf_inh *e = &h->inh[i];
        if (e->claimed)
            continue;
        if (handoff__fd_addr(e->fd, &got) == 0 && handoff__addr_equal(&got, want, false))
            return e;
    }
    return NULL;
}

static bool port_is_zero(const handoff_addr *a)
{
    if (a->family == AF_INET)
        return ((const struct sockaddr_in *)(const void *)a->sa.raw)->sin_port == 0;
    if (a->family == AF_INET6)
        return ((const struct sockaddr_in6 *)(const void *)a->sa.raw)->sin6_port == 0;
    return false;
}

int handoff_listen(handoff_t *h, const char *name, const char *spec,
                   const handoff_listen_options *opts)
{
    handoff_listen_options defaults = HANDOFF_LISTEN_OPTIONS_INIT;
    handoff_addr a = {0};
    struct hf_inh *e;
    struct hf_reg *reg;
    char err[256], defname[HF_NAME_MAX + 1];
    int fd, r;
    bool inherited = false;

    if (!h)
        return -EINVAL;
    if (!spec)
        return handoff__fail(h, -EINVAL, "listen: no address given");
    if (!opts)
        opts = &defaults;
    if (!name) {
        /* Default name: the spec with the characters LISTEN_FDNAMES cannot
         * carry (':' is its separator) replaced by '_'. */
        size_t i = 0;
        for (; i < sizeof defname - 1 && spec[i]; i++)
            defname[i] = (spec[i] == ':' || (unsigned char)spec[i] <= 0x20 ||
                          (unsigned char)spec[i] >= 0x7f) ? '_' : spec[i];
        defname[i] = '\0';
        name = defname;
    }
    if (!handoff__valid_name(name))
        return handoff__fail(h, -EINVAL,
                             "listen: invalid name \"%.64s\" (1-255 printable ASCII bytes, no ':' or space)",
                             name);
    r = handoff_addr_parse(spec, &a, err, sizeof err);
    if (r < 0)
        return handoff__fail(h, r, "listen \"%s\": %s", name, err);
    if (handoff__reg_find(h, name))
        return handoff__fail(h, -EEXIST, "listen: name \"%s\" is already registered", name);

    e = inh_match(h, name, &a, port_is_zero(&a));
    if (e) {
        fd = e->fd;
        inherited = true;
        /* Re-apply the backlog: listen() on a listening socket updates it
         * (the kernel cannot report the old one). */
        if (a.socktype == SOCK_STREAM && listen(fd, opts->backlog > 0 ? opts->backlog : SOMAXCONN) < 0) {
            r = -errno;
            return handoff__fail(h, r, "listen \"%s\": inherited fd %d: listen: %s", name, fd,
                                 strerror(-r));
        }
    } else {
        fd = bind_new(h, name, spec, &a, opts);
        if (fd < 0)
            return fd;
    }
    reg = reg_add(h, name, fd);
    if (reg && a.family == AF_UNIX) {
        /* Remember filesystem paths: the last generation unlinks them. */
        reg->unix_path = unix_path_of(&a);
        if (!reg->unix_path && ((const struct sockaddr_un *)(const void *)a.sa.raw)->sun_path[0]) {
            free(reg->name);
            h->nregs--;
            reg = NULL;
        }
    }
    if (!reg) {
        if (!inherited)
            (void)close(fd);
        return handoff__fail(h, -ENOMEM, "listen \"%s\": out of memory", name);
    }
    reg->listener = true;
    reg->inherited = inherited;
    if (e)
        e->claimed = true;
    handoff__log(h, HANDOFF_LOG_DEBUG, "listen \"%s\" on %s: %s fd %d", name, spec,
                 inherited ? "inherited" : "bound", fd);
    return fd;
}

int handoff_add_fd(handoff_t *h, const char *name, int fd)
{
    struct hf_reg *reg;
    int dup;

    if (!h)
        return -EINVAL;
    if (!handoff__valid_name(name))
        return handoff__fail(h, -EINVAL, "add_fd: invalid name");
    if (fd < 0 || fcntl(fd, F_GETFD) < 0)
        return handoff__fail(h, -EBADF, "add_fd \"%s\": fd %d is not open", name, fd);
    dup = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (dup < 0)
        return handoff__fail(h, -errno, "add_fd \"%s\": dup: %s", name, strerror(errno));
    reg = handoff__reg_find(h, name);
    if (reg) {
        if (reg->listener) {
            (void)close(dup);
            return handoff__fail(h, -EEXIST, "add_fd: \"%s\" names a listener", name);
        }
        (void)close(reg->fd);
        reg->fd = dup;
        return 0;
    }
    if (!reg_add(h, name, dup)) {
        (void)close(dup);
        return handoff__fail(h, -ENOMEM, "add_fd \"%s\": out of memory", name);
    }
    return 0;
}

int handoff_remove(handoff_t *h, const char *name)
{
    struct hf_reg *reg;

    if (!h || !name)
        return -EINVAL;
    reg = handoff__reg_find(h, name);
    if (!reg)
        return handoff__fail(h, -ENOENT, "remove: no fd named \"%s\"", name);
    (void)close(reg->fd);
    /* An inherited path stays while the parent may still serve on it (we
     * are not ready yet) or when it came from systemd or a supervisor. */
    if (reg->unix_path && !h->handed_over &&
        (!reg->inherited || (h->chain && h->ready)))
        (void)unlink(reg->unix_path);
    free(reg->name);
    free(reg->unix_path);
    *reg = h->regs[--h->nregs];
    return 0;
}

int handoff_take_fd(handoff_t *h, const char *name)
{
    if (!h || !name)
        return -EINVAL;
    for (size_t i = 0; i < h->ninh; i++) {
        if (!h->inh[i].claimed && strcmp(h->inh[i].name, name) == 0) {
            h->inh[i].claimed = true;
            /* Ownership moves to the caller; forget the fd here so that
             * handoff_free() does not close it. */
            int fd = h->inh[i].fd;
            h->inh[i].fd = -1;
            return fd;
        }
    }
    return handoff__fail(h, -ENOENT, "take_fd: no unclaimed inherited fd named \"%s\"", name);
}

int handoff_inherited(const handoff_t *h, handoff_inherited_info *out, size_t n)
{
    if (!h)
        return -EINVAL;
    for (size_t i = 0; i < h->ninh && i < n && out; i++) {
        out[i].fd = h->inh[i].fd;
        out[i].name = h->inh[i].name;
        out[i].claimed = h->inh[i].claimed;
    }
    return (int)h->ninh;
}

/* Closes every registered fd. unlink_paths: this is the last generation
 * using them (a shutdown, not a hand-over), so remove unix socket files.
 * A socket a first generation inherited belongs to whoever passed it
 * (systemd, a supervisor running generations side by side): its path is
 * left alone. Only a chain of handoff generations owns what it inherits. */
void handoff__regs_free(handoff_t *h, bool unlink_paths)
{
    for (size_t i = 0; i < h->nregs; i++) {
        struct hf_reg *r = &h->regs[i];
        if (unlink_paths && r->unix_path && (!r->inherited || h->chain))
            (void)unlink(r->unix_path);
        if (r->fd >= 0)
            (void)close(r->fd);
        free(r->name);
        free(r->unix_path);
    }
    free(h->regs);
    h->regs = NULL;
    h->nregs = 0;
}

int handoff_addr_from_fd(int fd, handoff_addr *out)
{
    int r;

    if (!out)
        return handoff__fail(NULL, -EINVAL, "address of fd %d: no output", fd);
    if (fd < 0) {
        memset(out, 0, sizeof *out);
        r = -EBADF;
    } else {
        r = handoff__fd_addr(fd, out);
    }
    if (r == -EPROTOTYPE)
        return handoff__fail(NULL, r, "fd %d: a socket type handoff does not speak", fd);
    if (r < 0)
        return handoff__fail(NULL, r, "address of fd %d: %s", fd, strerror(-r));
    return r;
}
