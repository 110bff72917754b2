/* A small HTTP/1.1 responder on the loop: one request a connection. */
#include "metrics/http.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef struct conn {
  struct conn *next, **prevp;
  httpd *h;
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t wr;
  int open_handles; /* freed when both are closed */
  bool answered, closing;
  bool probation; /* over the limit, with HTTPD_PROBATION_MS to ask */
  uint64_t accepted_ms; /* the loop's time at accept */
  size_t len;
  char head[HTTPD_MAX_HEAD + 1];
  mtext out;
} conn;

struct httpd {
  uv_loop_t *loop;
  uv_tcp_t server;
  httpd_handler handler;
  void *ctx;
  conn *conns;
  size_t nconns, nprobation; /* nconns counts those on probation too */
  unsigned long long refused, evicted;
  bool closing;
};

size_t httpd_connections(const httpd *h) { return h ? h->nconns : 0; }
unsigned long long httpd_refused(const httpd *h) { return h ? h->refused : 0; }
unsigned long long httpd_evicted(const httpd *h) { return h ? h->evicted : 0; }

static void on_conn_closed(uv_handle_t *hd) {
  conn *c = hd->data;
  if (--c->open_handles > 0) return;
  mtext_free(&c->out);
  free(c);
}

static void conn_close(conn *c) {
  if (c->closing) return;
  c->closing = true;
  if (c->prevp) {
    *c->prevp = c->next;
    if (c->next) c->next->prevp = c->prevp;
    c->h->nconns--;
    if (c->probation) c->h->nprobation--;
  }
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

static void on_timeout(uv_timer_t *t) {
  conn *c = t->data;
  if (c->probation && !c->answered) c->h->refused++;
  conn_close(c);
}

static void on_written(uv_write_t *w, int status) {
  (void)status;
  conn_close(w->data);
}

static const char *reason(int status) {
  switch (status) {
  case 200: return "OK";
  case 400: return "Bad Request";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 431: return "Request Header Fields Too Large";
  case 503: return "Service Unavailable";
  default: return "Internal Server Error";
  }
}

/* Answer with STATUS and BODY (taken), then close. */
static void respond(conn *c, int status, const char *ctype, mtext *body, bool head_only) {
  c->answered = true;
  uv_read_stop((uv_stream_t *)&c->tcp);
  mtext_init(&c->out);
  size_t blen = body && body->s ? body->len : 0;
  mtext_printf(&c->out,
               "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
               "%sConnection: close\r\n\r\n",
               status, reason(status), ctype, blen,
               status == 405 ? "Allow: GET, HEAD\r\n" : "");
  if (blen && !head_only) mtext_printf(&c->out, "%.*s", (int)blen, body->s);
  if (body) mtext_free(body);
  if (c->out.failed || !c->out.s) {
    conn_close(c);
    return;
  }
  uv_buf_t b = uv_buf_init(c->out.s, (unsigned)c->out.len);
  c->wr.data = c;
  if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) conn_close(c);
}

static void respond_text(conn *c, int status, const char *text) {
  mtext b;
  mtext_init(&b);
  mtext_printf(&b, "%s\n", text);
  respond(c, status, "text/plain; charset=utf-8", &b, false);
}

/* The head is complete (its end at END): parse the request line. */
static void handle_request(conn *c, size_t end) {
  c->head[end] = '\0';
  char *eol = strpbrk(c->head, "\r\n");
  if (eol) *eol = '\0';
  char *method = c->head;
  char *sp1 = strchr(method, ' ');
  if (!sp1) return respond_text(c, 400, "bad request");
  *sp1 = '\0';
  char *target = sp1 + 1;
  char *sp2 = strchr(target, ' ');
  if (!sp2 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0 || target[0] != '/')
    return respond_text(c, 400, "bad request");
  *sp2 = '\0';
  for (const char *p = method; *p; p++)
    if (*p < 'A' || *p > 'Z') return respond_text(c, 400, "bad request");
  bool head_only = strcmp(method, "HEAD") == 0;
  if (!head_only && strcmp(method, "GET") != 0)
    return respond_text(c, 405, "method not allowed");
  char *q = strchr(target, '?');
  if (q) *q = '\0';
  mtext body;
  mtext_init(&body);
  const char *ctype = "text/plain; charset=utf-8";
  int status = c->h->handler(c->h->ctx, target, &body, &ctype);
  if (body.failed) {
    mtext_free(&body);
    return respond_text(c, 503, "out of memory");
  }
  respond(c, status, ctype, &body, head_only);
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  conn *c = hd->data;
  /* One byte past the limit tells a head that is too large. */
  buf->base = c->head + c->len;
  buf->len = HTTPD_MAX_HEAD + 1 - c->len;
}

/* The end of the head: the blank line after it, or 0. */
static size_t head_end(const conn *c, size_t from) {
  for (size_t i = from > 3 ? from - 3 : 0; i < c->len; i++) {
    if (c->head[i] != '\n') continue;
    if (i >= 1 && c->head[i - 1] == '\n') return i + 1;
    if (i >= 2 && c->head[i - 1] == '\r' && c->head[i - 2] == '\n') return i + 1;
  }
  return 0;
}

