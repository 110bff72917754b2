#include "base/clock.h"

#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

static _Atomic int64_t g_offset_ms;

int64_t clock_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + atomic_load(&g_offset_ms);
}

int64_t clock_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void clock_set_offset_ms(int64_t offset) { atomic_store(&g_offset_ms, offset); }

/* Floor division that is correct for negative numerators too. */
static int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
  return q;
}

int64_t clock_slot_at(int64_t wall_ms, int64_t interval_ms, int64_t phase_ms) {
  return floor_div(wall_ms - phase_ms, interval_ms) * interval_ms + phase_ms;
}

int64_t clock_next_slot(int64_t wall_ms, int64_t interval_ms, int64_t phase_ms) {
  return clock_slot_at(wall_ms, interval_ms, phase_ms) + interval_ms;
}

char *clock_format_rfc3339(int64_t ms, char *buf, size_t len) {
  time_t secs = (time_t)floor_div(ms, 1000);
  int msec = (int)(ms - (int64_t)secs * 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, msec);
  return buf;
}
