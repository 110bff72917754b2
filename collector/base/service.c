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

static void on_other_signal(uv_signal_t *h, int signum) {
  service_signals *s = h->data;
  if (signum == SIGHUP && s->reload) {
    s->reload(s->ctx);
  } else if (signum == SIGHUP) {
    log_info("SIGHUP ignored: the file is read at start only (restart to apply a change); "
             "SIGTERM stops");
  } else {
    log_info("%s ignored: %sSIGTERM stops", signum == SIGUSR1 ? "SIGUSR1" : "SIGUSR2",
             s->reload ? "SIGHUP reloads the configuration, " : "");
  }
}

void service_signals_start(service_signals *s, uv_loop_t *loop, bool *stopping,
                           void (*reload)(void *ctx), void *ctx) {
  s->stopping = stopping;
  s->reload = reload;
  s->ctx = ctx;
  uv_signal_t *stops[] = {&s->term, &s->intr}, *others[] = {&s->hup, &s->usr1, &s->usr2};
  int stop_nums[] = {SIGTERM, SIGINT}, other_nums[] = {SIGHUP, SIGUSR1, SIGUSR2};
  for (size_t i = 0; i < 2; i++) {
    uv_signal_init(loop, stops[i]);
    stops[i]->data = s;
    uv_signal_start(stops[i], on_signal, stop_nums[i]);
  }
  for (size_t i = 0; i < 3; i++) {
    uv_signal_init(loop, others[i]);
    others[i]->data = s;
    uv_signal_start(others[i], on_other_signal, other_nums[i]);
  }
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
