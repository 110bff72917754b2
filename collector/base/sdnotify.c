#include "base/sdnotify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

bool sdnotify_listening(void) {
  const char *s = getenv("NOTIFY_SOCKET");
  return s && *s;
}

int64_t sdnotify_watchdog_ms(void) {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0) return 0;
  return usec >= 1000 ? (int64_t)(usec / 1000) : 1;
}

/* Send STATUS= when the daemon's line has changed. */
static void status_now(sdnotify *n, const char *prefix) {
  char line[sizeof n->last_status];
  line[0] = '\0';
  if (n->describe) n->describe(n->ctx, line, sizeof line);
  if (!prefix && strcmp(line, n->last_status) == 0) return;
  snprintf(n->last_status, sizeof n->last_status, "%s", line);
  char msg[sizeof line + 32];
  snprintf(msg, sizeof msg, "%sSTATUS=%s", prefix ? prefix : "", line);
  (void)sd_notify(0, msg); /* nobody to tell when it fails */
}

static void on_status(uv_timer_t *t) { status_now(t->data, NULL); }

static void on_watchdog(uv_timer_t *t) {
  sdnotify *n = t->data;
  char why[256] = "";
  /* This runs on the loop: the loop itself is alive. */
  if (n->alive && !n->alive(n->ctx, n->interval_ms, why, sizeof why)) return;
  (void)sd_notify(0, "WATCHDOG=1");
}

void sdnotify_start(sdnotify *n, uv_loop_t *loop, sdnotify_alive_fn alive,
                    sdnotify_describe_fn describe, void *ctx) {
  memset(n, 0, sizeof *n);
  n->alive = alive;
  n->describe = describe;
  n->ctx = ctx;
  if (!sdnotify_listening()) return;
  uv_timer_init(loop, &n->status);
  n->status.data = n;
  n->status_on = true;
  uv_timer_start(&n->status, on_status, SDNOTIFY_STATUS_EVERY_MS, SDNOTIFY_STATUS_EVERY_MS);
  n->interval_ms = sdnotify_watchdog_ms();
  if (n->interval_ms > 0) {
    uint64_t half = n->interval_ms >= 2 ? (uint64_t)n->interval_ms / 2 : 1;
    uv_timer_init(loop, &n->watchdog);
    n->watchdog.data = n;
    n->watchdog_on = true;
    uv_timer_start(&n->watchdog, on_watchdog, half, half);
  }
}

void sdnotify_ready(sdnotify *n) {
  if (!sdnotify_listening()) return;
  status_now(n, "READY=1\n");
}

void sdnotify_reloading(sdnotify *n, bool begins) {
  if (!sdnotify_listening()) return;
  if (!begins) {
    status_now(n, "READY=1\n");
    return;
  }
  /* MONOTONIC_USEC: systemd (253 and later) tells this reload apart from
   * an earlier one by it. */
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  char msg[96];
  snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
           (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
  (void)sd_notify(0, msg);
}

void sdnotify_stop(sdnotify *n) {
  if (n->status_on) uv_timer_stop(&n->status);
  if (n->watchdog_on) uv_timer_stop(&n->watchdog);
}

void sdnotify_stopping(void) {
  if (!sdnotify_listening()) return;
  (void)sd_notify(0, "STOPPING=1\nSTATUS=stopping");
}
