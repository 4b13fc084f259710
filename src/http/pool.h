/*
 * pool.h - a bounded free list of equal objects (internal to
 * libhandoff-http), one per worker thread and kind of object, so that
 * steady load allocates nothing. Not thread-safe: one thread per pool.
 */
#ifndef HANDOFF_HTTP_POOL_H
#define HANDOFF_HTTP_POOL_H

#include <stdbool.h>

/* The first member of every pooled object. */
struct hs_pooled {
    struct hs_pooled *next;
};

struct hs_pool {
    struct hs_pooled *head;
    unsigned n;   /* objects in the pool */
    unsigned max; /* at most this many are kept */
};

/* An object from the pool, or NULL if it is empty. */
struct hs_pooled *hs_pool_get(struct hs_pool *p);

/* Keeps o for reuse. Returns false when the pool is full: the caller then
 * frees o itself. */
bool hs_pool_put(struct hs_pool *p, struct hs_pooled *o);

/* Empties the pool, calling destroy on each object. */
void hs_pool_clear(struct hs_pool *p, void (*destroy)(struct hs_pooled *o));

#endif
