/* pusher: POSTs reports to the bureau with libcurl's multi interface,
 * driven from the libuv loop (curl's sockets watched with uv_poll, its
 * timeouts with a uv_timer), so the loop never blocks on the network.
 *
 * One request at a time, in order: the caller posts the oldest report not yet
 * accepted and, on anything but a 2xx, posts it again after a back-off. The
 * bearer token is sent in the Authorization header and never logged.
 */
#ifndef IC_PUSHER_H
#define IC_PUSHER_H

#include <stdint.h>
#include <uv.h>

typedef struct pusher pusher;

/* Called on the loop thread when a post ends: STATUS is the HTTP status (0
 * when no answer came, with DETAIL saying why). */
typedef void (*pusher_done_fn)(void *ctx, int64_t id, long status,
                               const char *detail);

typedef struct {
  const char *url;
  const char *ca_file;  /* NULL or "": the system's CA store */
  const char *token;    /* NULL or "": no Authorization header */
  int64_t timeout_ms;
  pusher_done_fn done;
  void *ctx;
} pusher_options;

int pusher_new(pusher **out, uv_loop_t *loop, const pusher_options *opt,
               char *err, size_t errlen);

/* Start posting BODY (copied) for report ID. -1 when a post is in progress. */
int pusher_post(pusher *p, int64_t id, const char *body);

int pusher_busy(const pusher *p);

/* Abort what is in flight and close the handles (the loop then finishes
 * them); pusher_free after the loop has run. */
void pusher_close(pusher *p);
void pusher_free(pusher *p);

#endif
