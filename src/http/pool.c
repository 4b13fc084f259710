/*
 * pool.c - the bounded free list of pool.h.
 */
#include "pool.h"

#include <stddef.h>

struct hs_pooled *hs_pool_get(struct hs_pool *p)
{
    struct hs_pooled *o = p->head;
    if (o) {
        p->head = o->next;
        p->n--;
        o->next = NULL;
    }
    return o;
}

bool hs_pool_put(struct hs_pool *p, struct hs_pooled *o)
{
    if (p->n >= p->max)
        return false;
    o->next = p->head;
    p->head = o;
    p->n++;
    return true;
}

void hs_pool_clear(struct hs_pool *p, void (*destroy)(struct hs_pooled *o))
{
    while (p->head) {
        struct hs_pooled *o = p->head;
        p->head = o->next;
        destroy(o);
    }
    p->n = 0;
}
