/* mstate: one meter's online state, by the rule of the design.
 *
 * A meter goes offline at its offline_after-th consecutive failed poll, or
 * when it has had no valid reading for offline_after intervals (a stuck bus
 * that never even gets to poll it); it comes back online at its next valid
 * reading. Until the first verdict its state is unknown. While offline it is
 * retried on an exponential back-off (interval, 2x, 4x ... capped), so a dead
 * meter costs at most one timeout per back-off period. Pure: time is passed in.
 */
#ifndef IC_MSTATE_H
#define IC_MSTATE_H

#include <stdbool.h>
#include <stdint.h>

typedef enum { MSTATE_UNKNOWN = 0, MSTATE_ONLINE, MSTATE_OFFLINE } mstate_value;

typedef struct {
  mstate_value state;
  int64_t since_ms;        /* when the current state began */
  int64_t last_valid_ms;   /* last valid reading; 0 when none yet */
  int64_t watch_from_ms;   /* start of the no-valid-reading window */
  int consecutive_failures;
  int backoff_level;       /* doublings of the retry delay while offline */
  int last_error;          /* tr_code of the last failure, 0 when none */
  char last_error_detail[160];
} mstate;

typedef enum {
  MSTATE_NO_CHANGE = 0,
  MSTATE_WENT_ONLINE,
  MSTATE_WENT_OFFLINE,
} mstate_change;

/* Start tracking at NOW_MS (unknown state). */
void mstate_init(mstate *s, int64_t now_ms);

/* A valid reading at NOW_MS. */
mstate_change mstate_success(mstate *s, int64_t now_ms);

/* A failed poll at NOW_MS with failure CODE (a tr_code) and DETAIL. */
mstate_change mstate_failure(mstate *s, int64_t now_ms, int code,
                             const char *detail, int offline_after);

/* Called on every slot whether or not the poll could run (a bus that cannot
 * keep up skips slots): goes offline when no valid reading arrived for
 * offline_after intervals plus GRACE_MS (the bus timeout, so that the poll of
 * the slot that completes the count has its chance to answer first). */
mstate_change mstate_tick(mstate *s, int64_t now_ms, int64_t interval_ms,
                          int offline_after, int64_t grace_ms);

/* The meter's line is new (its DTU has just dialled in): the back-off
 * starts again from the interval. */
void mstate_backoff_reset(mstate *s);

/* How long to wait before the next poll: the interval while online or
 * unknown; interval * 2^k, capped at BACKOFF_MAX_MS (and never below the
 * interval), while offline. */
int64_t mstate_retry_ms(const mstate *s, int64_t interval_ms,
                        int64_t backoff_max_ms);

#endif
