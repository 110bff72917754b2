/* Request planner: awkward register maps for the pure core, and the exact
 * (minimal) request lists for the built-in profiles. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "profile/planner.h"
#include "profile/profile.h"
#include "profile_load.h"

#define H MB_TABLE_HOLDING
#define I MB_TABLE_INPUT
#define N(a) (sizeof(a) / sizeof((a)[0]))

/* Plan IN and compare with EXPECT exactly (order included). */
static void expect_plan(const plan_range *in, size_t n, uint16_t gap,
                        uint16_t maxreg, const plan_range *expect,
                        size_t nexpect) {
  plan_range out[64];
  memset(out, 0xAB, sizeof out);
  int got = plan_ranges(in, n, gap, maxreg, out, N(out));
  assert_int_equal(got, (int)nexpect);
  for (size_t i = 0; i < nexpect; i++) {
    assert_int_equal(out[i].table, expect[i].table);
    assert_int_equal(out[i].address, expect[i].address);
    assert_int_equal(out[i].count, expect[i].count);
  }
}

static void test_empty(void **state) {
  (void)state;
  plan_range out[1];
  assert_int_equal(plan_ranges(NULL, 0, 8, 125, out, 1), 0);
}

static void test_contiguous(void **state) {
  (void)state;
  const plan_range in[] = {{H, 0, 2}, {H, 2, 2}, {H, 4, 1}};
  const plan_range ex[] = {{H, 0, 5}};
  expect_plan(in, N(in), 0, 125, ex, N(ex));
}

static void test_overlapping(void **state) {
  (void)state;
  const plan_range in[] = {{H, 0, 4}, {H, 2, 4}, {H, 3, 1}};
  const plan_range ex[] = {{H, 0, 6}};
  expect_plan(in, N(in), 0, 125, ex, N(ex));
  /* A range inside a longer one adds nothing; the longer one's end holds. */
  const plan_range in2[] = {{H, 0, 10}, {H, 2, 3}, {H, 12, 2}};
  const plan_range ex2[] = {{H, 0, 14}};
  expect_plan(in2, N(in2), 2, 125, ex2, N(ex2));
  const plan_range ex3[] = {{H, 0, 10}, {H, 12, 2}};
  expect_plan(in2, N(in2), 1, 125, ex3, N(ex3));
}

static void test_duplicates(void **state) {
  (void)state;
  const plan_range in[] = {{H, 10, 2}, {H, 10, 2}, {H, 10, 2}, {H, 10, 1}};
  const plan_range ex[] = {{H, 10, 2}};
  expect_plan(in, N(in), 0, 125, ex, N(ex));
}

static void test_unsorted(void **state) {
  (void)state;
  const plan_range in[] = {{H, 20, 2}, {H, 0, 2}, {H, 10, 2}};
  const plan_range one[] = {{H, 0, 22}};
  expect_plan(in, N(in), 8, 125, one, N(one));
  const plan_range three[] = {{H, 0, 2}, {H, 10, 2}, {H, 20, 2}};
  expect_plan(in, N(in), 7, 125, three, N(three));
  /* The caller's array is left as it was. */
  assert_int_equal(in[0].address, 20);
}

static void test_gap_boundary(void **state) {
  (void)state;
  /* Hole of exactly max_gap (8: registers 2..9): bridged. */
  const plan_range exact[] = {{H, 0, 2}, {H, 10, 2}};
  const plan_range merged[] = {{H, 0, 12}};
  expect_plan(exact, N(exact), 8, 125, merged, N(merged));
  /* Hole of max_gap + 1: two requests. */
  const plan_range over[] = {{H, 0, 2}, {H, 11, 2}};
  const plan_range split[] = {{H, 0, 2}, {H, 11, 2}};
  expect_plan(over, N(over), 8, 125, split, N(split));
  /* max_gap 0: only touching ranges merge. */
  const plan_range touch[] = {{H, 0, 2}, {H, 2, 2}, {H, 5, 1}};
  const plan_range t_ex[] = {{H, 0, 4}, {H, 5, 1}};
  expect_plan(touch, N(touch), 0, 125, t_ex, N(t_ex));
}

