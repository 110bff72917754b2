#include "sim.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "proto/mb_proto.h"
#include "sim_clock.h"
#include "sim_meter.h"

/* Request bytes a connection buffers before the simulator stops reading from
 * it (the client then waits in its own send buffer). */
#define CONN_BUF_MAX 2048
/* Answer bytes queued for a client that does not read them: above this the
 * simulator stops reading that client's requests until the queue drains, so
 * a client that pipelines requests and never reads costs a bounded amount. */
#define WRITE_QUEUE_MAX (64 * 1024)
/* An incomplete RTU frame older than this is line noise: drop it. */
#define RTU_STALE_MS 100
/* Connections per TCP server; more are refused. */
#define CONN_MAX 256
/* Delayed (slow) answers in flight per line; beyond that a slow answer is
 * dropped, as a meter that cannot keep up drops requests. */
#define LATE_MAX 8
/* Control connections at once, and how long one may sit idle. */
#define CTL_MAX 16
#define CTL_IDLE_MS 5000
/* One control command line, and one line of the status reply at most: two
 * ids, a unit, a fault name and four counters. */
#define CTL_LINE_MAX 512
#define STATUS_LINE_MAX (2 * CFG_ID_MAX + 160)
/* Room for any reply but status (help, errors, acknowledgements). */
#define CTL_REPLY_BASE 1024

typedef struct sim_bus sim_bus;
typedef struct sim_conn sim_conn;
typedef struct ctl_conn ctl_conn;

/* An answer scheduled for later (a slow meter): it goes out when due,
 * whatever else the line carries meanwhile. */
typedef struct {
  sim_deadline due;
  sim_bus *bus;
  sim_conn *conn; /* NULL on an rtu bus */
  const sim_meter *meter;
  bool used;
  size_t len;
  uint8_t data[MB_TCP_MAX + 64];
} late_reply;

struct sim_conn {
  uv_tcp_t tcp;
  sim_deadline line_free; /* wire time on an rtu-over-tcp bus */
  sim_deadline stale;     /* rtu-over-tcp: an incomplete frame is dropped
                             RTU_STALE_MS after its last byte came */
  sim_bus *bus;
  sim_conn *next;
  uint8_t buf[CONN_BUF_MAX]; /* received bytes not yet framed */
  size_t len;
  mb_rtu_framer framer; /* rtu-over-tcp */
  bool busy;            /* the emulated serial line behind the DTU is busy */
  uint64_t rx_ns;       /* when requests last arrived (monotonic) */
  uint64_t free_ns;     /* when the emulated line was last free again */
  bool reading;
  bool closing;
  bool throttle_logged;
  int handles_open;
  uint8_t pending[MB_TCP_MAX + 64]; /* sent when the wire time is up */
  size_t pending_len;
  late_reply late[LATE_MAX];
};

struct sim_bus {
  sim *owner;
  const cfg_bus *cfg;
  size_t index;
  sim_meter *by_unit[256];
  bool wire_time;
  int char_bits;
  uint64_t requests;
  uint64_t bad_frames;
  uint64_t late_dropped;
  /* tcp and rtu-over-tcp */
  uv_tcp_t server;
  bool server_open;
  sim_conn *conns;
  size_t nconns;
  /* rtu */
  int master_fd;
  int slave_fd;
  char slave_name[128];
  int wd;      /* inotify watch on the slave end, -1 without */
  int clients; /* others holding the slave end open; -1 when unknown */
  bool seen_open; /* the watch has reported an open: it works */
  bool linked;
  uv_poll_t poll;
  bool poll_open;
  sim_deadline reply_due;
  uv_timer_t stale_timer;
  bool timers_open;
  mb_rtu_framer framer;
  bool busy; /* the line carries a request or an answer (wire time) */
  uint64_t rx_ns;   /* when bytes last arrived from the line (monotonic) */
  uint64_t free_ns; /* when the line was last free again */
  uint8_t reply[MB_RTU_MAX + 64];
  size_t reply_len;
  uint8_t out[4096];
  size_t out_len;
  late_reply late[LATE_MAX];
};

struct sim {
  uv_loop_t *loop;
  const cfg *cfg;
  sim_meter *meters;
  size_t nmeters;
  sim_bus *buses;
  size_t nbuses;
  uv_pipe_t control;
  bool control_open;
  char control_path[CFG_PATH_MAX];
  ctl_conn *ctls;
  size_t nctls;
  /* Every answer deadline (wire time, slow meters), to the microsecond. */
  sim_clock *clock;
  /* Who opens and closes the ptys' slave ends (inotify), shared by every rtu
   * bus; -1 when unavailable. */
  int ino_fd;
  uv_poll_t ino_poll;
  bool ino_open;
};

static double wall_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Where an exchange starts on the emulated line: when its request had
 * arrived (RX_NS, read from the clock after the bytes were, so never early),
 * but not before the line was free again (FREE_NS): a request the master
 * wrote while an answer was still on the wire cannot have started sooner. */
static uint64_t exchange_start_ns(uint64_t rx_ns, uint64_t free_ns) {
  return rx_ns > free_ns ? rx_ns : free_ns;
}

/* ------------------------------------------------------------------------ */
/* Answer timing                                                            */

typedef struct {
  uint64_t busy_ns; /* the line is occupied this long from the request */
  bool late;        /* the answer is scheduled on its own (a slow meter) */
  uint64_t late_ns; /* ... and goes out this long after the request */
} answer_timing;

/* When the answer of LEN bytes to a request of REQLEN bytes goes out. On a
 * serial line (rtu, or rtu-over-tcp where a DTU carries one) with wire time
 * emulated, the request takes its wire time to arrive, the meter waits out
 * the silent interval and its answer takes its own: the line is busy all
 * that time. A slow meter answers after its delay instead; the line is busy
 * only while the request arrives, so other meters answer meanwhile. */
