/* quality: is a reading good or suspect?
 *
 * A reading is suspect when a field lies outside its profile range, when the
 * totalizer went backwards (other than wrapping at the meter's rollover), or
 * when it jumped by more than the flow allows over the time since the last
 * reading. Suspect readings are still stored, published and counted as valid
 * for the online rate; the flag tells the bureau to look. Pure.
 */
#ifndef IC_QUALITY_H
#define IC_QUALITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "profile/profile.h"

typedef enum { QUALITY_GOOD = 0, QUALITY_SUSPECT = 1 } quality_value;

/* What the check remembers of a meter's previous reading. */
typedef struct {
  bool have;
  int64_t ts_ms;
  double total_m3;
  double flow_m3h;
} quality_prev;

/* A jump is suspect when the totalizer grew by more than
 * max(previous flow, current flow) * elapsed * QUALITY_JUMP_FACTOR +
 * QUALITY_JUMP_SLACK_M3: flows vary between polls, so allow for it. */
#define QUALITY_JUMP_FACTOR 2.0
#define QUALITY_JUMP_SLACK_M3 1.0

/* Assess VALUES (one per field of P) taken at TS_MS against PREV, then make
 * them the previous reading. The reason for a suspect reading goes into
 * REASON. */
quality_value quality_assess(const mb_profile *p, const double *values,
                             int64_t ts_ms, quality_prev *prev, char *reason,
                             size_t reason_len);

#endif
