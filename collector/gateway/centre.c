/* The bureau's monitoring centre (uplink:): the uplink client started on the
 * loop, its log lines, its part of the gateway state and of /metrics. */
#include "gateway/gw_impl.h"

static void on_say(void *ctx, uplink_say_level lvl, const char *text) {
  (void)ctx;
  switch (lvl) {
  case UPLINK_SAY_ERROR: log_error("%s", text); break;
  case UPLINK_SAY_WARN: log_warn("%s", text); break;
  case UPLINK_SAY_INFO: log_info("%s", text); break;
  default: log_debug("%s", text); break;
  }
}

/* The connection came or went: the gateway state says so at once. */
static void on_changed(void *ctx) {
  gw *d = ctx;
  if (d->connected && !d->stopping) gw__publish_gateway_state(d, true);
}

int gw__uplink_start(gw *d) {
  const cfg *c = d->cfg;
  if (!c->uplink.enabled) return 0;
  d->upvals = calloc(c->nmeters ? c->nmeters : 1, sizeof *d->upvals);
  if (!d->upvals) {
    log_error("out of memory");
    return -1;
  }
  char err[256];
  uplink_options o = {.cfg = c,
                      .loop = &d->loop,
                      .store = d->store,
                      .values = d->upvals,
                      .say = on_say,
                      .changed = on_changed,
                      .ctx = d};
  if (uplink_start(&d->uplink, &o, err, sizeof err) != 0) {
    log_error("uplink: %s", err);
    return -1;
  }
  log_info("uplink: %s to %s:%d, %zu stations, a report every %lld s",
           c->uplink.protocol == CFG_UPLINK_SL427 ? "SL/T 427" : "SZY206", c->uplink.host,
           c->uplink.port, c->uplink.nstations, (long long)(c->uplink.report_interval_ms / 1000));
  return 0;
}

/* A valid reading of meter I of the current configuration, taken with
 * profile P: what the next report says of it. */
void gw__uplink_reading(gw *d, uint32_t i, const mb_profile *p, const double *values,
                        int64_t ts_ms) {
  if (d->upvals && i < d->cfg->nmeters) uplink_values_from(p, values, ts_ms, &d->upvals[i]);
}

void gw__uplink_state_json(gw *d, cJSON *o) {
  if (!d->uplink) return;
  uplink_stats st;
  uplink_get_stats(d->uplink, &st);
  cJSON *u = cJSON_AddObjectToObject(o, "uplink");
  cJSON_AddBoolToObject(u, "connected", st.connected);
  cJSON_AddNumberToObject(u, "pending", (double)st.pending);
  cJSON_AddNumberToObject(u, "sent", (double)st.sent);
  cJSON_AddNumberToObject(u, "resent", (double)st.resent);
  cJSON_AddNumberToObject(u, "confirmed", (double)st.confirmed);
  store_stats ss;
  store_get_stats(d->store, &ss);
  cJSON_AddNumberToObject(u, "dropped", (double)(ss.uplink_dropped + st.dropped));
  cJSON_AddNumberToObject(u, "queries", (double)st.queries);
  if (st.last_confirm_ms)
    gw__add_ts(u, "last_confirm", st.last_confirm_ms);
  else
    cJSON_AddNullToObject(u, "last_confirm");
}

static void family(gw *d, mtext *t, const char *name, const char *type, const char *help,
                   double v) {
  const char *l[] = {"site", d->cfg->site.id};
  mtext_family(t, name, type, help);
  mtext_sample(t, name, l, 1, v);
}

void gw__uplink_metrics(gw *d, mtext *t) {
  if (!d->uplink) return;
  uplink_stats st;
  uplink_get_stats(d->uplink, &st);
  store_stats ss;
  store_get_stats(d->store, &ss);
  family(d, t, "intake_uplink_connected", "gauge",
         "1 while connected to the bureau's monitoring centre, else 0.", st.connected ? 1 : 0);
  family(d, t, "intake_uplink_reports_pending", "gauge",
         "Reports for the centre stored and not yet confirmed.", (double)st.pending);
  family(d, t, "intake_uplink_reports_sent_total", "counter",
         "Report frames sent to the centre, resends included.", (double)st.sent);
  family(d, t, "intake_uplink_reports_resent_total", "counter",
         "Report frames sent again for want of a confirm.", (double)st.resent);
  family(d, t, "intake_uplink_reports_confirmed_total", "counter",
         "Reports the centre confirmed.", (double)st.confirmed);
  family(d, t, "intake_uplink_reports_dropped_total", "counter",
         "Reports removed unconfirmed (the bound of kept reports, the retention).",
         (double)(ss.uplink_dropped + st.dropped));
  family(d, t, "intake_uplink_last_confirm_time_seconds", "gauge",
         "When the centre last confirmed a report, since the Unix epoch (0: never).",
         (double)(st.last_confirm_ms / 1000));
}
