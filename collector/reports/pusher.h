/* pusher: delivers reports to the bureau over HTTP(S), oldest first.
 *
 * libcurl's multi interface driven from the libuv loop (curl's sockets
 * watched with uv_poll, its timeouts with a uv_timer), so the loop never
 * blocks on the network. The owner keeps the outbox: the pusher asks it for
 * the oldest report not yet accepted (want_next; the owner answers with
 * pusher_offer or pusher_offer_none, possibly later), POSTs it, and on a 2xx
 * tells the owner to mark it (accepted) and asks for the next. Anything else
 * is retried after a back-off of 1 s doubling to 5 min; the owner hears once
 * when a failing stretch begins (with why) and once when it ends. One request at a time. The bearer token is sent in the
 * Authorization header and never logged.
 */
#ifndef IC_PUSHER_H
#define IC_PUSHER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct pusher pusher;

typedef struct {
  const char *url;
  const char *ca_file;  /* NULL or "": the system's CA store */
  const char *token;    /* NULL or "": no Authorization header */
  int64_t timeout_ms;
  void (*want_next)(void *ctx);            /* find the oldest report waiting */
  void (*accepted)(void *ctx, int64_t id); /* the bureau took report ID */
  /* Pushing began failing (DETAIL says why) or, FAILING false, works again;
   * may be NULL. */
  void (*failing)(void *ctx, bool failing, const char *detail);
  void *ctx;
} pusher_options;

int pusher_new(pusher **out, uv_loop_t *loop, const pusher_options *opt,
               char *err, size_t errlen);

/* Something new may wait in the outbox: ask for it unless busy or backing
 * off. */
void pusher_kick(pusher *p);

/* The owner's answers to want_next: report ID with BODY (copied), or
 * nothing waiting. */
void pusher_offer(pusher *p, int64_t id, const char *body);
void pusher_offer_none(pusher *p);

/* Abort what is in flight and close the handles (the loop then finishes
 * them); pusher_free after the loop has run. */
void pusher_close(pusher *p);
void pusher_free(pusher *p);

#endif
