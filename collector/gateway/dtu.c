/* The gateway's DTU servers: starting them, saying what they do, and the
 * DTUs' part of the gateway state. */
#include "gateway/gw_impl.h"

/* "5m", "90s", "250ms" for messages. */
static void dur_text(int64_t ms, char *buf, size_t cap) {
  if (ms % 60000 == 0) snprintf(buf, cap, "%lldm", (long long)(ms / 60000));
  else if (ms % 1000 == 0) snprintf(buf, cap, "%llds", (long long)(ms / 1000));
  else snprintf(buf, cap, "%lldms", (long long)ms);
}

/* BUS's DTU has dialled in: its meters are polled from the next slot on,
 * whatever back-off their time without a line had built up. */
static void line_up(gw *d, size_t bus) {
  for (size_t i = 0; i < d->cfg->nmeters; i++) {
    meter_rt *m = d->meters[i];
    if (m->cfg->bus != bus) continue;
    m->retry_at_ms = 0;
    mstate_backoff_reset(&m->st);
  }
}

/* Connections that do not register are logged once per address (and
 * kind): a DTU with the wrong registration dials again every few seconds,
 * a scanner from many addresses, and neither may fill the journal. */
static void on_event(void *ctx, const dtu_ev *ev) {
  gw *d = ctx;
  const cfg *c = d->cfg;
  const cfg_dtu_server *sv = &c->dtu_servers[ev->server];
  const cfg_bus *b = ev->bus != SIZE_MAX ? &c->buses[ev->bus] : NULL;
  char reg[CFG_REG_TEXT_MAX] = "", t[32];
  if (b) cfg_bus_registration_text(b, reg, sizeof reg);
  switch (ev->kind) {
  case DTU_EV_OUTSIDE:
    if (ev->first)
      log_warn("DTU server %s: closed a connection from %s, outside its allow list "
               "(further ones from there are not logged)", sv->id, ev->peer);
    break;
  case DTU_EV_FULL:
    if (ev->first)
      log_warn("DTU server %s: %d connections wait for their registration; closed the "
               "oldest, from %s", sv->id, sv->max_pending, ev->peer);
    break;
  case DTU_EV_UNKNOWN:
    if (ev->first)
      log_warn("DTU server %s: closed a connection from %s: its registration names no "
               "bus (further ones from there are not logged)", sv->id, ev->peer);
    break;
  case DTU_EV_SILENT:
    dur_text(sv->register_timeout_ms, t, sizeof t);
    if (ev->first)
      log_warn("DTU server %s: closed a connection from %s: no registration within %s "
               "(further ones from there are not logged)", sv->id, ev->peer, t);
    break;
  case DTU_EV_HUNG_UP:
    if (ev->first)
      log_info("DTU server %s: a connection from %s closed before registering", sv->id,
               ev->peer);
    break;
  case DTU_EV_REGISTERED:
    if (ev->foreign)
      log_warn("bus %s: DTU %s registered from %s, another address than before (%s)",
               b->id, reg, ev->peer, ev->prev);
    else
      log_info("bus %s: DTU %s registered from %s", b->id, reg, ev->peer);
    line_up(d, ev->bus);
    break;
  case DTU_EV_TAKEOVER:
    if (ev->foreign)
      log_warn("bus %s: DTU %s: a connection from %s took the line over from %s, another "
               "address", b->id, reg, ev->peer, ev->prev);
    else
      log_info("bus %s: DTU %s: a new connection from %s took the line over", b->id, reg,
               ev->peer);
    line_up(d, ev->bus);
    break;
  case DTU_EV_REFUSED:
    /* Once per address: behind a carrier's NAT many SIMs share one, and
     * every refusal is counted in the gateway state and the metrics. */
    if (ev->first)
      log_warn("bus %s: DTU %s: refused a takeover by %s (%s); %s keeps the line (further "
               "ones from there are not logged)", b->id, reg, ev->peer, ev->why, ev->prev);
    else
      log_debug("bus %s: refused a takeover by %s (%s)", b->id, ev->peer, ev->why);
    break;
  case DTU_EV_IDLE:
    dur_text(sv->idle_timeout_ms, t, sizeof t);
    log_warn("bus %s: DTU %s brought nothing for %s: its link is closed", b->id, reg, t);
    break;
  }
}

/* The rtu-dtu buses' links, by the current configuration's bus index. */
static netbus *dtu_netbus(gw *d, size_t bus) {
  return d->buses && bus < d->cfg->nbuses && d->buses[bus] ? d->buses[bus]->nb : NULL;
}

static int link_attach(void *ctx, size_t bus, int fd, const uint8_t *left, size_t nleft) {
  return netbus_dtu_attach(dtu_netbus(ctx, bus), fd, left, nleft);
}