static void test_max_registers(void **state) {
  (void)state;
  /* 0..119 and 121..124 fit in 125 exactly. */
  const plan_range fit[] = {{H, 0, 120}, {H, 121, 4}};
  const plan_range fit_ex[] = {{H, 0, 125}};
  expect_plan(fit, N(fit), 8, 125, fit_ex, N(fit_ex));
  /* One register more and the second range starts its own request, even
   * though the hole is within max_gap. */
  const plan_range push[] = {{H, 0, 120}, {H, 122, 4}};
  const plan_range push_ex[] = {{H, 0, 120}, {H, 122, 4}};
  expect_plan(push, N(push), 8, 125, push_ex, N(push_ex));
  /* Contiguous ranges beyond 125 split at a range boundary. */
  const plan_range run[] = {{H, 0, 100}, {H, 100, 30}, {H, 130, 2}};
  const plan_range run_ex[] = {{H, 0, 100}, {H, 100, 32}};
  expect_plan(run, N(run), 8, 125, run_ex, N(run_ex));
  /* A smaller limit from the site. */
  const plan_range small[] = {{H, 0, 2}, {H, 2, 2}, {H, 4, 2}, {H, 6, 2}};
  const plan_range small_ex[] = {{H, 0, 4}, {H, 4, 4}};
  expect_plan(small, N(small), 8, 4, small_ex, N(small_ex));
  /* Overlap that would push past the limit. */
  const plan_range ov[] = {{H, 0, 100}, {H, 90, 30}};
  const plan_range ov_ex[] = {{H, 0, 120}};
  expect_plan(ov, N(ov), 0, 125, ov_ex, N(ov_ex));
  const plan_range ov_ex2[] = {{H, 0, 100}, {H, 90, 30}};
  expect_plan(ov, N(ov), 0, 110, ov_ex2, N(ov_ex2));
}

static void test_top_of_address_space(void **state) {
  (void)state;
  const plan_range last[] = {{H, 65534, 2}};
  expect_plan(last, N(last), 8, 125, last, N(last));
  const plan_range one[] = {{H, 65535, 1}};
  expect_plan(one, N(one), 8, 125, one, N(one));
  const plan_range two[] = {{H, 65534, 2}, {H, 65530, 2}};
  const plan_range two_ex[] = {{H, 65530, 6}};
  expect_plan(two, N(two), 8, 125, two_ex, N(two_ex));
  plan_range out[4];
  const plan_range past[] = {{H, 65535, 2}};
  assert_int_equal(plan_ranges(past, 1, 8, 125, out, 4), -1);
  const plan_range past4[] = {{H, 65534, 4}};
  assert_int_equal(plan_ranges(past4, 1, 8, 125, out, 4), -1);
}

static void test_refused(void **state) {
  (void)state;
  plan_range out[4];
  const plan_range longr[] = {{H, 0, 126}};
  assert_int_equal(plan_ranges(longr, 1, 8, 125, out, 4), -1);
  const plan_range ok125[] = {{H, 0, 125}};
  assert_int_equal(plan_ranges(ok125, 1, 8, 125, out, 4), 1);
  const plan_range longer_than_site[] = {{H, 0, 2}, {H, 10, 10}};
  assert_int_equal(plan_ranges(longer_than_site, 2, 8, 8, out, 4), -1);
  const plan_range empty[] = {{H, 0, 2}, {H, 4, 0}};
  assert_int_equal(plan_ranges(empty, 2, 8, 125, out, 4), -1);
  const plan_range fine[] = {{H, 0, 2}};
  assert_int_equal(plan_ranges(fine, 1, 8, 0, out, 4), -1);
  assert_int_equal(plan_ranges(fine, 1, 8, 126, out, 4), -1);
}

static void test_tables_never_merge(void **state) {
  (void)state;
  const plan_range in[] = {{I, 0, 2}, {H, 0, 2}, {H, 2, 2}, {I, 4, 2},
                           {I, 100, 1}};
  const plan_range ex[] = {{H, 0, 4}, {I, 0, 6}, {I, 100, 1}};
  expect_plan(in, N(in), 8, 125, ex, N(ex));
  /* Same addresses, different tables: two requests, not one. */
  const plan_range same[] = {{H, 7, 1}, {I, 7, 1}};
  const plan_range same_ex[] = {{H, 7, 1}, {I, 7, 1}};
  expect_plan(same, N(same), 125, 125, same_ex, N(same_ex));
}

