/* xqueue: results handed from a worker thread to the loop thread.
 *
 * A worker appends items; the loop takes them all at once, oldest first, as
 * a chain linked through the items' own `next` field (its offset is given
 * once, at init). Appending never blocks for long: the queue's mutex guards
 * two pointers. xqueue_post also wakes the loop through the notify hook
 * (a uv_async_send, which takes no lock of ours); xqueue_push leaves the
 * wake-up to the caller, for a worker that hands over several items and
 * wakes the loop once.
 *
 * Threads: push/post from any thread, take from the loop thread; init and
 * destroy while no other thread uses the queue. */
#ifndef IC_XQUEUE_H
#define IC_XQUEUE_H

#include <pthread.h>
#include <stddef.h>

typedef struct {
  pthread_mutex_t mu;
  void *head, *tail;
  size_t next_off; /* where an item keeps its next pointer */
  void (*notify)(void *ctx);
  void *ctx;
} xqueue;

/* A queue of TYPE items linked through their MEMBER field. */
#define XQUEUE_INIT(q, type, member, notify, ctx) \
  xqueue_init((q), offsetof(type, member), (notify), (ctx))

void xqueue_init(xqueue *q, size_t next_off, void (*notify)(void *ctx), void *ctx);
/* Append ITEM (its next pointer is cleared). */
void xqueue_push(xqueue *q, void *item);
/* Append ITEM and wake the loop. */
void xqueue_post(xqueue *q, void *item);
/* Wake the loop (no-op without a notify hook). */
void xqueue_wake(xqueue *q);
/* Everything queued, oldest first, or NULL; the queue is empty after. */
void *xqueue_take(xqueue *q);
/* Release the mutex; items still queued are the caller's to free first
 * (take them). */
void xqueue_destroy(xqueue *q);

#endif
