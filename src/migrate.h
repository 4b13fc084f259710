/*
 * migrate.h - connection migration between generations (docs/protocol.md,
 * section 9): the wire format (migrate_wire.c, pure functions, fuzzed by
 * fuzz/fuzz-migrate.c) and the hooks the core calls (migrate.c).
 *
 * Never installed. Internal non-static functions are prefixed handoff__.
 */
#ifndef HANDOFF_MIGRATE_INTERNAL_H
#define HANDOFF_MIGRATE_INTERNAL_H

#include "handoff.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ------------------------------------------------------------------------ */
/* Wire format (all integers little-endian)                                 */

#define HF_MIG_MAGIC 0x47494d48u   /* "HMIG" */
#define HF_MIG_VERSION 1u
#define HF_MIG_HDR 16u             /* magic, version, type, flags, seq, count */
/* fds per message: SCM_MAX_FD is 253; HAProxy uses 252 after musl failed
 * at 253 (prior-art A.2). One record per fd. */
#define HF_MIG_BATCH_FDS 252u
/* Largest message either side sends or accepts. A message must also stay
 * below the sender's SO_SNDBUF (SEQPACKET fails larger ones with EMSGSIZE). */
#define HF_MIG_MSG_MAX ((size_t)128 * 1024)
#define HF_MIG_ACK_MAX (HF_MIG_HDR + 4u + (HF_MIG_BATCH_FDS + 7u) / 8u)

enum hf_mig_type { HF_MIG_T_BATCH = 1, HF_MIG_T_ACK = 2 };

struct hf_mig_hdr {
    uint8_t version;
    uint8_t type;
    uint16_t flags;   /* reserved, 0 */
    uint32_t seq;     /* batch sequence number, from 1 */
    uint32_t count;   /* records in the batch (1..HF_MIG_BATCH_FDS) */
};

/* One per-connection record of a batch, pointing into the message. */
struct hf_mig_rec {
    const unsigned char *state;
    uint32_t len;
};

/* A parsed acknowledgement. */
struct hf_mig_ack {
    uint32_t seq;
    uint32_t count;      /* records in the batch acknowledged */
    uint32_t received;   /* fds that reached the successor (prefix) */
    uint8_t bits[(HF_MIG_BATCH_FDS + 7) / 8]; /* bit i: record i adopted */
};

/* Writes a header into buf[0..HF_MIG_HDR). */
void handoff__mig_hdr_write(unsigned char *buf, const struct hf_mig_hdr *hdr);
/* Parses the header of any message: -EPROTO for a wrong magic or version,
 * -EBADMSG for a short message, an unknown type or nonzero flags. */
int handoff__mig_hdr_parse(const void *buf, size_t len, struct hf_mig_hdr *out);
/* Parses a whole batch: header, then exactly hdr.count records of
 * u32 length + state (length <= HANDOFF_MIGRATE_STATE_MAX), nothing after.
 * recs has room for HF_MIG_BATCH_FDS. Returns the count, or -EPROTO
 * (header unusable: no acknowledgement possible), or -EBADMSG (header
 * fine, *hdr filled, body malformed). */
int handoff__mig_batch_parse(const void *buf, size_t len, struct hf_mig_hdr *hdr,
                             struct hf_mig_rec *recs);
/* Encodes an acknowledgement; buf has HF_MIG_ACK_MAX bytes. Returns its
 * length. */
size_t handoff__mig_ack_write(unsigned char *buf, const struct hf_mig_ack *ack);
/* Parses an acknowledgement: exact length, count 1..252, received <=
 * count, no bit set at or above received. 0 or -EPROTO/-EBADMSG. */
int handoff__mig_ack_parse(const void *buf, size_t len, struct hf_mig_ack *out);

/* The handshake: the capability variable a parent writes and the READY
 * message a child sends (docs/protocol.md, section 9.1). */
