#include "sim_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

/* A delayed answer is due: out on its connection, or on its rtu line. */
static void late_on_due(sim_deadline *d) {
  late_reply *l = d->data;
  if (!l->used) return;
  l->used = false;
  if (l->conn) {
    sim_conn *c = l->conn;
    if (c->closing) return;
    sim__conn_write(c, l->data, l->len);
    sim__conn_update_reading(c);
  } else {
    sim__rtu_send(l->bus, l->data, l->len);
  }
}

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

int sim_start(sim **out, const cfg *c, uv_loop_t *loop, const sim_options *opt,
              char *err, size_t errlen) {
  sim *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  s->loop = loop;
  if (opt && opt->dtu_source)
    snprintf(s->dtu_source, sizeof s->dtu_source, "%s", opt->dtu_source);
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
    rc = b->cfg->transport == CFG_TRANSPORT_RTU       ? sim__rtu_open(b, err, errlen)
         : b->cfg->transport == CFG_TRANSPORT_RTU_DTU ? sim__dtu_start(b, err, errlen)
                                                      : sim__tcp_listen(b, err, errlen);
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
    char reg[CFG_REG_TEXT_MAX];
    if (b->transport == CFG_TRANSPORT_RTU)
      used += (size_t)snprintf(buf + used, len - used, "; %s rtu %s -> %s%s",
                               b->id, b->device, s->buses[i].slave_name, wire);
    else if (b->transport == CFG_TRANSPORT_RTU_DTU)
      used += (size_t)snprintf(buf + used, len - used, "; %s rtu-dtu dials %s:%d as %s%s",
                               b->id, s->cfg->dtu_servers[b->server].host,
                               s->cfg->dtu_servers[b->server].port,
                               cfg_bus_registration_text(b, reg, sizeof reg), wire);
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
    sim__dtu_stop(b);
    while (b->conns) sim__conn_close(b->conns);
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
