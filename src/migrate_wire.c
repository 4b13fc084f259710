/*
 * migrate_wire.c - the wire format of connection migration and of the
 * extended handshake (docs/protocol.md, section 9). Pure functions: no
 * system call, no allocation, no handle; fuzzed by fuzz/fuzz-migrate.c.
 *
 * Everything received is hostile until checked: every length is bounded
 * before it is used, and a message must be exactly as long as its header
 * says.
 */
#include "migrate.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void handoff__mig_hdr_write(unsigned char *buf, const struct hf_mig_hdr *hdr)
{
    put32(buf, HF_MIG_MAGIC);
    buf[4] = hdr->version;
    buf[5] = hdr->type;
    buf[6] = (unsigned char)hdr->flags;
    buf[7] = (unsigned char)(hdr->flags >> 8);
    put32(buf + 8, hdr->seq);
    put32(buf + 12, hdr->count);
}

int handoff__mig_hdr_parse(const void *buf, size_t len, struct hf_mig_hdr *out)
{
    const unsigned char *p = buf;

    if (len < HF_MIG_HDR || get32(p) != HF_MIG_MAGIC || p[4] != HF_MIG_VERSION)
        return -EPROTO;
    out->version = p[4];
    out->type = p[5];
    out->flags = (uint16_t)(p[6] | p[7] << 8);
    out->seq = get32(p + 8);
    out->count = get32(p + 12);
    if ((out->type != HF_MIG_T_BATCH && out->type != HF_MIG_T_ACK) || out->flags != 0)
        return -EBADMSG;
    return 0;
}

int handoff__mig_batch_parse(const void *buf, size_t len, struct hf_mig_hdr *hdr,
                             struct hf_mig_rec *recs)
{
    const unsigned char *p = buf;
    size_t off = HF_MIG_HDR;
    int r = handoff__mig_hdr_parse(buf, len, hdr);

    if (r == -EPROTO)
        return r;
    /* A header of the wrong type carries no batch sequence number we could
     * acknowledge: treat it as unusable. */
    if (r < 0 || hdr->type != HF_MIG_T_BATCH)
        return -EPROTO;
    if (hdr->count == 0 || hdr->count > HF_MIG_BATCH_FDS || len > HF_MIG_MSG_MAX)
        return -EBADMSG;
    for (uint32_t i = 0; i < hdr->count; i++) {
        uint32_t n;
        if (len - off < 4)
            return -EBADMSG;
        n = get32(p + off);
        off += 4;
        if (n > HANDOFF_MIGRATE_STATE_MAX || n > len - off)
            return -EBADMSG;
        recs[i].state = p + off;
        recs[i].len = n;
        off += n;
    }
    return off == len ? (int)hdr->count : -EBADMSG;
}

size_t handoff__mig_ack_write(unsigned char *buf, const struct hf_mig_ack *ack)
{
    struct hf_mig_hdr hdr = {.version = HF_MIG_VERSION, .type = HF_MIG_T_ACK,
                             .seq = ack->seq, .count = ack->count};
    size_t nb = (ack->count + 7) / 8;

    handoff__mig_hdr_write(buf, &hdr);
    put32(buf + HF_MIG_HDR, ack->received);
    memcpy(buf + HF_MIG_HDR + 4, ack->bits, nb);
    return HF_MIG_HDR + 4 + nb;
}

