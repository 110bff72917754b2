#include "sim_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"

/* Answer bytes queued for a client that does not read them: above this the
 * simulator stops reading that client's requests until the queue drains, so
 * a client that pipelines requests and never reads costs a bounded amount. */
#define WRITE_QUEUE_MAX (64 * 1024)
/* Connections per TCP server; more are refused. */
#define CONN_MAX 256

double sim__wall_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Where an exchange starts on the emulated line: when its request had
 * arrived (RX_NS, read from the clock after the bytes were, so never early),
 * but not before the line was free again (FREE_NS): a request the master
 * wrote while an answer was still on the wire cannot have started sooner. */
uint64_t sim__exchange_start_ns(uint64_t rx_ns, uint64_t free_ns) {
  return rx_ns > free_ns ? rx_ns : free_ns;
}

/* ------------------------------------------------------------------------ */
/* Answer timing                                                            */

/* When the answer of LEN bytes to a request of REQLEN bytes goes out. On a
 * serial line (rtu, or rtu-over-tcp where a DTU carries one) with wire time
 * emulated, the request takes its wire time to arrive, the meter waits out
 * the silent interval and its answer takes its own: the line is busy all
 * that time. A slow meter answers after its delay instead; the line is busy
 * only while the request arrives, so other meters answer meanwhile. */
answer_timing sim__answer_timing_of(const sim_bus *b, size_t reqlen,
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

int sim__late_init(late_reply *l, sim_clock *clock, sim_bus *b, sim_conn *c) {
  l->bus = b;
  l->conn = c;
  return sim_deadline_init(clock, &l->due, late_on_due, l);
}

/* Schedule DATA to go out at DUE_NS. False when every slot is taken. */
bool sim__late_schedule(late_reply *slots, const sim_meter *m,
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

size_t sim__late_count(const late_reply *slots, const sim_meter *m) {
  size_t n = 0;
  for (size_t i = 0; i < LATE_MAX; i++)
    if (slots[i].used && slots[i].meter == m) n++;
  return n;
}

/* Build the bytes that carry ACT for transaction TID / unit UNIT. RTU framing
 * for rtu and rtu-over-tcp buses, MBAP for tcp. Returns the length, 0 when
 * nothing is to be sent. */
size_t sim__encode_action(const sim_bus *b, const sim_action *act,
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
    sim__rtu_send(l->bus, l->data, l->len);
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
    sim_meter_handle(m, pdu, pdulen, sim__wall_now(), &act);
  }
  uint8_t out[MB_TCP_MAX + 64];
  size_t n = sim__encode_action(b, &act, tid, unit, out, sizeof out);
  if (n == 0) return;
  answer_timing t = sim__answer_timing_of(b, reqlen, n, &act);
  uint64_t start = sim__exchange_start_ns(c->rx_ns, c->free_ns);
  if (t.late) {
    if (!sim__late_schedule(c->late, m, out, n, start + t.late_ns)) {
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
    room = sim__late_init(&c->late[i], clock, b, c) == 0;
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
  double now = sim__wall_now();
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
    rc = b->cfg->transport == CFG_TRANSPORT_RTU ? sim__rtu_open(b, err, errlen)
                                                : tcp_listen(b, err, errlen);
    if (rc != 0) goto fail;
  }
  const char *ctl = opt && opt->control_path ? opt->control_path : c->sim.control;
  if (ctl && *ctl) {
    snprintf(s->control_path, sizeof s->control_path, "%s", ctl);
    if (sim__control_listen(s, err, errlen) != 0) goto fail;
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
  while (s->ctls) sim__ctl_close(s->ctls);
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
