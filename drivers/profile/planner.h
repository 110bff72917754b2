/* planner: the fewest read requests that cover a meter's fields.
 *
 * Each field part (and unit register) is a register range in one table. The
 * planner sorts them, merges contiguous and overlapping ranges, bridges holes
 * of at most max_gap registers (reading a few unused registers is cheaper than
 * a second round trip), and never asks for more than max_registers (<= 125) in
 * one request. A range longer than that cannot be split (a value must be read
 * whole) and is refused.
 */
#ifndef IC_PLANNER_H
#define IC_PLANNER_H

#include <stddef.h>
#include <stdint.h>

#include "profile/profile.h"

typedef struct {
  mb_table table;
  uint16_t address;
  uint16_t count;
} plan_range;

/* Pure core: plan requests for N ranges. Writes at most CAP requests to OUT
 * and returns how many were needed (which may exceed CAP: call again with more
 * room), or -1 when a range is empty, longer than max_registers, or runs past
 * address 65535, or when max_registers is outside 1..125. */
int plan_ranges(const plan_range *in, size_t n, uint16_t max_gap,
                uint16_t max_registers, plan_range *out, size_t cap);

/* A plan for one meter: its requests and where each request's words land in
 * one buffer of plan->total_words words. */
typedef struct mb_plan {
  size_t nreqs;
  plan_range *reqs;
  size_t *offsets; /* offsets[i]: index in the buffer of reqs[i]'s first word */
  size_t total_words;
} mb_plan;

/* Build the plan for profile P. max_gap < 0 means the profile's own;
 * max_registers 0 means the profile's own (both capped by the profile's).
 * Returns NULL with a reason in err on failure. */
mb_plan *plan_build(const mb_profile *p, int max_gap, int max_registers,
                    char *err, size_t errlen);
void plan_free(mb_plan *plan);

/* The words at (table, address..address+nwords) inside BUF filled by the
 * plan's requests, or NULL when the plan does not cover them. */
const uint16_t *plan_words(const mb_plan *plan, const uint16_t *buf,
                           mb_table table, uint16_t address, uint16_t nwords);

/* Decode every field of P from BUF (filled by PLAN's requests) into
 * values[0..p->nfields). Returns 0, or -1 with the first failing field and
 * reason in err. */
int plan_decode(const mb_plan *plan, const mb_profile *p, const uint16_t *buf,
                double *values, char *err, size_t errlen);

#endif
