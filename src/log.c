/*
 * log.c - diagnostics: the per-handle error message and the log callback.
 * Library code never writes to stderr on its own except through the
 * default logger, which the application can replace or silence.
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

void handoff__log(handoff_t *h, int level, const char *fmt, ...)
{
    char line[768];
    va_list ap;

    if (!h || level > h->log_level)
        return;
    va_start(ap, fmt);
    handoff__vformat(line, sizeof line, fmt, ap);
    va_end(ap);
    if (h->log) {
        h->log(h->log_userdata, level, line);
        return;
    }
    (void)fprintf(stderr, "handoff[%ld]: %s\n", (long)getpid(), line);
}

int handoff__fail(handoff_t *h, int err, const char *fmt, ...)
{
    va_list ap;

    if (!h)
        return err;
    va_start(ap, fmt);
    handoff__vformat(h->errmsg, sizeof h->errmsg, fmt, ap);
    va_end(ap);
    handoff__log(h, HANDOFF_LOG_DEBUG, "%s", h->errmsg);
    return err;
}

const char *handoff_errmsg(const handoff_t *h)
{
    return h ? h->errmsg : "";
}