static void test_capacity(void **state) {
  (void)state;
  const plan_range in[] = {{H, 0, 1}, {H, 50, 1}, {H, 100, 1}};
  plan_range out[3];
  memset(out, 0, sizeof out);
  out[1].address = 999;
  assert_int_equal(plan_ranges(in, N(in), 0, 125, out, 1), 3);
  assert_int_equal(out[0].address, 0);
  assert_int_equal(out[1].address, 999); /* untouched */
  assert_int_equal(plan_ranges(in, N(in), 0, 125, NULL, 0), 3);
  assert_int_equal(plan_ranges(in, N(in), 0, 125, out, 3), 3);
  assert_int_equal(out[2].address, 100);
}

/* ------------------------------------------------ built-in profiles */

static mb_profile *load(const char *name) {
  char err[512] = "";
  mb_profile *p = profile_load(name, NULL, NULL, err, sizeof err);
  if (p == NULL)
    fail_msg("%s", err);
  return p;
}

static void expect_built(const mb_profile *p, int gap, int maxreg,
                         const plan_range *ex, size_t n) {
  char err[256] = "";
  mb_plan *plan = plan_build(p, gap, maxreg, err, sizeof err);
  if (plan == NULL)
    fail_msg("%s", err);
  assert_int_equal(plan->nreqs, n);
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(plan->reqs[i].table, ex[i].table);
    assert_int_equal(plan->reqs[i].address, ex[i].address);
    assert_int_equal(plan->reqs[i].count, ex[i].count);
    assert_int_equal(plan->offsets[i], off);
    off += ex[i].count;
  }
  assert_int_equal(plan->total_words, off);
  plan_free(plan);
}

static void test_builtin_tuf2000m(void **state) {
  (void)state;
  mb_profile *p = load("tuf2000m");
  /* Fields at 0-1, 4-5, 8-11, 24-27, 71, 91. Holes: 2 (2-3), 2 (6-7), 12
   * (12-23), 43 (28-70), 19 (72-90). With max_gap 8 only the first two are
   * bridged: four requests, and no plan does better since each remaining
   * hole is larger than 8. */
  const plan_range ex[] = {{H, 0, 12}, {H, 24, 4}, {H, 71, 1}, {H, 91, 1}};
  expect_built(p, -1, 0, ex, N(ex));
  /* A site cannot widen the profile's max_gap. */
  expect_built(p, 50, 0, ex, N(ex));
  const plan_range ex0[] = {{H, 0, 2},  {H, 4, 2},  {H, 8, 4},
                            {H, 24, 4}, {H, 71, 1}, {H, 91, 1}};
  expect_built(p, 0, 0, ex0, N(ex0));
  /* A site limit of 10 registers: 0..11 no longer fits in one. 0..9 would
   * also be five requests, but would read the totalizer's integer (8-9) and
   * fraction (10-11) in different requests, which can tear when the count
   * carries between them: a field is read whole. */
  const plan_range ex10[] = {{H, 0, 6}, {H, 8, 4}, {H, 24, 4}, {H, 71, 1},
                             {H, 91, 1}};
  expect_built(p, -1, 10, ex10, N(ex10));
  profile_free(p);
}

static void test_builtin_mag00h(void **state) {
  (void)state;
  mb_profile *p = load("mag-00h");
  /* 0-1 flow, 2 unit, 3-6 total, 7 unit, 13-15 alarms, 18-19 velocity:
   * holes of 5 (8-12) and 2 (16-17) are within 8, so one read of 20. */
  const plan_range ex[] = {{H, 0, 20}};
  expect_built(p, -1, 0, ex, N(ex));
  const plan_range ex4[] = {{H, 0, 8}, {H, 13, 7}};
  expect_built(p, 4, 0, ex4, N(ex4));
  const plan_range ex1[] = {{H, 0, 8}, {H, 13, 3}, {H, 18, 2}};
  expect_built(p, 1, 0, ex1, N(ex1));
  profile_free(p);
}

