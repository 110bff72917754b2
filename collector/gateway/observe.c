/* The metrics endpoint (metrics.listen): the gateway's counters in the
 * Prometheus text format at /metrics, its state document at /status. Built
 * on the loop from what struct gw and the store's counters hold: no I/O
 * besides the answer's write. */
#include "gateway/gw_impl.h"

const double gw__poll_hist_le[POLL_HIST_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                    0.5,   1,    2.5,   5,    10};

/* A poll's count and duration, as its result reaches the loop. */
void gw__count_poll(gw *d, meter_rt *m, const bus_result *r) {
  (void)d;
  m->polls++;
  if (!m->pending_bus) return;
  poll_hist *h = &m->pending_bus->hist;
  double s = r->end_ms > r->start_ms ? (double)(r->end_ms - r->start_ms) / 1000.0 : 0;
  size_t b = 0;
  while (b < POLL_HIST_BUCKETS && s > gw__poll_hist_le[b]) b++;
  h->count[b]++;
  h->sum_s += s;
}

static void site_sample(gw *d, mtext *t, const char *name, double v) {
  const char *l[] = {"site", d->cfg->site.id};
  mtext_sample(t, name, l, 1, v);
}

static void site_family(gw *d, mtext *t, const char *name, const char *type,
                        const char *help, double v) {
  mtext_family(t, name, type, help);
  site_sample(d, t, name, v);
}

/* Reloads of the site file. */
static void config_metrics(gw *d, mtext *t) {
  const char *site = d->cfg->site.id;
  mtext_family(t, "intake_config_reloads_total", "counter",
               "Reloads of the site file, by result: applied, unchanged (nothing to "
               "apply) or refused (invalid, or a setting a reload cannot change).");
  const char *results[] = {"applied", "unchanged", "refused"};
  uint64_t nres[] = {d->reloads_applied, d->reloads_unchanged, d->reloads_refused};
  for (size_t i = 0; i < 3; i++) {
    const char *l[] = {"site", site, "result", results[i]};
    mtext_sample(t, "intake_config_reloads_total", l, 2, (double)nres[i]);
  }
  site_family(d, t, "intake_config_applied_timestamp_seconds", "gauge",
              "When the configuration in use was applied, since the Unix epoch in "
              "seconds.",
              (double)(d->config_applied_ms / 1000));
}

/* Per meter: polls, failures by kind, online; the site's ratio. */
static void meter_metrics(gw *d, mtext *t) {
  const cfg *c = d->cfg;
  const char *site = c->site.id;
  mtext_family(t, "intake_polls_total", "counter", "Polls of a meter that came to an end.");
  for (size_t i = 0; i < c->nmeters; i++) {
    const char *l[] = {"site", site, "meter", c->meters[i].id};
    mtext_sample(t, "intake_polls_total", l, 2, (double)d->meters[i]->polls);
  }
  mtext_family(t, "intake_poll_failures_total", "counter",
               "Failed polls of a meter, by kind of failure.");
  for (size_t i = 0; i < c->nmeters; i++)
    for (int k = 1; k <= TR_NKINDS; k++) {
      const char *l[] = {"site", site, "meter", c->meters[i].id, "kind", fail_name(-k)};
      mtext_sample(t, "intake_poll_failures_total", l, 3, (double)d->meters[i]->failures[k]);
    }
  mtext_family(t, "intake_meter_online", "gauge", "1 while the meter is online, else 0.");
  size_t on = 0;
  for (size_t i = 0; i < c->nmeters; i++) {
    bool online = d->meters[i]->st.state == MSTATE_ONLINE;
    if (online) on++;
    const char *l[] = {"site", site, "meter", c->meters[i].id};
    mtext_sample(t, "intake_meter_online", l, 2, online ? 1 : 0);
  }
  site_family(d, t, "intake_site_online_ratio", "gauge",
              "Share of the site's meters online now (0..1).",
              c->nmeters ? (double)on / (double)c->nmeters : 0);
}

/* Per bus: poll durations, a serial line's planned load. */
static void bus_metrics(gw *d, mtext *t) {
  const cfg *c = d->cfg;
  const char *site = c->site.id;
  mtext_family(t, "intake_poll_duration_seconds", "histogram",
               "Duration of a meter's poll on its bus, first request to last answer.");
  for (size_t b = 0; d->buses && b < c->nbuses; b++) {
    if (!d->buses[b]) continue;
    const poll_hist *h = &d->buses[b]->hist;
    uint64_t cum = 0;
    char le[32];
    for (size_t k = 0; k <= POLL_HIST_BUCKETS; k++) {
      cum += h->count[k];
      if (k < POLL_HIST_BUCKETS) snprintf(le, sizeof le, "%g", gw__poll_hist_le[k]);
      else snprintf(le, sizeof le, "+Inf");
      const char *l[] = {"site", site, "bus", c->buses[b].id, "le", le};
      mtext_sample(t, "intake_poll_duration_seconds_bucket", l, 3, (double)cum);
    }
    const char *l[] = {"site", site, "bus", c->buses[b].id};
    mtext_sample(t, "intake_poll_duration_seconds_sum", l, 2, h->sum_s);
    mtext_sample(t, "intake_poll_duration_seconds_count", l, 2, (double)cum);
  }
  mtext_family(t, "intake_bus_line_load_ratio", "gauge",
               "Share of a serial line's time its meters' polls need at their intervals "
               "(planned from baud rate, framing and requests); over 1, slots are skipped.");
  for (size_t b = 0; d->buses && b < c->nbuses; b++) {
    if (c->buses[b].transport != CFG_TRANSPORT_RTU || !d->buses[b]) continue;
    const char *l[] = {"site", site, "bus", c->buses[b].id};
    mtext_sample(t, "intake_bus_line_load_ratio", l, 2, d->buses[b]->load);
  }
}

