#include "meter/mstate.h"

#include <stdio.h>
#include <string.h>

void mstate_init(mstate *s, int64_t now_ms) {
  memset(s, 0, sizeof *s);
  s->state = MSTATE_UNKNOWN;
  s->since_ms = now_ms;
  s->watch_from_ms = now_ms;
}

static mstate_change go_offline(mstate *s, int64_t now_ms) {
  if (s->state == MSTATE_OFFLINE) return MSTATE_NO_CHANGE;
  s->state = MSTATE_OFFLINE;
  s->since_ms = now_ms;
  s->backoff_level = 0;
  return MSTATE_WENT_OFFLINE;
}

mstate_change mstate_success(mstate *s, int64_t now_ms) {
  s->consecutive_failures = 0;
  s->backoff_level = 0;
  s->last_valid_ms = now_ms;
  s->watch_from_ms = now_ms;
  if (s->state == MSTATE_ONLINE) return MSTATE_NO_CHANGE;
  s->state = MSTATE_ONLINE;
  s->since_ms = now_ms;
  return MSTATE_WENT_ONLINE;
}

mstate_change mstate_failure(mstate *s, int64_t now_ms, int code,
                             const char *detail, int offline_after) {
  s->consecutive_failures++;
  s->last_error = code;
  snprintf(s->last_error_detail, sizeof s->last_error_detail, "%s",
           detail ? detail : "");
  if (s->state == MSTATE_OFFLINE) {
    /* Still dead: wait longer before the next try. */
    if (s->backoff_level < 30) s->backoff_level++;
    return MSTATE_NO_CHANGE;
  }
  if (s->consecutive_failures >= offline_after) return go_offline(s, now_ms);
  return MSTATE_NO_CHANGE;
}

mstate_change mstate_tick(mstate *s, int64_t now_ms, int64_t interval_ms,
                          int offline_after, int64_t grace_ms) {
  if (s->state == MSTATE_OFFLINE) return MSTATE_NO_CHANGE;
  if (now_ms - s->watch_from_ms > interval_ms * offline_after + grace_ms)
    return go_offline(s, now_ms);
  return MSTATE_NO_CHANGE;
}

void mstate_backoff_reset(mstate *s) { s->backoff_level = 0; }

int64_t mstate_retry_ms(const mstate *s, int64_t interval_ms,
                        int64_t backoff_max_ms) {
  if (s->state != MSTATE_OFFLINE || s->backoff_level == 0) return interval_ms;
  int64_t d = interval_ms;
  for (int i = 0; i < s->backoff_level && d < backoff_max_ms; i++) d *= 2;
  if (d > backoff_max_ms) d = backoff_max_ms;
  if (d < interval_ms) d = interval_ms;
  return d;
}