static int64_t link_quiet_ms(void *ctx, size_t bus) {
  return netbus_dtu_quiet_ms(dtu_netbus(ctx, bus));
}

static void link_close(void *ctx, size_t bus) { netbus_dtu_close(dtu_netbus(ctx, bus)); }

static const dtu_links links = {link_attach, link_quiet_ms, link_close};

int gw__dtu_start(gw *d) {
  const cfg *c = d->cfg;
  char err[512];
  if (c->ndtu_servers == 0) return 0;
  if (dtuservers_new(&d->dtus, &d->loop, c, &links, on_event, d, err, sizeof err) != 0) {
    log_error("%s", err);
    return -1;
  }
  for (size_t i = 0; i < c->ndtu_servers; i++) {
    const cfg_dtu_server *sv = &c->dtu_servers[i];
    size_t n = 0;
    for (size_t b = 0; b < c->nbuses; b++)
      n += c->buses[b].transport == CFG_TRANSPORT_RTU_DTU && c->buses[b].server == i;
    if (sv->nallow == 0)
      log_warn("DTU server %s: no allow list: DTUs are taken from any address (a "
               "registration is no password; give it the APN's address pool)", sv->id);
    log_info("DTU server %s: listening on %s%s%s:%d for %zu DTU%s", sv->id,
             strchr(sv->host, ':') ? "[" : "", sv->host, strchr(sv->host, ':') ? "]" : "",
             sv->port, n, n == 1 ? "" : "s");
  }
  return 0;
}

void gw__dtu_state_json(gw *d, cJSON *o) {
  const cfg *c = d->cfg;
  if (!d->dtus) return;
  cJSON *a = cJSON_AddArrayToObject(o, "dtus");
  for (size_t b = 0; b < c->nbuses; b++) {
    dtu_bus_info in;
    if (!dtuservers_bus_info(d->dtus, b, &in)) continue;
    char reg[CFG_REG_TEXT_MAX];
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "bus", c->buses[b].id);
    cJSON_AddStringToObject(e, "registration",
                            cfg_bus_registration_text(&c->buses[b], reg, sizeof reg));
    cJSON_AddBoolToObject(e, "connected", in.connected);
    if (in.peer[0]) cJSON_AddStringToObject(e, "address", in.peer);
    cJSON_AddNumberToObject(e, "registrations", (double)in.registrations);
    cJSON_AddNumberToObject(e, "takeovers", (double)in.takeovers);
    cJSON_AddNumberToObject(e, "foreign_address", (double)in.foreign);
    cJSON_AddNumberToObject(e, "takeovers_refused", (double)in.refused);
    /* Readings of this bus since then came from a DTU on another address
     * than before: a SIM moved, or someone else holds the registration. */
    cJSON_AddBoolToObject(e, "address_changed", in.address_changed);
    if (in.address_changed) gw__add_ts(e, "address_changed_at", in.changed_ms);
    cJSON_AddItemToArray(a, e);
  }
}

/* Each rtu-dtu bus's DTU in the metrics, when there are DTU servers. */
void gw__dtu_metrics(gw *d, mtext *t) {
  const cfg *c = d->cfg;
  if (!d->dtus) return;
  static const struct {
    const char *name, *type, *help;
  } fam[] = {
      {"intake_dtu_connected", "gauge", "1 while the bus's DTU is connected, else 0."},
      {"intake_dtu_registrations_total", "counter", "Connections bound to the bus by its registration."},
      {"intake_dtu_takeovers_total", "counter", "Connections that took the bus over from another."},
      {"intake_dtu_takeovers_refused_total", "counter", "Takeovers of the bus refused."},
      {"intake_dtu_foreign_address_total", "counter",
       "Registrations and takeover attempts from another address than the DTU's before."},
      {"intake_dtu_address_changed", "gauge", "1 once the bus's DTU is on another address than before."},
  };
  for (size_t f = 0; f < sizeof fam / sizeof fam[0]; f++) {
    mtext_family(t, fam[f].name, fam[f].type, fam[f].help);
    for (size_t b = 0; b < c->nbuses; b++) {
      dtu_bus_info in;
      if (!dtuservers_bus_info(d->dtus, b, &in)) continue;
      double v[] = {in.connected, (double)in.registrations, (double)in.takeovers,
                    (double)in.refused, (double)in.foreign, in.address_changed};
      const char *l[] = {"site", c->site.id, "bus", c->buses[b].id};
      mtext_sample(t, fam[f].name, l, 2, v[f]);
    }
  }
  mtext_family(t, "intake_dtu_pending_connections", "gauge",
               "Connections to the DTU servers waiting for their registration.");
  const char *l[] = {"site", c->site.id};
  mtext_sample(t, "intake_dtu_pending_connections", l, 1, (double)dtuservers_pending(d->dtus));
}
