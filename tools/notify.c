/*
 * notify.c - the NOTIFY_SOCKET the supervisor gives its workers.
 *
 * The supervisor speaks the sd_notify protocol as a receiver: an AF_UNIX
 * datagram socket with SO_PASSCRED, so the kernel attaches the sender's
 * real pid and uid to every message.
 *
 * Who can reach it. The socket is a file in a directory of its own, made
 * by mkdtemp() (mode 0700, owned by the supervisor's user) in a runtime
 * directory (see runtime_dir()): only the supervisor's user and root can
 * send to it. It used to be an abstract socket, which has no permissions
 * and whose name anyone can read in /proc/net/unix: any local user could
 * keep its queue (net.unix.max_dgram_qlen, 10 datagrams) full, and the
 * workers' non-blocking READY=1 was then dropped with EAGAIN, failing
 * start-up and reloads on the ready timeout.
 *
 * Which messages count (reload.c, on_notify()): those of a worker's own
 * pid, checked against the process table before anything else; with
 * --notify-access all also those of a worker's descendants (a wrapper
 * shell that does not exec, a master that forks first), found through
 * /proc, but only for senders of the supervisor's own uid: a foreign
 * sender never costs a /proc walk.
 *
 * The supervisor's own NOTIFY_SOCKET (from systemd) never reaches a
 * worker; the supervisor speaks to it with shared/notify.h (state.c).
 */
#include "tool.h"

#include "shared/sockaddr.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define NOTIFY_FILE "notify"

/* mkdtemp() in dir, then the socket in it. 0 or -errno. */
static int notify_bind(struct notify_sock *ns, const char *dir)
{
    struct sockaddr_un sun;
    int one = 1, n, fd, r;
    mode_t old;

    n = snprintf(ns->dir, sizeof ns->dir, "%s/handoff-notify.XXXXXX", dir);
    if (n < 0 || (size_t)n + sizeof "/" NOTIFY_FILE > sizeof sun.sun_path)
        return -ENAMETOOLONG;
    if (!mkdtemp(ns->dir)) /* mode 0700, and never an existing name */
        return -errno;
    memcpy(ns->path, ns->dir, (size_t)n);
    memcpy(ns->path + n, "/" NOTIFY_FILE, sizeof "/" NOTIFY_FILE);
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, ns->path, strlen(ns->path));
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        r = -errno;
        goto fail;
    }
    /* The directory is what keeps others out; the socket's own mode
     * (0600 from the umask at bind) is a second fence. */
    old = umask(0177);
    r = setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0 ||
                bind(fd, (struct sockaddr *)&sun, (socklen_t)sizeof sun) < 0
            ? -errno
            : 0;
    (void)umask(old);
    if (r < 0) {
        (void)close(fd);
        goto fail;
    }
    ns->fd = fd;
    return 0;
fail:
    (void)rmdir(ns->dir);
    ns->dir[0] = ns->path[0] = '\0';
    return r;
}

/* Removes what supervisors killed with SIGKILL left in dir: directories
 * handoff-notify.* of ours whose socket nobody holds any more (sending to
 * it is refused). dir is only writable by us (runtime_dir() checks the
 * fallback; $XDG_RUNTIME_DIR is checked here), so nobody can swap an
 * entry between the checks and the removal. */
static void notify_sweep(const char *dir)
{
    struct stat st;
    DIR *d;
    struct dirent *e;
    int probe, n = 0;

    if (lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022))
        return;
    probe = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    d = probe >= 0 ? opendir(dir) : NULL;
    while (d && (e = readdir(d)) != NULL && n++ < 1000) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        char sub[sizeof sun.sun_path];
        int k;

        if (strncmp(e->d_name, "handoff-notify.", 15) != 0)
            continue;
        k = snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name);
        if (k < 0 || (size_t)k + sizeof "/" NOTIFY_FILE > sizeof sun.sun_path)
            continue;
        if (lstat(sub, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid())
            continue;
        memcpy(sun.sun_path, sub, (size_t)k);
        memcpy(sun.sun_path + k, "/" NOTIFY_FILE, sizeof "/" NOTIFY_FILE);
        if (lstat(sun.sun_path, &st) == 0 && S_ISSOCK(st.st_mode) &&
            connect(probe, (struct sockaddr *)&sun, (socklen_t)sizeof sun) < 0 && errno == ECONNREFUSED) {
            (void)unlink(sun.sun_path);
            (void)rmdir(sub);
        }
        /* An empty one may be a supervisor starting right now (between
         * mkdtemp() and bind()): left alone. */
    }
    if (d)
        (void)closedir(d);
    if (probe >= 0)
        (void)close(probe);
}

int notify_open(struct notify_sock *ns)
{
    char dir[256];
    int r = -ENOENT;

    ns->fd = -1;
    ns->dir[0] = ns->path[0] = '\0';
    /* $XDG_RUNTIME_DIR first; if it is not usable (a user's directory
     * inherited through su), the supervisor's own fallback directory. */
    for (int which = 0; which < 2; which++) {
        int e = runtime_dir(which, dir, sizeof dir, true);
        if (e == -ENOENT && which == 0)
            continue;
        if (e == 0) {
            notify_sweep(dir);
            e = notify_bind(ns, dir);
        }
        if (e == 0)
            return 0;
        r = e;
    }
    return r;
}

void notify_close(struct notify_sock *ns)
{
    if (ns->fd >= 0)
        (void)close(ns->fd);
    ns->fd = -1;
    if (ns->path[0])
        (void)unlink(ns->path);
    if (ns->dir[0])
        (void)rmdir(ns->dir);
    ns->dir[0] = ns->path[0] = '\0';
}

static void parse_line(struct notify_msg *m, const char *line, size_t len)
{
#define IS(k) (len >= sizeof(k) - 1 && memcmp(line, k, sizeof(k) - 1) == 0)
    if (len == 7 && IS("READY=1"))
        m->ready = true;
    else if (len == 10 && IS("STOPPING=1"))
        m->stopping = true;
    else if (len == 11 && IS("RELOADING=1"))
        m->reloading = true;
    else if (IS("STATUS=")) {
        size_t n = len - 7;
        if (n >= sizeof m->status)
            n = sizeof m->status - 1;
        memcpy(m->status, line + 7, n);
        m->status[n] = '\0';
        m->has_status = true;
    } else if (IS("EXTEND_TIMEOUT_USEC=")) {
        char num[24];
        size_t n = len - 20;
        if (n > 0 && n < sizeof num) {
            memcpy(num, line + 20, n);
            num[n] = '\0';
            m->extend_usec = strtoull(num, NULL, 10);
        }
    }
#undef IS
}

int notify_read(int fd, struct notify_msg *m)
{
    char buf[4097];
    union {
        struct cmsghdr hdr;
        char space[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 253)];
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf - 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl,
                         .msg_controllen = sizeof ctl};
    struct ucred cred;
    bool have_cred = false;
    ssize_t n;

    memset(m, 0, sizeof *m);
    n = handoff__recvmsg_nb(fd, &msg);
    if (n < 0)
        return n == -EAGAIN ? 0 : (int)n;
    /* FDSTORE=1 and friends: the supervisor keeps no fds for its workers;
     * they are closed so that they cannot leak or pin sockets. */
    if (handoff__msg_take(&msg, &cred, NULL, 0, NULL)) {
        m->pid = cred.pid;
        m->uid = cred.uid;
        have_cred = true;
    }
    if (!have_cred || m->pid <= 0)
        return 0;
    buf[n] = '\0';
    for (char *p = buf, *end = buf + n; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        parse_line(m, p, len);
        p += len + 1;
    }
    return 1;
}
