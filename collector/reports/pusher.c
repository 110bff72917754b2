#include "reports/pusher.h"

#include "base/backoff.h"
#include "reports/curlapi.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* libcurl's functions, loaded by the first pusher_new. */
static const curl_api *C;

typedef struct sock_ctx {
  uv_poll_t poll;
  curl_socket_t fd;
  struct pusher *p;
} sock_ctx;

struct pusher {
  uv_loop_t *loop;
  CURLM *multi;
  CURL *easy; /* the post in progress, or NULL */
  uv_timer_t timer;
  bool timer_open;
  struct curl_slist *headers;
  char *url, *ca, *auth;
  int64_t timeout_ms;
  int64_t id;
  char *body;
  char errbuf[CURL_ERROR_SIZE];
  void (*want_next)(void *ctx);
  void (*accepted)(void *ctx, int64_t id);
  void (*failing_cb)(void *ctx, bool failing, const char *detail);
  void *ctx;
  enum { P_IDLE, P_ASKED, P_POSTING, P_BACKOFF } state;
  uv_timer_t retry;
  bool retry_open;
  int64_t backoff_ms;
  bool failing;
  int open_handles;
  bool closing;
};

static void finished(pusher *p, int64_t id, long status, const char *detail);

static void check_done(pusher *p) {
  CURLMsg *msg;
  int left;
  while ((msg = C->multi_info_read(p->multi, &left))) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL *e = msg->easy_handle;
    long status = 0;
    char detail[CURL_ERROR_SIZE + 64];
    detail[0] = '\0';
    if (msg->data.result == CURLE_OK) {
      C->easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
      snprintf(detail, sizeof detail, "HTTP %ld", status);
    } else {
      snprintf(detail, sizeof detail, "%s",
               p->errbuf[0] ? p->errbuf : C->easy_strerror(msg->data.result));
    }
    C->multi_remove_handle(p->multi, e);
    C->easy_cleanup(e);
    p->easy = NULL;
    free(p->body);
    p->body = NULL;
    if (!p->closing) finished(p, p->id, status, detail);
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  sock_ctx *s = h->data;
  int flags = 0;
  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  int running;
  C->multi_socket_action(s->p->multi, s->fd, flags, &running);
  check_done(s->p);
}

static void on_timer(uv_timer_t *t) {
  pusher *p = t->data;
  int running;
  C->multi_socket_action(p->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_done(p);
}

static void on_sock_closed(uv_handle_t *h) {
  sock_ctx *s = h->data;
  s->p->open_handles--;
  free(s);
}

static int sock_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *sockp) {
  (void)e;
  pusher *p = userp;
  sock_ctx *s = sockp;
  if (what == CURL_POLL_REMOVE) {
    if (s) {
      uv_poll_stop(&s->poll);
      uv_close((uv_handle_t *)&s->poll, on_sock_closed);
      C->multi_assign(p->multi, fd, NULL);
    }
    return 0;
  }
  if (!s) {
    s = calloc(1, sizeof *s);
    if (!s) return -1;
    s->fd = fd;
    s->p = p;
    if (uv_poll_init_socket(p->loop, &s->poll, fd) != 0) {
      free(s);
      return -1;
    }
    s->poll.data = s;
    p->open_handles++;
    C->multi_assign(p->multi, fd, s);
  }
  int ev = 0;
  if (what & CURL_POLL_IN) ev |= UV_READABLE;
  if (what & CURL_POLL_OUT) ev |= UV_WRITABLE;
  uv_poll_start(&s->poll, ev, on_poll);
  return 0;
}

static int timer_cb(CURLM *m, long timeout_ms, void *userp) {
  (void)m;
  pusher *p = userp;
  if (timeout_ms < 0)
    uv_timer_stop(&p->timer);
  else
    uv_timer_start(&p->timer, on_timer, (uint64_t)timeout_ms, 0);
  return 0;
}

static size_t discard(char *ptr, size_t size, size_t n, void *userp) {
  (void)ptr;
  (void)userp;
  return size * n; /* the bureau's answer body is not needed */
}

