/*
 * buf.c - the growable byte buffer of buf.h.
 */
#include "buf.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int hs_buf_reserve(hs_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra) {
        if (cap > SIZE_MAX / 2)
            return -ENOMEM;
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p)
        return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

int hs_buf_append(hs_buf *b, const void *data, size_t n)
{
    if (n == 0)
        return 0;
    int r = hs_buf_reserve(b, n);
    if (r < 0)
        return r;
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

void hs_buf_trim(hs_buf *b, size_t keep)
{
    if (b->cap > keep)
        hs_buf_free(b);
    b->len = 0;
}

void hs_buf_free(hs_buf *b)
{
    free(b->p);
    *b = (hs_buf){0};
}
