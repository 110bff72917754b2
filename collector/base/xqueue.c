#include "base/xqueue.h"

static void **next_of(const xqueue *q, void *item) {
  return (void **)((char *)item + q->next_off);
}

void xqueue_init(xqueue *q, size_t next_off, void (*notify)(void *ctx), void *ctx) {
  pthread_mutex_init(&q->mu, NULL);
  q->head = q->tail = NULL;
  q->next_off = next_off;
  q->notify = notify;
  q->ctx = ctx;
}

void xqueue_push(xqueue *q, void *item) {
  *next_of(q, item) = NULL;
  pthread_mutex_lock(&q->mu);
  if (q->tail)
    *next_of(q, q->tail) = item;
  else
    q->head = item;
  q->tail = item;
  pthread_mutex_unlock(&q->mu);
}

void xqueue_wake(xqueue *q) {
  if (q->notify) q->notify(q->ctx);
}

void xqueue_post(xqueue *q, void *item) {
  xqueue_push(q, item);
  xqueue_wake(q);
}

void *xqueue_take(xqueue *q) {
  pthread_mutex_lock(&q->mu);
  void *head = q->head;
  q->head = q->tail = NULL;
  pthread_mutex_unlock(&q->mu);
  return head;
}

void xqueue_destroy(xqueue *q) { pthread_mutex_destroy(&q->mu); }
