#include "sim.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "mb_proto.h"
#include "sim_meter.h"

/* Bytes a connection may buffer before it is considered hostile. */
#define CONN_BUF_MAX 2048
/* An incomplete RTU frame older than this is line noise: drop it. */
#define RTU_STALE_MS 100
/* Connections per TCP server; more are refused. */
#define CONN_MAX 256

typedef struct sim_bus sim_bus;
typedef struct sim_conn sim_conn;

struct sim_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  sim_bus *bus;
  sim_conn *next;
  uint8_t buf[CONN_BUF_MAX]; /* tcp: raw MBAP bytes */
  size_t len;
  mb_rtu_framer framer; /* rtu-over-tcp */
  bool waiting;         /* a delayed answer is pending */
  bool closing;
  int handles_open;
  uint8_t pending[MB_TCP_MAX + 64];
  size_t pending_len;
};

struct sim_bus {
  sim *owner;
  const cfg_bus *cfg;
  size_t index;
  sim_meter *by_unit[256];
  /* tcp and rtu-over-tcp */
  uv_tcp_t server;
  bool server_open;
  sim_conn *conns;
  size_t nconns;
  /* rtu */
  int master_fd;
  int slave_fd;
  char slave_name[128];
  bool linked;
  uv_poll_t poll;
  bool poll_open;
  uv_timer_t reply_timer;
  uv_timer_t stale_timer;
  bool timers_open;
  mb_rtu_framer framer;
  bool busy; /* an answer is being "transmitted" */
  uint8_t reply[MB_RTU_MAX + 64];
  size_t reply_len;
  uint8_t out[4096];
  size_t out_len;
  bool wire_time;
  int char_bits;
  uint64_t requests;
  uint64_t bad_frames;
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
};

static double wall_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------------ */
/* Writes                                                                   */

typedef struct {
  uv_write_t req;
  uv_buf_t buf;
  uint8_t data[];
} write_req;

static void on_written(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

static void stream_write(uv_stream_t *s, const uint8_t *data, size_t len) {
  write_req *w = malloc(sizeof *w + len);
  if (!w) return;
  memcpy(w->data, data, len);
  w->buf = uv_buf_init((char *)w->data, (unsigned)len);
  if (uv_write(&w->req, s, &w->buf, 1, on_written) != 0) free(w);
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

static void conn_process(sim_conn *c);

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
  uv_close((uv_handle_t *)&c->timer, conn_on_close);
  uv_close((uv_handle_t *)&c->tcp, conn_on_close);
}

static void conn_on_timer(uv_timer_t *t) {
  sim_conn *c = t->data;
  if (c->closing) return;
  if (c->pending_len)
    stream_write((uv_stream_t *)&c->tcp, c->pending, c->pending_len);
  c->pending_len = 0;
  c->waiting = false;
  conn_process(c);
}

/* Answer one request frame: unit + PDU. */
static void conn_answer(sim_conn *c, uint16_t tid, uint8_t unit,
                        const uint8_t *pdu, size_t pdulen) {
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
  if (act.kind == SIM_ACT_DELAY && act.delay_ms > 0) {
    memcpy(c->pending, out, n);
    c->pending_len = n;
    c->waiting = true;
    uv_timer_start(&c->timer, conn_on_timer, (uint64_t)act.delay_ms, 0);
    return;
  }
  stream_write((uv_stream_t *)&c->tcp, out, n);
}

static void conn_process(sim_conn *c) {
  sim_bus *b = c->bus;
  while (!c->waiting && !c->closing) {
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
      if ((size_t)total > c->len) return;
      conn_answer(c, hdr.tid, hdr.unit, c->buf + MB_MBAP_HDR,
                  (size_t)total - MB_MBAP_HDR);
      memmove(c->buf, c->buf + total, c->len - (size_t)total);
      c->len -= (size_t)total;
    } else {
      uint8_t frame[MB_RTU_MAX];
      int n = mb_rtu_framer_next(&c->framer, frame, sizeof frame);
      if (n == MB_ENEEDMORE) return;
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
      conn_answer(c, 0, unit, pdu, pdulen);
    }
  }
}

static void conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  sim_conn *c = h->data;
  if (c->bus->cfg->transport == CFG_TRANSPORT_TCP) {
    *buf = uv_buf_init((char *)c->buf + c->len, (unsigned)(CONN_BUF_MAX - c->len));
  } else {
    static uint8_t scratch[1024]; /* the loop is single-threaded */
    *buf = uv_buf_init((char *)scratch, sizeof scratch);
  }
}