int pusher_new(pusher **out, uv_loop_t *loop, const pusher_options *opt,
               char *err, size_t errlen) {
  /* libcurl is loaded now, not at start: gateways that push nothing never
   * map it (curlapi.h). */
  if (!(C = curl_api_load(err, errlen))) return -1;
  pusher *p = calloc(1, sizeof *p);
  if (!p) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  p->loop = loop;
  p->want_next = opt->want_next;
  p->accepted = opt->accepted;
  p->failing_cb = opt->failing;
  p->ctx = opt->ctx;
  p->timeout_ms = opt->timeout_ms > 0 ? opt->timeout_ms : 30000;
  p->url = strdup(opt->url);
  p->ca = opt->ca_file && *opt->ca_file ? strdup(opt->ca_file) : NULL;
  p->multi = C->multi_init();
  if (!p->url || !p->multi) {
    snprintf(err, errlen, "out of memory");
    pusher_free(p);
    return -1;
  }
  p->headers = C->slist_append(NULL, "Content-Type: application/json");
  if (opt->token && *opt->token) {
    size_t n = strlen(opt->token) + 32;
    p->auth = malloc(n);
    if (p->auth) {
      snprintf(p->auth, n, "Authorization: Bearer %s", opt->token);
      p->headers = C->slist_append(p->headers, p->auth);
    }
  }
  C->multi_setopt(p->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
  C->multi_setopt(p->multi, CURLMOPT_SOCKETDATA, p);
  C->multi_setopt(p->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
  C->multi_setopt(p->multi, CURLMOPT_TIMERDATA, p);
  uv_timer_init(loop, &p->timer);
  p->timer.data = p;
  p->timer_open = true;
  uv_timer_init(loop, &p->retry);
  p->retry.data = p;
  p->retry_open = true;
  *out = p;
  return 0;
}

static int post(pusher *p, int64_t id, const char *body);

void pusher_kick(pusher *p) {
  if (!p || p->closing || p->state != P_IDLE) return;
  p->state = P_ASKED;
  p->want_next(p->ctx);
}

void pusher_offer(pusher *p, int64_t id, const char *body) {
  if (p->closing) return;
  if (post(p, id, body) == 0)
    p->state = P_POSTING;
  else
    finished(p, id, 0, "cannot start the request"); /* back off and retry */
}

void pusher_offer_none(pusher *p) {
  if (p->state == P_ASKED) p->state = P_IDLE;
}

static void on_retry(uv_timer_t *t) {
  pusher *p = t->data;
  p->state = P_IDLE;
  pusher_kick(p);
}

static void finished(pusher *p, int64_t id, long status, const char *detail) {
  if (status >= 200 && status < 300) {
    bool was_failing = p->failing;
    p->failing = false;
    backoff_reset(&p->backoff_ms);
    if (was_failing && p->failing_cb) p->failing_cb(p->ctx, false, NULL);
    p->accepted(p->ctx, id);
    p->state = P_IDLE;
    pusher_kick(p);
    return;
  }
  backoff_next(&p->backoff_ms, 1000, 300000);
  bool was_failing = p->failing;
  p->failing = true;
  if (!was_failing && p->failing_cb) p->failing_cb(p->ctx, true, detail);
  p->state = P_BACKOFF;
  uv_timer_start(&p->retry, on_retry, (uint64_t)p->backoff_ms, 0);
}

static int post(pusher *p, int64_t id, const char *body) {
  if (p->easy || p->closing) return -1;
  p->body = strdup(body);
  CURL *e = C->easy_init();
  if (!p->body || !e) {
    free(p->body);
    p->body = NULL;
    if (e) C->easy_cleanup(e);
    return -1;
  }
  p->id = id;
  p->errbuf[0] = '\0';
  C->easy_setopt(e, CURLOPT_URL, p->url);
  C->easy_setopt(e, CURLOPT_POSTFIELDS, p->body);
  C->easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(p->body));
  C->easy_setopt(e, CURLOPT_HTTPHEADER, p->headers);
  C->easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)p->timeout_ms);
  C->easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)p->timeout_ms);
  C->easy_setopt(e, CURLOPT_ERRORBUFFER, p->errbuf);
  C->easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
  C->easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  /* Do not wait for a name lookup's thread when cleaning up: a DNS server
   * that does not answer would hold the daemon's exit (libcurl 7.87 or
   * later; an older one ignores the option). */
  C->easy_setopt(e, CURLOPT_QUICK_EXIT, 1L);
  C->easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  C->easy_setopt(e, CURLOPT_USERAGENT, "intake-collector/" IC_VERSION);
  if (p->ca) C->easy_setopt(e, CURLOPT_CAINFO, p->ca);
  if (C->multi_add_handle(p->multi, e) != CURLM_OK) {
    C->easy_cleanup(e);
    free(p->body);
    p->body = NULL;
    return -1;
  }
  p->easy = e;
  return 0;
}

void pusher_close(pusher *p) {
  if (!p) return;
  p->closing = true;
  if (p->easy) {
    C->multi_remove_handle(p->multi, p->easy); /* closes its sockets */
    C->easy_cleanup(p->easy);
    p->easy = NULL;
  }
  if (p->timer_open) {
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, NULL);
    p->timer_open = false;
  }
  if (p->retry_open) {
    uv_timer_stop(&p->retry);
    uv_close((uv_handle_t *)&p->retry, NULL);
    p->retry_open = false;
  }
}

void pusher_free(pusher *p) {
  if (!p) return;
  if (p->multi) C->multi_cleanup(p->multi);
  C->slist_free_all(p->headers);
  if (p->auth) {
    memset(p->auth, 0, strlen(p->auth));
    free(p->auth);
  }
  free(p->url);
  free(p->ca);
  free(p->body);
  free(p);
}
