/* base/xqueue: the hand-off from worker threads to the loop keeps every
 * item, in each thread's order, and wakes the loop when asked to. */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "base/xqueue.h"

typedef struct item {
  int payload;
  struct item *next; /* not the first field: the offset is honoured */
  int thread, n;
} item;

static int wakes;
static void count_wake(void *ctx) {
  (void)ctx;
  __atomic_add_fetch(&wakes, 1, __ATOMIC_RELAXED);
}

static item *make(int thread, int n) {
  item *it = calloc(1, sizeof *it);
  assert_non_null(it);
  it->thread = thread;
  it->n = n;
  it->next = (item *)0x1; /* cleared by the queue */
  return it;
}

static void free_chain(item *it) {
  while (it) {
    item *next = it->next;
    free(it);
    it = next;
  }
}

static void test_order_and_wakes(void **state) {
  (void)state;
  xqueue q;
  wakes = 0;
  XQUEUE_INIT(&q, item, next, count_wake, NULL);
  assert_null(xqueue_take(&q));
  xqueue_push(&q, make(0, 1));
  xqueue_push(&q, make(0, 2));
  assert_int_equal(wakes, 0); /* push leaves the wake-up to the caller */
  xqueue_post(&q, make(0, 3));
  assert_int_equal(wakes, 1);
  xqueue_wake(&q);
  assert_int_equal(wakes, 2);
  item *chain = xqueue_take(&q);
  int n = 0;
  for (item *it = chain; it; it = it->next) assert_int_equal(it->n, ++n);
  assert_int_equal(n, 3);
  assert_null(xqueue_take(&q)); /* empty after a take */
  free_chain(chain);
  /* Usable again after a take. */
  xqueue_post(&q, make(0, 4));
  chain = xqueue_take(&q);
  assert_non_null(chain);
  assert_int_equal(chain->n, 4);
  assert_null(chain->next);
  free_chain(chain);
  xqueue_destroy(&q);
}

#define THREADS 4
#define PER_THREAD 20000

static int finished; /* producers done posting */

typedef struct {
  xqueue *q;
  int thread;
} producer;

static void *produce(void *arg) {
  producer *p = arg;
  for (int i = 1; i <= PER_THREAD; i++) xqueue_post(p->q, make(p->thread, i));
  __atomic_add_fetch(&finished, 1, __ATOMIC_RELEASE);
  return NULL;
}

/* Four threads post while the main thread takes: nothing is lost or
 * doubled, and each thread's items come in its order. */
static void test_concurrent_producers(void **state) {
  (void)state;
  xqueue q;
  wakes = finished = 0;
  XQUEUE_INIT(&q, item, next, count_wake, NULL);
  pthread_t t[THREADS];
  producer pr[THREADS];
  for (int i = 0; i < THREADS; i++) {
    pr[i] = (producer){&q, i};
    assert_int_equal(pthread_create(&t[i], NULL, produce, &pr[i]), 0);
  }
  int last[THREADS] = {0};
  long total = 0;
  for (;;) {
    /* Read before the take: once all are done, an empty take is the end. */
    bool all_done = __atomic_load_n(&finished, __ATOMIC_ACQUIRE) == THREADS;
    item *chain = xqueue_take(&q);
    if (!chain && all_done) break;
    for (item *it = chain; it; it = it->next) {
      assert_int_equal(it->n, last[it->thread] + 1);
      last[it->thread] = it->n;
      total++;
    }
    free_chain(chain);
    if (!chain) sched_yield(); /* nothing yet: let the producers run */
  }
  for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
  assert_null(xqueue_take(&q));
  assert_int_equal(total, (long)THREADS * PER_THREAD);
  assert_int_equal(wakes, THREADS * PER_THREAD);
  xqueue_destroy(&q);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_order_and_wakes),
      cmocka_unit_test(test_concurrent_producers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