/* N more bytes of C's head arrived. */
static void took(conn *c, size_t n) {
  size_t from = c->len;
  c->len += n;
  size_t end = head_end(c, from);
  if (end) {
    handle_request(c, end);
  } else if (c->len > HTTPD_MAX_HEAD) {
    respond_text(c, 431, "request head too large");
  }
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  conn *c = s->data;
  if (c->answered || c->closing) return;
  if (n < 0) {
    conn_close(c);
    return;
  }
  if (n > 0) took(c, (size_t)n);
}

/* Every slot is taken: close the oldest connection in a slot that has had
 * its grace to send a request and has not (the list runs newest first). */
static bool make_room(httpd *h) {
  conn *oldest = NULL;
  uint64_t now = uv_now(h->loop);
  for (conn *c = h->conns; c; c = c->next)
    if (!c->answered && !c->probation && now - c->accepted_ms >= HTTPD_GRACE_MS) oldest = c;
  if (!oldest) return false;
  h->evicted++;
  conn_close(oldest);
  return true;
}

/* C finds every slot held by a client still within its grace: it goes on
 * probation, in place of the oldest one there if they are all taken. Its
 * request may be a moment behind its connection (a scraper's usually is,
 * when its connection is accepted the instant it is made). */
static void put_on_probation(httpd *h, conn *c) {
  if (h->nprobation >= HTTPD_MAX_PROBATION) {
    conn *oldest = NULL;
    for (conn *o = h->conns; o; o = o->next)
      if (o->probation && !o->answered && !o->closing) oldest = o;
    if (oldest) {
      h->refused++;
      conn_close(oldest);
    }
  }
  c->probation = true;
  h->nprobation++;
  uv_timer_start(&c->timer, on_timeout, HTTPD_PROBATION_MS, 0);
}

static void on_connection(uv_stream_t *server, int status) {
  httpd *h = server->data;
  if (status < 0 || h->closing) return;
  conn *c = calloc(1, sizeof *c);
  if (!c) return; /* the connection waits in the backlog */
  c->h = h;
  uv_tcp_init(h->loop, &c->tcp);
  uv_timer_init(h->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->open_handles = 2;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  c->accepted_ms = uv_now(h->loop);
  c->next = h->conns;
  if (h->conns) h->conns->prevp = &c->next;
  h->conns = c;
  c->prevp = &h->conns;
  h->nconns++;
  uv_timer_start(&c->timer, on_timeout, HTTPD_TIMEOUT_MS, 0);
  /* A client that asked at once (a scraper) is answered now, over the
   * limit if need be (its answer is written and it closes): its request is
   * usually there already, and under a flood of connections it would
   * otherwise wait behind them. */
  uv_os_fd_t fd;
  ssize_t n = -1;
  if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
    n = recv(fd, c->head, HTTPD_MAX_HEAD + 1, MSG_DONTWAIT);
  if (n > 0) took(c, (size_t)n);
  if (c->answered || c->closing) return;
  if (h->nconns - h->nprobation > HTTPD_MAX_CONNS && !make_room(h))
    put_on_probation(h, c); /* every slot's client is within its grace */
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) conn_close(c);
}

static void on_server_closed(uv_handle_t *hd) { free(hd->data); }

int httpd_start(httpd **out, uv_loop_t *loop, const char *host, int port,
                httpd_handler handler, void *ctx, char *err, size_t errlen) {
  *out = NULL;
  struct sockaddr_storage sa;
  bool v6 = strchr(host, ':') != NULL;
  int rc = v6 ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&sa)
              : uv_ip4_addr(host, port, (struct sockaddr_in *)&sa);
  if (rc != 0) {
    snprintf(err, errlen, "%s: not an address: %s", host, uv_strerror(rc));
    return -1;
  }
  httpd *h = calloc(1, sizeof *h);
  if (!h) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  h->loop = loop;
  h->handler = handler;
  h->ctx = ctx;
  uv_tcp_init(loop, &h->server);
  h->server.data = h;
  if ((rc = uv_tcp_bind(&h->server, (const struct sockaddr *)&sa, 0)) != 0 ||
      (rc = uv_listen((uv_stream_t *)&h->server, SOMAXCONN, on_connection)) != 0) {
    snprintf(err, errlen, "cannot listen on %s%s%s:%d: %s", v6 ? "[" : "", host,
             v6 ? "]" : "", port, uv_strerror(rc));
    h->closing = true;
    uv_close((uv_handle_t *)&h->server, on_server_closed);
    return -1;
  }
  *out = h;
  return 0;
}

void httpd_close(httpd *h) {
  if (!h) return;
  h->closing = true;
  while (h->conns) conn_close(h->conns);
  uv_close((uv_handle_t *)&h->server, on_server_closed);
}
