/*
 * procfs.c - what the supervisor reads about other processes in /proc:
 * ancestry (--notify-access all) and signal dispositions (forwarding).
 */
#include "tool.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Reads a small /proc file into buf (NUL-terminated). Bytes read, or -1. */
static ssize_t read_small(const char *path, char *buf, size_t len)
{
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return -1;
    n = read(fd, buf, len - 1);
    (void)close(fd);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return n;
}

static pid_t parent_of(pid_t pid)
{
    char path[64], buf[512];

    (void)snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    if (read_small(path, buf, sizeof buf) <= 0)
        return -1;
    /* "pid (comm) state ppid ...": comm may contain spaces and ')'. */
    char *rp = strrchr(buf, ')');
    if (!rp || rp[1] != ' ' || !rp[2] || rp[3] != ' ')
        return -1;
    return (pid_t)strtol(rp + 4, NULL, 10);
}

bool pid_descends_from(pid_t pid, pid_t ancestor)
{
    for (int depth = 0; depth < 64 && pid > 1; depth++) {
        if (pid == ancestor)
            return true;
        pid = parent_of(pid);
    }
    return false;
}

/* The mask on the line "Key:\t<hex>" of a /proc status file; 0 if absent. */
static uint64_t status_mask(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    return p ? strtoull(p + strlen(key), NULL, 16) : 0;
}

bool proc_handles_signal(pid_t pid, int signo)
{
    char path[96], buf[4096];
    uint64_t bit = (uint64_t)1 << (signo - 1);
    DIR *d;
    struct dirent *e;
    bool all_block = true;
    int threads = 0;

    if (signo < 1 || signo > 64)
        return false;
    (void)snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    if (read_small(path, buf, sizeof buf) <= 0)
        return false;
    /* Caught or ignored: process-wide dispositions. */
    if ((status_mask(buf, "\nSigCgt:") | status_mask(buf, "\nSigIgn:")) & bit)
        return true;
    /* Blocked (read with signalfd or sigwait, or left pending): only if
     * every thread blocks it; otherwise one that does not takes the
     * default action for the whole process. */
    (void)snprintf(path, sizeof path, "/proc/%ld/task", (long)pid);
    d = opendir(path);
    if (!d)
        return false;
    while ((e = readdir(d)) != NULL && all_block) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        (void)snprintf(path, sizeof path, "/proc/%ld/task/%.20s/status", (long)pid, e->d_name);
        if (read_small(path, buf, sizeof buf) <= 0)
            continue; /* that thread just exited */
        threads++;
        all_block = (status_mask(buf, "\nSigBlk:") & bit) != 0;
    }
    (void)closedir(d);
    return threads > 0 && all_block;
}
