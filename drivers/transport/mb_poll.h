/* mb_poll: read one meter once.
 *
 * Runs a meter's planned requests over its bus transport, one at a time, and
 * decodes the profile's fields from the words. The bus worker of the daemon
 * and the `intake-collector read` command both poll through this. Blocking:
 * call it from the thread that owns the transport.
 */
#ifndef IC_MB_POLL_H
#define IC_MB_POLL_H

#include "profile/planner.h"
#include "profile/profile.h"
#include "transport/transport.h"

/* Poll UNIT on T following PLAN. BUF holds plan->total_words words and
 * VALUES profile->nfields doubles. Returns TR_OK, or the failure kind with e
 * filled (TR_EDECODE when the answers decode to NaN, infinity or an unknown
 * unit code). REQUESTS, when not NULL, receives the number of requests sent. */
int mb_poll_meter(transport *t, int unit, const mb_plan *plan,
                  const mb_profile *p, uint16_t *buf, double *values,
                  tr_error *e, int *requests);

#endif
