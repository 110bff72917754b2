#include "poll/netbus.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/backoff.h"
#include "base/clock.h"
#include "base/lookup.h"
#include "proto/dtu_filter.h"
#include "proto/mb_xchg.h"
#include "transport/tr_net.h"

/* A connection that has been quiet this long may have been closed by the
 * peer (DTUs close idle links) without the loop having seen it yet: look
 * before sending, so the poll goes out on a fresh connection instead of
 * failing on the dead one. */
#define IDLE_CHECK_NS 500000000ull
/* Unsolicited bytes read and dropped at once, at most, while no answer is
 * awaited (a DTU's heartbeat, a late answer). */
#define RX_CHUNK 1024


typedef enum { NB_CLOSED, NB_RESOLVING, NB_CONNECTING, NB_OPEN } nb_state;
typedef enum { NB_T_NONE, NB_T_CONNECT, NB_T_REPLY, NB_T_GAP } nb_wait;

typedef struct netbus netbus;

static void on_io(uv_poll_t *h, int status, int events);

/* One connection's socket and its watcher; it lives until the watcher's
 * close callback, which may come after the bus has moved on to another. */
typedef struct conn {
  uv_poll_t poll;
  int fd;
  int events; /* what the watcher waits for now */
  netbus *nb;
} conn;

/* Wait for EVENTS on C's socket. libuv takes the socket out of epoll and
 * puts it back on every uv_poll_start, a system call per request if done
 * for nothing: only a change is passed on. */
static void watch_for(conn *c, int events) {
  if (c->events == events) return;
  c->events = events;
  uv_poll_start(&c->poll, events, on_io);
}

struct netbus {
  netbuses *set;
  netbus *next;       /* the set's list */
  cfg_bus conf;       /* the bus's settings, a copy */
  const cfg_bus *bus; /* &conf */
  bool rtu; /* RTU frames over TCP; else Modbus TCP */
  uv_timer_t timer;
  nb_wait waiting;
  nb_state state;
  conn *c;
  /* connecting */
  lookup *lk;            /* while resolving a name (base/lookup.h) */
  struct addrinfo *addrs, *next_ai;
  int last_err;
  uint64_t connect_deadline_ns;
  int64_t reopen_at_ms, reopen_delay_ms;
  tr_error open_err;
  /* polls */
  bus_jobs jobs;
  bool busy;     /* a poll is in progress */
  bool pumping;  /* inside pump(): start the next poll from there */
  bus_job cur;
  size_t req;    /* the request of the poll being exchanged */
  bus_result *res;
  mb_xchg *x;    /* while a request awaits its answer (from the set's pool) */
  uint16_t tid;
  uint8_t out[MB_XCHG_REQ_MAX];
  size_t outlen, outoff;
  uint16_t *words;
  size_t nwords;
  uint64_t gap_ns, ready_ns, last_rx_ns;
  size_t rx_junk;     /* bytes since the last good answer (TR_NET_JUNK_MAX) */
  bool stopping;
  /* rtu-dtu: the DTU's connection comes from its server (netbus_dtu_attach);
   * its registration and heartbeat are taken out before the framer. */
  dtu_filter *flt;
  bool dtu_seen; /* a DTU has been attached once */
  char closed_why[sizeof ((tr_error *)0)->detail]; /* why the DTU's link last closed, when the bus knows */
};

struct netbuses {
  uv_loop_t *loop;
  netbus_deliver deliver;
  void *ctx;
  netbus *buses; /* open ones, newest first */
  /* Exchanges not in use: a bus holds one only while a request is out, so
   * a thousand buses need a handful, not a thousand reassembly buffers. */
  struct xslot *free_x;
  size_t nfree_x;
  /* The wake-up of the buses' name lookups when one ends. */
  uv_async_t lookup_async;
};


typedef struct xslot {
  mb_xchg x; /* first: a slot is its exchange */
  struct xslot *next;
} xslot;