static void test_builtin_open_channel(void **state) {
  (void)state;
  mb_profile *p = load("open-channel");
  /* 0-11 without a hole (0x04 read once for both flow fields). */
  const plan_range ex[] = {{H, 0, 12}};
  expect_built(p, -1, 0, ex, N(ex));
  expect_built(p, 0, 0, ex, N(ex));
  const plan_range ex4[] = {{H, 0, 4}, {H, 4, 4}, {H, 8, 4}};
  expect_built(p, -1, 4, ex4, N(ex4));
  profile_free(p);
}

static void test_build_errors(void **state) {
  (void)state;
  char err[256] = "";
  mb_profile *p = load("tuf2000m");
  assert_null(plan_build(p, -1, 126, err, sizeof err));
  assert_non_null(strstr(err, "max_registers"));
  /* A 2-register float cannot be read in requests of 1: the first such
   * field is named. */
  err[0] = '\0';
  assert_null(plan_build(p, -1, 1, err, sizeof err));
  assert_non_null(strstr(err, "flow_m3h"));
  profile_free(p);
  /* An f64 in requests of 3. */
  static const char text[] = "name: t\nfields:\n"
                             "  - {name: a, address: 0, type: u16}\n"
                             "  - {name: big, address: 10, type: f64}\n";
  p = profile_load_string("t.yaml", text, sizeof text - 1, err, sizeof err);
  assert_non_null(p);
  assert_null(plan_build(p, -1, 3, err, sizeof err));
  assert_non_null(strstr(err, "field big"));
  mb_plan *plan = plan_build(p, -1, 4, err, sizeof err);
  assert_non_null(plan);
  assert_int_equal(plan->nreqs, 2);
  plan_free(plan);
  profile_free(p);
}

/* A register map the size of the address space, per table. */
typedef struct {
  uint16_t regs[2][65536];
} regmap;

static void map_put(void *ctx, mb_table table, uint16_t address,
                    const uint16_t *words, uint16_t nwords) {
  regmap *m = ctx;
  for (uint16_t i = 0; i < nwords; i++)
    m->regs[table][(uint16_t)(address + i)] = words[i];
}

/* What the poller does: run each request against the map into one buffer. */
static uint16_t *run_plan(const mb_plan *plan, const regmap *m) {
  uint16_t *buf = calloc(plan->total_words ? plan->total_words : 1,
                         sizeof *buf);
  assert_non_null(buf);
  for (size_t i = 0; i < plan->nreqs; i++)
    memcpy(buf + plan->offsets[i],
           &m->regs[plan->reqs[i].table][plan->reqs[i].address],
           plan->reqs[i].count * sizeof *buf);
  return buf;
}

static void test_plan_words(void **state) {
  (void)state;
  mb_profile *p = load("tuf2000m");
  char err[256];
  mb_plan *plan = plan_build(p, -1, 0, err, sizeof err);
  assert_non_null(plan);
  uint16_t buf[18];
  assert_int_equal(plan->total_words, 18);
  assert_ptr_equal(plan_words(plan, buf, H, 0, 2), buf);
  assert_ptr_equal(plan_words(plan, buf, H, 8, 4), buf + 8);
  assert_ptr_equal(plan_words(plan, buf, H, 11, 1), buf + 11);
  assert_ptr_equal(plan_words(plan, buf, H, 24, 4), buf + 12);
  assert_ptr_equal(plan_words(plan, buf, H, 71, 1), buf + 16);
  assert_ptr_equal(plan_words(plan, buf, H, 91, 1), buf + 17);
  assert_null(plan_words(plan, buf, H, 11, 2)); /* past a request's end */
  assert_null(plan_words(plan, buf, H, 12, 1)); /* in a hole */
  assert_null(plan_words(plan, buf, H, 92, 1));
  assert_null(plan_words(plan, buf, I, 0, 1)); /* wrong table */
  assert_null(plan_words(plan, buf, H, 0, 0));
  plan_free(plan);
  plan_free(NULL);
  profile_free(p);
}

