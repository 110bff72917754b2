/* sim_dtu: an rtu-dtu bus's DTU, which dials the collector.
 *
 * As a 4G DTU does: it connects to its server (the bus's dtu_servers entry;
 * a server listening on any address is dialled on loopback), sends its
 * registration, then passes the line's RTU frames through, with its
 * heartbeat every sim_heartbeat_interval and, with
 * registration_every_packet, the registration in front of every packet. A
 * link that goes down is dialled again after a pause. At run time (intake-sim
 * ctl) it can be told to drop the link, to dial a new one leaving the old
 * half-open (as a DTU that lost its radio link does), to stay off, to send
 * garbage or a heartbeat, and to cut every answer with a heartbeat.
 */
#include "sim_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

/* How long a DTU waits before dialling again. */
#define DIAL_PAUSE_MS 200

static void dial(sim_bus *b);

static const cfg_dtu_server *server_of(const sim_bus *b) {
  return &b->owner->cfg->dtu_servers[b->cfg->server];
}

static int dial_addr(const sim_bus *b, struct sockaddr_storage *sa) {
  const cfg_dtu_server *sv = server_of(b);
  const char *h = sv->host;
  if (strcmp(h, "0.0.0.0") == 0) h = "127.0.0.1";
  else if (strcmp(h, "::") == 0) h = "::1";
  memset(sa, 0, sizeof *sa);
  if (strchr(h, ':')) return uv_ip6_addr(h, sv->port, (struct sockaddr_in6 *)sa);
  return uv_ip4_addr(h, sv->port, (struct sockaddr_in *)sa);
}

static void on_dial_timer(uv_timer_t *t) { dial(t->data); }

static void redial_later(sim_bus *b) {
  if (!b->dtu_timers_open || b->dtu_hold) return;
  uv_timer_start(&b->dtu_dial_timer, on_dial_timer, DIAL_PAUSE_MS, 0);
}

static void on_heartbeat(uv_timer_t *t) {
  sim_bus *b = t->data;
  if (b->dtu_conn) sim__conn_write_raw(b->dtu_conn, b->cfg->heartbeat, b->cfg->hblen);
}

