/* sdnotify: what a daemon tells systemd through sd_notify(3), in one place,
 * so that the gateway and the fleet view only say when.
 *
 *   READY=1     at the daemon's "ready" line (sdnotify_ready)
 *   STATUS=...  a short line the daemon describes, sent when it changes,
 *               looked at every STATUS_EVERY_MS (sdnotify_start)
 *   WATCHDOG=1  at half of WATCHDOG_USEC, from the loop thread, and only
 *               while the daemon's ALIVE hook says every thread it depends
 *               on makes progress
 *   STOPPING=1  at SIGTERM or SIGINT (base/service.c)
 *
 * Without NOTIFY_SOCKET in the environment (not started by systemd with
 * Type=notify or a WatchdogSec=) none of it does anything: no timer runs.
 * Loop thread only.
 */
#ifndef IC_SDNOTIFY_H
#define IC_SDNOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define SDNOTIFY_STATUS_EVERY_MS 2000

/* The daemon's hooks. ALIVE: whether its threads make progress, judged
 * against LIMIT_MS (the watchdog interval: a thread silent for longer is
 * stuck); when not, it says which in WHY (and may log it). DESCRIBE: the
 * STATUS line, in BUF. */
typedef bool (*sdnotify_alive_fn)(void *ctx, int64_t limit_ms, char *why, size_t len);
typedef void (*sdnotify_describe_fn)(void *ctx, char *buf, size_t len);

typedef struct {
  uv_timer_t watchdog, status;
  bool watchdog_on, status_on;
  int64_t interval_ms;   /* WATCHDOG_USEC / 1000; 0 without a watchdog */
  sdnotify_alive_fn alive;
  sdnotify_describe_fn describe;
  void *ctx;
  char last_status[256]; /* the STATUS line last sent */
} sdnotify;

/* Whether systemd listens (NOTIFY_SOCKET is set). */
bool sdnotify_listening(void);

/* The watchdog interval systemd asks for (WATCHDOG_USEC, for this process
 * when WATCHDOG_PID is set), in ms; 0 when none. */
int64_t sdnotify_watchdog_ms(void);

/* Arm the timers on LOOP when systemd listens: the status every
 * SDNOTIFY_STATUS_EVERY_MS, the watchdog at half its interval. Their
 * handles are the loop's (service_close_all closes them). */
void sdnotify_start(sdnotify *n, uv_loop_t *loop, sdnotify_alive_fn alive,
                    sdnotify_describe_fn describe, void *ctx);

/* READY=1 with the first STATUS line. */
void sdnotify_ready(sdnotify *n);

/* A reload BEGINS (RELOADING=1) or has ended (READY=1 with the STATUS
 * line), as systemd's Type=notify-reload expects. */
void sdnotify_reloading(sdnotify *n, bool begins);

/* No more STATUS or WATCHDOG (the daemon is stopping). */
void sdnotify_stop(sdnotify *n);

/* STOPPING=1, with STATUS=stopping. */
void sdnotify_stopping(void);

#endif