int handoff__mig_ack_parse(const void *buf, size_t len, struct hf_mig_ack *out)
{
    const unsigned char *p = buf;
    struct hf_mig_hdr hdr;
    size_t nb;
    int r = handoff__mig_hdr_parse(buf, len, &hdr);

    if (r < 0)
        return r;
    if (hdr.type != HF_MIG_T_ACK || hdr.count == 0 || hdr.count > HF_MIG_BATCH_FDS)
        return -EBADMSG;
    nb = (hdr.count + 7) / 8;
    if (len != HF_MIG_HDR + 4 + nb)
        return -EBADMSG;
    memset(out, 0, sizeof *out);
    out->seq = hdr.seq;
    out->count = hdr.count;
    out->received = get32(p + HF_MIG_HDR);
    if (out->received > out->count)
        return -EBADMSG;
    memcpy(out->bits, p + HF_MIG_HDR + 4, nb);
    /* A record cannot be adopted if its fd never arrived. */
    for (uint32_t i = out->received; i < nb * 8; i++)
        if (out->bits[i / 8] & (1u << (i % 8)))
            return -EBADMSG;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Handshake                                                                */

static const struct {
    const char *name;
    unsigned bit;
} caps_tokens[] = {
    {"ready-lines", HF_CAP_READY_LINES},
    {"migrate-1", HF_CAP_MIGRATE1},
};

unsigned handoff__mig_caps_parse(const char *v, pid_t expected)
{
    unsigned long pid = 0;
    unsigned caps = 0;
    const char *p = v;

    if (!v || strlen(v) > 256 || expected <= 0)
        return 0;
    /* The writer's pid, strict decimal: the value is ours only if our
     * parent wrote it. An older parent does not know the variable and
     * would pass its own parent's value on to us unchanged. */
    if (*p < '1' || *p > '9')
        return 0;
    while (*p >= '0' && *p <= '9') {
        pid = pid * 10 + (unsigned long)(*p - '0');
        if (pid > (unsigned long)INT32_MAX)
            return 0;
        p++;
    }
    if ((pid_t)pid != expected || (*p != ',' && *p != '\0'))
        return 0;
    while (*p == ',') {
        const char *tok = ++p;
        size_t n;
        while ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-')
            p++;
        n = (size_t)(p - tok);
        if (n == 0 || (*p != ',' && *p != '\0'))
            return 0;
        for (size_t i = 0; i < sizeof caps_tokens / sizeof caps_tokens[0]; i++)
            if (strlen(caps_tokens[i].name) == n && memcmp(caps_tokens[i].name, tok, n) == 0)
                caps |= caps_tokens[i].bit;
    }
    return caps;
}

int handoff__mig_caps_format(char *buf, size_t len, pid_t pid, unsigned caps)
{
    size_t off;
    int n = snprintf(buf, len, "%ld", (long)pid);

    if (n < 0 || (size_t)n >= len)
        return -ENOSPC;
    off = (size_t)n;
    for (size_t i = 0; i < sizeof caps_tokens / sizeof caps_tokens[0]; i++) {
        if (!(caps & caps_tokens[i].bit))
            continue;
        n = snprintf(buf + off, len - off, ",%s", caps_tokens[i].name);
        if (n < 0 || (size_t)n >= len - off)
            return -ENOSPC;
        off += (size_t)n;
    }
    return (int)off;
}

int handoff__mig_ready_parse(const char *msg, size_t len, unsigned *adopt)
{
    static const char first[] = "READY=1";
    size_t off = sizeof first - 1;

    *adopt = 0;
    if (len < off || memcmp(msg, first, off) != 0)
        return -EINVAL;
    while (off < len) {
        size_t key, eq, end;
        if (msg[off] != '\n')
            return -EINVAL;
        key = ++off;
        while (off < len && ((msg[off] >= 'A' && msg[off] <= 'Z') || msg[off] == '_'))
            off++;
        if (off == key || off == len || msg[off] != '=')
            return -EINVAL;
        eq = off++;
        while (off < len && msg[off] > ' ' && msg[off] < 0x7f)
            off++;
        end = off;
        if (end == eq + 1)
            return -EINVAL;
        if (eq - key == 5 && memcmp(msg + key, "ADOPT", 5) == 0) {
            /* A comma-separated list of wire versions the child reads. */
            for (size_t i = eq + 1; i < end;) {
                unsigned long v = 0;
                size_t d = i;
                while (i < end && msg[i] >= '0' && msg[i] <= '9' && i - d < 6)
                    v = v * 10 + (unsigned long)(msg[i++] - '0');
                if (i == d || (i < end && msg[i] != ','))
                    return -EINVAL;
                if (v == HF_MIG_VERSION)
                    *adopt = HF_MIG_VERSION;
                if (i < end && ++i == end)
                    return -EINVAL; /* a trailing comma */
            }
        }
    }
    return 0;
}
