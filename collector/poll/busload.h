/* busload: how much of a serial line's time its meters' polls need.
 *
 * A line at 9600 baud carries a few dozen short exchanges a second. When the
 * meters configured on it ask for more, the daemon skips the slots it cannot
 * serve and counts them, and by the stuck-bus rule a meter without a valid
 * reading for offline_after intervals goes offline: better to say so at
 * commissioning than to let it flap in production. Pure but for the plans it
 * builds.
 */
#ifndef IC_BUSLOAD_H
#define IC_BUSLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"

/* Microseconds of line time a second that the meters of bus BUS need at
 * their intervals: for each request of each meter's plan, the RTU request and
 * its answer at the bus's baud rate and framing, the silent interval after
 * each and the bus's turnaround. 0 for a Modbus TCP bus (no serial line).
 * -1 with ERR filled when a plan cannot be built. */
int64_t busload_us_per_s(const cfg *c, size_t bus, char *err, size_t errlen);

/* When bus BUS needs more than its line carries, write a one-line warning
 * into BUF (without a newline) and return 1; 0 when it fits (or is not a
 * serial line, or cannot be judged). */
int busload_warning(const cfg *c, size_t bus, char *buf, size_t len);

#endif
