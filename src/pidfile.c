/*
 * pidfile.c - a pid file that always names the serving process.
 * It is replaced atomically (a new temporary file in the same directory,
 * then rename), so a reader never sees a partial or empty file.
 */
#include "manager.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int pidfile_write(const char *path, pid_t pid)
{
    char tmp[4096], buf[32];
    int fd, n, r = 0;

    if (!path || !*path || pid <= 0)
        return -EINVAL;
    /* A new file with an unpredictable name, created with O_EXCL: a file
     * or symlink someone planted in the directory is never opened. */
    n = snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
    if (n < 0 || (size_t)n >= sizeof tmp)
        return -ENAMETOOLONG;
    n = snprintf(buf, sizeof buf, "%ld\n", (long)pid);
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fchmod(fd, 0644) < 0)
        r = -errno;
    else if (write(fd, buf, (size_t)n) != n)
        r = errno ? -errno : -EIO;
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0)
        (void)unlink(tmp);
    return r;
}

int handoff_pidfile_write(const char *path, pid_t pid)
{
    int r = pidfile_write(path, pid);
    if (r == -EINVAL)
        return handoff__fail(NULL, r, "pid file: %s", path && *path ? "pid must be > 0" : "no path");
    if (r < 0)
        return handoff__fail(NULL, r, "pid file %s: %s", path, strerror(-r));
    return r;
}

static pid_t pidfile_read(const char *path)
{
    char buf[32];
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return -1;
    n = read(fd, buf, sizeof buf - 1);
    (void)close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    return (pid_t)strtol(buf, NULL, 10);
}

void handoff__pidfile_update(handoff_t *h, pid_t pid)
{
    int r;

    if (!h->pid_file)
        return;
    r = handoff_pidfile_write(h->pid_file, pid);
    if (r < 0)
        handoff__log(h, HANDOFF_LOG_WARNING, "cannot write pid file %s: %s (serving anyway)",
                     h->pid_file, strerror(-r));
}

/* Removes the pid file only if it still names this process: after a
 * hand-over it names the successor and must stay. */
void handoff__pidfile_remove(handoff_t *h)
{
    if (!h->pid_file)
        return;
    if (pidfile_read(h->pid_file) == getpid())
        (void)unlink(h->pid_file);
}
