/*
 * migrate.h - keep-alive connections survive a restart (internal to
 * libhandoff-http): a draining generation hands its plain HTTP/1.1
 * connections to the successor with the core's migration API
 * (handoff_migrate(3)), each with a state blob (the input read but not
 * parsed yet, the requests served, how long it has waited); the successor
 * adopts them (handoff_http_adopt(), public) into a worker as if it had
 * accepted them, with that state restored.
 *
 * The blob (version 1, docs/protocol.md section 9.6), little-endian:
 *   0  "hsH1"   4  major version (1)   5  header length (32)
 *   6  protocol (1: HTTP/1.1 in the clear)   7  must-understand flags (0)
 *   8  requests served (u32)   12  input length L (u32)
 *   16 microseconds spent in the current wait (u64)
 *   24 that wait: 0 new, 1 idle keep-alive, 2 reading a request head
 *   25 reserved (zero)   32  L bytes of input, exactly as received
 *
 * Threads: hs_mig_*() run on the connection's worker; handoff_http_adopt()
 * on the thread that handles the core's events.
 */
#ifndef HANDOFF_HTTP_MIGRATE_H
#define HANDOFF_HTTP_MIGRATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hs_conn;
struct hs_worker;

#define HS_MIG_HDR 32
#define HS_MIG_VERSION 1
#define HS_MIG_PROTO_H1 1

enum hs_mig_wait { HS_MIG_WAIT_NEW = 0, HS_MIG_WAIT_IDLE = 1, HS_MIG_WAIT_HEAD = 2 };

/* A parsed blob; in points into the blob. */
struct hs_mig_state {
    uint32_t nreq;
    uint8_t wait;       /* enum hs_mig_wait */
    uint64_t elapsed;   /* usec spent in that wait */
    const char *in;
    size_t len;
};

/* Writes the blob for st into out (HS_MIG_HDR + st->len bytes). */
void hs_mig_build(const struct hs_mig_state *st, unsigned char *out);

/* Reads a blob (untrusted input). Returns 0, -EPROTO (not a version 1
 * HTTP/1.1 blob, or a flag it must understand) or -EINVAL (lengths). */
int hs_mig_parse(const void *blob, size_t len, struct hs_mig_state *st);

/* True when c, an HTTP/1.1 connection of a draining server, should be
 * handed over rather than closed: the server migrates (no_migrate is 0),
 * the successor adopts, and c is in the clear, not on an h2c listener and
 * not marked no_migrate.
 * (migrate_out.c, below h1.c: the protocol is the caller's to check.) */
bool hs_mig_wanted(const struct hs_conn *c);

/* Hands c over if it is at a message boundary (no request in progress,
 * output flushed, no close decided). Returns true when c is gone (it is
 * the core's now and freed at the end of the iteration); false when it
 * stays (it then is marked no_migrate if the hand-over failed). */
bool hs_mig_out(struct hs_conn *c);

/* A worker starts an upgrade drain: gives every open HTTP/1.1 connection
 * a turn, in which hs_mig_out() hands it over (see h1.c's drive()). */
void hs_mig_drain(struct hs_worker *w);

#endif