static answer_timing answer_timing_of(const sim_bus *b, size_t reqlen,
                                      size_t len, const sim_action *act) {
  answer_timing t = {0};
  uint64_t req_ns = 0, ans_ns = 0;
  if (b->wire_time && b->cfg->transport != CFG_TRANSPORT_TCP) {
    /* Each part rounded up to whole microseconds: never shorter than the
     * line's. The frame sizes keep these far from overflowing. */
    int baud = b->cfg->baud;
    req_ns = (mb_rtu_wire_us(reqlen, baud, b->char_bits) +
              mb_rtu_silence_us(baud, b->char_bits)) * 1000u;
    ans_ns = mb_rtu_wire_us(len, baud, b->char_bits) * 1000u;
  }
  if (act->kind == SIM_ACT_DELAY && act->delay_ms > 0) {
    t.late = true;
    t.busy_ns = req_ns;
    t.late_ns = req_ns + (uint64_t)act->delay_ms * 1000000u + ans_ns;
  } else {
    t.busy_ns = req_ns + ans_ns;
  }
  return t;
}

static void late_on_due(sim_deadline *d);

static int late_init(late_reply *l, sim_clock *clock, sim_bus *b, sim_conn *c) {
  l->bus = b;
  l->conn = c;
  return sim_deadline_init(clock, &l->due, late_on_due, l);
}

/* Schedule DATA to go out at DUE_NS. False when every slot is taken. */
static bool late_schedule(late_reply *slots, const sim_meter *m,
                          const uint8_t *data, size_t len, uint64_t due_ns) {
  for (size_t i = 0; i < LATE_MAX; i++) {
    late_reply *l = &slots[i];
    if (l->used) continue;
    if (len > sizeof l->data) return false;
    memcpy(l->data, data, len);
    l->len = len;
    l->meter = m;
    l->used = true;
    sim_deadline_start(&l->due, due_ns);
    return true;
  }
  return false;
}

static size_t late_count(const late_reply *slots, const sim_meter *m) {
  size_t n = 0;
  for (size_t i = 0; i < LATE_MAX; i++)
    if (slots[i].used && slots[i].meter == m) n++;
  return n;
}

/* Build the bytes that carry ACT for transaction TID / unit UNIT. RTU framing
 * for rtu and rtu-over-tcp buses, MBAP for tcp. Returns the length, 0 when
 * nothing is to be sent. */
static size_t encode_action(const sim_bus *b, const sim_action *act,
                            uint16_t tid, uint8_t unit, uint8_t *out,
                            size_t cap) {
  if (act->kind == SIM_ACT_DROP) return 0;
  if (act->kind == SIM_ACT_GARBAGE) {
    size_t n = act->garbage_len < cap ? act->garbage_len : cap;
    memcpy(out, act->garbage, n);
    return n;
  }
  int n;
  if (b->cfg->transport == CFG_TRANSPORT_TCP) {
    n = mb_mbap_frame(out, cap, tid, unit, act->pdu, act->pdulen);
    if (n > 0 && act->kind == SIM_ACT_BAD_CRC && n > MB_MBAP_HDR + 1) {
      /* Modbus TCP has no CRC: damage the byte count instead, which a client
       * sees as a malformed answer. */
      out[MB_MBAP_HDR + 1] ^= 0x5A;
    }
  } else {
    n = mb_rtu_frame(out, cap, unit, act->pdu, act->pdulen);
    if (n > 0 && act->kind == SIM_ACT_BAD_CRC) out[n - 1] ^= 0xFF;
  }
  return n > 0 ? (size_t)n : 0;
}

/* ------------------------------------------------------------------------ */
/* TCP and RTU-over-TCP connections                                         */

typedef struct {
  uv_write_t req;
  uv_buf_t buf;
  uint8_t data[];
} write_req;

static void conn_process(sim_conn *c);
static void conn_update_reading(sim_conn *c);
static void conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void conn_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void conn_on_close(uv_handle_t *h) {
  sim_conn *c = h->data;
  if (--c->handles_open == 0) free(c);
}

static void conn_close(sim_conn *c) {
  if (c->closing) return;
  c->closing = true;
  sim_bus *b = c->bus;
  for (sim_conn **pp = &b->conns; *pp; pp = &(*pp)->next) {
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  }
  b->nconns--;
  /* Deadlines are not handles: released now, they never fire for C again. */
  sim_deadline_release(&c->line_free);
  sim_deadline_release(&c->stale);
  for (size_t i = 0; i < LATE_MAX; i++) sim_deadline_release(&c->late[i].due);
  uv_close((uv_handle_t *)&c->tcp, conn_on_close);
}

/* Answers the client has not taken yet exceed the bound. */
static bool conn_throttled(const sim_conn *c) {
  return uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp) >
         WRITE_QUEUE_MAX;
}

/* Read while there is room for requests and the client takes its answers. */
static void conn_update_reading(sim_conn *c) {
  if (c->closing) return;
  bool throttled = conn_throttled(c);
  if (throttled && !c->throttle_logged) {
    c->throttle_logged = true;
    log_warn("bus %s: a client does not read its answers (%zu bytes queued); "
             "not reading its requests until it does",
             c->bus->cfg->id,
             uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp));
  }
  bool want = !throttled && c->len < CONN_BUF_MAX;
  if (want == c->reading) return;
  c->reading = want;
  if (want)
    uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_on_read);
  else
    uv_read_stop((uv_stream_t *)&c->tcp);
}

static void conn_on_written(uv_write_t *req, int status) {
  (void)status;
  sim_conn *c = req->handle->data;
  free(req);
  /* Cancelled writes of a closing connection land here before its close
   * callbacks, so C is still valid. */
  if (c->closing) return;
  conn_process(c);
  conn_update_reading(c);
}

static void conn_write(sim_conn *c, const uint8_t *data, size_t len) {
  if (c->closing || len == 0) return;
  write_req *w = malloc(sizeof *w + len);
  if (!w) return;
  memcpy(w->data, data, len);
  w->buf = uv_buf_init((char *)w->data, (unsigned)len);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &w->buf, 1, conn_on_written) != 0)
    free(w);
}

static void conn_on_line_free(sim_deadline *d) {
  sim_conn *c = d->data;
  if (c->closing) return;
  conn_write(c, c->pending, c->pending_len);
  c->pending_len = 0;
  c->busy = false;
  conn_process(c);
  conn_update_reading(c);
}

