#include "sim_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

/* Answer bytes queued for a client that does not read them: above this the
 * simulator stops reading that client's requests until the queue drains, so
 * a client that pipelines requests and never reads costs a bounded amount. */
#define WRITE_QUEUE_MAX (64 * 1024)
/* Connections per TCP server; more are refused. */
#define CONN_MAX 256

static void conn_process(sim_conn *c);
static void conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void conn_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void conn_on_close(uv_handle_t *h) {
  sim_conn *c = h->data;
  if (--c->handles_open == 0) free(c);
}

void sim__conn_close(sim_conn *c) {
  if (c->closing) return;
  c->closing = true;
  sim_bus *b = c->bus;
  if (b->dtu_conn == c) sim__dtu_lost(b);
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
void sim__conn_update_reading(sim_conn *c) {
  if (c->closing || c->mute) return;
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
  sim__conn_update_reading(c);
}

void sim__conn_write(sim_conn *c, const uint8_t *data, size_t len) {
  if (c->bus->cfg->transport == CFG_TRANSPORT_RTU_DTU) {
    sim__dtu_write(c, data, len);
    return;
  }
  sim__conn_write_raw(c, data, len);
}

void sim__conn_write_raw(sim_conn *c, const uint8_t *data, size_t len) {
  if (c->closing || c->mute || len == 0) return;
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
  sim__conn_write(c, c->pending, c->pending_len);
  c->pending_len = 0;
  c->busy = false;
  conn_process(c);
  sim__conn_update_reading(c);
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
    sim__conn_write(c, out, n);
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
        sim__conn_close(c);
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
    sim__conn_close(c);
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
  sim__conn_update_reading(c);
}

sim_conn *sim__conn_new(sim_bus *b, bool *room) {
  sim_conn *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->bus = b;
  uv_loop_t *loop = b->owner->loop;
  uv_tcp_init(loop, &c->tcp);
  c->tcp.data = c;
  c->handles_open = 1;
  sim_clock *clock = b->owner->clock;
  *room = sim_deadline_init(clock, &c->line_free, conn_on_line_free, c) == 0 &&
          sim_deadline_init(clock, &c->stale, conn_on_stale, c) == 0;
  for (size_t i = 0; i < LATE_MAX && *room; i++)
    *room = sim__late_init(&c->late[i], clock, b, c) == 0;
  mb_rtu_framer_init(&c->framer, true);
  c->next = b->conns;
  b->conns = c;
  b->nconns++;
  return c;
}

static void on_connection(uv_stream_t *server, int status) {
  sim_bus *b = server->data;
  if (status < 0) return;
  bool room;
  sim_conn *c = sim__conn_new(b, &room);
  if (!c) return;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    sim__conn_close(c);
    return;
  }
  b->accepted++;
  if (!room) {
    log_warn("bus %s: out of memory for a client's timers, refusing it",
             b->cfg->id);
    sim__conn_close(c);
    return;
  }
  if (b->nconns > CONN_MAX) {
    log_warn("bus %s: more than %d clients, refusing one", b->cfg->id, CONN_MAX);
    sim__conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  sim__conn_update_reading(c);
}

int sim__tcp_listen(sim_bus *b, char *err, size_t errlen) {
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