static mb_xchg *x_take(netbuses *s) {
  xslot *x = s->free_x;
  if (x) {
    s->free_x = x->next;
    s->nfree_x--;
  } else
    x = malloc(sizeof *x);
  return x ? &x->x : NULL;
}

/* Free exchanges kept for reuse, at most: the polls that start together
 * (a group of slots, and those of the next while its answers come in)
 * need that many; a burst beyond it (every endpoint
 * connecting at start-up) gives its extra ones back. */
#define XPOOL_KEEP 256

static void x_put(netbus *nb) {
  if (!nb->x) return;
  xslot *x = (xslot *)nb->x;
  nb->x = NULL;
  if (nb->set->nfree_x >= XPOOL_KEEP) {
    free(x);
    return;
  }
  x->next = nb->set->free_x;
  nb->set->free_x = x;
  nb->set->nfree_x++;
}

/* "host:port" for messages ("DTU REGISTRATION" for a DTU that dials in),
 * made when needed rather than kept by every bus. */
_Static_assert(CFG_HOST_MAX <= TR_HOST_MAX, "a bus's host fits in where");
typedef struct {
  char s[TR_WHERE_MAX > 4 + CFG_REG_TEXT_MAX ? TR_WHERE_MAX : 4 + CFG_REG_TEXT_MAX];
} where_buf;

static const char *where(const netbus *nb, where_buf *w) {
  if (nb->bus->transport == CFG_TRANSPORT_RTU_DTU) {
    char reg[CFG_REG_TEXT_MAX];
    cfg_bus_registration_text(nb->bus, reg, sizeof reg);
    snprintf(w->s, sizeof w->s, "DTU %s", reg);
    return w->s;
  }
  return tr_net_where(w->s, sizeof w->s, nb->bus->host, nb->bus->port);
}

static void pump(netbus *nb);
static void send_request(netbus *nb);
static void try_connect(netbus *nb);

static uint64_t now_ns(void) { return uv_hrtime(); }

/* ------------------------------------------------------------------------ */
/* Timer                                                                    */

static void on_timer(uv_timer_t *t);

static void wait_for(netbus *nb, nb_wait what, uint64_t ms) {
  nb->waiting = what;
  /* The loop's clock is the start of this iteration's: a long iteration
   * would make the timeout fire early. */
  uv_update_time(nb->set->loop);
  uv_timer_start(&nb->timer, on_timer, ms, 0);
}

static void stop_waiting(netbus *nb) {
  if (nb->waiting == NB_T_NONE) return;
  nb->waiting = NB_T_NONE;
  uv_timer_stop(&nb->timer);
}

/* ------------------------------------------------------------------------ */
/* Polls                                                                    */

/* The poll in progress is over: decode it (when its exchanges went well),
 * hand the result over, and go on with the queue. */
static void finish(netbus *nb, int rc, const tr_error *e) {
  bus_result *r = nb->res;
  const cfg_meter *m = nb->cur.m;
  const mb_plan *plan = nb->cur.plan;
  nb->res = NULL;
  nb->busy = false;
  x_put(nb);
  stop_waiting(nb);
  r->rc = rc;
  if (rc == TR_OK) {
    r->values = (double *)(r + 1);
    char why[sizeof r->err.detail];
    if (plan_decode(plan, m->profile, nb->words, r->values, why, sizeof why) != 0) {
      r->rc = TR_EDECODE;
      r->err.code = TR_EDECODE;
      snprintf(r->err.detail, sizeof r->err.detail, "%s", why);
      r->values = NULL;
    }
  } else if (e) {
    r->err = *e;
    r->err.code = rc;
  }
  r->end_ms = clock_wall_ms();
  nb->set->deliver(nb->set->ctx, r);
  pump(nb);
}

/* An rtu-dtu bus without its DTU: the poll fails at once. */
static void not_connected(netbus *nb) {
  tr_error e;
  char reg[CFG_REG_TEXT_MAX];
  cfg_bus_registration_text(nb->bus, reg, sizeof reg);
  if (nb->dtu_seen && nb->closed_why[0])
    tr_fail(&e, TR_ENOTCONN, "DTU %s has not connected again since its link closed (%s)", reg,
            nb->closed_why);
  else if (nb->dtu_seen)
    tr_fail(&e, TR_ENOTCONN, "DTU %s has not connected again since its link closed", reg);
  else
    tr_fail(&e, TR_ENOTCONN, "DTU %s has not connected", reg);
  finish(nb, e.code, &e);
}

