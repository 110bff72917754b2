#include "base/service.h"

#include <signal.h>

#include "base/log.h"
#include "base/sdnotify.h"
#include "base/secret.h"

static void on_signal(uv_signal_t *h, int signum) {
  service_signals *s = h->data;
  if (s->stopping && *s->stopping) return;
  log_info("signal %d: stopping", signum);
  sdnotify_stopping();
  if (s->stopping) *s->stopping = true;
  uv_stop(h->loop);
}

void service_signals_start(service_signals *s, uv_loop_t *loop, bool *stopping) {
  s->stopping = stopping;
  uv_signal_init(loop, &s->term);
  uv_signal_init(loop, &s->intr);
  s->term.data = s->intr.data = s;
  uv_signal_start(&s->term, on_signal, SIGTERM);
  uv_signal_start(&s->intr, on_signal, SIGINT);
}

static void close_one(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

void service_close_all(uv_loop_t *loop) {
  uv_walk(loop, close_one, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
}

int service_read_secret(const char *setting, const char *path, char *buf, size_t len) {
  bool exposed;
  char why[160];
  if (secret_read_file(path, buf, len, &exposed, why, sizeof why) != 0) {
    log_error("cannot read %s %s: %s", setting, path, why);
    return -1;
  }
  if (exposed) log_warn("%s can be read by others than its owner; chmod 600 it", path);
  return 0;
}

void service_push_failing(const char *url, bool failing, const char *detail) {
  if (failing)
    log_warn("pushing reports to %s failed: %s; keeping them and retrying with back-off",
             url, detail);
  else
    log_info("the bureau accepts reports again (%s)", url);
}
