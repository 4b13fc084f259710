/*
 * list.h - the intrusive doubly-linked lists of the HTTP module (internal
 * to libhandoff-http). A list is a head and a tail pointer; an element
 * carries its own prev and next pointers, named per list, so that one
 * element can be on several lists (a handle is on a timeout list and on
 * the ready list). Macros, as in <sys/queue.h>: the same two operations
 * serve every element type without casts. Each argument may be evaluated
 * more than once: pass plain lvalues.
 */
#ifndef HANDOFF_HTTP_LIST_H
#define HANDOFF_HTTP_LIST_H

#include <stddef.h>

/* Appends n, which is on no list through prev/next, at the tail. */
#define HS_LIST_APPEND(head, tail, n, prev, next)                                            \
    do {                                                                                     \
        (n)->next = NULL;                                                                    \
        (n)->prev = (tail);                                                                  \
        if (tail)                                                                            \
            (tail)->next = (n);                                                              \
        else                                                                                 \
            (head) = (n);                                                                    \
        (tail) = (n);                                                                        \
    } while (0)

/* Takes n out of the list; its prev and next become NULL. */
#define HS_LIST_UNLINK(head, tail, n, prev, next)                                            \
    do {                                                                                     \
        if ((n)->prev)                                                                       \
            (n)->prev->next = (n)->next;                                                     \
        else                                                                                 \
            (head) = (n)->next;                                                              \
        if ((n)->next)                                                                       \
            (n)->next->prev = (n)->prev;                                                     \
        else                                                                                 \
            (tail) = (n)->prev;                                                              \
        (n)->prev = (n)->next = NULL;                                                        \
    } while (0)

#endif
