/*
 * internal.h - every internal header of the core at once, for the unit
 * tests and fuzz harnesses that reach handoff__ functions. The library's
 * own files include only the narrow headers they use (see handle.h for
 * the layers). Never installed.
 */
#ifndef HANDOFF_INTERNAL_H
#define HANDOFF_INTERNAL_H

#include "handle.h"
#include "inherit.h"
#include "listeners.h"
#include "log.h"
#include "loop.h"
#include "manager.h"
#include "signals.h"
#include "successor.h"
#include "shared/exec.h"
#include "shared/notify.h"
#include "shared/protocol.h"
#include "shared/sockaddr.h"
#include "shared/status.h"

#endif