static void test_plan_decode_builtins(void **state) {
  (void)state;
  static const char *const names[] = {"tuf2000m", "mag-00h", "open-channel"};
  regmap *m = calloc(1, sizeof *m);
  assert_non_null(m);
  for (size_t k = 0; k < N(names); k++) {
    mb_profile *p = load(names[k]);
    memset(m, 0, sizeof *m);
    double want[16];
    assert_true(p->nfields <= N(want));
    /* Distinct plausible values per field; the two open-channel flow fields
     * share a register, so they must agree (flow_m3h = 3600 * flow_m3s). */
    for (size_t i = 0; i < p->nfields; i++) {
      const prof_field *f = &p->fields[i];
      switch (f->role) {
      case PROF_ROLE_FLOW: want[i] = 123.5; break;
      case PROF_ROLE_VELOCITY: want[i] = 1.25; break;
      case PROF_ROLE_TOTAL: want[i] = 987654.5; break;
      case PROF_ROLE_NET_TOTAL: want[i] = -4321.75; break;
      case PROF_ROLE_LEVEL: want[i] = 0.875; break;
      case PROF_ROLE_STATUS: want[i] = (double)i; break;
      case PROF_ROLE_SIGNAL: want[i] = 87; break;
      default: want[i] = 2.5; break;
      }
      if (strcmp(f->name, "flow_m3s") == 0)
        want[i] = 123.5 / 3600.0;
    }
    for (size_t i = 0; i < p->nfields; i++)
      assert_int_equal(
          profile_encode_field(&p->fields[i], want[i], -1, map_put, m), 0);
    char err[256] = "";
    mb_plan *plan = plan_build(p, -1, 0, err, sizeof err);
    assert_non_null(plan);
    uint16_t *buf = run_plan(plan, m);
    double got[16];
    if (plan_decode(plan, p, buf, got, err, sizeof err) != 0)
      fail_msg("%s: %s", names[k], err);
    for (size_t i = 0; i < p->nfields; i++)
      assert_float_equal(got[i], want[i], fabs(want[i]) * 1e-6 + 1e-9);
    free(buf);
    plan_free(plan);
    profile_free(p);
  }
  free(m);
}

static void test_plan_decode_errors(void **state) {
  (void)state;
  regmap *m = calloc(1, sizeof *m);
  assert_non_null(m);
  mb_profile *p = load("mag-00h");
  for (size_t i = 0; i < p->nfields; i++)
    assert_int_equal(profile_encode_field(&p->fields[i], 1.0, -1, map_put, m),
                     0);
  m->regs[H][0x02] = 9; /* no such flow unit code */
  char err[256] = "";
  mb_plan *plan = plan_build(p, -1, 0, err, sizeof err);
  assert_non_null(plan);
  uint16_t *buf = run_plan(plan, m);
  double got[8];
  assert_int_equal(plan_decode(plan, p, buf, got, err, sizeof err), -1);
  assert_non_null(strstr(err, "flow_m3h"));
  assert_non_null(strstr(err, "unknown unit code 9"));
  assert_true(isnan(got[0]));
  /* The other fields still decode. */
  assert_float_equal(got[1], 1.0, 1e-6);
  free(buf);
  m->regs[H][0x02] = 5;

  /* A plan that does not cover a field (the site plan of another profile):
   * reported, not read out of bounds. */
  mb_profile *tuf = load("tuf2000m");
  mb_plan *small = plan_build(tuf, -1, 0, err, sizeof err);
  assert_non_null(small);
  buf = run_plan(small, m);
  err[0] = '\0';
  assert_int_equal(plan_decode(small, p, buf, got, err, sizeof err), -1);
  assert_non_null(strstr(err, "not read"));
  free(buf);
  plan_free(small);
  profile_free(tuf);
  plan_free(plan);
  profile_free(p);
  free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_empty),
      cmocka_unit_test(test_contiguous),
      cmocka_unit_test(test_overlapping),
      cmocka_unit_test(test_duplicates),
      cmocka_unit_test(test_unsorted),
      cmocka_unit_test(test_gap_boundary),
      cmocka_unit_test(test_max_registers),
      cmocka_unit_test(test_top_of_address_space),
      cmocka_unit_test(test_refused),
      cmocka_unit_test(test_tables_never_merge),
      cmocka_unit_test(test_capacity),
      cmocka_unit_test(test_builtin_tuf2000m),
      cmocka_unit_test(test_builtin_mag00h),
      cmocka_unit_test(test_builtin_open_channel),
      cmocka_unit_test(test_build_errors),
      cmocka_unit_test(test_plan_words),
      cmocka_unit_test(test_plan_decode_builtins),
      cmocka_unit_test(test_plan_decode_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