static void start_poll(netbus *nb) {
  (void)bus_jobs_pop(&nb->jobs, &nb->cur); /* pump saw one */
  nb->res = nb->cur.res;
  nb->busy = true;
  nb->req = 0;
  if (nb->cur.plan->total_words > nb->nwords) {
    /* A meter re-planned on a reload may read more than the bus did. */
    uint16_t *w = realloc(nb->words, nb->cur.plan->total_words * sizeof *w);
    if (!w) {
      tr_error e;
      finish(nb, tr_fail(&e, TR_EIO, "out of memory"), &e);
      return;
    }
    nb->words = w;
    nb->nwords = nb->cur.plan->total_words;
  }
  switch (nb->state) {
  case NB_OPEN:
    send_request(nb);
    break;
  case NB_CLOSED:
    if (nb->flt)
      not_connected(nb);
    else if (nb->reopen_at_ms && clock_mono_ms() < nb->reopen_at_ms)
      finish(nb, nb->open_err.code, &nb->open_err);
    else
      try_connect(nb);
    break;
  default: /* connecting: the poll goes out when it is done */
    break;
  }
}

/* Start the queued polls, one at a time: a poll that ends at once (the bus
 * is backing off) lets the next one start here rather than recursing. */
static void pump(netbus *nb) {
  if (nb->pumping) return;
  nb->pumping = true;
  while (!nb->busy && nb->jobs.count && !nb->stopping) start_poll(nb);
  nb->pumping = false;
}

/* ------------------------------------------------------------------------ */
/* Connection                                                               */

static void free_conn(uv_handle_t *h) { free(h->data); }

static void close_conn(netbus *nb) {
  if (nb->c) {
    conn *c = nb->c;
    nb->c = NULL;
    uv_close((uv_handle_t *)&c->poll, free_conn);
    close(c->fd); /* safe once the watcher is stopped by uv_close */
  }
  if (nb->addrs) {
    freeaddrinfo(nb->addrs);
    nb->addrs = nb->next_ai = NULL;
  }
  nb->state = NB_CLOSED;
  x_put(nb);
  if (nb->waiting == NB_T_CONNECT || nb->waiting == NB_T_REPLY) stop_waiting(nb);
}

static int watch(netbus *nb, int fd, int events) {
  conn *c = malloc(sizeof *c);
  if (!c) return -1;
  c->fd = fd;
  c->nb = nb;
  if (uv_poll_init_socket(nb->set->loop, &c->poll, fd) != 0) {
    free(c);
    return -1;
  }
  c->poll.data = c;
  c->events = 0;
  nb->c = c;
  watch_for(c, events);
  return 0;
}

/* Opening failed with E: back off, and fail the poll that waited for it
 * (and, through pump, the queued ones) with the reason. */
static void back_off(netbus *nb, const tr_error *e) {
  nb->state = NB_CLOSED;
  nb->reopen_at_ms = clock_mono_ms() + backoff_next(&nb->reopen_delay_ms, 1000, 30000);
  nb->open_err = *e;
  if (nb->busy) finish(nb, e->code, e);
}

/* The connection could not be opened, for ERR (an errno). */
static void open_failed(netbus *nb, int err) {
  where_buf wb;
  tr_error e;
  close_conn(nb);
  tr_net_connect_failed(&e, err, where(nb, &wb), nb->bus->timeout_ms);
  back_off(nb, &e);
}

