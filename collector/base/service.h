/* service: what both daemons (the gateway and the fleet view) do around
 * their event loop: stop on SIGTERM and SIGINT, take SIGHUP (a reload, or
 * ignored) and SIGUSR1/2 (ignored) without dying, close every handle at the
 * end, and read a secret named in the configuration. Unlike the rest of
 * base/, these log: they are the daemons' own start and stop. Loop thread
 * only. */
#ifndef IC_SERVICE_H
#define IC_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct {
  uv_signal_t term, intr, hup, usr1, usr2;
  bool *stopping; /* set at the first signal (may be NULL) */
  void (*reload)(void *ctx); /* SIGHUP's action (may be NULL) */
  void *ctx;
} service_signals;

/* On SIGTERM or SIGINT: say so (in the log, and STOPPING=1 to systemd),
 * set *STOPPING and stop LOOP (uv_stop). A second signal while stopping is
 * ignored. On SIGHUP: RELOAD(CTX), or, without RELOAD, a log line that the
 * signal is ignored. SIGUSR1 and SIGUSR2 are ignored with a log line. None
 * of these three ends the process, as their default action would. */
void service_signals_start(service_signals *s, uv_loop_t *loop, bool *stopping,
                           void (*reload)(void *ctx), void *ctx);

/* Close every handle of LOOP and run it until they are closed. */
void service_close_all(uv_loop_t *loop);

/* Read the secret in PATH (the setting SETTING names it, e.g.
 * "reports.token_file") into BUF of LEN bytes: 0, with a warning when
 * others than its owner may read the file; or -1 after saying why not. */
int service_read_secret(const char *setting, const char *path, char *buf, size_t len);

/* What the daemons say of pushing reports to URL: a failing stretch
 * beginning (with DETAIL) or ending. */
void service_push_failing(const char *url, bool failing, const char *detail);

#endif
