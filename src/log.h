/*
 * log.h - diagnostics of a handle (log.c): the log callback and the
 * sentence behind handoff_errmsg().
 */
#ifndef HANDOFF_LOG_H
#define HANDOFF_LOG_H

#include "handoff.h"

#include <stdarg.h>
#include <stddef.h>

/* Passes one line to the handle's logger if level is enabled. */
void handoff__log(handoff_t *h, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sets the handle's error message (h NULL: the calling thread's, for the
 * calls without a handle) and returns err (a negative errno), for
 * `return handoff__fail(h, -EINVAL, "...")`. */
int handoff__fail(handoff_t *h, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* vsnprintf that leaves "" rather than garbage on an encoding error. */
void handoff__vformat(char *buf, size_t len, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#endif
