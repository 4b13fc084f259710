/*
 * listeners.h - the registry of fds handed to the next generation
 * (listen.c): listeners bound or adopted, and named fds.
 */
#ifndef HANDOFF_LISTENERS_H
#define HANDOFF_LISTENERS_H

#include "handle.h"

#include <stdbool.h>

/* 1..255 bytes of printable ASCII without ':' (systemd's FDNAME rule). */
bool handoff__valid_name(const char *name);
struct hf_reg *handoff__reg_find(handoff_t *h, const char *name);
/* Closes every registered fd. unlink_paths: this is the last generation
 * using them, so remove the unix socket files it owns. */
void handoff__regs_free(handoff_t *h, bool unlink_paths);

#endif
