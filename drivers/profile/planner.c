/* planner: the fewest read requests that cover a meter's fields (see
 * planner.h). */
#include "profile/planner.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The protocol's limit for one read of holding or input registers. */
#define PLAN_MAX_READ 125


static int range_cmp(const void *a, const void *b) {
  const plan_range *x = a, *y = b;
  if (x->table != y->table)
    return x->table < y->table ? -1 : 1;
  if (x->address != y->address)
    return x->address < y->address ? -1 : 1;
  if (x->count != y->count)
    return x->count < y->count ? -1 : 1;
  return 0;
}

static int range_ok(const plan_range *r, uint16_t max_registers) {
  return r->count >= 1 && r->count <= max_registers &&
         (uint32_t)r->address + r->count <= 65536u;
}

int plan_ranges(const plan_range *in, size_t n, uint16_t max_gap,
                uint16_t max_registers, plan_range *out, size_t cap) {
  if (max_registers < 1 || max_registers > PLAN_MAX_READ)
    return -1;
  if (n == 0)
    return 0;
  if (in == NULL)
    return -1;
  for (size_t i = 0; i < n; i++)
    if (!range_ok(&in[i], max_registers))
      return -1;

  /* Sort a copy: the caller's order (file order of the fields) is kept. */
  plan_range *s = malloc(n * sizeof *s);
  if (s == NULL)
    return -1;
  memcpy(s, in, n * sizeof *s);
  qsort(s, n, sizeof *s, range_cmp);

  /* Greedy from the lowest address: extend the current request while the
   * next range starts within max_gap of its end and the result still fits in
   * max_registers; otherwise close it. Ranges sorted by start make this
   * optimal: a range that cannot join the open request cannot join any
   * earlier one either. End addresses are exclusive and kept in 32 bits so a
   * range ending at 65536 does not wrap. */
  size_t count = 0;
  mb_table table = s[0].table;
  uint32_t start = s[0].address;
  uint32_t end = start + s[0].count;
  for (size_t i = 1; i <= n; i++) {
    bool merge = false;
    uint32_t rs = 0, re = 0;
    if (i < n) {
      rs = s[i].address;
      re = rs + s[i].count;
      uint32_t new_end = re > end ? re : end;
      merge = s[i].table == table && rs <= end + max_gap &&
              new_end - start <= max_registers;
      if (merge) {
        end = new_end;
        continue;
      }
    }
    if (count < cap && out != NULL) {
      out[count].table = table;
      out[count].address = (uint16_t)start;
      out[count].count = (uint16_t)(end - start);
    }
    count++;
    if (i < n) {
      table = s[i].table;
      start = rs;
      end = re;
    }
  }
  free(s);
  return count > (size_t)INT32_MAX ? -1 : (int)count;
}

/* The register ranges of field F: each part and its unit register. */
static size_t field_ranges(const prof_field *f, plan_range *r) {
  size_t k = 0;
  for (size_t j = 0; j < f->nparts && j < PROF_MAX_PARTS; j++) {
    r[k].table = f->parts[j].table;
    r[k].address = f->parts[j].address;
    r[k].count = (uint16_t)mb_type_words(f->parts[j].type);
    k++;
  }
  if (f->has_unit_reg) {
    r[k].table = f->unit_reg.table;
    r[k].address = f->unit_reg.address;
    r[k].count = 1;
    k++;
  }
  return k;
}

/* Every range the profile reads, into R (room for nfields *
 * (PROF_MAX_PARTS + 1)). A field's own ranges are planned first and enter
 * the meter's plan whole: the integer and fraction of a totalizer (and a
 * value and its unit code) then come from one request, so a count that
 * carries between two reads cannot tear into a value that never was.
 * Returns the number of ranges, or -1 with ERR naming the field that cannot
 * be read. */
static int collect_ranges(const mb_profile *p, uint16_t gap, uint16_t maxreg,
                          plan_range *r, char *err, size_t errlen) {
  size_t k = 0;
  for (size_t i = 0; i < p->nfields; i++) {
    const prof_field *f = &p->fields[i];
    plan_range own[PROF_MAX_PARTS + 1];
    size_t n = field_ranges(f, own);
    int m = plan_ranges(own, n, gap, maxreg, r + k, PROF_MAX_PARTS + 1);
    if (m < 0) {
      for (size_t j = 0; j < n; j++) {
        if (own[j].count > maxreg ||
            (uint32_t)own[j].address + own[j].count > 65536u) {
          prof_errf(err, errlen,
                  "profile %s: field %s: %u register(s) at %u do not fit in "
                  "a request of at most %u registers",
                  p->name, f->name, (unsigned)own[j].count,
                  (unsigned)own[j].address, (unsigned)maxreg);
          return -1;
        }
      }
      prof_errf(err, errlen, "profile %s: field %s: cannot plan its registers",
              p->name, f->name);
      return -1;
    }
    k += (size_t)m;
  }
  return (int)k;
}