static void rtu_send(sim_bus *b, const uint8_t *data, size_t len);

static void late_on_due(sim_deadline *d) {
  late_reply *l = d->data;
  if (!l->used) return;
  l->used = false;
  if (l->conn) {
    sim_conn *c = l->conn;
    if (c->closing) return;
    conn_write(c, l->data, l->len);
    conn_update_reading(c);
  } else {
    rtu_send(l->bus, l->data, l->len);
  }
}

/* Answer one request frame of REQLEN bytes: unit + PDU. */
static void conn_answer(sim_conn *c, uint16_t tid, uint8_t unit,
                        const uint8_t *pdu, size_t pdulen, size_t reqlen) {
  sim_bus *b = c->bus;
  b->requests++;
  sim_action act;
  sim_meter *m = b->by_unit[unit];
  if (!m) {
    if (b->cfg->transport == CFG_TRANSPORT_TCP) {
      /* A Modbus TCP gateway says its target did not respond. */
      memset(&act, 0, sizeof act);
      act.kind = SIM_ACT_ANSWER;
      int n = mb_pdu_exception(act.pdu, sizeof act.pdu, pdulen ? pdu[0] : 0,
                               0x0B);
      act.pdulen = n > 0 ? (size_t)n : 0;
    } else {
      return; /* nobody on the line has that address: silence */
    }
  } else {
    sim_meter_handle(m, pdu, pdulen, wall_now(), &act);
  }
  uint8_t out[MB_TCP_MAX + 64];
  size_t n = encode_action(b, &act, tid, unit, out, sizeof out);
  if (n == 0) return;
  answer_timing t = answer_timing_of(b, reqlen, n, &act);
  uint64_t start = exchange_start_ns(c->rx_ns, c->free_ns);
  if (t.late) {
    if (!late_schedule(c->late, m, out, n, start + t.late_ns)) {
      b->late_dropped++;
      log_debug("bus %s: %d delayed answers in flight, dropping one",
                b->cfg->id, LATE_MAX);
    }
  } else if (t.busy_ns == 0) {
    conn_write(c, out, n);
    return;
  } else {
    memcpy(c->pending, out, n);
    c->pending_len = n;
  }
  if (t.busy_ns > 0) {
    c->busy = true;
    c->free_ns = start + t.busy_ns;
    sim_deadline_start(&c->line_free, c->free_ns);
  }
}

static void conn_process(sim_conn *c) {
  sim_bus *b = c->bus;
  while (!c->busy && !c->closing && !conn_throttled(c)) {
    if (b->cfg->transport == CFG_TRANSPORT_TCP) {
      mb_mbap hdr;
      int total = mb_mbap_parse(c->buf, c->len, &hdr);
      if (total == MB_ENEEDMORE) return;
      if (total < 0) {
        log_warn("bus %s: malformed Modbus TCP header from a client, closing it",
                 b->cfg->id);
        conn_close(c);
        return;
      }
      /* A valid header announces at most 260 bytes, so a full buffer always
       * holds a whole frame: waiting for more cannot deadlock. */
      if ((size_t)total > c->len) return;
      conn_answer(c, hdr.tid, hdr.unit, c->buf + MB_MBAP_HDR,
                  (size_t)total - MB_MBAP_HDR, (size_t)total);
      memmove(c->buf, c->buf + total, c->len - (size_t)total);
      c->len -= (size_t)total;
    } else {
      if (c->len > 0) {
        size_t took = mb_rtu_framer_feed(&c->framer, c->buf, c->len);
        memmove(c->buf, c->buf + took, c->len - took);
        c->len -= took;
      }
      uint8_t frame[MB_RTU_MAX];
      int n = mb_rtu_framer_next(&c->framer, frame, sizeof frame);
      if (n == MB_ENEEDMORE) {
        if (c->len == 0) return;
        /* The framer is full yet holds no whole frame: noise. */
        b->bad_frames++;
        mb_rtu_framer_reset(&c->framer);
        continue;
      }
      if (n < 0) {
        b->bad_frames++;
        log_warn("bus %s: dropped a bad RTU frame from a client (%s)",
                 b->cfg->id, mb_proto_strerror(n));
        continue;
      }
      uint8_t unit;
      const uint8_t *pdu;
      size_t pdulen;
      if (mb_rtu_parse(frame, (size_t)n, &unit, &pdu, &pdulen) != MB_OK)
        continue;
      if (unit == 0) continue; /* broadcast: never answered */
      conn_answer(c, 0, unit, pdu, pdulen, (size_t)n);
    }
  }
}

static void conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  sim_conn *c = h->data;
  /* Never empty: reading stops once the buffer is full. */
  *buf = uv_buf_init((char *)c->buf + c->len, (unsigned)(CONN_BUF_MAX - c->len));
}

static void conn_on_stale(sim_deadline *d) {
  sim_conn *c = d->data;
  if (c->closing || c->framer.len == 0) return;
  c->bus->bad_frames++;
  log_debug("bus %s: dropping %zu bytes of an incomplete frame from a client",
            c->bus->cfg->id, c->framer.len);
  mb_rtu_framer_reset(&c->framer);
}

static void conn_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  sim_conn *c = s->data;
  if (nread < 0) {
    conn_close(c);
    return;
  }
  /* Read after the bytes were: a request is never taken as earlier than it
   * arrived. */
  if (nread > 0) c->rx_ns = sim_clock_now_ns();
  c->len += (size_t)nread;
  conn_process(c);
  /* RTU over TCP: a DTU passes the serial line's bytes on, and a frame its
   * line left incomplete (noise, a truncated request) ends with the
   * silence after it, as on a serial line: dropped, the next request on
   * the same connection is framed afresh. */
  if (!c->closing && c->bus->cfg->transport != CFG_TRANSPORT_TCP && c->framer.len > 0)
    sim_deadline_start(&c->stale, c->rx_ns + (uint64_t)RTU_STALE_MS * 1000000u);
  conn_update_reading(c);
}

