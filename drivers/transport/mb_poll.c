#include "transport/mb_poll.h"

#include <stdio.h>
#include <string.h>

int mb_poll_meter(transport *t, int unit, const mb_plan *plan,
                  const mb_profile *p, uint16_t *buf, double *values,
                  tr_error *e, int *requests) {
  memset(e, 0, sizeof *e);
  if (requests) *requests = 0;
  for (size_t i = 0; i < plan->nreqs; i++) {
    const plan_range *r = &plan->reqs[i];
    if (requests) (*requests)++;
    int rc = transport_read(t, unit, r->table, r->address, r->count,
                            buf + plan->offsets[i], e);
    if (rc != TR_OK) return rc;
  }
  char why[sizeof e->detail];
  if (plan_decode(plan, p, buf, values, why, sizeof why) != 0) {
    e->code = TR_EDECODE;
    snprintf(e->detail, sizeof e->detail, "%s", why);
    return TR_EDECODE;
  }
  return TR_OK;
}
