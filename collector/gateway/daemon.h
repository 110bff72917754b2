/* daemon: the collector's event loop and the wiring of its parts.
 *
 * The loop thread owns all mutable state: the schedule, each meter's state,
 * the replay cursor and the in-flight window. Bus workers, the store's writer
 * and paho's threads hand their results back through queues and one
 * uv_async, drained completely on every wake-up (libuv coalesces sends).
 */
#ifndef IC_DAEMON_H
#define IC_DAEMON_H

#include "cfg.h"

/* Run the daemon on config C (which it takes and frees) until SIGTERM or
 * SIGINT; SIGHUP reloads C's file (profiles from PROFILE_DIR, NULL for the
 * default, as at start). Returns the process exit code: 0 after a clean
 * stop, 1 when start-up failed. */
int daemon_run(cfg *c, const char *profile_dir);

#endif