static void on_connection(uv_stream_t *server, int status) {
  sim_bus *b = server->data;
  if (status < 0) return;
  sim_conn *c = calloc(1, sizeof *c);
  if (!c) return;
  c->bus = b;
  uv_loop_t *loop = b->owner->loop;
  uv_tcp_init(loop, &c->tcp);
  c->tcp.data = c;
  c->handles_open = 1;
  sim_clock *clock = b->owner->clock;
  bool room = sim_deadline_init(clock, &c->line_free, conn_on_line_free, c) == 0 &&
              sim_deadline_init(clock, &c->stale, conn_on_stale, c) == 0;
  for (size_t i = 0; i < LATE_MAX && room; i++)
    room = late_init(&c->late[i], clock, b, c) == 0;
  mb_rtu_framer_init(&c->framer, true);
  c->next = b->conns;
  b->conns = c;
  b->nconns++;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  if (!room) {
    log_warn("bus %s: out of memory for a client's timers, refusing it",
             b->cfg->id);
    conn_close(c);
    return;
  }
  if (b->nconns > CONN_MAX) {
    log_warn("bus %s: more than %d clients, refusing one", b->cfg->id, CONN_MAX);
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  conn_update_reading(c);
}

static int tcp_listen(sim_bus *b, char *err, size_t errlen) {
  const cfg_bus *cb = b->cfg;
  struct sockaddr_storage addr;
  int rc;
  if (strchr(cb->host, ':'))
    rc = uv_ip6_addr(cb->host, cb->port, (struct sockaddr_in6 *)&addr);
  else
    rc = uv_ip4_addr(cb->host, cb->port, (struct sockaddr_in *)&addr);
  if (rc != 0) {
    snprintf(err, errlen, "bus %s: %s is not an IP address", cb->id, cb->host);
    return -1;
  }
  uv_tcp_init(b->owner->loop, &b->server);
  b->server.data = b;
  b->server_open = true;
  rc = uv_tcp_bind(&b->server, (const struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&b->server, 128, on_connection);
  if (rc != 0) {
    snprintf(err, errlen, "bus %s: cannot listen on %s:%d: %s", cb->id,
             cb->host, cb->port, uv_strerror(rc));
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* RTU on a pseudo-terminal                                                 */

static void rtu_process(sim_bus *b);
static void rtu_on_poll(uv_poll_t *p, int status, int events);

/* Watch the master for requests, and for room while answers wait to go out. */
static void rtu_watch(sim_bus *b) {
  if (!b->poll_open) return;
  uv_poll_start(&b->poll, UV_READABLE | (b->out_len ? UV_WRITABLE : 0),
                rtu_on_poll);
}

static void rtu_flush_out(sim_bus *b) {
  while (b->out_len > 0) {
    ssize_t w = write(b->master_fd, b->out, b->out_len);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      log_warn("bus %s: write to pty failed: %s", b->cfg->id, strerror(errno));
      b->out_len = 0;
      break;
    }
    memmove(b->out, b->out + w, b->out_len - (size_t)w);
    b->out_len -= (size_t)w;
  }
}

static void ports_drain(sim *s);

static void rtu_send(sim_bus *b, const uint8_t *data, size_t len) {
  if (!b->poll_open || len > sizeof b->out) return; /* stopping */
  /* Take in the opens and closes so far first: a client's open is queued
   * before its request is written, so a client that asked is counted. */
  if (b->clients == 0) ports_drain(b->owner);
  if (b->clients == 0) {
    log_debug("bus %s: nobody has the port open; %zu bytes are lost, as on "
              "a closed serial port", b->cfg->id, len);
    return;
  }
  if (len > sizeof b->out - b->out_len) {
    log_warn("bus %s: nobody reads the line, dropping %zu bytes", b->cfg->id,
             b->out_len);
    b->out_len = 0;
  }
  memcpy(b->out + b->out_len, data, len);
  b->out_len += len;
  rtu_flush_out(b);
  /* Whatever the pty did not take goes out when it has room again. */
  rtu_watch(b);
}

/* A new request is on the line: whatever the line delivered before it and
 * nobody has read is stale (a late answer, an answer its client gave up on).
 * A real port forgets such bytes when its client closes it; this pty's slave
 * end stays open in the simulator, so it forgets them here. */
static void rtu_forget_unread(sim_bus *b) {
  if (b->slave_fd >= 0) (void)tcflush(b->slave_fd, TCIFLUSH);
  b->out_len = 0;
}

/* The last client closed the port. A real port forgets what it received
 * when closed; the simulator holds this pty's slave end open, so it forgets
 * on the port's behalf: the next client must not read answers meant for
 * the last one. */
static void rtu_port_closed(sim_bus *b) {
  rtu_forget_unread(b);
  rtu_watch(b);
}

/* Read the queued open and close events of the slave ends. */
static void ports_drain(sim *s) {
  if (s->ino_fd < 0) return;
  _Alignas(struct inotify_event) char buf[4096];
  for (;;) {
    ssize_t n = read(s->ino_fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    for (ssize_t off = 0; off + (ssize_t)sizeof(struct inotify_event) <= n;) {
      const struct inotify_event *e = (const struct inotify_event *)(buf + off);
      off += (ssize_t)(sizeof *e + e->len);
      for (size_t i = 0; i < s->nbuses; i++) {
        sim_bus *b = &s->buses[i];
        if (e->mask & IN_Q_OVERFLOW) {
          b->clients = -1; /* lost count: never drop answers again */
          continue;
        }
        if (b->wd < 0 || b->wd != e->wd) continue;
        if (e->mask & IN_IGNORED) {
          b->wd = -1;
          b->clients = -1;
        } else if (e->mask & IN_OPEN) {
          b->seen_open = true;
          if (b->clients >= 0) b->clients++;
        } else if (e->mask & (IN_CLOSE_WRITE | IN_CLOSE_NOWRITE)) {
          if (b->clients > 0 && --b->clients == 0) rtu_port_closed(b);
        }
      }
    }
  }
}

static void ports_on_poll(uv_poll_t *p, int status, int events) {
  (void)events;
  if (status < 0) return;
  ports_drain(p->data);
}

/* Count who opens BUS's slave end from now on. Without inotify the
 * simulator still works; it only cannot tell a closed port from an open one. */
static void ports_watch(sim_bus *b) {
  sim *s = b->owner;
  b->wd = -1;
  b->clients = -1;
  if (s->ino_fd < 0 && !s->ino_open) {
    s->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (s->ino_fd >= 0 && uv_poll_init(s->loop, &s->ino_poll, s->ino_fd) == 0) {
      s->ino_poll.data = s;
      s->ino_open = true;
      uv_poll_start(&s->ino_poll, UV_READABLE, ports_on_poll);
    } else if (s->ino_fd >= 0) {
      close(s->ino_fd);
      s->ino_fd = -1;
    }
  }
  if (!s->ino_open) return;
  b->wd = inotify_add_watch(s->ino_fd, b->slave_name,
                            IN_OPEN | IN_CLOSE_WRITE | IN_CLOSE_NOWRITE);
  if (b->wd >= 0) b->clients = 0;
  else log_debug("bus %s: cannot watch %s: %s", b->cfg->id, b->slave_name,
                 strerror(errno));
}

static void rtu_on_reply(sim_deadline *d) {
  sim_bus *b = d->data;
  if (b->reply_len) rtu_send(b, b->reply, b->reply_len);
  b->reply_len = 0;
  b->busy = false;
  rtu_process(b);
}

static void rtu_on_stale(uv_timer_t *t) {
  sim_bus *b = t->data;
  if (b->framer.len > 0 && !b->busy) {
    b->bad_frames++;
    log_debug("bus %s: dropping %zu bytes of an incomplete frame", b->cfg->id,
              b->framer.len);
    mb_rtu_framer_reset(&b->framer);
  }
}

static void rtu_process(sim_bus *b) {
  while (!b->busy) {
    uint8_t frame[MB_RTU_MAX];
    int n = mb_rtu_framer_next(&b->framer, frame, sizeof frame);
    if (n == MB_ENEEDMORE) return;
    if (n < 0) {
      b->bad_frames++;
      log_debug("bus %s: bad frame on the line (%s)", b->cfg->id,
                mb_proto_strerror(n));
      continue;
    }
    uint8_t unit;
    const uint8_t *pdu;
    size_t pdulen;
    if (mb_rtu_parse(frame, (size_t)n, &unit, &pdu, &pdulen) != MB_OK) continue;
    rtu_forget_unread(b);
    if (b->clients == 0 && !b->seen_open) {
      /* A request, yet no open was ever reported: the watch does not see
       * this pty's clients. Stop counting rather than drop every answer. */
      ports_drain(b->owner);
      if (b->clients == 0 && !b->seen_open) {
        log_debug("bus %s: cannot tell when clients open the port", b->cfg->id);
        b->clients = -1;
      }
    }
    b->requests++;
    sim_meter *m = b->by_unit[unit];
    if (!m || unit == 0) continue; /* not ours, or broadcast: stay silent */
    sim_action act;
    sim_meter_handle(m, pdu, pdulen, wall_now(), &act);
    uint8_t out[MB_RTU_MAX + 64];
    size_t len = encode_action(b, &act, 0, unit, out, sizeof out);
    if (len == 0) continue;
    answer_timing t = answer_timing_of(b, (size_t)n, len, &act);
    uint64_t start = exchange_start_ns(b->rx_ns, b->free_ns);
    if (t.late) {
      /* The slow answer goes out when due, whatever the line carries by
       * then (on a real line it may collide with another answer). */
      if (!late_schedule(b->late, m, out, len, start + t.late_ns)) {
        b->late_dropped++;
        log_debug("bus %s: %d delayed answers in flight, dropping one",
                  b->cfg->id, LATE_MAX);
      }
      b->reply_len = 0;
    } else if (t.busy_ns == 0) {
      rtu_send(b, out, len);
      continue;
    } else {
      memcpy(b->reply, out, len);
      b->reply_len = len;
    }
    if (t.busy_ns > 0) {
      b->busy = true;
      b->free_ns = start + t.busy_ns;
      sim_deadline_start(&b->reply_due, b->free_ns);
    }
  }
}

static void rtu_on_poll(uv_poll_t *p, int status, int events) {
  sim_bus *b = p->data;
  if (status < 0) return;
  if (events & UV_WRITABLE) rtu_flush_out(b);
  if (events & UV_READABLE) {
    uint8_t tmp[512];
    for (;;) {
      ssize_t r = read(b->master_fd, tmp, sizeof tmp);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      /* Read after the bytes were: a request is never taken as earlier
       * than it arrived. */
      b->rx_ns = sim_clock_now_ns();
      size_t off = 0;
      while (off < (size_t)r) {
        size_t took = mb_rtu_framer_feed(&b->framer, tmp + off, (size_t)r - off);
        off += took;
        if (took == 0) {
          if (b->busy) {
            /* The master talks over a pending answer: a bus collision. */
            b->bad_frames++;
            mb_rtu_framer_reset(&b->framer);
          } else {
            rtu_process(b);
            if (b->framer.len == sizeof b->framer.buf) mb_rtu_framer_reset(&b->framer);
          }
        }
      }
    }
    uv_timer_start(&b->stale_timer, rtu_on_stale, RTU_STALE_MS, 0);
    rtu_process(b);
  }
  rtu_watch(b);
}

/* A link at the device path may be replaced only when it points at a
 * pseudo-terminal (a previous simulator's, left behind by a crash): links
 * such as udev's under /dev/serial/by-id/ name real ports. */
static bool links_to_pty(const char *path) {
  char target[256];
  ssize_t n = readlink(path, target, sizeof target - 1);
  if (n <= 0 || (size_t)n >= sizeof target - 1) return false;
  target[n] = '\0';
  static const char prefix[] = "/dev/pts/";
  if (strncmp(target, prefix, sizeof prefix - 1) != 0) return false;
  const char *num = target + sizeof prefix - 1;
  if (!*num) return false;
  for (const char *p = num; *p; p++)
    if (*p < '0' || *p > '9') return false;
  return true;
}

static int rtu_open(sim_bus *b, char *err, size_t errlen) {
  const cfg_bus *cb = b->cfg;
  /* Check the device path first, so a refusal creates nothing. */
  struct stat st;
  bool replace = false;
  if (lstat(cb->device, &st) == 0) {
    if (!S_ISLNK(st.st_mode)) {
      snprintf(err, errlen,
               "bus %s: %s exists and is not a link; refusing to replace it",
               cb->id, cb->device);
      return -1;
    }
    if (!links_to_pty(cb->device)) {
      char target[256] = "?";
      ssize_t n = readlink(cb->device, target, sizeof target - 1);
      if (n > 0) target[n] = '\0';
      snprintf(err, errlen,
               "bus %s: %s is a link to %s, not to a pseudo-terminal "
               "(/dev/pts/N); refusing to replace it",
               cb->id, cb->device, target);
      return -1;
    }
    replace = true;
  }

  b->master_fd = posix_openpt(O_RDWR | O_NOCTTY);
  if (b->master_fd < 0 || grantpt(b->master_fd) != 0 ||
      unlockpt(b->master_fd) != 0 ||
      ptsname_r(b->master_fd, b->slave_name, sizeof b->slave_name) != 0) {
    snprintf(err, errlen, "bus %s: cannot create a pseudo-terminal: %s", cb->id,
             strerror(errno));
    return -1;
  }
  /* Keep the slave end open ourselves so that the collector can close and
   * reopen the port without the master seeing a hang-up. */
  b->slave_fd = open(b->slave_name, O_RDWR | O_NOCTTY);
  if (b->slave_fd < 0) {
    snprintf(err, errlen, "bus %s: cannot open %s: %s", cb->id, b->slave_name,
             strerror(errno));
    return -1;
  }
  struct termios tio;
  if (tcgetattr(b->slave_fd, &tio) == 0) {
    cfmakeraw(&tio);
    tcsetattr(b->slave_fd, TCSANOW, &tio);
  }
  int fl = fcntl(b->master_fd, F_GETFL);
  fcntl(b->master_fd, F_SETFL, fl | O_NONBLOCK);
  fcntl(b->master_fd, F_SETFD, FD_CLOEXEC);
  fcntl(b->slave_fd, F_SETFD, FD_CLOEXEC);
  /* After our own open of the slave end, so only clients are counted. */
  ports_watch(b);

  if (replace) unlink(cb->device);
  if (symlink(b->slave_name, cb->device) != 0) {
    snprintf(err, errlen, "bus %s: cannot link %s to %s: %s", cb->id,
             cb->device, b->slave_name, strerror(errno));
    return -1;
  }
  b->linked = true;
  mb_rtu_framer_init(&b->framer, true);

  uv_loop_t *loop = b->owner->loop;
  uv_timer_init(loop, &b->stale_timer);
  b->stale_timer.data = b;
  b->timers_open = true;
  sim_clock *clock = b->owner->clock;
  int rc = sim_deadline_init(clock, &b->reply_due, rtu_on_reply, b);
  for (size_t i = 0; i < LATE_MAX && rc == 0; i++)
    rc = late_init(&b->late[i], clock, b, NULL);
  if (rc != 0) {
    snprintf(err, errlen, "bus %s: out of memory", cb->id);
    return -1;
  }
  if (uv_poll_init(loop, &b->poll, b->master_fd) != 0) {
    snprintf(err, errlen, "bus %s: cannot watch the pty", cb->id);
    return -1;
  }
  b->poll.data = b;
  b->poll_open = true;
  rtu_watch(b);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Control socket                                                           */

struct ctl_conn {
  uv_pipe_t pipe;
  uv_timer_t idle;
  sim *owner;
  ctl_conn *next;
  char line[CTL_LINE_MAX];
  size_t len;
  bool done;
  bool closing;
  int handles_open;
};

static void ctl_on_close(uv_handle_t *h) {
  ctl_conn *c = h->data;
  if (--c->handles_open == 0) free(c);
}

static void ctl_close(ctl_conn *c) {
  if (c->closing) return;
  c->closing = true;
  sim *s = c->owner;
  for (ctl_conn **pp = &s->ctls; *pp; pp = &(*pp)->next) {
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  }
  s->nctls--;
  uv_close((uv_handle_t *)&c->idle, ctl_on_close);
  uv_close((uv_handle_t *)&c->pipe, ctl_on_close);
}

static void ctl_on_idle(uv_timer_t *t) {
  ctl_conn *c = t->data;
  log_debug("control: closing a connection idle for %d ms", CTL_IDLE_MS);
  ctl_close(c);
}

static void ctl_on_written(uv_write_t *req, int status) {
  (void)status;
  ctl_conn *c = req->handle->data;
  free(req);
  /* The reply is out (or the connection is going): one command per
   * connection, so close it now, not before the write has finished. */
  ctl_close(c);
}

static void ctl_reply(ctl_conn *c, bool too_long) {
  size_t cap = sim_control_reply_max(c->owner);
  write_req *w = malloc(sizeof *w + cap);
  if (!w) {
    ctl_close(c);
    return;
  }
  char *text = (char *)w->data;
  if (too_long)
    snprintf(text, cap, "error: command too long\n");
  else
    sim_control(c->owner, c->line, text, cap);
  w->buf = uv_buf_init(text, (unsigned)strlen(text));
  if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &w->buf, 1, ctl_on_written) != 0) {
    free(w);
    ctl_close(c);
  }
}

static void ctl_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  ctl_conn *c = h->data;
  /* Never empty: reading stops once the line is full. */
  size_t room = sizeof c->line - 1 - c->len;
  *buf = uv_buf_init(c->line + c->len, (unsigned)room);
}

static void ctl_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  ctl_conn *c = s->data;
  if (c->done || c->closing) return;
  if (nread < 0 && c->len == 0) {
    ctl_close(c);
    return;
  }
  if (nread > 0) c->len += (size_t)nread;
  c->line[c->len] = '\0';
  char *nl = strchr(c->line, '\n');
  bool full = c->len >= sizeof c->line - 1;
  if (!nl && nread >= 0 && !full) return;
  if (nl) *nl = '\0';
  c->done = true;
  uv_read_stop(s);
  ctl_reply(c, !nl && full);
}

static void ctl_on_connection(uv_stream_t *server, int status) {
  sim *s = server->data;
  if (status < 0) return;
  ctl_conn *c = calloc(1, sizeof *c);
  if (!c) return;
  c->owner = s;
  uv_pipe_init(s->loop, &c->pipe, 0);
  uv_timer_init(s->loop, &c->idle);
  c->pipe.data = c;
  c->idle.data = c;
  c->handles_open = 2;
  c->next = s->ctls;
  s->ctls = c;
  s->nctls++;
  if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0) {
    ctl_close(c);
    return;
  }
  if (s->nctls > CTL_MAX) {
    log_warn("control: more than %d connections, refusing one", CTL_MAX);
    ctl_close(c);
    return;
  }
  /* A client that connects and says nothing must not hold a connection (or
   * shutdown) forever. */
  uv_timer_start(&c->idle, ctl_on_idle, CTL_IDLE_MS, 0);
  uv_read_start((uv_stream_t *)&c->pipe, ctl_alloc, ctl_on_read);
}

