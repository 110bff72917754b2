/* libFuzzer target: register decoding, from raw words to every type and word
 * order, and a built-in profile's fields through the planner's layout.
 *
 * Beyond not crashing: each decoded value is the one the word order's
 * definition (mb_decode.h) gives, computed here byte by byte; decode, encode
 * and decode again gives the same value, and the same words whenever the
 * value is one the type holds exactly; a profile's fields decoded through the
 * plan's buffer are the ones its registers hold at their addresses. A broken
 * promise aborts, so libFuzzer and a replay of the corpus report it. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/mb_decode.h"
#include "profile/planner.h"
#include "profile/profile.h"
#include "profile_load.h"

#define FUZZ_TARGET "fuzz_decode"
#include "fuzz_check.h"

static mb_profile *profiles[3];
static mb_plan *plans[3];

static void init(void) {
  static int done;
  if (done) return;
  done = 1;
  const char *names[3] = {"tuf2000m", "mag-00h", "open-channel"};
  char err[256];
  for (int i = 0; i < 3; i++) {
    profiles[i] = profile_load(names[i], NULL, NULL, err, sizeof err);
    if (profiles[i]) plans[i] = plan_build(profiles[i], -1, 0, err, sizeof err);
    CHECK(profiles[i] && plans[i], "built-in profile %s: %s", names[i], err);
  }
}

/* The same value: both NaN, or the same bits (so -0 is not 0). */
static int same(double a, double b) {
  if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
  return memcmp(&a, &b, sizeof a) == 0;
}

/* The raw bits of an N-word value by the definitions of the word orders:
 * abcd has registers most significant first, cdab least significant first
 * (bytes within each register in order), badc registers in order with their
 * bytes swapped, dcba everything reversed. */
static uint64_t ref_raw(const uint16_t *w, int n, mb_word_order o) {
  uint8_t wire[8]; /* the registers' bytes as they come on the wire */
  for (int i = 0; i < n; i++) {
    wire[2 * i] = (uint8_t)(w[i] >> 8);
    wire[2 * i + 1] = (uint8_t)w[i];
  }
  int nb = 2 * n;
  uint64_t v = 0;
  for (int k = 0; k < nb; k++) {
    /* k-th byte of the value, most significant first. */
    int reg, byte;
    switch (o) {
    case MB_ORDER_ABCD: reg = k / 2; byte = k % 2; break;
    case MB_ORDER_CDAB: reg = n - 1 - k / 2; byte = k % 2; break;
    case MB_ORDER_BADC: reg = k / 2; byte = 1 - k % 2; break;
    default: reg = n - 1 - k / 2; byte = 1 - k % 2; break;
    }
    v = v << 8 | wire[2 * reg + byte];
  }
  return v;
}

static double ref_decode(const uint16_t *w, mb_type t, mb_word_order o) {
  switch (t) {
  case MB_T_U16: return (double)w[0];
  case MB_T_I16: return w[0] >= 0x8000 ? (double)w[0] - 65536.0 : (double)w[0];
  case MB_T_U32: return (double)ref_raw(w, 2, o);
  case MB_T_I32: {
    uint64_t u = ref_raw(w, 2, o);
    return u >= 0x80000000u ? (double)u - 4294967296.0 : (double)u;
  }
  case MB_T_U64: return (double)ref_raw(w, 4, o);
  case MB_T_F32: {
    uint32_t u = (uint32_t)ref_raw(w, 2, o);
    float f;
    memcpy(&f, &u, sizeof f);
    return (double)f;
  }
  case MB_T_F64: {
    uint64_t u = ref_raw(w, 4, o);
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
  }
  }
  return NAN;
}

/* Does type T hold the value decoded from W exactly, so that encoding it
 * must give W back? Not a NaN (its payload is not kept), not a u64 beyond
 * 2^53 (a double does not hold it). */
static int holds_exactly(mb_type t, double v) {
  if (isnan(v)) return 0;
  if (t == MB_T_U64) return v < 9007199254740992.0;
  return 1;
}

/* --- The plan's buffer, looked up by address ------------------------------- */

static uint16_t image[2][65536];
static uint8_t filled[2][65536];

static const uint16_t *image_words(void *ctx, mb_table table, uint16_t address,
                                   uint16_t nwords) {
  (void)ctx;
  if ((uint32_t)address + nwords > 65536u) return NULL;
  for (uint16_t i = 0; i < nwords; i++)
    if (!filled[table][address + i]) return NULL;
  return &image[table][address];
}

