/* profile: a meter model's register map (see profile.h and docs/profiles.md).
 * Reading one from YAML is config/'s part (profile_load.h). */
#include "profile/profile.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const profile_role_names[] = {
    "none", "flow", "velocity", "total", "net_total", "level", "status",
    "signal", NULL};

void prof_errf(char *err, size_t errlen, const char *fmt, ...) {
  if (err == NULL || errlen == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

void profile_free(mb_profile *p) {
  if (p == NULL)
    return;
  free(p->fields);
  free(p);
}

/* ---------------------------------------------------------------- lookups */

int profile_field_index(const mb_profile *p, const char *name) {
  if (p == NULL || name == NULL)
    return -1;
  for (size_t i = 0; i < p->nfields; i++)
    if (strcmp(p->fields[i].name, name) == 0)
      return (int)i;
  return -1;
}

int profile_role_index(const mb_profile *p, prof_role role) {
  if (p == NULL)
    return -1;
  for (size_t i = 0; i < p->nfields; i++)
    if (p->fields[i].role == role)
      return (int)i;
  return -1;
}

const char *profile_role_name(prof_role r) {
  if ((unsigned)r < sizeof profile_role_names / sizeof profile_role_names[0] - 1)
    return profile_role_names[r];
  return "?";
}

prof_unit_kind profile_unit_ratio(const char *unit, double *num, double *den) {
  static const struct {
    const char *name;
    prof_unit_kind kind;
    double num, den;
  } units[] = {
      {"m3/h", PROF_UNIT_FLOW, 1, 1},     {"m3/s", PROF_UNIT_FLOW, 1, 3600},
      {"m3/min", PROF_UNIT_FLOW, 1, 60},  {"L/s", PROF_UNIT_FLOW, 10, 36},
      {"l/s", PROF_UNIT_FLOW, 10, 36},    {"m3", PROF_UNIT_VOLUME, 1, 1},
      {"L", PROF_UNIT_VOLUME, 1000, 1},   {"l", PROF_UNIT_VOLUME, 1000, 1},
  };
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
    if (strcmp(units[i].name, unit) == 0) {
      *num = units[i].num;
      *den = units[i].den;
      return units[i].kind;
    }
  *num = *den = 1;
  return PROF_UNIT_OTHER;
}

double profile_unit_to_canonical(const char *unit, double v) {
  double num, den;
  profile_unit_ratio(unit, &num, &den);
  return v * den / num;
}

double profile_unit_multiplier(const prof_field *f, uint16_t code) {
  for (size_t i = 0; i < f->ncodes; i++)
    if (f->codes[i].code == code)
      return f->codes[i].multiplier;
  return NAN;
}

/* ------------------------------------------------------- decode / encode */

int profile_decode_field(const prof_field *f, prof_words_fn words, void *ctx,
                         double *out, char *err, size_t errlen) {
  double sum = 0.0;
  for (size_t i = 0; i < f->nparts; i++) {
    const prof_part *p = &f->parts[i];
    uint16_t nw = (uint16_t)mb_type_words(p->type);
    const uint16_t *w = words(ctx, p->table, p->address, nw);
    if (w == NULL) {
      prof_errf(err, errlen, "%s register %u (%u word%s) not read",
              prof_table_name(p->table), (unsigned)p->address, (unsigned)nw,
              nw == 1 ? "" : "s");
      return -1;
    }
    double raw;
    if (f->nparts == 1 && prof_type_is_16bit(p->type)) {
      /* Bit fields: mask and shift pick bits out of the word before it is
       * read as a number. The defaults (0xFFFF, 0) leave it whole. */
      uint16_t x = (uint16_t)((w[0] & f->mask) >> f->shift);
      raw = mb_decode(&x, p->type, p->order);
    } else {
      raw = mb_decode(w, p->type, p->order);
    }
    if (!isfinite(raw)) {
      prof_errf(err, errlen, "%s %s at %s register %u", isnan(raw) ? "NaN" :
              "infinite", mb_type_name(p->type), prof_table_name(p->table),
              (unsigned)p->address);
      return -1;
    }
    /* A float after integer parts is their fraction: it must stay below one
     * unit of the part before it, or the meter is mid-update or broken. For
     * the plain integer + fraction pair this is mb_totalizer's (-1, 1). */
    if (i > 0 && prof_type_is_float(p->type) &&
        !(fabs(raw * p->scale) < f->parts[i - 1].scale)) {
      prof_errf(err, errlen,
              "fraction %g at %s register %u is not below one unit of the "
              "integer part",
              raw, prof_table_name(p->table), (unsigned)p->address);
      return -1;
    }
    sum += raw * p->scale;
  }

  double value = sum * f->scale;
  if (f->has_unit_reg) {
    const uint16_t *w = words(ctx, f->unit_reg.table, f->unit_reg.address, 1);
    if (w == NULL) {
      prof_errf(err, errlen, "unit register %s %u not read",
              prof_table_name(f->unit_reg.table), (unsigned)f->unit_reg.address);
      return -1;
    }
    double m = profile_unit_multiplier(f, w[0]);
    if (isnan(m)) {
      prof_errf(err, errlen, "unknown unit code %u in %s register %u",
              (unsigned)w[0], prof_table_name(f->unit_reg.table),
              (unsigned)f->unit_reg.address);
      return -1;
    }
    value *= m;
  }
  value += f->offset;
  if (!isfinite(value)) {
    prof_errf(err, errlen, "value out of range after scaling");
    return -1;
  }
  *out = value;
  return 0;
}

/* The integer range of an integer type, for splitting multi-part values. */
static void int_range(mb_type t, double *lo, double *hi) {
  switch (t) {
  case MB_T_U16: *lo = 0; *hi = 65535.0; return;
  case MB_T_I16: *lo = -32768.0; *hi = 32767.0; return;
  case MB_T_U32: *lo = 0; *hi = 4294967295.0; return;
  case MB_T_I32: *lo = -2147483648.0; *hi = 2147483647.0; return;
  case MB_T_U64: *lo = 0; *hi = 18446744073709549568.0; return;
  default: *lo = -DBL_MAX; *hi = DBL_MAX; return;
  }
}

int profile_encode_field(const prof_field *f, double v, int unit_code,
                         prof_put_fn put, void *ctx) {
  if (f == NULL || put == NULL || !isfinite(v) || f->nparts == 0 ||
      f->nparts > PROF_MAX_PARTS || f->scale == 0)
    return -1;

  double mult = 1.0;
  uint16_t code = 0;
  if (f->has_unit_reg) {
    if (unit_code >= 0) {
      if (unit_code > 65535)
        return -1;
      code = (uint16_t)unit_code;
      mult = profile_unit_multiplier(f, code);
      if (isnan(mult))
        return -1;
    } else {
      /* The meter "set to the profile's unit": the code worth 1, or the
       * first code when none is. */
      if (f->ncodes == 0)
        return -1;
      code = f->codes[0].code;
      mult = f->codes[0].multiplier;
      for (size_t i = 0; i < f->ncodes; i++) {
        if (f->codes[i].multiplier == 1.0) {
          code = f->codes[i].code;
          mult = 1.0;
          break;
        }
      }
    }
  }

  /* Undo value = sum * scale * mult + offset. */
  double rem = (v - f->offset) / f->scale / mult;
  double part_val[PROF_MAX_PARTS];
  for (size_t i = 0; i < f->nparts; i++) {
    const prof_part *p = &f->parts[i];
    if (i + 1 < f->nparts) {
      /* Whole units toward zero, so a negative net total splits into a
       * negative integer and a negative fraction, as meters show it. */
      double lo, hi;
      int_range(p->type, &lo, &hi);
      double units = trunc(rem / p->scale);
      if (units < lo || units > hi)
        return -1; /* the meter could not show this value either */
      part_val[i] = units;
      rem -= units * p->scale;
    } else {
      part_val[i] = rem / p->scale;
    }
  }

  /* The last part may round up to a whole unit of the part before it (a
   * float fraction of 0.99999997 is 1.0f; a low counter of 99999999.6 rounds
   * to 10^8). Carry it, so the decoder sees a valid fraction. */
  size_t last = f->nparts - 1;
  if (last > 0) {
    const prof_part *p = &f->parts[last];
    double shown;
    if (p->type == MB_T_F32) {
      uint16_t tmp[2];
      mb_encode(tmp, MB_T_F32, MB_ORDER_ABCD, part_val[last]);
      shown = mb_decode(tmp, MB_T_F32, MB_ORDER_ABCD);
    } else if (p->type == MB_T_F64) {
      shown = part_val[last];
    } else {
      shown = round(part_val[last]);
    }
    double unit = f->parts[last - 1].scale;
    if (fabs(shown * p->scale) >= unit) {
      double sign = shown < 0 ? -1.0 : 1.0;
      double lo, hi;
      int_range(f->parts[last - 1].type, &lo, &hi);
      part_val[last - 1] += sign;
      if (part_val[last - 1] < lo || part_val[last - 1] > hi)
        return -1;
      /* What is left is below the last part's resolution. */
      part_val[last] = prof_type_is_float(p->type)
                           ? 0.0
                           : part_val[last] - sign * unit / p->scale;
    }
  }

  for (size_t i = 0; i < f->nparts; i++) {
    const prof_part *p = &f->parts[i];
    uint16_t words[4];
    uint16_t nw = (uint16_t)mb_type_words(p->type);
    double pv = part_val[i];
    if (f->nparts == 1 && prof_type_is_16bit(p->type)) {
      /* A bit field holds at most mask >> shift; saturate there rather than
       * let high bits spill into a neighbouring field. */
      double top = (double)(f->mask >> f->shift);
      if (pv > top)
        pv = top;
    }
    mb_encode(words, p->type, p->order, pv);
    if (f->nparts == 1 && prof_type_is_16bit(p->type))
      words[0] = (uint16_t)(((uint32_t)words[0] << f->shift) & f->mask);
    put(ctx, p->table, p->address, words, nw);
  }
  if (f->has_unit_reg)
    put(ctx, f->unit_reg.table, f->unit_reg.address, &code, 1);
  return 0;
}
