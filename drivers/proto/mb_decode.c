/* mb_decode: register words to values and back (see mb_decode.h). */
#include "proto/mb_decode.h"

#include <float.h>
#include <math.h>
#include <string.h>

static const char *const type_names[] = {"u16", "i16", "u32", "i32",
                                         "u64", "f32", "f64"};
static const char *const order_names[] = {"abcd", "cdab", "badc", "dcba"};

#define NTYPES (sizeof(type_names) / sizeof(type_names[0]))
#define NORDERS (sizeof(order_names) / sizeof(order_names[0]))

int mb_type_words(mb_type t) {
  switch (t) {
  case MB_T_U16:
  case MB_T_I16:
    return 1;
  case MB_T_U32:
  case MB_T_I32:
  case MB_T_F32:
    return 2;
  case MB_T_U64:
  case MB_T_F64:
    return 4;
  }
  return 1;
}

int mb_type_parse(const char *name, mb_type *out) {
  if (name == NULL)
    return -1;
  for (size_t i = 0; i < NTYPES; i++) {
    if (strcmp(name, type_names[i]) == 0) {
      *out = (mb_type)i;
      return 0;
    }
  }
  return -1;
}

const char *mb_type_name(mb_type t) {
  if ((unsigned)t < NTYPES)
    return type_names[t];
  return "?";
}

int mb_order_parse(const char *name, mb_word_order *out) {
  if (name == NULL)
    return -1;
  for (size_t i = 0; i < NORDERS; i++) {
    if (strcmp(name, order_names[i]) == 0) {
      *out = (mb_word_order)i;
      return 0;
    }
  }
  return -1;
}

const char *mb_order_name(mb_word_order o) {
  if ((unsigned)o < NORDERS)
    return order_names[o];
  return "?";
}

static uint16_t swap16(uint16_t w) { return (uint16_t)((w << 8) | (w >> 8)); }

/* The register holding 16-bit word W (0 = least significant) of an N-word
 * value, and whether its bytes are swapped. abcd and badc keep the most
 * significant word first; cdab and dcba put the least significant first. */
static size_t reg_index(size_t w, size_t n, mb_word_order o) {
  return (o == MB_ORDER_ABCD || o == MB_ORDER_BADC) ? n - 1 - w : w;
}

static bool bytes_swapped(mb_word_order o) {
  return o == MB_ORDER_BADC || o == MB_ORDER_DCBA;
}

static uint64_t get_words(const uint16_t *regs, size_t n, mb_word_order o) {
  uint64_t v = 0;
  for (size_t w = 0; w < n; w++) {
    uint16_t r = regs[reg_index(w, n, o)];
    if (bytes_swapped(o))
      r = swap16(r);
    v |= (uint64_t)r << (16 * w);
  }
  return v;
}

static void put_words(uint16_t *regs, size_t n, uint64_t v, mb_word_order o) {
  for (size_t w = 0; w < n; w++) {
    uint16_t r = (uint16_t)(v >> (16 * w));
    if (bytes_swapped(o))
      r = swap16(r);
    regs[reg_index(w, n, o)] = r;
  }
}

uint32_t mb_get32(const uint16_t *regs, mb_word_order o) {
  return (uint32_t)get_words(regs, 2, o);
}

uint64_t mb_get64(const uint16_t *regs, mb_word_order o) {
  return get_words(regs, 4, o);
}

void mb_put32(uint16_t *regs, uint32_t v, mb_word_order o) {
  put_words(regs, 2, v, o);
}

void mb_put64(uint16_t *regs, uint64_t v, mb_word_order o) {
  put_words(regs, 4, v, o);
}

double mb_decode(const uint16_t *regs, mb_type t, mb_word_order o) {
  switch (t) {
  case MB_T_U16:
    return (double)regs[0];
  case MB_T_I16:
    /* Two's complement by arithmetic, not by an implementation-defined
     * narrowing conversion. */
    return regs[0] >= 0x8000u ? (double)regs[0] - 65536.0 : (double)regs[0];
  case MB_T_U32:
    return (double)mb_get32(regs, o);
  case MB_T_I32: {
    uint32_t u = mb_get32(regs, o);
    return u >= 0x80000000u ? (double)u - 4294967296.0 : (double)u;
  }
  case MB_T_U64:
    return (double)mb_get64(regs, o);
  case MB_T_F32: {
    uint32_t u = mb_get32(regs, o);
    float f;
    memcpy(&f, &u, sizeof f);
    return (double)f;
  }
  case MB_T_F64: {
    uint64_t u = mb_get64(regs, o);
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
  }
  }
  return NAN;
}

/* Round V to the nearest integer within [LO, HI]; NaN encodes as 0 so a
 * simulator never writes garbage. */
static double round_sat(double v, double lo, double hi) {
  if (isnan(v))
    return 0.0;
  double r = round(v);
  if (r < lo)
    return lo;
  if (r > hi)
    return hi;
  return r;
}

/* double -> float without undefined behaviour: a finite value beyond the
 * float range would be UB to convert, so decide it here the way IEEE
 * round-to-nearest would (values within half an ulp of FLT_MAX still round
 * down to it). */
static float to_float(double v) {
  const double limit = (double)FLT_MAX + ldexp(1.0, 103); /* FLT_MAX + ulp/2 */
  if (isnan(v))
    return NAN;
  if (v >= limit)
    return INFINITY;
  if (v <= -limit)
    return -INFINITY;
  if (v > (double)FLT_MAX)
    return FLT_MAX;
  if (v < -(double)FLT_MAX)
    return -FLT_MAX;
  return (float)v;
}

void mb_encode(uint16_t *regs, mb_type t, mb_word_order o, double v) {
  switch (t) {
  case MB_T_U16:
    regs[0] = (uint16_t)round_sat(v, 0.0, 65535.0);
    return;
  case MB_T_I16: {
    /* Through int32_t then modulo 2^16 into the register: defined. */
    int32_t i = (int32_t)round_sat(v, -32768.0, 32767.0);
    regs[0] = (uint16_t)(uint32_t)i;
    return;
  }
  case MB_T_U32:
    mb_put32(regs, (uint32_t)round_sat(v, 0.0, 4294967295.0), o);
    return;
  case MB_T_I32: {
    int64_t i = (int64_t)round_sat(v, -2147483648.0, 2147483647.0);
    mb_put32(regs, (uint32_t)i, o);
    return;
  }
  case MB_T_U64: {
    /* 2^64 - 1 is not a double; anything at or above 2^64 saturates. */
    uint64_t u;
    if (isnan(v) || v <= 0.0)
      u = 0;
    else if (v >= 18446744073709551616.0)
      u = UINT64_MAX;
    else
      u = (uint64_t)round(v); /* round(v) < 2^64 here */
    mb_put64(regs, u, o);
    return;
  }
  case MB_T_F32: {
    float f = to_float(v);
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    mb_put32(regs, u, o);
    return;
  }
  case MB_T_F64: {
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    mb_put64(regs, u, o);
    return;
  }
  }
}

double mb_scale(double raw, double scale, double offset) {
  return raw * scale + offset;
}

double mb_totalizer(int64_t integer, double fraction) {
  if (!isfinite(fraction) || fraction <= -1.0 || fraction >= 1.0)
    return NAN;
  return (double)integer + fraction;
}
