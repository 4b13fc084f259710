/*
 * manager.h - telling the process manager: sd_notify (notify.c) and the
 * pid file (pidfile.c). Failures are warnings: the service goes on.
 */
#ifndef HANDOFF_MANAGER_H
#define HANDOFF_MANAGER_H

#include "handle.h"

#include <sys/types.h>

/* Opens the notifier for h->notify_socket unless HANDOFF_NO_NOTIFY. A
 * failure is logged and retried at the next message. */
void handoff__notify_init(handoff_t *h);
void handoff__notify_done(handoff_t *h);
/* Sends one printf-style message. Returns 1 if sent, 0 if there is no
 * NOTIFY_SOCKET, or -errno (logged as a warning). Thread-safe: yes. */
int handoff__notify(handoff_t *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes pid to the pid file, if any; a failure is a warning. */
void handoff__pidfile_update(handoff_t *h, pid_t pid);
/* Removes the pid file if it still names this process. */
void handoff__pidfile_remove(handoff_t *h);

#endif