mb_plan *plan_build(const mb_profile *p, int max_gap, int max_registers,
                    char *err, size_t errlen) {
  plan_range *ranges = NULL;
  mb_plan *plan = NULL;

  if (p == NULL) {
    prof_errf(err, errlen, "no profile");
    return NULL;
  }
  if (max_registers < 0 || max_registers > PLAN_MAX_READ) {
    prof_errf(err, errlen, "max_registers %d outside 1..%d", max_registers,
            PLAN_MAX_READ);
    return NULL;
  }
  /* The profile's limits are the meter's: a site may ask for less (shorter
   * frames on a noisy line), never more. */
  uint16_t gap = p->max_gap;
  if (max_gap >= 0 && max_gap < gap)
    gap = (uint16_t)max_gap;
  uint16_t maxreg = p->max_registers;
  if (maxreg < 1 || maxreg > PLAN_MAX_READ)
    maxreg = PLAN_MAX_READ;
  if (max_registers > 0 && max_registers < maxreg)
    maxreg = (uint16_t)max_registers;

  if (p->nfields > 0) {
    ranges = malloc(p->nfields * (PROF_MAX_PARTS + 1) * sizeof *ranges);
    if (ranges == NULL)
      goto nomem;
  }
  int nr = collect_ranges(p, gap, maxreg, ranges, err, errlen);
  if (nr < 0)
    goto fail;
  size_t n = (size_t)nr;

  plan = calloc(1, sizeof *plan);
  if (plan == NULL)
    goto nomem;
  int need = plan_ranges(ranges, n, gap, maxreg, NULL, 0);
  if (need < 0) {
    prof_errf(err, errlen, "profile %s: cannot plan its requests", p->name);
    goto fail;
  }
  if (need > 0) {
    plan->reqs = calloc((size_t)need, sizeof *plan->reqs);
    plan->offsets = calloc((size_t)need, sizeof *plan->offsets);
    if (plan->reqs == NULL || plan->offsets == NULL)
      goto nomem;
    if (plan_ranges(ranges, n, gap, maxreg, plan->reqs, (size_t)need) !=
        need) {
      prof_errf(err, errlen, "profile %s: cannot plan its requests", p->name);
      goto fail;
    }
  }
  plan->nreqs = (size_t)need;
  for (size_t i = 0; i < plan->nreqs; i++) {
    plan->offsets[i] = plan->total_words;
    plan->total_words += plan->reqs[i].count;
  }
  free(ranges);
  return plan;

nomem:
  prof_errf(err, errlen, "out of memory");
fail:
  plan_free(plan);
  free(ranges);
  return NULL;
}

void plan_free(mb_plan *plan) {
  if (plan == NULL)
    return;
  free(plan->reqs);
  free(plan->offsets);
  free(plan);
}

const uint16_t *plan_words(const mb_plan *plan, const uint16_t *buf,
                           mb_table table, uint16_t address, uint16_t nwords) {
  if (plan == NULL || buf == NULL || nwords == 0)
    return NULL;
  uint32_t lo = address, hi = (uint32_t)address + nwords;
  for (size_t i = 0; i < plan->nreqs; i++) {
    const plan_range *r = &plan->reqs[i];
    if (r->table == table && lo >= r->address &&
        hi <= (uint32_t)r->address + r->count)
      return buf + plan->offsets[i] + (lo - r->address);
  }
  return NULL;
}

typedef struct {
  const mb_plan *plan;
  const uint16_t *buf;
} plan_ctx;

static const uint16_t *plan_lookup(void *ctx, mb_table table, uint16_t address,
                                   uint16_t nwords) {
  const plan_ctx *c = ctx;
  return plan_words(c->plan, c->buf, table, address, nwords);
}

int plan_decode(const mb_plan *plan, const mb_profile *p, const uint16_t *buf,
                double *values, char *err, size_t errlen) {
  plan_ctx ctx = {plan, buf};
  int rc = 0;
  /* Every field is decoded even after a failure, so a caller that wants to
   * look at the rest still gets them; failed ones read NAN. */
  for (size_t i = 0; i < p->nfields; i++) {
    char why[160];
    if (profile_decode_field(&p->fields[i], plan_lookup, &ctx, &values[i], why,
                             sizeof why) != 0) {
      values[i] = NAN;
      if (rc == 0)
        prof_errf(err, errlen, "field %s: %s", p->fields[i].name, why);
      rc = -1;
    }
  }
  return rc;
}