static void conn_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  sim_conn *c = s->data;
  if (nread < 0) {
    conn_close(c);
    return;
  }
  if (nread == 0) return;
  if (c->bus->cfg->transport == CFG_TRANSPORT_TCP) {
    c->len += (size_t)nread;
    if (c->len >= CONN_BUF_MAX && !c->waiting) {
      /* Buffer full without a whole frame: that is no Modbus client. */
      conn_process(c);
      if (c->len >= CONN_BUF_MAX) {
        log_warn("bus %s: client sent %zu bytes without a frame, closing it",
                 c->bus->cfg->id, c->len);
        conn_close(c);
        return;
      }
    }
  } else {
    size_t off = 0;
    while (off < (size_t)nread && !c->closing) {
      off += mb_rtu_framer_feed(&c->framer, (const uint8_t *)buf->base + off,
                                (size_t)nread - off);
      if (off < (size_t)nread) {
        if (c->waiting) {
          /* The client floods us while an answer is pending: keep the
           * buffered requests, drop the excess. */
          c->bus->bad_frames++;
          break;
        }
        conn_process(c);
      }
    }
  }
  if (c->len >= CONN_BUF_MAX && c->waiting) {
    log_warn("bus %s: client floods requests, closing it", c->bus->cfg->id);
    conn_close(c);
    return;
  }
  conn_process(c);
}

static void on_connection(uv_stream_t *server, int status) {
  sim_bus *b = server->data;
  if (status < 0) return;
  sim_conn *c = calloc(1, sizeof *c);
  if (!c) return;
  c->bus = b;
  uv_tcp_init(b->owner->loop, &c->tcp);
  uv_timer_init(b->owner->loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  c->handles_open = 2;
  mb_rtu_framer_init(&c->framer, true);
  c->next = b->conns;
  b->conns = c;
  b->nconns++;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  if (b->nconns > CONN_MAX) {
    log_warn("bus %s: more than %d clients, refusing one", b->cfg->id, CONN_MAX);
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_on_read);
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

static void rtu_send(sim_bus *b, const uint8_t *data, size_t len) {
  if (len > sizeof b->out - b->out_len) {
    log_warn("bus %s: nobody reads the line, dropping %zu bytes", b->cfg->id,
             b->out_len);
    b->out_len = 0;
  }
  memcpy(b->out + b->out_len, data, len);
  b->out_len += len;
  rtu_flush_out(b);
}

static void rtu_on_reply(uv_timer_t *t) {
  sim_bus *b = t->data;
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
    b->requests++;
    sim_meter *m = b->by_unit[unit];
    if (!m || unit == 0) continue; /* not ours, or broadcast: stay silent */
    sim_action act;
    sim_meter_handle(m, pdu, pdulen, wall_now(), &act);
    size_t len = encode_action(b, &act, 0, unit, b->reply, sizeof b->reply);
    if (len == 0) continue;
    uint64_t delay_us = 0;
    if (b->wire_time) {
      /* On a real line the request takes its wire time to arrive, the meter
       * waits out the silent interval, and its answer takes its own. */
      int baud = b->cfg->baud;
      delay_us = mb_rtu_wire_us((size_t)n, baud, b->char_bits) +
                 mb_rtu_silence_us(baud, b->char_bits) +
                 mb_rtu_wire_us(len, baud, b->char_bits);
    }
    if (act.kind == SIM_ACT_DELAY) delay_us += (uint64_t)act.delay_ms * 1000;
    if (delay_us == 0) {
      rtu_send(b, b->reply, len);
      continue;
    }
    b->reply_len = len;
    b->busy = true;
    /* libuv timers have millisecond resolution: round up, so the emulated
     * line is never faster than the real one. */
    uv_timer_start(&b->reply_timer, rtu_on_reply, (delay_us + 999) / 1000, 0);
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
  int want = UV_READABLE | (b->out_len ? UV_WRITABLE : 0);
  uv_poll_start(&b->poll, want, rtu_on_poll);
}

static int rtu_open(sim_bus *b, char *err, size_t errlen) {
  const cfg_bus *cb = b->cfg;
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

  struct stat st;
  if (lstat(cb->device, &st) == 0) {
    if (!S_ISLNK(st.st_mode)) {
      snprintf(err, errlen,
               "bus %s: %s exists and is not a link; refusing to replace it",
               cb->id, cb->device);
      return -1;
    }
    unlink(cb->device);
  }
  if (symlink(b->slave_name, cb->device) != 0) {
    snprintf(err, errlen, "bus %s: cannot link %s to %s: %s", cb->id,
             cb->device, b->slave_name, strerror(errno));
    return -1;
  }
  b->linked = true;
  b->char_bits = mb_rtu_char_bits(cb->data_bits, cb->parity != 'N', cb->stop_bits);
  mb_rtu_framer_init(&b->framer, true);

  uv_timer_init(b->owner->loop, &b->reply_timer);
  uv_timer_init(b->owner->loop, &b->stale_timer);
  b->reply_timer.data = b;
  b->stale_timer.data = b;
  b->timers_open = true;
  if (uv_poll_init(b->owner->loop, &b->poll, b->master_fd) != 0) {
    snprintf(err, errlen, "bus %s: cannot watch the pty", cb->id);
    return -1;
  }
  b->poll.data = b;
  b->poll_open = true;
  uv_poll_start(&b->poll, UV_READABLE, rtu_on_poll);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Control socket                                                           */

typedef struct {
  uv_pipe_t pipe;
  sim *owner;
  char line[512];
  size_t len;
  bool done;
} ctl_conn;

static void ctl_on_close(uv_handle_t *h) { free(h->data); }

static void ctl_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  ctl_conn *c = h->data;
  size_t room = sizeof c->line - 1 - c->len;
  *buf = uv_buf_init(c->line + c->len, (unsigned)room);
}

static void ctl_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  ctl_conn *c = s->data;
  if (c->done) return;
  if (nread < 0 && c->len == 0) {
    uv_close((uv_handle_t *)s, ctl_on_close);
    return;
  }
  if (nread > 0) c->len += (size_t)nread;
  c->line[c->len] = '\0';
  char *nl = strchr(c->line, '\n');
  if (!nl && nread >= 0 && c->len < sizeof c->line - 1) return;
  if (nl) *nl = '\0';
  c->done = true;
  char reply[8192];
  if (!nl && c->len >= sizeof c->line - 1)
    snprintf(reply, sizeof reply, "error: command too long\n");
  else
    sim_control(c->owner, c->line, reply, sizeof reply);
  stream_write(s, (const uint8_t *)reply, strlen(reply));
  uv_read_stop(s);
  uv_close((uv_handle_t *)s, ctl_on_close);
}

static void ctl_on_connection(uv_stream_t *server, int status) {
  sim *s = server->data;
  if (status < 0) return;
  ctl_conn *c = calloc(1, sizeof *c);
  if (!c) return;
  c->owner = s;
  uv_pipe_init(s->loop, &c->pipe, 0);
  c->pipe.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0) {
    uv_close((uv_handle_t *)&c->pipe, ctl_on_close);
    return;
  }
  uv_read_start((uv_stream_t *)&c->pipe, ctl_alloc, ctl_on_read);
}