static void connected(netbus *nb) {
  tr_net_connected(nb->c->fd);
  if (nb->waiting == NB_T_CONNECT) stop_waiting(nb);
  freeaddrinfo(nb->addrs);
  nb->addrs = nb->next_ai = NULL;
  nb->state = NB_OPEN;
  nb->rx_junk = 0;
  nb->reopen_at_ms = nb->reopen_delay_ms = 0;
  nb->last_rx_ns = now_ns();
  watch_for(nb->c, UV_READABLE);
  if (nb->busy) {
    /* The poll starts now; the connecting was not part of it. */
    nb->res->start_ms = clock_wall_ms();
    nb->res->start_mono_ms = clock_mono_ms();
    send_request(nb);
  }
}

/* Try the next address of the name, within the one deadline they share. */
static void connect_next(netbus *nb) {
  while (nb->next_ai) {
    struct addrinfo *ai = nb->next_ai;
    nb->next_ai = ai->ai_next;
    if (now_ns() >= nb->connect_deadline_ns) {
      nb->last_err = ETIMEDOUT;
      break;
    }
    int fd = tr_net_socket(ai);
    if (fd < 0) {
      nb->last_err = errno;
      continue;
    }
    int rc = tr_net_connect(fd, ai);
    if (rc < 0) {
      nb->last_err = errno;
      close(fd);
      continue;
    }
    if (watch(nb, fd, UV_WRITABLE) != 0) {
      nb->last_err = ENOMEM;
      close(fd);
      continue;
    }
    nb->state = NB_CONNECTING;
    if (rc == 0) {
      connected(nb);
      return;
    }
    uint64_t now = now_ns();
    uint64_t left = nb->connect_deadline_ns > now ? nb->connect_deadline_ns - now : 0;
    wait_for(nb, NB_T_CONNECT, (left + 999999u) / 1000000u);
    return;
  }
  open_failed(nb, nb->last_err);
}

/* The socket of a connect in progress became writable (or failed). */
static void connect_done(netbus *nb) {
  int soerr = tr_net_connect_result(nb->c->fd);
  if (soerr == 0) {
    connected(nb);
    return;
  }
  nb->last_err = soerr;
  conn *c = nb->c;
  nb->c = NULL;
  uv_close((uv_handle_t *)&c->poll, free_conn);
  close(c->fd);
  stop_waiting(nb);
  connect_next(nb);
}

static void start_addrs(netbus *nb, struct addrinfo *list) {
  nb->addrs = nb->next_ai = list;
  nb->last_err = 0;
  /* One deadline for all the addresses a name has: connecting costs at
   * most the bus timeout, like a request. */
  nb->connect_deadline_ns = now_ns() + (uint64_t)nb->bus->timeout_ms * 1000000u;
  connect_next(nb);
}

/* A name lookup ended: the buses whose lookup is done go on. */
static void on_lookups(uv_async_t *a) {
  netbuses *set = a->data;
  for (netbus *nb = set->buses; nb; nb = nb->next) {
    int rc;
    struct addrinfo *res;
    if (!nb->lk || !lookup_take(nb->lk, &rc, &res)) continue;
    nb->lk = NULL;
    stop_waiting(nb);
    if (rc != 0) {
      tr_error e;
      tr_net_resolve_failed(&e, nb->bus->host, rc, 0);
      back_off(nb, &e);
      continue;
    }
    start_addrs(nb, res);
  }
}

static void try_connect(netbus *nb) {
  struct addrinfo *list = NULL;
  nb->state = NB_RESOLVING;
  /* An address literal needs no resolver; a name is looked up on a thread
   * of its own (base/lookup.h), so a slow DNS server never holds up the loop,
   * nor the exit. */
  if (tr_net_resolve(nb->bus->host, nb->bus->port, true, &list) == 0) {
    start_addrs(nb, list);
    return;
  }
  int err;
  if (!(nb->lk = lookup_start(nb->bus->host, nb->bus->port, &nb->set->lookup_async, &err))) {
    nb->state = NB_CLOSED;
    open_failed(nb, err);
    return;
  }
  /* A DNS server that does not answer costs the bus timeout, not the
   * resolver's own retries. */
  wait_for(nb, NB_T_CONNECT, (uint64_t)nb->bus->timeout_ms);
}

/* ------------------------------------------------------------------------ */
/* Exchanges                                                                */

