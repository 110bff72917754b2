/* backoff: the one exponential back-off of the gateway (reconnects to the
 * broker, reopening a bus, retrying the bureau or the database).
 *
 * The state is the delay of the last attempt, 0 before any (or after a
 * success: backoff_reset). Pure, no thread of its own: each user keeps the
 * state where its thread owns it. */
#ifndef IC_BACKOFF_H
#define IC_BACKOFF_H

#include <stdint.h>

/* The delay before the next attempt: FIRST_MS after a success (or none
 * yet), then twice the last, at most MAX_MS. Stores it in *CUR. */
static inline int64_t backoff_next(int64_t *cur, int64_t first_ms, int64_t max_ms) {
  int64_t next = *cur > 0 ? *cur * 2 : first_ms;
  if (next > max_ms) next = max_ms;
  *cur = next;
  return next;
}

/* An attempt succeeded: the next failure starts over at the first delay. */
static inline void backoff_reset(int64_t *cur) { *cur = 0; }

#endif
