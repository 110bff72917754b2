/* intake-sim's deadline clock: deadlines fire in order, never early, and a
 * stopped, moved or released one behaves as asked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sim_clock.h"

#define N 200

typedef struct {
  sim_clock *clock;
  sim_deadline d[N];
  uint64_t fired_at[N];
  int fired[N];
  int order[N];
  int nfired;
  int expect; /* firings before the clock is closed */
} bench;

static void on_due(sim_deadline *d) {
  bench *b = d->data;
  int i = (int)(d - b->d);
  b->fired_at[i] = sim_clock_now_ns();
  b->fired[i]++;
  b->order[b->nfired++] = i;
  if (b->nfired == b->expect) {
    for (int k = 0; k < N; k++) sim_deadline_release(&b->d[k]);
    sim_clock_close(b->clock);
  }
}

static void test_order_and_never_early(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  bench *b = calloc(1, sizeof *b);
  assert_non_null(b);
  assert_int_equal(sim_clock_open(&b->clock, &loop), 0);
  for (int i = 0; i < N; i++)
    assert_int_equal(sim_deadline_init(b->clock, &b->d[i], on_due, b), 0);

  /* Deadlines spread over 30 ms in a scrambled order, some of them equal,
   * some already past. */
  uint64_t now = sim_clock_now_ns();
  uint64_t due[N];
  srand(42);
  for (int i = 0; i < N; i++) {
    due[i] = now + (uint64_t)(rand() % 30000) * 1000u;
    if (i % 17 == 0) due[i] = now - 1000;
    if (i % 23 == 0 && i > 0) due[i] = due[i - 1];
    sim_deadline_start(&b->d[i], due[i]);
  }
  /* Every third one stopped, every fifth (not stopped) moved later; a
   * stopped one can be stopped again. */
  int expect = 0;
  for (int i = 0; i < N; i++) {
    if (i % 3 == 0) {
      sim_deadline_stop(&b->d[i]);
      sim_deadline_stop(&b->d[i]);
      assert_false(sim_deadline_armed(&b->d[i]));
      continue;
    }
    if (i % 5 == 0) {
      due[i] += 5000000;
      sim_deadline_start(&b->d[i], due[i]);
    }
    assert_true(sim_deadline_armed(&b->d[i]));
    expect++;
  }
  b->expect = expect;
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);

  assert_int_equal(b->nfired, expect);
  for (int i = 0; i < N; i++) {
    if (i % 3 == 0) {
      assert_int_equal(b->fired[i], 0);
      continue;
    }
    assert_int_equal(b->fired[i], 1);
    if (b->fired_at[i] < due[i])
      fail_msg("deadline %d fired %llu ns early", i,
               (unsigned long long)(due[i] - b->fired_at[i]));
  }
  for (int k = 1; k < b->nfired; k++)
    assert_true(due[b->order[k - 1]] <= due[b->order[k]]);
  assert_int_equal(uv_loop_close(&loop), 0);
  free(b);
}

typedef struct {
  sim_clock *clock;
  sim_deadline a, b;
  int a_fired, b_fired;
} pair;

static void pair_close(pair *p) {
  sim_deadline_release(&p->a);
  sim_deadline_release(&p->b);
  sim_clock_close(p->clock);
}

/* A fires first, re-arms itself once and releases B: B never fires. */
static void on_a(sim_deadline *d) {
  pair *p = d->data;
  if (++p->a_fired == 1) {
    sim_deadline_release(&p->b);
    sim_deadline_start(&p->a, sim_clock_now_ns() + 1000000);
    return;
  }
  pair_close(p);
}

static void on_b(sim_deadline *d) {
  pair *p = d->data;
  p->b_fired++;
}

static void test_callbacks_rearm_and_release(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  pair p;
  memset(&p, 0, sizeof p);
  assert_int_equal(sim_clock_open(&p.clock, &loop), 0);
  assert_int_equal(sim_deadline_init(p.clock, &p.a, on_a, &p), 0);
  assert_int_equal(sim_deadline_init(p.clock, &p.b, on_b, &p), 0);
  uint64_t now = sim_clock_now_ns();
  sim_deadline_start(&p.b, now + 2000000);
  sim_deadline_start(&p.a, now + 1000000);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(p.a_fired, 2);
  assert_int_equal(p.b_fired, 0);
  /* Released deadlines are inert. */
  sim_deadline_stop(&p.a);
  sim_deadline_release(&p.a);
  assert_false(sim_deadline_armed(&p.a));
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* Closing a clock with nothing armed lets the loop run out. */
static void test_close_idle(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  sim_clock *c = NULL;
  assert_int_equal(sim_clock_open(&c, &loop), 0);
  sim_deadline d;
  memset(&d, 0, sizeof d);
  sim_deadline_release(&d); /* never initialised: harmless */
  sim_clock_close(c);
  sim_clock_close(NULL);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_order_and_never_early),
      cmocka_unit_test(test_callbacks_rearm_and_release),
      cmocka_unit_test(test_close_idle),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
