/*
 * log.c - diagnostics: the per-handle error message, the thread's message
 * for calls without a handle, and the log callback. The library is silent
 * unless the application gives it a log function (handoff_log_stderr() is
 * a ready-made one): it never writes to stderr on its own.
 */
#include "log.h"
#include "handle.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

void handoff__vformat(char *buf, size_t len, const char *fmt, va_list ap)
{
    /* The analyzer cannot see that callers va_start() ap. */
    int n = vsnprintf(buf, len, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
    if (n < 0 && len > 0)
        buf[0] = '\0';
}

/* The sentence of the last failed call without a handle on this thread
 * (handoff_errmsg(NULL)). */
static _Thread_local char t_errmsg[512];

void handoff__log(handoff_t *h, int level, const char *fmt, ...)
{
    char line[768];
    va_list ap;

    if (!h || !h->log || level > h->log_level)
        return;
    va_start(ap, fmt);
    handoff__vformat(line, sizeof line, fmt, ap);
    va_end(ap);
    h->log(h->log_userdata, level, line);
}

void handoff_log_stderr(void *userdata, int level, const char *msg)
{
    (void)userdata;
    (void)level;
    /* One write per line, so that lines of several threads or processes
     * sharing stderr do not interleave mid-line. */
    char line[1024];
    int n = snprintf(line, sizeof line, "handoff[%ld]: %s\n", (long)getpid(), msg ? msg : "");
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line) {
        n = (int)sizeof line - 1;
        line[n - 1] = '\n';
    }
    (void)!write(STDERR_FILENO, line, (size_t)n);
}

int handoff__fail(handoff_t *h, int err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    handoff__vformat(h ? h->errmsg : t_errmsg, h ? sizeof h->errmsg : sizeof t_errmsg, fmt, ap);
    va_end(ap);
    if (h)
        handoff__log(h, HANDOFF_LOG_DEBUG, "%s", h->errmsg);
    return err;
}

const char *handoff_errmsg(const handoff_t *h)
{
    return h ? h->errmsg : t_errmsg;
}
