/*
 * shared/protocol.h - the names of the inheritance protocol (docs/protocol.md)
 * and the one table of its environment variables.
 *
 * Part of src/shared/, the internal layer that libhandoff and the handoff
 * command both link (hidden symbols, never installed). Nothing here knows
 * about a handoff_t.
 */
#ifndef HANDOFF_SHARED_PROTOCOL_H
#define HANDOFF_SHARED_PROTOCOL_H

#include <stdbool.h>

/* Environment variables of the protocol. */
#define HF_ENV_LISTEN_FDS "LISTEN_FDS"
#define HF_ENV_LISTEN_PID "LISTEN_PID"
#define HF_ENV_LISTEN_FDNAMES "LISTEN_FDNAMES"
#define HF_ENV_LISTEN_PIDFDID "LISTEN_PIDFDID"
#define HF_ENV_READY_FD "HANDOFF_READY_FD"
#define HF_ENV_GENERATION "HANDOFF_GENERATION"
#define HF_ENV_PARENT_PID "HANDOFF_PARENT_PID"
#define HF_ENV_CAPS "HANDOFF_CAPS" /* what the parent reads (migrate.h) */
#define HF_ENV_NOTIFY_SOCKET "NOTIFY_SOCKET"
#define HF_ENV_WATCHDOG_USEC "WATCHDOG_USEC"
#define HF_ENV_WATCHDOG_PID "WATCHDOG_PID"
#define HF_ENV_STARTER_PORT "SERVER_STARTER_PORT"
#define HF_ENV_STARTER_GENERATION "SERVER_STARTER_GENERATION"
/* Every variable whose name starts with this belongs to handoff. */
#define HF_ENV_PREFIX "HANDOFF_"

/* Flags of a protocol_var. */
enum {
    /* name is a prefix: every variable starting with it matches. */
    HF_VAR_PREFIX = 1u << 0,
    /* Read and then removed from the environment by handoff_new(). */
    HF_VAR_CONSUMED = 1u << 1
};

struct handoff__protocol_var {
    const char *name;
    unsigned flags;
};

/* The table, terminated by a NULL name. Every entry is kept out of the
 * environment a child inherits (a successor, a worker of `handoff run`, a
 * readiness check): whoever starts a child writes the values meant for it
 * itself. */
extern const struct handoff__protocol_var handoff__protocol_vars[];

/* True if kv ("NAME=value", an entry of environ) is a protocol variable,
 * so that it must not be copied into a child's environment.
 * Async-signal-safe: yes (no allocation, no locale). */
bool handoff__env_is_protocol(const char *kv);

#endif
