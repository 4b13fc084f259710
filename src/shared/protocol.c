/*
 * shared/protocol.c - the one table of protocol variables.
 */
#include "shared/protocol.h"

#include <stddef.h>
#include <string.h>

const struct handoff__protocol_var handoff__protocol_vars[] = {
    {HF_ENV_LISTEN_FDS, HF_VAR_CONSUMED},
    {HF_ENV_LISTEN_PID, HF_VAR_CONSUMED},
    {HF_ENV_LISTEN_FDNAMES, HF_VAR_CONSUMED},
    {HF_ENV_LISTEN_PIDFDID, HF_VAR_CONSUMED},
    {HF_ENV_READY_FD, HF_VAR_CONSUMED},
    {HF_ENV_GENERATION, HF_VAR_CONSUMED},
    {HF_ENV_PARENT_PID, HF_VAR_CONSUMED},
    {HF_ENV_CAPS, HF_VAR_CONSUMED},
    {HF_ENV_NOTIFY_SOCKET, HF_VAR_CONSUMED},
    {HF_ENV_STARTER_PORT, HF_VAR_CONSUMED},
    /* systemd's watchdog names the main pid; a child is never it at the
     * moment it starts, so the values would be wrong there. */
    {HF_ENV_WATCHDOG_USEC, 0},
    {HF_ENV_WATCHDOG_PID, 0},
    {HF_ENV_STARTER_GENERATION, 0},
    /* The namespace: HANDOFF_PID, HANDOFF_WORKER, ... of `handoff run`. */
    {HF_ENV_PREFIX, HF_VAR_PREFIX},
    {NULL, 0},
};

bool handoff__env_is_protocol(const char *kv)
{
    for (const struct handoff__protocol_var *v = handoff__protocol_vars; v->name; v++) {
        size_t n = strlen(v->name);
        if (strncmp(kv, v->name, n) != 0)
            continue;
        if ((v->flags & HF_VAR_PREFIX) || kv[n] == '=')
            return true;
    }
    return false;
}