#define HF_CAP_READY_LINES 1u  /* "ready-lines": parses READY=1 + lines */
#define HF_CAP_MIGRATE1 2u     /* "migrate-1": hands connections, wire v1 */
/* HANDOFF_CAPS's value "<pid>,<token>[,<token>...]". Returns the HF_CAP_*
 * bits of the known tokens if pid is expected_pid, else 0 (a stale value
 * written for another process, or garbage). */
unsigned handoff__mig_caps_parse(const char *value, pid_t expected_pid);
/* Formats the value for a child of pid; returns its length or -ENOSPC. */
int handoff__mig_caps_format(char *buf, size_t len, pid_t pid, unsigned caps);
/* Parses the child's message: "READY=1", then optional lines "KEY=VALUE"
 * separated by '\n'. *adopt receives the migration wire version the child
 * reads (ADOPT=1), 0 if none. Unknown keys are ignored. 0 or -EINVAL. */
int handoff__mig_ready_parse(const char *msg, size_t len, unsigned *adopt);

/* ------------------------------------------------------------------------ */
/* Bounds                                                                   */

/* Connections (and state bytes) the old generation holds for a successor
 * at once, and the successor queues for handoff_adopt(). */
#define HF_MIG_PENDING_MAX 65536u
#define HF_MIG_PENDING_BYTES ((size_t)64 * 1024 * 1024)
/* The successor must acknowledge a batch within this time (or half the
 * drain timeout, if shorter), or the old generation takes back what is
 * unacknowledged. */
#define HF_MIG_ACK_TIMEOUT_USEC (10 * HANDOFF_USEC_PER_SEC)
/* Messages handled per handoff_next_event() on one channel (fairness; the
 * event fd stays readable while more are queued). */
#define HF_MIG_MSGS_PER_POLL 64

/* ------------------------------------------------------------------------ */
/* Hooks called by the core (migrate.c)                                     */

struct handoff;
struct hf_mig;

/* handoff_new() with HANDOFF_MIGRATE: allocates h->mig. 0 or -ENOMEM. */
int handoff__mig_new(struct handoff *h);
/* Closes every fd the migration state holds; frees it. */
void handoff__mig_free(struct handoff *h);
/* The message for handoff_ready() in a successor: "READY=1", plus the
 * ADOPT line when this process opted in and its parent advertised
 * migration; in that case it also sets SO_PASSCRED on the handshake socket
 * and raises RLIMIT_NOFILE's soft limit to the hard limit. */
const char *handoff__mig_ready_msg(struct handoff *h);
/* After READY was sent: true if the migration state took h->ready_fd (it
 * is then -1), false if the caller must close it. */
bool handoff__mig_take_ready_fd(struct handoff *h);
/* The parent parsed READY from its child with this ADOPT version: opens
 * the channel to the successor by taking h->child.sock if both sides
 * migrate. Call before the hand-over forgets the child. */
void handoff__mig_handover(struct handoff *h, unsigned adopt);
/* An epoll event with one of the HF_TAG_MIG_* tags. */
void handoff__mig_on_event(struct handoff *h, uint32_t tag);
/* At the start of handoff_next_event(): flushes a partial batch, tears
 * down a broken channel, and queues HANDOFF_EVENT_ADOPT. */
void handoff__mig_poll(struct handoff *h);
/* True while the predecessor's channel is open: it may still hand us
 * connections, so STOP(DRAINED) must wait (a successor that stopped first
 * would bounce them back to a generation that can no longer pass them on). */
bool handoff__mig_busy(struct handoff *h);

/* For tests: attach a channel end directly (fd is taken over), and set the
 * acknowledgement timeout of the open channel to the successor. */
int handoff__mig_attach_out(struct handoff *h, int fd, pid_t peer);
int handoff__mig_attach_in(struct handoff *h, int fd, pid_t peer);
void handoff__mig_set_ack_timeout(struct handoff *h, uint64_t usec);

#endif