static void build_metrics(gw *d, mtext *t) {
  const cfg *c = d->cfg;
  const char *site = c->site.id;
  store_stats ss;
  store_get_stats(d->store, &ss);

  meter_metrics(d, t);
  site_family(d, t, "intake_readings_stored_total", "counter",
              "Readings committed to the database.", (double)ss.committed);
  site_family(d, t, "intake_readings_published_total", "counter",
              "Readings handed to the MQTT client.", (double)d->published);
  site_family(d, t, "intake_readings_delivered_total", "counter",
              "Readings the broker acknowledged.", (double)d->delivered);
  site_family(d, t, "intake_readings_refused_total", "counter",
              "Readings the broker refused.", (double)d->refused);
  site_family(d, t, "intake_readings_historical_total", "counter",
              "Readings sent again by the outbox replay.", (double)d->historical);
  site_family(d, t, "intake_outbox_readings", "gauge",
              "Stored readings not yet delivered to the broker.", (double)ss.undelivered);
  site_family(d, t, "intake_replay_active", "gauge",
              "1 while the outbox replay sends stored readings, else 0.",
              d->replay_active ? 1 : 0);
  site_family(d, t, "intake_storage_bytes", "gauge",
              "Size of the database with its -wal and -shm files at the last "
              "maintenance pass.",
              (double)d->storage_bytes);
  site_family(d, t, "intake_storage_errors_total", "counter",
              "Database transactions that failed.", (double)ss.errors);
  mtext_family(t, "intake_storage_rows_removed_total", "counter",
               "Readings removed from the database: delivered ones past the retention, "
               "and the oldest ones by the size limit.");
  const char *l_ret[] = {"site", site, "reason", "retention"};
  mtext_sample(t, "intake_storage_rows_removed_total", l_ret, 2, (double)d->rows_aged);
  const char *l_size[] = {"site", site, "reason", "size"};
  mtext_sample(t, "intake_storage_rows_removed_total", l_size, 2, (double)ss.removed);
  site_family(d, t, "intake_readings_dropped_total", "counter",
              "Readings lost: refused by a full queue, or removed by the size limit "
              "before delivery.",
              (double)ss.dropped);
  site_family(d, t, "intake_broker_connected", "gauge",
              "1 while connected to the MQTT broker, else 0.", d->connected ? 1 : 0);
  config_metrics(d, t);
  site_family(d, t, "intake_process_start_time_seconds", "gauge",
              "Start time of the gateway since the Unix epoch in seconds.",
              (double)(d->started_ms / 1000));
  gw__uplink_metrics(d, t);

  bus_metrics(d, t);
}

static int handle(void *ctx, const char *path, mtext *body, const char **ctype) {
  gw *d = ctx;
  if (strcmp(path, "/metrics") == 0) {
    build_metrics(d, body);
    gw__dtu_metrics(d, body);
    *ctype = METRICS_CONTENT_TYPE;
    return 200;
  }
  if (strcmp(path, "/status") == 0) {
    cJSON *o = gw__gateway_state_json(d, !d->stopping);
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!s) {
      body->failed = true;
      return 503;
    }
    mtext_printf(body, "%s\n", s);
    free(s);
    *ctype = "application/json";
    return 200;
  }
  mtext_printf(body, "not found\n");
  return 404;
}

int gw__metrics_start(gw *d) {
  const cfg *c = d->cfg;
  if (!c->metrics.host[0]) return 0;
  char err[256];
  if (httpd_start(&d->metrics, &d->loop, c->metrics.host, c->metrics.port, handle, d, err,
                  sizeof err) != 0) {
    log_error("metrics: %s", err);
    return -1;
  }
  bool v6 = strchr(c->metrics.host, ':') != NULL;
  log_info("metrics: listening on http://%s%s%s:%d/metrics", v6 ? "[" : "",
           c->metrics.host, v6 ? "]" : "", c->metrics.port);
  return 0;
}

void gw__metrics_stop(gw *d) {
  httpd_close(d->metrics);
  d->metrics = NULL;
}
