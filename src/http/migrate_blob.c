/*
 * migrate_blob.c - the state blob an HTTP/1.1 connection carries to the
 * next generation (see migrate.h for the layout). Pure: no I/O, so that
 * fuzz/fuzz-http-migrate.c runs the parser alone.
 */
#include "migrate.h"

#include "handoff.h"

#include <errno.h>
#include <string.h>


static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

void hs_mig_build(const struct hs_mig_state *st, unsigned char *out)
{
    memset(out, 0, HS_MIG_HDR);
    memcpy(out, "hsH1", 4);
    out[4] = HS_MIG_VERSION;
    out[5] = HS_MIG_HDR;
    out[6] = HS_MIG_PROTO_H1;
    out[7] = 0;
    put32(out + 8, st->nreq);
    put32(out + 12, (uint32_t)st->len);
    put64(out + 16, st->elapsed);
    out[24] = st->wait;
    if (st->len)
        memcpy(out + HS_MIG_HDR, st->in, st->len);
}

int hs_mig_parse(const void *blob, size_t len, struct hs_mig_state *st)
{
    const unsigned char *p = blob;
    if (!p || len < 8 || memcmp(p, "hsH1", 4) != 0 || p[4] != HS_MIG_VERSION)
        return -EPROTO;
    size_t hdr = p[5];
    if (hdr < HS_MIG_HDR || hdr > len)
        return -EINVAL;
    if (p[6] != HS_MIG_PROTO_H1 || p[7] != 0)
        return -EPROTO;
    uint32_t l = get32(p + 12);
    if (l != len - hdr || l > HANDOFF_MIGRATE_STATE_MAX)
        return -EINVAL;
    st->nreq = get32(p + 8);
    st->elapsed = get64(p + 16);
    st->wait = p[24];
    if (st->wait > HS_MIG_WAIT_HEAD)
        st->wait = l ? HS_MIG_WAIT_HEAD : HS_MIG_WAIT_IDLE; /* a later minor's */
    st->in = l ? (const char *)p + hdr : NULL;
    st->len = l;
    return 0;
}
