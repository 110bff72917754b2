/* clock: the one place the daemon reads time.
 *
 * Wall-clock time (for timestamps and slot alignment) and monotonic time (for
 * timers and deadlines) are both read here, so a test can shift the wall clock
 * with clock_set_offset_ms and every module sees the same shifted time. Slot
 * arithmetic is pure: polls happen at wall-clock multiples of the interval
 * (a 1m meter at :00 of every minute) plus a small per-meter phase.
 */
#ifndef IC_CLOCK_H
#define IC_CLOCK_H

#include <stddef.h>
#include <stdint.h>

/* Milliseconds since the Unix epoch (UTC), offset applied. */
int64_t clock_wall_ms(void);

/* Milliseconds on CLOCK_MONOTONIC. */
int64_t clock_mono_ms(void);

/* Shift the wall clock by OFFSET ms (tests and the clock-jump drills). */
void clock_set_offset_ms(int64_t offset);

/* The first slot strictly after WALL_MS: the smallest k*interval + phase that
 * is greater than WALL_MS. INTERVAL_MS must be positive and 0 <= phase <
 * interval. */
int64_t clock_next_slot(int64_t wall_ms, int64_t interval_ms, int64_t phase_ms);

/* The slot at or before WALL_MS. */
int64_t clock_slot_at(int64_t wall_ms, int64_t interval_ms, int64_t phase_ms);

/* Format MS as RFC 3339 UTC with milliseconds: "2026-11-28T16:31:00.123Z".
 * BUF needs 25 bytes; returns BUF. */
#define CLOCK_RFC3339_LEN 25
char *clock_format_rfc3339(int64_t ms, char *buf, size_t len);

#endif