/* The connection broke (or the peer closed it) with a poll on it: fail the
 * poll; the next one connects again. */
static void conn_lost(netbus *nb, int err) {
  where_buf wb;
  tr_error e;
  tr_net_lost(&e, err, where(nb, &wb));
  snprintf(nb->closed_why, sizeof nb->closed_why, "%s", e.detail);
  close_conn(nb);
  if (nb->busy) finish(nb, e.code, &e);
}

/* One exchange ended with RC: go on with the poll's next request, or end
 * the poll. */
static void exchange_done(netbus *nb, int rc, const tr_error *e) {
  bool desync = nb->x && nb->x->desync;
  x_put(nb);
  stop_waiting(nb);
  nb->ready_ns = now_ns() + nb->gap_ns;
  if (rc != TR_OK) {
    if (desync) close_conn(nb);
    finish(nb, rc, e);
    return;
  }
  const mb_plan *plan = nb->cur.plan;
  if (++nb->req < plan->nreqs)
    send_request(nb);
  else
    finish(nb, TR_OK, NULL);
}

/* Bytes that frame no answer came (N more of them): past the bound the
 * connection is closed. False when it was. */
static bool count_junk(netbus *nb, size_t n) {
  nb->rx_junk += n;
  if (nb->rx_junk <= TR_NET_JUNK_MAX) return true;
  tr_error e;
  where_buf wb;
  tr_net_junk(&e, where(nb, &wb), nb->rx_junk);
  snprintf(nb->closed_why, sizeof nb->closed_why, "%s", e.detail);
  close_conn(nb);
  if (nb->busy) finish(nb, e.code, &e);
  return false;
}

/* A DTU's bytes: its packets taken out, what is left framed and judged.
 * Only what the filter hands on counts as junk, so a DTU whose meters are
 * all dead is not closed for its heartbeats. */
static bool dtu_receive(netbus *nb, const uint8_t *buf, size_t n) {
  size_t off = 0;
  while (off < n) {
    off += dtu_filter_feed(nb->flt, buf + off, n - off);
    uint8_t frame[MB_RTU_MAX];
    size_t k;
    while ((k = dtu_filter_next(nb->flt, frame, sizeof frame)) > 0) {
      if (!nb->x) {
        if (!count_junk(nb, k)) return false;
        continue; /* not an answer to anything: dropped */
      }
      tr_error e;
      int rc = mb_xchg_feed(nb->x, frame, k, &e);
      if (rc == TR_OK) nb->rx_junk = 0;
      else if (!count_junk(nb, k)) return false;
      if (rc != MB_XCHG_MORE) {
        exchange_done(nb, rc, &e);
        /* What follows the answer is not part of it. */
        if (nb->flt) dtu_filter_reset(nb->flt);
        return nb->c != NULL;
      }
    }
  }
  return true;
}

