/* sim: intake-sim's servers.
 *
 * Serves every meter of a site file on a libuv loop: a Modbus TCP server per
 * `tcp` bus (answering each meter's unit id), a pseudo-terminal per `rtu` bus
 * (its peer end linked at the bus's device path, speaking Modbus RTU), and an
 * RTU-framed TCP server per `rtu-over-tcp` bus, and for an `rtu-dtu` bus a
 * DTU that dials the collector's DTU server; the serial kinds optionally
 * emulate the line's wire time. A control socket switches faults and pins
 * values while running. Bad requests are logged and never bring the simulator
 * down, and every client costs a bounded amount of memory.
 */
#ifndef IC_SIM_H
#define IC_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "cfg.h"

typedef struct sim sim;

typedef struct {
  const char *control_path; /* overrides cfg.sim.control; NULL: the config's */
  bool no_wire_time;        /* ignore sim_wire_time on every bus */
  const char *dtu_source;   /* rtu-dtu buses dial from this address; NULL any */
} sim_options;

/* Open every server of config C on LOOP. Returns 0, or -1 with a message in
 * err (a port in use, a device path that is not ours to replace). */
int sim_start(sim **out, const cfg *c, uv_loop_t *loop, const sim_options *opt,
              char *err, size_t errlen);

/* A one-line summary of what listens where, for the ready line. */
void sim_describe(const sim *s, char *buf, size_t len);

/* Close every handle, client connections and control connections included
 * (the loop then runs out), and remove the device links and the control
 * socket. */
void sim_stop(sim *s);

/* Free after the loop has finished closing the handles. NULL is a no-op. */
void sim_free(sim *s);

/* Run one control command line ("fault KKY-01 offline") and write the reply
 * (ending in "ok ..." or "error: ...") into out. Returns 0 on ok. A reply that
 * does not fit in outlen is replaced by an error, never cut short; a buffer
 * of sim_control_reply_max(s) bytes always fits. */
int sim_control(sim *s, const char *line, char *out, size_t outlen);

/* The longest reply sim_control can give for S's site (it grows with the
 * number of meters, for "status"). */
size_t sim_control_reply_max(const sim *s);

#endif
