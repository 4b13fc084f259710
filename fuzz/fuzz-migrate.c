/* libFuzzer harness: the parsers of connection migration (src/migrate_wire.c),
 * everything a generation reads from the other one.
 *
 * The first byte picks the parser, the rest is the input:
 *   0  a batch (handoff__mig_batch_parse)
 *   1  an acknowledgement (handoff__mig_ack_parse)
 *   2  the child's READY message (handoff__mig_ready_parse)
 *   3  the HANDOFF_CAPS value (handoff__mig_caps_parse), NUL-terminated
 * Invariants: no crash; a batch's records lie inside the input, in order,
 * each within HANDOFF_MIGRATE_STATE_MAX, and together with their length
 * fields cover it exactly; an accepted acknowledgement is written back
 * byte for byte and names no record whose fd did not arrive; an accepted
 * READY starts with "READY=1" and its ADOPT version is 0 or 1; known
 * capabilities only, and only for the expected pid. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "migrate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void batch(const uint8_t *p, size_t n)
{
    static struct hf_mig_rec recs[HF_MIG_BATCH_FDS];
    struct hf_mig_hdr hdr;
    int r = handoff__mig_batch_parse(p, n, &hdr, recs);
    size_t off = HF_MIG_HDR;

    if (r != -EPROTO && r != -EBADMSG && (r < 1 || r > (int)HF_MIG_BATCH_FDS))
        abort();
    if (r == -EBADMSG && (hdr.type != HF_MIG_T_BATCH || hdr.version != HF_MIG_VERSION))
        abort();
    if (r < 0)
        return;
    if ((uint32_t)r != hdr.count || n > HF_MIG_MSG_MAX)
        abort();
    for (int i = 0; i < r; i++) {
        off += 4;
        if (recs[i].state != p + off || recs[i].len > HANDOFF_MIGRATE_STATE_MAX ||
            recs[i].len > n - off)
            abort();
        off += recs[i].len;
    }
    if (off != n)
        abort();
}

static void ack(const uint8_t *p, size_t n)
{
    unsigned char out[HF_MIG_ACK_MAX];
    struct hf_mig_ack a;
    int r = handoff__mig_ack_parse(p, n, &a);

    if (r != 0 && r != -EPROTO && r != -EBADMSG)
        abort();
    if (r < 0)
        return;
    if (a.count < 1 || a.count > HF_MIG_BATCH_FDS || a.received > a.count)
        abort();
    for (uint32_t i = a.received; i < HF_MIG_BATCH_FDS; i++)
        if (a.bits[i / 8] & (1u << (i % 8)))
            abort();
    if (handoff__mig_ack_write(out, &a) != n || memcmp(out, p, n) != 0)
        abort();
}

static void ready(const uint8_t *p, size_t n)
{
    char *s = malloc(n ? n : 1); /* exact size: ASan sees any overread */
    unsigned adopt = 99;
    int r;

    if (!s)
        return;
    memcpy(s, p, n);
    r = handoff__mig_ready_parse(s, n, &adopt);
    if (r != 0 && r != -EINVAL)
        abort();
    if (r == 0 && (n < 7 || memcmp(s, "READY=1", 7) != 0 || (adopt != 0 && adopt != 1)))
        abort();
    free(s);
}

static void caps(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    unsigned c;

    if (!s)
        return;
    memcpy(s, p, n);
    s[n] = '\0';
    c = handoff__mig_caps_parse(s, 4242);
    if (c & ~(HF_CAP_READY_LINES | HF_CAP_MIGRATE1))
        abort();
    if (c && strncmp(s, "4242,", 5) != 0)
        abort();
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy;

    if (size == 0)
        return 0;
    /* An exact-size heap copy of the input after the selector byte. */
    copy = malloc(size - 1 ? size - 1 : 1);
    if (!copy)
        return 0;
    memcpy(copy, data + 1, size - 1);
    switch (data[0] % 4) {
    case 0:
        batch(copy, size - 1);
        break;
    case 1:
        ack(copy, size - 1);
        break;
    case 2:
        ready(copy, size - 1);
        break;
    default:
        caps(copy, size - 1);
        break;
    }
    free(copy);
    return 0;
}