static sim_meter *find_meter(sim *s, const char *id) {
  for (size_t i = 0; i < s->nmeters; i++)
    if (strcmp(s->meters[i].cfg->id, id) == 0) return &s->meters[i];
  return NULL;
}

int sim_control(sim *s, const char *line, char *out, size_t outlen) {
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
  if (strcmp(cmd, "status") == 0) {
    size_t used = 0;
    for (size_t i = 0; i < s->nmeters && used < outlen; i++) {
      sim_meter *m = &s->meters[i];
      used += (size_t)snprintf(out + used, outlen - used,
                               "%s bus=%s unit=%d fault=%s requests=%llu answers=%llu\n",
                               m->cfg->id, s->cfg->buses[m->cfg->bus].id,
                               m->cfg->unit, sim_fault_name(m->fault),
                               (unsigned long long)m->requests,
                               (unsigned long long)m->answers);
    }
    if (used < outlen) snprintf(out + used, outlen - used, "ok\n");
    return 0;
  }
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
    b->wire_time = b->cfg->sim_wire_time && !(opt && opt->no_wire_time);
  }
  s->nbuses = c->nbuses;
  for (size_t i = 0; i < c->nmeters; i++) {
    sim_bus *b = &s->buses[c->meters[i].bus];
    b->by_unit[c->meters[i].unit & 0xFF] = &s->meters[i];
  }
  for (size_t i = 0; i < s->nbuses; i++) {
    sim_bus *b = &s->buses[i];
    int rc = b->cfg->transport == CFG_TRANSPORT_RTU ? rtu_open(b, err, errlen)
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
    if (b->transport == CFG_TRANSPORT_RTU)
      used += (size_t)snprintf(buf + used, len - used, "; %s rtu %s -> %s%s",
                               b->id, b->device, s->buses[i].slave_name,
                               s->buses[i].wire_time ? " (wire time)" : "");
    else
      used += (size_t)snprintf(buf + used, len - used, "; %s %s %s:%d", b->id,
                               cfg_transport_name(b->transport), b->host, b->port);
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
      uv_close((uv_handle_t *)&b->reply_timer, noop_close);
      uv_close((uv_handle_t *)&b->stale_timer, noop_close);
      b->timers_open = false;
    }
    if (b->linked) {
      unlink(b->cfg->device);
      b->linked = false;
    }
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
  for (size_t i = 0; i < s->nmeters; i++) sim_meter_free(&s->meters[i]);
  free(s->meters);
  free(s->buses);
  free(s);
}
