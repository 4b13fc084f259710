/* shared/trace.c - see trace.h. Built only with cmake -DHANDOFF_TRACE=ON;
 * defined here too so that tools reading the file alone see the function. */
#ifndef HANDOFF_TRACE
#define HANDOFF_TRACE 1
#endif
#include "shared/trace.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int g_fd = -2;

void handoff__trace(const char *step)
{
    struct timespec ts;
    char buf[128];
    int n;

    if (g_fd == -2) {
        const char *p = getenv("HFTRACE_FILE");
        g_fd = p ? open(p, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600) : -1;
    }
    if (g_fd < 0)
        return;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    n = snprintf(buf, sizeof buf, "%ld %s %lld\n", (long)getpid(), step,
                 (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    if (n > 0 && (size_t)n < sizeof buf)
        (void)!write(g_fd, buf, (size_t)n);
}

/* The successor's first moment in its new image: ld.so has loaded and
 * relocated every library by then. */
__attribute__((constructor)) static void trace_ctor(void)
{
    handoff__trace("C0-ctor");
}
