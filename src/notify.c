/*
 * notify.c - sd_notify for the handle: the messages of docs/protocol.md
 * section 7, sent through the shared sender (shared/notify.c).
 */
#include "manager.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

void handoff__notify_init(handoff_t *h)
{
    int r;

    if (!h->notify_socket || (h->flags & HANDOFF_NO_NOTIFY))
        return;
    r = handoff__notifier_open(&h->notifier, h->notify_socket);
    if (r < 0)
        handoff__log(h, HANDOFF_LOG_WARNING, "NOTIFY_SOCKET=%s: %s", h->notify_socket,
                     strerror(-r));
}

void handoff__notify_done(handoff_t *h)
{
    handoff__notifier_close(&h->notifier);
}

int handoff__notify(handoff_t *h, const char *fmt, ...)
{
    char msg[4096];
    va_list ap;
    int r, n;

    if (!h->notify_socket || (h->flags & HANDOFF_NO_NOTIFY))
        return 0;
    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof msg, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized): va_start above */
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof msg)
        return handoff__fail(h, -EMSGSIZE, "sd_notify: message longer than %zu bytes",
                             sizeof msg - 1);
    if (h->notifier.fd >= 0) {
        r = handoff__notifier_send(&h->notifier, msg, (size_t)n);
    } else {
        /* The socket could not be made at start-up (at the fd limit, say):
         * one for this message. A local one, so that this stays
         * thread-safe. */
        struct handoff__notifier once = HANDOFF__NOTIFIER_INIT;
        r = handoff__notifier_open(&once, h->notify_socket);
        if (r == 0)
            r = handoff__notifier_send(&once, msg, (size_t)n);
        handoff__notifier_close(&once);
    }
    if (r < 0) {
        handoff__log(h, HANDOFF_LOG_WARNING, "sd_notify to %s failed: %s", h->notify_socket,
                     strerror(-r));
        return r;
    }
    return 1;
}

int handoff_notify(handoff_t *h, const char *msg)
{
    if (!h || !msg)
        return -EINVAL;
    return handoff__notify(h, "%s", msg);
}
