/*
 * env.c - the HANDOFF_PRELOAD variable and LD_PRELOAD lists.
 *
 * The supervisor describes its sockets in the variable instead of passing
 * them as fds: the shim fetches a socket from the broker when the server
 * binds its address, so close-all loops, closefrom()/close_range(), fd
 * numbers and LISTEN_PID in forked children cannot get in the way. What
 * the variable carries is enough to decide locally whether a bind is the
 * supervisor's (pl_match) without asking, and to explain a refusal when
 * the broker cannot be reached (another network namespace).
 *
 * Parsing is strict: the variable is written by the supervisor, so a
 * malformed one means a foreign or corrupted environment, and the shim
 * then stays out of the way entirely.
 */
#include "preload.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static int fail(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        (void)snprintf(err, errlen, "%s", msg);
    return -EINVAL;
}

/* Decimal, no sign, no leading junk, at most max. */
static bool parse_u64(const char *s, size_t n, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;

    if (n == 0 || n > 20)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* One listen entry: TYPE.PROTOCOL.V6ONLY.IFINDEX.DEV.INO.SINO.HEX */
static bool parse_entry(const char *s, size_t n, struct pl_sock *out)
{
    uint64_t f[7];
    uint8_t raw[sizeof out->name + 8];
    const char *end = s + n;
    size_t hexlen, k = 0;

    for (int i = 0; i < 7; i++) {
        const char *dot = memchr(s, '.', (size_t)(end - s));
        if (!dot)
            return false;
        if (!parse_u64(s, (size_t)(dot - s), i < 4 ? INT_MAX : UINT64_MAX, &f[i]))
            return false;
        s = dot + 1;
    }
    hexlen = (size_t)(end - s);
    if (hexlen == 0 || hexlen % 2 || hexlen / 2 > sizeof raw)
        return false;
    for (size_t i = 0; i < hexlen; i += 2) {
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        raw[k++] = (uint8_t)(hi << 4 | lo);
    }
    memset(out, 0, sizeof *out);
    if (pl_sock_from_addr(out, raw, k) < 0)
        return false;
    if (f[0] != SOCK_STREAM && f[0] != SOCK_DGRAM && f[0] != SOCK_SEQPACKET)
        return false;
    if (f[2] > 1)
        return false;
    out->type = (int)f[0];
    out->protocol = (int)f[1];
    out->v6only = (int)f[2];
    out->ifindex = (int)f[3];
    out->dev = f[4];
    out->ino = f[5];
    out->sino = f[6];
    /* A held socket is always bound to something. */
    if (out->family == AF_UNIX ? out->ukind == PL_UNIX_UNNAMED : out->port == 0)
        return false;
    return true;
}

int pl_env_parse(const char *value, struct pl_env *e, char *err, size_t errlen)
{
    const char *p = value;
    unsigned seen = 0;
    enum {
        K_DEPTH = 1, K_READY = 2, K_LOG = 4, K_NETNS = 8, K_SOCK = 16, K_LIB = 32, K_LISTEN = 64, K_PID = 128,
        K_STOP = 256
    };

    memset(e, 0, sizeof *e);
    e->log = 1;
    if (err && errlen)
        err[0] = '\0';
    if (!value)
        return fail(err, errlen, "not set");
    if (strncmp(p, PL_ENV_VERSION ";", sizeof PL_ENV_VERSION) != 0 &&
        strcmp(p, PL_ENV_VERSION) != 0)
        return fail(err, errlen, "not version " PL_ENV_VERSION);
    p += strlen(PL_ENV_VERSION);
    while (*p == ';') {
        const char *key = ++p, *eq, *val, *end;
        size_t klen, vlen;
        unsigned bit = 0;
        uint64_t v;

        end = strchr(p, ';');
        if (!end)
            end = p + strlen(p);
        eq = memchr(key, '=', (size_t)(end - key));
        if (!eq)
            return fail(err, errlen, "an item without '='");
        klen = (size_t)(eq - key);
        val = eq + 1;
        vlen = (size_t)(end - val);
        p = end;
#define KEY(s) (klen == sizeof(s) - 1 && memcmp(key, s, klen) == 0)
        if (KEY("depth")) {
            bit = K_DEPTH;
            if (!parse_u64(val, vlen, 64, &v))
                return fail(err, errlen, "bad depth");
            e->depth = (int)v;
        } else if (KEY("ready")) {
            bit = K_READY;
            if (!parse_u64(val, vlen, 1, &v))
                return fail(err, errlen, "bad ready");
            e->ready = v == 1;
        } else if (KEY("log")) {
            bit = K_LOG;
            if (!parse_u64(val, vlen, 2, &v))
                return fail(err, errlen, "bad log");
            e->log = (int)v;
        } else if (KEY("stop")) {
            bit = K_STOP;
            if (!parse_u64(val, vlen, 64, &v))
                return fail(err, errlen, "bad stop");
            e->stop_signal = (int)v;
        } else if (KEY("netns")) {
            const char *colon = memchr(val, ':', vlen);
            bit = K_NETNS;
            if (!colon || !parse_u64(val, (size_t)(colon - val), UINT64_MAX, &e->netns_dev) ||
                !parse_u64(colon + 1, vlen - (size_t)(colon - val) - 1, UINT64_MAX, &e->netns_ino))
                return fail(err, errlen, "bad netns");
        } else if (KEY("sock")) {
            bit = K_SOCK;
            if (vlen < 2 || vlen >= sizeof e->sock || val[0] != '@' || memchr(val, '\0', vlen))
                return fail(err, errlen, "bad sock");
            memcpy(e->sock, val, vlen);
            e->sock[vlen] = '\0';
        } else if (KEY("lib")) {
            bit = K_LIB;
            if (vlen == 0 || vlen >= sizeof e->lib || val[0] != '/')
                return fail(err, errlen, "bad lib");
            memcpy(e->lib, val, vlen);
            e->lib[vlen] = '\0';
        } else if (KEY("listen")) {
            const char *q = val, *qend = val + vlen;
            bit = K_LISTEN;
            while (q < qend) {
                const char *comma = memchr(q, ',', (size_t)(qend - q));
                const char *ee = comma ? comma : qend;
                if (e->nheld == PL_MAX_HELD)
                    return fail(err, errlen, "too many sockets");
                if (!parse_entry(q, (size_t)(ee - q), &e->held[e->nheld]))
                    return fail(err, errlen, "bad listen entry");
                e->nheld++;
                q = comma ? comma + 1 : qend;
                if (comma && q == qend)
                    return fail(err, errlen, "bad listen entry");
            }
        } else if (KEY("pid")) {
            bit = K_PID;
            if (!parse_u64(val, vlen, INT_MAX, &v))
                return fail(err, errlen, "bad pid");
            e->pid = (long)v;
        }
#undef KEY
        if (bit & seen)
            return fail(err, errlen, "a key given twice");
        seen |= bit;
    }
    if (*p)
        return fail(err, errlen, "trailing bytes");
    if (!(seen & K_SOCK) || !(seen & K_PID))
        return fail(err, errlen, "sock or pid missing");
    return 0;
}

static const char hexdig[] = "0123456789abcdef";

int pl_env_format(const struct pl_env *e, char *buf, size_t len)
{
    size_t n = 0;
    int r;

    if (strchr(e->lib, ';') || strchr(e->sock, ';') || e->sock[0] != '@' || e->lib[0] != '/')
        return -EINVAL;
    r = snprintf(buf, len, PL_ENV_VERSION ";depth=%d;ready=%d;log=%d;stop=%d;netns=%llu:%llu;sock=%s;lib=%s;listen=",
                 e->depth, e->ready ? 1 : 0, e->log, e->stop_signal, (unsigned long long)e->netns_dev,
                 (unsigned long long)e->netns_ino, e->sock, e->lib);
    if (r < 0 || (size_t)r >= len)
        return -ENOSPC;
    n = (size_t)r;
    for (size_t i = 0; i < e->nheld; i++) {
        const struct pl_sock *s = &e->held[i];
        uint8_t raw[sizeof s->name + 8];
        int alen = pl_sock_to_addr(s, raw, sizeof raw);
        if (alen < 0)
            return -EINVAL;
        r = snprintf(buf + n, len - n, "%s%d.%d.%d.%d.%llu.%llu.%llu.", i ? "," : "", s->type, s->protocol,
                     s->v6only ? 1 : 0, s->ifindex, (unsigned long long)s->dev, (unsigned long long)s->ino,
                     (unsigned long long)s->sino);
        if (r < 0 || (size_t)r >= len - n)
            return -ENOSPC;
        n += (size_t)r;
        if (len - n <= (size_t)alen * 2)
            return -ENOSPC;
        for (int k = 0; k < alen; k++) {
            buf[n++] = hexdig[raw[k] >> 4];
            buf[n++] = hexdig[raw[k] & 15];
        }
        buf[n] = '\0';
    }
    r = snprintf(buf + n, len - n, ";pid=%0*d", PL_PID_DIGITS, 0);
    if (r < 0 || (size_t)r >= len - n)
        return -ENOSPC;
    return (int)(n + (size_t)r);
}

void pl_put_pid(char *dst, long pid)
{
    unsigned long v = pid < 0 ? 0 : (unsigned long)pid;
    for (int i = PL_PID_DIGITS - 1; i >= 0; i--) {
        dst[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

/* ---- LD_PRELOAD ---- */

static bool is_sep(char c)
{
    return c == ' ' || c == ':';
}

bool pl_preload_is_shim(const char *entry, size_t len, const char *lib)
{
    size_t base = len, blen = sizeof PL_LIB_NAME - 1;

    if (lib && *lib && strlen(lib) == len && memcmp(entry, lib, len) == 0)
        return true;
    while (base > 0 && entry[base - 1] != '/')
        base--;
    return len - base == blen && memcmp(entry + base, PL_LIB_NAME, blen) == 0;
}

size_t pl_preload_strip(char *list, const char *lib)
{
    size_t r = 0, w = 0;
    char sep = ':';
    bool sep_seen = false;

    while (list[r]) {
        size_t start, len;
        while (is_sep(list[r])) {
            if (!sep_seen) {
                sep = list[r];
                sep_seen = true;
            }
            r++;
        }
        start = r;
        while (list[r] && !is_sep(list[r]))
            r++;
        len = r - start;
        if (len == 0 || pl_preload_is_shim(list + start, len, lib))
            continue;
        if (w > 0)
            list[w++] = sep;
        memmove(list + w, list + start, len);
        w += len;
    }
    list[w] = '\0';
    return w;
}

int pl_preload_add(char *out, size_t outlen, const char *existing, const char *lib)
{
    size_t n, l;

    if (!lib || lib[0] != '/' || strpbrk(lib, " :\t\n"))
        return -EINVAL;
    l = strlen(lib);
    n = existing ? strlen(existing) : 0;
    if (n + 1 + l + 1 > outlen)
        return -ENOSPC;
    if (n)
        memcpy(out, existing, n);
    out[n] = '\0';
    n = pl_preload_strip(out, lib);
    if (n)
        out[n++] = ':';
    memcpy(out + n, lib, l + 1);
    return 0;
}