static void on_connected(uv_connect_t *req, int status) {
  sim_conn *c = req->data;
  sim_bus *b = c->bus;
  b->dtu_dialling = false;
  if (c->closing) return; /* stopping */
  if (status < 0) {
    log_debug("bus %s: DTU cannot reach its server: %s", b->cfg->id, uv_strerror(status));
    sim__conn_close(c);
    redial_later(b);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  b->dtu_conn = c;
  b->dtu_links++;
  sim__conn_write_raw(c, b->cfg->registration, b->cfg->reglen);
  char reg[CFG_REG_TEXT_MAX];
  log_info("bus %s: DTU link %llu up, registered as %s", b->cfg->id,
           (unsigned long long)b->dtu_links,
           cfg_bus_registration_text(b->cfg, reg, sizeof reg));
  sim__conn_update_reading(c);
}

static void dial(sim_bus *b) {
  if (b->dtu_dialling || b->dtu_conn || b->dtu_hold || !b->dtu_timers_open) return;
  struct sockaddr_storage sa;
  if (dial_addr(b, &sa) != 0) return;
  bool room;
  sim_conn *c = sim__conn_new(b, &room);
  if (!c) {
    redial_later(b);
    return;
  }
  if (!room) {
    sim__conn_close(c);
    redial_later(b);
    return;
  }
  const char *src = b->owner->dtu_source;
  if (src && *src) {
    struct sockaddr_storage from;
    memset(&from, 0, sizeof from);
    int rc = strchr(src, ':') ? uv_ip6_addr(src, 0, (struct sockaddr_in6 *)&from)
                              : uv_ip4_addr(src, 0, (struct sockaddr_in *)&from);
    if (rc == 0) rc = uv_tcp_bind(&c->tcp, (const struct sockaddr *)&from, 0);
    if (rc != 0)
      log_warn("bus %s: DTU cannot dial from %s: %s", b->cfg->id, src, uv_strerror(rc));
  }
  b->dtu_connect.data = c;
  if (uv_tcp_connect(&b->dtu_connect, &c->tcp, (const struct sockaddr *)&sa,
                     on_connected) != 0) {
    sim__conn_close(c);
    redial_later(b);
    return;
  }
  b->dtu_dialling = true;
}

int sim__dtu_start(sim_bus *b, char *err, size_t errlen) {
  struct sockaddr_storage sa;
  if (dial_addr(b, &sa) != 0) {
    snprintf(err, errlen, "bus %s: cannot dial %s:%d", b->cfg->id,
             server_of(b)->host, server_of(b)->port);
    return -1;
  }
  uv_timer_init(b->owner->loop, &b->dtu_hb_timer);
  uv_timer_init(b->owner->loop, &b->dtu_dial_timer);
  b->dtu_hb_timer.data = b->dtu_dial_timer.data = b;
  b->dtu_timers_open = true;
  if (b->cfg->hblen)
    uv_timer_start(&b->dtu_hb_timer, on_heartbeat, (uint64_t)b->cfg->sim_heartbeat_ms,
                   (uint64_t)b->cfg->sim_heartbeat_ms);
  dial(b);
  return 0;
}

static void noop_close(uv_handle_t *h) { (void)h; }

void sim__dtu_stop(sim_bus *b) {
  if (!b->dtu_timers_open) return;
  b->dtu_timers_open = false;
  uv_close((uv_handle_t *)&b->dtu_hb_timer, noop_close);
  uv_close((uv_handle_t *)&b->dtu_dial_timer, noop_close);
}

void sim__dtu_lost(sim_bus *b) {
  b->dtu_conn = NULL;
  if (!b->dtu_timers_open) return;
  log_info("bus %s: DTU link down", b->cfg->id);
  redial_later(b);
}

void sim__dtu_write(sim_conn *c, const uint8_t *data, size_t len) {
  const cfg_bus *cb = c->bus->cfg;
  if (cb->registration_every_packet) sim__conn_write_raw(c, cb->registration, cb->reglen);
  if (!c->bus->dtu_inside || !cb->hblen || len < 3) {
    sim__conn_write_raw(c, data, len);
    return;
  }
  /* The DTU sent the first part of the answer as a packet of its own, then
   * its heartbeat, then the rest (another packet, prefixed like any). */
  size_t half = len / 2;
  sim__conn_write_raw(c, data, half);
  sim__conn_write_raw(c, cb->heartbeat, cb->hblen);
  if (cb->registration_every_packet) sim__conn_write_raw(c, cb->registration, cb->reglen);
  sim__conn_write_raw(c, data + half, len - half);
}

int sim__dtu_control(sim *s, const char *bus, const char *what, const char *arg,
                     char *out, size_t outlen) {
  sim_bus *b = NULL;
  for (size_t i = 0; i < s->nbuses; i++)
    if (strcmp(s->buses[i].cfg->id, bus) == 0) b = &s->buses[i];
  if (!b || b->cfg->transport != CFG_TRANSPORT_RTU_DTU) {
    snprintf(out, outlen, "error: no rtu-dtu bus \"%s\"\n", bus);
    return -1;
  }
  bool up = b->dtu_conn != NULL;
  if (strcmp(what, "status") == 0) {
    /* Below. */
  } else if (strcmp(what, "drop") == 0) {
    if (b->dtu_conn) sim__conn_close(b->dtu_conn); /* dials again */
  } else if (strcmp(what, "reconnect") == 0) {
    /* The old link is left as a DTU that lost its radio leaves it: open on
     * the server's side, silent on this one. */
    sim_conn *old = b->dtu_conn;
    if (old) {
      old->mute = true;
      if (old->reading) uv_read_stop((uv_stream_t *)&old->tcp);
      old->reading = false;
      b->dtu_conn = NULL;
    }
    dial(b);
  } else if (strcmp(what, "off") == 0) {
    b->dtu_hold = true;
    if (b->dtu_conn) sim__conn_close(b->dtu_conn);
  } else if (strcmp(what, "on") == 0) {
    b->dtu_hold = false;
    dial(b);
  } else if (strcmp(what, "garbage") == 0 || strcmp(what, "heartbeat") == 0) {
    if (!up) {
      snprintf(out, outlen, "error: bus %s has no link\n", bus);
      return -1;
    }
    if (what[0] == 'g') {
      uint8_t junk[64];
      for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)(0xA5 ^ (i * 37));
      sim__conn_write_raw(b->dtu_conn, junk, sizeof junk);
    } else {
      sim__conn_write_raw(b->dtu_conn, b->cfg->heartbeat, b->cfg->hblen);
    }
  } else if (strcmp(what, "inside") == 0 && (strcmp(arg, "on") == 0 || strcmp(arg, "off") == 0)) {
    b->dtu_inside = strcmp(arg, "on") == 0;
  } else {
    snprintf(out, outlen,
             "error: expected dtu BUS status|drop|reconnect|off|on|garbage|heartbeat|"
             "inside on|off\n");
    return -1;
  }
  log_info("bus %s: DTU %s%s%s", bus, what, arg[0] ? " " : "", arg);
  snprintf(out, outlen, "ok %s link=%s links=%llu%s\n", bus, b->dtu_conn ? "up" : "down",
           (unsigned long long)b->dtu_links, b->dtu_hold ? " off" : "");
  return 0;
}
