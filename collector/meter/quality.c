#include "meter/quality.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

quality_value quality_assess(const mb_profile *p, const double *values,
                             int64_t ts_ms, quality_prev *prev, char *reason,
                             size_t reason_len) {
  quality_value q = QUALITY_GOOD;
  if (reason_len) reason[0] = '\0';
  for (size_t i = 0; i < p->nfields; i++) {
    const prof_field *f = &p->fields[i];
    if (f->has_range && (values[i] < f->min || values[i] > f->max)) {
      snprintf(reason, reason_len, "%s %.6g outside [%.6g, %.6g]", f->name,
               values[i], f->min, f->max);
      q = QUALITY_SUSPECT;
      break;
    }
  }

  int ti = profile_role_index(p, PROF_ROLE_TOTAL);
  int fi = profile_role_index(p, PROF_ROLE_FLOW);
  double total = ti >= 0 ? profile_unit_to_canonical(p->fields[ti].unit, values[ti]) : NAN;
  double flow = fi >= 0 ? fabs(profile_unit_to_canonical(p->fields[fi].unit, values[fi])) : NAN;

  if (q == QUALITY_GOOD && ti >= 0 && prev->have && ts_ms > prev->ts_ms) {
    double delta = total - prev->total_m3;
    double rollover = profile_unit_to_canonical(p->fields[ti].unit, p->fields[ti].rollover);
    if (delta < -1e-6) {
      /* Wrapping at the meter's rollover is normal counting, not a fault:
       * the counter was near the top and is now near the bottom. */
      bool wrapped = rollover > 0 && prev->total_m3 > rollover * 0.9 &&
                     total < rollover * 0.1;
      if (!wrapped) {
        snprintf(reason, reason_len, "totalizer went backwards from %.6g to %.6g m3",
                 prev->total_m3, total);
        q = QUALITY_SUSPECT;
      }
    } else if (fi >= 0 && isfinite(flow) && prev->have) {
      double hours = (double)(ts_ms - prev->ts_ms) / 3600000.0;
      double fmax = flow > prev->flow_m3h ? flow : prev->flow_m3h;
      double allowed = fmax * hours * QUALITY_JUMP_FACTOR + QUALITY_JUMP_SLACK_M3;
      if (delta > allowed) {
        snprintf(reason, reason_len,
                 "totalizer jumped %.6g m3 in %.1f s; the flow allows %.6g",
                 delta, hours * 3600.0, allowed);
        q = QUALITY_SUSPECT;
      }
    }
  }
  if (ti >= 0) {
    prev->have = true;
    prev->ts_ms = ts_ms;
    prev->total_m3 = total;
    prev->flow_m3h = isfinite(flow) ? flow : 0.0;
  }
  return q;
}
