/*
 * buf.h - a growable byte buffer (internal to libhandoff-http).
 */
#ifndef HANDOFF_HTTP_BUF_H
#define HANDOFF_HTTP_BUF_H

#include <stddef.h>

typedef struct hs_buf {
    char *p;
    size_t len;
    size_t cap;
} hs_buf;

/* Makes room for extra more bytes (capacity doubles, from 256).
 * Returns 0 or -ENOMEM (b unchanged). */
int hs_buf_reserve(hs_buf *b, size_t extra);

/* Appends n bytes. Returns 0 or -ENOMEM (b unchanged). */
int hs_buf_append(hs_buf *b, const void *data, size_t n);

/* Empties b, and frees its memory if it grew beyond keep bytes. */
void hs_buf_trim(hs_buf *b, size_t keep);

/* Frees b's memory; b is then empty. */
void hs_buf_free(hs_buf *b);

#endif