/* Read what the socket has. Returns false when the connection is gone. */
static bool receive(netbus *nb) {
  uint8_t buf[RX_CHUNK];
  ssize_t n;
  do {
    n = recv(nb->c->fd, buf, sizeof buf, MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
  if (n <= 0) {
    conn_lost(nb, n == 0 ? 0 : errno);
    return false;
  }
  nb->last_rx_ns = now_ns();
  if (nb->flt) return dtu_receive(nb, buf, (size_t)n);
  nb->rx_junk += (size_t)n;
  if (nb->rx_junk > TR_NET_JUNK_MAX) {
    tr_error e;
    where_buf wb;
    tr_net_junk(&e, where(nb, &wb), nb->rx_junk);
    close_conn(nb);
    if (nb->busy) finish(nb, e.code, &e);
    return false;
  }
  if (!nb->x) return true; /* not an answer to anything: dropped */
  tr_error e;
  int rc = mb_xchg_feed(nb->x, buf, (size_t)n, &e);
  if (rc == TR_OK) nb->rx_junk = 0;
  if (rc != MB_XCHG_MORE) exchange_done(nb, rc, &e);
  return true;
}

/* Send what is left of the request; false when the connection is gone. */
static bool flush_out(netbus *nb) {
  while (nb->outoff < nb->outlen) {
    ssize_t n = send(nb->c->fd, nb->out + nb->outoff, nb->outlen - nb->outoff,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      nb->outoff += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      watch_for(nb->c, UV_READABLE | UV_WRITABLE);
      return true;
    }
    conn_lost(nb, n < 0 ? errno : EPIPE);
    return false;
  }
  watch_for(nb->c, UV_READABLE);
  return true;
}

/* Before the first request on a connection that has been quiet: is it
 * still up? Drops what came unasked. False when the peer has closed it. */
static bool still_open(netbus *nb) { return tr_net_drain(nb->c->fd) == 0; }

static void send_request(netbus *nb) {
  if (nb->state != NB_OPEN) {
    /* Not expected (a lost connection ends its poll), but never send on
     * no connection. */
    if (nb->state == NB_CLOSED && nb->flt)
      not_connected(nb);
    else if (nb->state == NB_CLOSED)
      try_connect(nb);
    return;
  }
  uint64_t now = now_ns();
  if (nb->ready_ns > now) {
    /* The bus's turnaround is not over. */
    wait_for(nb, NB_T_GAP, (nb->ready_ns - now + 999999u) / 1000000u);
    return;
  }
  if (nb->req == 0 && now - nb->last_rx_ns >= IDLE_CHECK_NS && !still_open(nb)) {
    /* Closed by the peer while idle (DTUs do): nothing was lost, connect
     * again and send then; a DTU that dials in has to dial again. */
    close_conn(nb);
    if (nb->flt)
      not_connected(nb);
    else
      try_connect(nb);
    return;
  }
  /* Whatever a DTU's filter holds (part of a heartbeat, a late answer's
   * start) is not the answer to the request about to go. */
  if (nb->flt) dtu_filter_reset(nb->flt);
  const cfg_meter *m = nb->cur.m;
  const mb_plan *plan = nb->cur.plan;
  const plan_range *r = &plan->reqs[nb->req];
  uint8_t fc = r->table == MB_TABLE_INPUT ? MB_FC_READ_INPUT : MB_FC_READ_HOLDING;
  if (nb->flt) dtu_filter_expect(nb->flt, (uint8_t)m->unit, fc, 5 + 2u * r->count);
  tr_error e;
  if (!nb->x && !(nb->x = x_take(nb->set))) {
    finish(nb, tr_fail(&e, TR_EIO, "out of memory"), &e);
    return;
  }
  int len = mb_xchg_begin(nb->x, nb->rtu, ++nb->tid, (uint8_t)m->unit, fc,
                          r->address, r->count, nb->words + plan->offsets[nb->req],
                          nb->out, sizeof nb->out, &e);
  if (len < 0) {
    finish(nb, len, &e);
    return;
  }
  if (nb->req == 0) {
    nb->res->start_ms = clock_wall_ms();
    nb->res->start_mono_ms = clock_mono_ms();
  }
  nb->res->requests++;
  nb->outlen = (size_t)len;
  nb->outoff = 0;
  wait_for(nb, NB_T_REPLY, (uint64_t)nb->bus->timeout_ms);
  flush_out(nb);
}

static void on_timer(uv_timer_t *t) {
  netbus *nb = t->data;
  nb_wait what = nb->waiting;
  nb->waiting = NB_T_NONE;
  switch (what) {
  case NB_T_GAP:
    send_request(nb);
    break;
  case NB_T_CONNECT: {
    if (nb->state == NB_RESOLVING) {
      /* The name did not resolve in time: its answer, if it comes, is
       * dropped. */
      if (nb->lk) {
        lookup_abandon(nb->lk);
        nb->lk = NULL;
      }
      tr_error e;
      tr_fail(&e, TR_ETIMEOUT, "resolve %s: no answer within %lld ms",
              nb->bus->host, (long long)nb->bus->timeout_ms);
      back_off(nb, &e);
      break;
    }
    /* The loop may have been held up past the deadline with the answer
     * waiting: look once more before giving up. */
    struct pollfd p = {.fd = nb->c->fd, .events = POLLOUT};
    if (poll(&p, 1, 0) == 1) {
      connect_done(nb);
      return;
    }
    nb->last_err = ETIMEDOUT;
    nb->next_ai = NULL;
    open_failed(nb, ETIMEDOUT);
    break;
  }
  case NB_T_REPLY: {
    /* Likewise: an answer may sit in the socket, not read yet because the
     * timers run first in a loop iteration. If it completes the exchange,
     * the next request may already be out, with a timer of its own: that
     * one has not timed out. */
    uint16_t tid = nb->tid;
    if (!receive(nb) || !nb->x || nb->tid != tid || nb->waiting != NB_T_NONE) return;
    tr_error e;
    int rc = mb_xchg_timeout(nb->x, nb->bus->timeout_ms, &e);
    exchange_done(nb, rc, &e);
    break;
  }
  case NB_T_NONE:
    break;
  }
}

static void on_io(uv_poll_t *h, int status, int events) {
  conn *c = h->data;
  netbus *nb = c->nb;
  if (nb->c != c) return; /* an old connection's last event */
  if (nb->state == NB_CONNECTING) {
    connect_done(nb);
    return;
  }
  if (status < 0) {
    /* libuv has stopped the watcher: the socket failed. Take its error;
     * when it has none, watch it again and read what it holds. */
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0) soerr = errno;
    if (soerr) {
      conn_lost(nb, soerr);
      return;
    }
    c->events = 0;
    watch_for(c, nb->outoff < nb->outlen ? UV_READABLE | UV_WRITABLE : UV_READABLE);
    receive(nb);
    return;
  }
  if ((events & UV_WRITABLE) && nb->outoff < nb->outlen && !flush_out(nb)) return;
  if (events & UV_READABLE) receive(nb);
}

/* ------------------------------------------------------------------------ */
/* Public                                                                   */

int netbuses_new(netbuses **out, uv_loop_t *loop, netbus_deliver deliver, void *ctx,
                 char *err, size_t errlen) {
  netbuses *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  uv_async_init(loop, &s->lookup_async, on_lookups);
  s->lookup_async.data = s;
  s->loop = loop;
  s->deliver = deliver;
  s->ctx = ctx;
  *out = s;
  return 0;
}

netbus *netbus_open(netbuses *s, const cfg_bus *bus, uint16_t tid_seed) {
  netbus *nb = calloc(1, sizeof *nb);
  if (!nb) return NULL;
  nb->set = s;
  nb->conf = *bus;
  nb->bus = &nb->conf;
  nb->rtu = bus->transport != CFG_TRANSPORT_TCP;
  nb->gap_ns = (uint64_t)bus->turnaround_ms * 1000000u;
  if (bus->transport == CFG_TRANSPORT_RTU_DTU) {
    /* The DTU's serial side keeps the line's 3.5-character silence. */
    int bits = mb_rtu_char_bits(bus->data_bits, bus->parity != 'N', bus->stop_bits);
    nb->gap_ns += mb_rtu_silence_us(bus->baud, bits) * 1000u;
    nb->flt = malloc(sizeof *nb->flt);
    if (!nb->flt || dtu_filter_init(nb->flt, bus->registration, bus->reglen,
                                    bus->registration_every_packet, bus->heartbeat,
                                    bus->hblen) != 0) {
      free(nb->flt);
      free(nb);
      return NULL;
    }
  }
  nb->tid = (uint16_t)(tid_seed * 7919u); /* different buses, different ids */
  uv_timer_init(s->loop, &nb->timer);
  nb->timer.data = nb;
  nb->next = s->buses;
  s->buses = nb;
  return nb;
}

int netbus_submit(netbus *nb, uint32_t meter, int64_t slot_ms, const cfg_meter *m,
                  const mb_plan *plan) {
  if (!nb || nb->stopping) return -1;
  bus_result *r = bus_result_new(meter, slot_ms, m->profile->nfields);
  if (!r) return -1; /* counted as a skipped slot */
  if (bus_jobs_push(&nb->jobs, (bus_job){meter, slot_ms, r, m, plan}) != 0) {
    bus_result_free(r);
    return -1;
  }
  pump(nb);
  return 0;
}

static void free_bus(uv_handle_t *h) {
  netbus *nb = h->data;
  bus_jobs_free(&nb->jobs);
  free(nb->words);
  free(nb->flt);
  free(nb);
}

void netbus_close(netbus *nb) {
  if (!nb || nb->stopping) return;
  netbuses *s = nb->set;
  for (netbus **p = &s->buses; *p; p = &(*p)->next)
    if (*p == nb) {
      *p = nb->next;
      break;
    }
  nb->stopping = true;
  bus_jobs_free(&nb->jobs); /* abandoned: no result */
  bus_result_free(nb->res);
  nb->res = NULL;
  nb->busy = false;
  if (nb->lk) {
    /* Not waited for: a lookup cannot be cancelled, and the process does
     * not wait for its thread at exit. */
    lookup_abandon(nb->lk);
    nb->lk = NULL;
  }
  close_conn(nb);
  stop_waiting(nb);
  uv_close((uv_handle_t *)&nb->timer, free_bus);
}

void netbuses_stop(netbuses *s) {
  if (!s) return;
  while (s->buses) netbus_close(s->buses);
  /* Every lookup is abandoned above: no thread wakes this any more. */
  if (!uv_is_closing((uv_handle_t *)&s->lookup_async))
    uv_close((uv_handle_t *)&s->lookup_async, NULL);
}

void netbuses_free(netbuses *s) {
  if (!s) return;
  while (s->free_x) {
    xslot *next = s->free_x->next;
    free(s->free_x);
    s->free_x = next;
  }
  free(s);
}

/* ------------------------------------------------------------------------ */
/* DTUs that dial in                                                        */

static netbus *dtu_bus(netbus *nb) { return nb && nb->flt && !nb->stopping ? nb : NULL; }

int netbus_dtu_attach(netbus *bus, int fd, const uint8_t *left, size_t nleft) {
  netbus *nb = dtu_bus(bus);
  if (!nb) {
    close(fd);
    return -1;
  }
  /* Taken over: the poll on the old link (half-open, most likely) ends now
   * rather than at its timeout, once the new link is in place, so that the
   * polls queued behind it go out on the new one. */
  bool cut = nb->c && nb->busy;
  if (nb->c) close_conn(nb);
  int rc = watch(nb, fd, UV_READABLE);
  if (rc != 0) {
    close(fd);
  } else {
    tr_net_connected(fd);
    nb->state = NB_OPEN;
    nb->dtu_seen = true;
    nb->closed_why[0] = '\0';
    nb->rx_junk = 0;
    nb->last_rx_ns = now_ns();
    dtu_filter_reset(nb->flt);
    /* What came behind the registration (a heartbeat) is dropped as any
     * unasked bytes are. */
    if (nleft) dtu_filter_feed(nb->flt, left, nleft);
  }
  if (cut) {
    tr_error e;
    tr_fail(&e, TR_ECONNRESET, "the DTU's link was taken over by a new connection");
    finish(nb, e.code, &e);
  }
  return rc == 0 ? 0 : -1;
}

int64_t netbus_dtu_quiet_ms(const netbus *bus) {
  const netbus *nb = dtu_bus((netbus *)bus);
  if (!nb || nb->state != NB_OPEN) return -1;
  return (int64_t)((now_ns() - nb->last_rx_ns) / 1000000u);
}

void netbus_dtu_close(netbus *bus) {
  netbus *nb = dtu_bus(bus);
  if (!nb || !nb->c) return;
  snprintf(nb->closed_why, sizeof nb->closed_why, "it went quiet for idle_timeout");
  close_conn(nb);
  if (nb->busy) {
    tr_error e;
    tr_fail(&e, TR_ECONNRESET, "the DTU's link went quiet and was closed");
    finish(nb, e.code, &e);
  }
}