static sim_meter *find_meter(sim *s, const char *id) {
  for (size_t i = 0; i < s->nmeters; i++)
    if (strcmp(s->meters[i].cfg->id, id) == 0) return &s->meters[i];
  return NULL;
}

/* Delayed answers of meter M still to go out. */
static size_t pending_answers(const sim *s, const sim_meter *m) {
  const sim_bus *b = &s->buses[m->cfg->bus];
  if (b->cfg->transport == CFG_TRANSPORT_RTU) return late_count(b->late, m);
  size_t n = 0;
  for (const sim_conn *c = b->conns; c; c = c->next) n += late_count(c->late, m);
  return n;
}

size_t sim_control_reply_max(const sim *s) {
  return CTL_REPLY_BASE + (s ? s->nmeters : 0) * STATUS_LINE_MAX;
}

static int control_status(sim *s, char *out, size_t outlen) {
  size_t used = 0;
  int w;
  for (size_t i = 0; i < s->nmeters; i++) {
    sim_meter *m = &s->meters[i];
    w = snprintf(out + used, outlen - used,
                 "%s bus=%s unit=%d fault=%s requests=%llu answers=%llu "
                 "pending=%zu\n",
                 m->cfg->id, s->cfg->buses[m->cfg->bus].id, m->cfg->unit,
                 sim_fault_name(m->fault), (unsigned long long)m->requests,
                 (unsigned long long)m->answers, pending_answers(s, m));
    if (w < 0 || (size_t)w >= outlen - used) goto too_long;
    used += (size_t)w;
  }
  w = snprintf(out + used, outlen - used, "ok\n");
  if (w < 0 || (size_t)w >= outlen - used) goto too_long;
  return 0;
too_long:
  /* Never a cut reply: a reader would take a partial list for the whole. */
  snprintf(out, outlen, "error: the status of %zu meters does not fit in %zu bytes\n",
           s->nmeters, outlen);
  return -1;
}