static void plan_check(int pi, const uint16_t *words) {
  const mb_plan *plan = plans[pi];
  const mb_profile *p = profiles[pi];
  if (plan->total_words > 256 || p->nfields > 64) return;
  double values[64];
  char err[256] = "";
  int rc = plan_decode(plan, p, words, values, err, sizeof err);
  int all_finite = 1;
  for (size_t i = 0; i < p->nfields; i++) all_finite &= isfinite(values[i]) != 0;
  CHECK(rc == 0 ? all_finite : (!all_finite && err[0]),
        "%s: rc %d, every value finite: %d, err \"%s\"", p->name, rc, all_finite, err);

  /* The buffer laid out by address, each request's words where its offset
   * says. The planner merges overlapping ranges: no register is read twice. */
  size_t words_read = 0;
  for (size_t r = 0; r < plan->nreqs; r++) {
    const plan_range *q = &plan->reqs[r];
    size_t at = plan->offsets[r];
    CHECK(q->count >= 1 && q->count <= 125 && (uint32_t)q->address + q->count <= 65536u,
          "%s: request of %u registers at %u", p->name, q->count, q->address);
    CHECK(at + q->count <= plan->total_words, "%s: request %zu at %zu, past %zu words",
          p->name, r, at, plan->total_words);
    for (uint16_t j = 0; j < q->count; j++) {
      CHECK(!filled[q->table][q->address + j], "%s: register %u read twice", p->name,
            q->address + j);
      image[q->table][q->address + j] = words[at + j];
      filled[q->table][q->address + j] = 1;
    }
    words_read += q->count;
  }
  CHECK(words_read == plan->total_words, "%s: %zu words requested, %zu in the buffer",
        p->name, words_read, plan->total_words);
  for (size_t i = 0; i < p->nfields; i++) {
    double v = NAN;
    char why[160];
    if (profile_decode_field(&p->fields[i], image_words, NULL, &v, why, sizeof why) != 0)
      v = NAN;
    CHECK(same(v, values[i]), "%s field %s: %.17g through the plan, %.17g by address",
          p->name, p->fields[i].name, values[i], v);
  }
  for (size_t r = 0; r < plan->nreqs; r++) {
    const plan_range *q = &plan->reqs[r];
    memset(&filled[q->table][q->address], 0, q->count);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  init();
  if (size < 2) return 0;
  uint16_t words[256];
  size_t n = (size - 1) / 2;
  if (n > 256) n = 256;
  memset(words, 0, sizeof words);
  for (size_t i = 0; i < n; i++) words[i] = (uint16_t)(data[1 + 2 * i] << 8 | data[2 + 2 * i]);

  for (int o = MB_ORDER_ABCD; o <= MB_ORDER_DCBA; o++) {
    uint32_t r32 = mb_get32(words, (mb_word_order)o);
    uint64_t r64 = mb_get64(words, (mb_word_order)o);
    CHECK(r32 == (uint32_t)ref_raw(words, 2, (mb_word_order)o), "get32 %s: %08x",
          mb_order_name((mb_word_order)o), r32);
    CHECK(r64 == ref_raw(words, 4, (mb_word_order)o), "get64 %s: %016llx",
          mb_order_name((mb_word_order)o), (unsigned long long)r64);
    uint16_t back[4] = {0};
    mb_put32(back, r32, (mb_word_order)o);
    CHECK(memcmp(back, words, 2 * sizeof *back) == 0, "put32 %s does not undo get32",
          mb_order_name((mb_word_order)o));
    mb_put64(back, r64, (mb_word_order)o);
    CHECK(memcmp(back, words, 4 * sizeof *back) == 0, "put64 %s does not undo get64",
          mb_order_name((mb_word_order)o));
  }

  for (int t = MB_T_U16; t <= MB_T_F64; t++)
    for (int o = MB_ORDER_ABCD; o <= MB_ORDER_DCBA; o++) {
      mb_type ty = (mb_type)t;
      mb_word_order wo = (mb_word_order)o;
      int nw = mb_type_words(ty);
      double v = mb_decode(words, ty, wo);
      CHECK(same(v, ref_decode(words, ty, wo)), "%s %s: decoded %.17g, expected %.17g",
            mb_type_name(ty), mb_order_name(wo), v, ref_decode(words, ty, wo));
      /* Canaries past the value's registers: an encoder writes no further. */
      uint16_t back[5] = {0xDEAD, 0xDEAD, 0xDEAD, 0xDEAD, 0xDEAD};
      mb_encode(back, ty, wo, v);
      CHECK(back[nw] == 0xDEAD, "%s %s wrote past its %d registers", mb_type_name(ty),
            mb_order_name(wo), nw);
      double again = mb_decode(back, ty, wo);
      CHECK(same(v, again), "%s %s: decode, encode, decode gave %.17g then %.17g",
            mb_type_name(ty), mb_order_name(wo), v, again);
      if (holds_exactly(ty, v))
        CHECK(memcmp(back, words, (size_t)nw * sizeof *back) == 0,
              "%s %s: %.17g encodes to other registers (%04x %04x %04x %04x)",
              mb_type_name(ty), mb_order_name(wo), v, back[0], back[1], back[2], back[3]);
    }

  int64_t integer = (int64_t)(int32_t)mb_get32(words, MB_ORDER_CDAB);
  double fraction = mb_decode(words + 2, MB_T_F32, MB_ORDER_CDAB);
  double total = mb_totalizer(integer, fraction);
  if (isfinite(fraction) && fraction > -1.0 && fraction < 1.0)
    CHECK(same(total, (double)integer + fraction), "totalizer %.17g", total);
  else
    CHECK(isnan(total), "totalizer of fraction %.17g gave %.17g", fraction, total);

  plan_check(data[0] % 3, words);
  return 0;
}