int sim_control(sim *s, const char *line, char *out, size_t outlen) {
  if (!out || outlen == 0) return -1;
  char cmd[32] = "", a[CFG_ID_MAX] = "", b[PROF_NAME_MAX] = "", c[64] = "";
  char extra[8] = "";
  int n = sscanf(line, "%31s %63s %47s %63s %7s", cmd, a, b, c, extra);
  if (n <= 0) {
    snprintf(out, outlen, "error: empty command (try: help)\n");
    return -1;
  }
  if (strcmp(cmd, "help") == 0) {
    snprintf(out, outlen,
             "commands:\n"
             "  fault METER MODE     none|offline|flaky|slow|crc|exception|garbage|reset\n"
             "  pin METER FIELD VAL  pin a field to a value\n"
             "  unpin METER FIELD    let the physics drive it again\n"
             "  status               one line per meter\n"
             "ok\n");
    return 0;
  }
  if (strcmp(cmd, "status") == 0) return control_status(s, out, outlen);
  sim_meter *m = n >= 2 ? find_meter(s, a) : NULL;
  if (strcmp(cmd, "fault") == 0 || strcmp(cmd, "pin") == 0 ||
      strcmp(cmd, "unpin") == 0) {
    if (!m) {
      snprintf(out, outlen, "error: no meter \"%s\"\n", a);
      return -1;
    }
  }
  if (strcmp(cmd, "fault") == 0 && n == 3) {
    sim_fault f;
    if (sim_fault_parse(b, &f) != 0) {
      snprintf(out, outlen,
               "error: unknown fault \"%s\" (expected none, offline, flaky, "
               "slow, crc, exception, garbage or reset)\n", b);
      return -1;
    }
    sim_meter_set_fault(m, f);
    log_info("meter %s: fault %s", m->cfg->id, sim_fault_name(f));
    snprintf(out, outlen, "ok %s fault %s\n", m->cfg->id, sim_fault_name(f));
    return 0;
  }
  if (strcmp(cmd, "pin") == 0 && n == 4) {
    char *end;
    double v = strtod(c, &end);
    if (*end != '\0') {
      snprintf(out, outlen, "error: \"%s\" is not a number\n", c);
      return -1;
    }
    if (sim_meter_pin(m, b, v, true) != 0) {
      snprintf(out, outlen, "error: meter %s has no field \"%s\"\n", a, b);
      return -1;
    }
    snprintf(out, outlen, "ok %s %s %g\n", a, b, v);
    return 0;
  }
  if (strcmp(cmd, "unpin") == 0 && n == 3) {
    if (sim_meter_pin(m, b, 0, false) != 0) {
      snprintf(out, outlen, "error: meter %s has no field \"%s\"\n", a, b);
      return -1;
    }
    snprintf(out, outlen, "ok %s %s unpinned\n", a, b);
    return 0;
  }
  snprintf(out, outlen, "error: cannot understand \"%.100s\" (try: help)\n", line);
  return -1;
}

static int control_listen(sim *s, char *err, size_t errlen) {
  struct stat st;
  if (lstat(s->control_path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      snprintf(err, errlen, "%s exists and is not a socket; refusing to replace it",
               s->control_path);
      return -1;
    }
    unlink(s->control_path);
  }
  uv_pipe_init(s->loop, &s->control, 0);
  s->control.data = s;
  s->control_open = true;
  int rc = uv_pipe_bind(&s->control, s->control_path);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&s->control, 16, ctl_on_connection);
  if (rc != 0) {
    snprintf(err, errlen, "cannot listen on control socket %s: %s",
             s->control_path, uv_strerror(rc));
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */

int sim_start(sim **out, const cfg *c, uv_loop_t *loop, const sim_options *opt,
              char *err, size_t errlen) {
  sim *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  s->loop = loop;
  s->cfg = c;
  s->ino_fd = -1;
  s->meters = calloc(c->nmeters ? c->nmeters : 1, sizeof *s->meters);
  s->buses = calloc(c->nbuses ? c->nbuses : 1, sizeof *s->buses);
  if (!s->meters || !s->buses) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  double now = wall_now();
  for (size_t i = 0; i < c->nmeters; i++) {
    if (sim_meter_init(&s->meters[i], &c->meters[i], now) != 0) {
      snprintf(err, errlen, "meter %s: cannot build its register map",
               c->meters[i].id);
      goto fail;
    }
    s->nmeters++;
  }
  for (size_t i = 0; i < c->nbuses; i++) {
    sim_bus *b = &s->buses[i];
    b->owner = s;
    b->cfg = &c->buses[i];
    b->index = i;
    b->master_fd = b->slave_fd = -1;
    b->wd = -1;
    b->clients = -1;
    b->char_bits = mb_rtu_char_bits(b->cfg->data_bits, b->cfg->parity != 'N',
                                    b->cfg->stop_bits);
    /* A DTU (rtu-over-tcp) carries a serial line too: both emulate it. */
    b->wire_time = b->cfg->sim_wire_time && !(opt && opt->no_wire_time) &&
                   b->cfg->transport != CFG_TRANSPORT_TCP && b->char_bits > 0;
  }
  s->nbuses = c->nbuses;
  int rc = sim_clock_open(&s->clock, loop);
  if (rc != 0) {
    snprintf(err, errlen, "cannot create a timer: %s", strerror(-rc));
    goto fail;
  }
  for (size_t i = 0; i < c->nmeters; i++) {
    sim_bus *b = &s->buses[c->meters[i].bus];
    b->by_unit[c->meters[i].unit & 0xFF] = &s->meters[i];
  }
  for (size_t i = 0; i < s->nbuses; i++) {
    sim_bus *b = &s->buses[i];
    rc = b->cfg->transport == CFG_TRANSPORT_RTU ? rtu_open(b, err, errlen)
                                                : tcp_listen(b, err, errlen);
    if (rc != 0) goto fail;
  }
  const char *ctl = opt && opt->control_path ? opt->control_path : c->sim.control;
  if (ctl && *ctl) {
    snprintf(s->control_path, sizeof s->control_path, "%s", ctl);
    if (control_listen(s, err, errlen) != 0) goto fail;
  }
  *out = s;
  return 0;
fail:
  /* Handles already initialised must be closed through the loop. */
  sim_stop(s);
  uv_run(loop, UV_RUN_DEFAULT);
  sim_free(s);
  return -1;
}

void sim_describe(const sim *s, char *buf, size_t len) {
  size_t used = (size_t)snprintf(buf, len, "%zu meters on %zu buses", s->nmeters,
                                 s->nbuses);
  for (size_t i = 0; i < s->nbuses && used < len; i++) {
    const cfg_bus *b = s->buses[i].cfg;
    const char *wire = s->buses[i].wire_time ? " (wire time)" : "";
    if (b->transport == CFG_TRANSPORT_RTU)
      used += (size_t)snprintf(buf + used, len - used, "; %s rtu %s -> %s%s",
                               b->id, b->device, s->buses[i].slave_name, wire);
    else
      used += (size_t)snprintf(buf + used, len - used, "; %s %s %s:%d%s", b->id,
                               cfg_transport_name(b->transport), b->host,
                               b->port, wire);
  }
}

static void noop_close(uv_handle_t *h) { (void)h; }

void sim_stop(sim *s) {
  if (!s) return;
  for (size_t i = 0; i < s->nbuses; i++) {
    sim_bus *b = &s->buses[i];
    while (b->conns) conn_close(b->conns);
    if (b->server_open) {
      uv_close((uv_handle_t *)&b->server, noop_close);
      b->server_open = false;
    }
    if (b->poll_open) {
      uv_close((uv_handle_t *)&b->poll, noop_close);
      b->poll_open = false;
    }
    if (b->timers_open) {
      uv_close((uv_handle_t *)&b->stale_timer, noop_close);
      b->timers_open = false;
    }
    /* Harmless on deadlines never initialised (a bus that failed to open,
     * or a TCP bus): they are zeroed. */
    sim_deadline_release(&b->reply_due);
    for (size_t j = 0; j < LATE_MAX; j++) sim_deadline_release(&b->late[j].due);
    if (b->linked) {
      unlink(b->cfg->device);
      b->linked = false;
    }
  }
  while (s->ctls) ctl_close(s->ctls);
  /* Every deadline is released by now (the buses' and the connections'). */
  sim_clock_close(s->clock);
  s->clock = NULL;
  if (s->ino_open) {
    uv_close((uv_handle_t *)&s->ino_poll, noop_close);
    s->ino_open = false;
  }
  if (s->control_open) {
    uv_close((uv_handle_t *)&s->control, noop_close);
    s->control_open = false;
    unlink(s->control_path);
  }
}

void sim_free(sim *s) {
  if (!s) return;
  for (size_t i = 0; i < s->nbuses; i++) {
    if (s->buses[i].master_fd >= 0) close(s->buses[i].master_fd);
    if (s->buses[i].slave_fd >= 0) close(s->buses[i].slave_fd);
  }
  if (s->ino_fd >= 0) close(s->ino_fd);
  for (size_t i = 0; i < s->nmeters; i++) sim_meter_free(&s->meters[i]);
  free(s->meters);
  free(s->buses);
  free(s);
}
