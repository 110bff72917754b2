/* The gateway daemon's start-up, as a list of named steps, and its stop. */
#include "gateway/gw_impl.h"

static int read_secret(const cfg *c, char *out, size_t len) {
  out[0] = '\0';
  if (c->mqtt.password_file[0]) {
    if (service_read_secret("mqtt.password_file", c->mqtt.password_file, out, len) != 0)
      return -1;
  } else if (c->mqtt.password_env[0]) {
    const char *v = getenv(c->mqtt.password_env);
    if (!v) {
      log_error("mqtt.password_env names %s, which is not set", c->mqtt.password_env);
      return -1;
    }
    if (strlen(v) >= len) {
      log_error("mqtt.password_env %s: the password is longer than %zu bytes",
                c->mqtt.password_env, len - 1);
      return -1;
    }
    snprintf(out, len, "%s", v);
  }
  return 0;
}

/* Descriptors besides the buses': the database and its journal (twice,
 * writer and reports), the broker, the loop's own, libcurl's. */
#define FD_BASE 64

/* Every bus holds a descriptor (a tty or a socket), and a concentrator may
 * serve thousands of DTUs, while the usual soft limit is 1,024 (systemd,
 * login shells). Raise it to what the buses need, up to the hard limit, and
 * say so plainly when even that is short: the buses past it would fail
 * with "too many open files". A DTU server holds its listening socket and
 * up to max_pending connections that have not registered yet. */
static void ensure_fd_room(const cfg *c) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  rlim_t need = (rlim_t)c->nbuses + FD_BASE;
  for (size_t i = 0; i < c->ndtu_servers; i++)
    need += (rlim_t)c->dtu_servers[i].max_pending + 1;
  if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need) return;
  rlim_t want = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need ? rl.rlim_max : need;
  if (want > rl.rlim_cur) {
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
      log_info("open-file limit raised from %llu to %llu for %zu buses",
               (unsigned long long)was, (unsigned long long)want, c->nbuses);
  }
  if (want < need)
    log_warn("%zu buses need about %llu open files, but the limit is %llu: "
             "buses past it fail with \"too many open files\"; raise the hard "
             "limit (LimitNOFILE= in a systemd unit, ulimit -Hn)",
             c->nbuses, (unsigned long long)need, (unsigned long long)want);
}

/* ------------------------------------------------------------------------ */
/* Start-up steps, in the order daemon_run takes them. Each logs why it
 * failed and returns nonzero; what it made is freed by finish(). */

/* The loop, its wake-up and the site's topic names. */
static int init_loop(gw *d) {
  const cfg *c = d->cfg;
  d->started_ms = clock_wall_ms();
  d->clock_base_ms = d->started_ms - clock_mono_ms();
  ensure_fd_room(c);
  uv_loop_init(&d->loop);
  uv_async_init(&d->loop, &d->wake, gw__on_wake);
  d->wake.data = d;
  uv_idle_init(&d->loop, &d->pub_idle);
  d->pub_idle.data = d;
  gw__site_topics(d);
  d->config_applied_ms = d->started_ms;
  if (gw__file_digest(c->path, d->config_digest) != 0) d->config_digest[0] = '\0';
  return 0;
}

/* The site's own topics, under the current prefix. */
void gw__site_topics(gw *d) {
  const cfg *c = d->cfg;
  snprintf(d->topic_gateway, sizeof d->topic_gateway, "%s/%s/gateway/state",
           c->mqtt.topic_prefix, c->site.id);
  snprintf(d->topic_rate, sizeof d->topic_rate, "%s/%s/online-rate",
           c->mqtt.topic_prefix, c->site.id);
  snprintf(d->seq_filter, sizeof d->seq_filter, "%s/%s/+/seq", c->mqtt.topic_prefix,
           c->site.id);
  snprintf(d->topic_seq_sync, sizeof d->topic_seq_sync, "%s/%s/gateway/seq",
           c->mqtt.topic_prefix, c->site.id);
  for (size_t i = 0; i < d->nperiods; i++)
    snprintf(d->period_rt[i].topic, sizeof d->period_rt[i].topic, "%s/%s/report/%s",
             c->mqtt.topic_prefix, c->site.id, d->periods[i].name);
}

/* Report windows follow the site's time zone; logs and timestamps are UTC
 * and unaffected. */
static int init_periods(gw *d) {
  const cfg *c = d->cfg;
  setenv("TZ", c->site.timezone, 1);
  tzset();
  for (size_t i = 0; i < c->reports.nperiods; i++) {
    if (rate_period_parse(c->reports.periods[i], &d->periods[i]) != 0) {
      log_error("reports: cannot use period \"%s\"", c->reports.periods[i]);
      return -1;
    }
    period_rt *p = &d->period_rt[i];
    p->d = d;
    p->index = (int)i;
    p->pending_tail = &p->pending;
    snprintf(p->topic, sizeof p->topic, "%s/%s/report/%s", c->mqtt.topic_prefix,
             c->site.id, d->periods[i].name);
    d->nperiods++;
  }
  return 0;
}

/* The configuration in use: each meter's requests, planned from its
 * profile. */
static int init_plans(gw *d) {
  char err[1024];
  if (!(d->gen = gw__gen_new(d->owned_cfg, err, sizeof err))) {
    log_error("%s", err);
    return -1;
  }
  d->owned_cfg = NULL;
  return 0;
}

/* What the opened database says of itself. */
static void log_store_health(gw *d) {
  const char *check_note, *broken = store_integrity(d->store, &check_note);
  if (broken)
    log_error("storage: %s failed its integrity check: %s; the readings that can be read "
              "are kept and sent, and a statement that fails removes nothing",
              d->cfg->storage.path, broken);
  if (check_note) log_info("storage: integrity check %s", check_note);
  if (store_open_note(d->store)) log_info("storage: %s", store_open_note(d->store));
  int sy = store_synchronous(d->store);
  if (sy >= 2)
    log_info("storage: WAL, synchronous %s: a commit is durable before its readings are "
             "published", sy == 2 ? "FULL" : "EXTRA");
  else
    log_error("storage: synchronous is %s, not FULL: a power cut could undo commits "
              "whose readings were published",
              sy == 1 ? "NORMAL" : sy == 0 ? "OFF" : "unknown");
}

static int init_store(gw *d) {
  const cfg *c = d->cfg;
  char err[1024];
  store_options so = {.path = c->storage.path,
                      .synchronous_full = true,
                      .max_size = c->storage.max_size,
                      .retention_ms = c->storage.retention_ms,
                      .hold_max = (size_t)c->storage.hold_max,
                      /* 0 in the options means the default; negative, none */
                      .commit_window_ms = c->storage.commit_ms ? c->storage.commit_ms : -1,
                      .notify = gw__notify,
                      .notify_ctx = d};
  if (store_open(&d->store, &so, err, sizeof err) != 0) {
    log_error("storage: %s", err);
    return -1;
  }
  log_store_health(d);
  (void)store_run_start(d->store, d->started_ms); /* only out of memory refuses it */
  store_stats ss;
  store_get_stats(d->store, &ss);
  d->run_from_id = ss.max_id; /* a step flags this run's readings only */
  return 0;
}

static int init_reporter(gw *d) {
  char err[1024];
  if (reporter_start(&d->reporter, d->cfg, d->periods, d->nperiods, d->started_ms,
                     gw__notify, d, err, sizeof err) != 0) {
    log_error("%s", err);
    return -1;
  }
  return 0;
}

/* Pushing reports to the bureau, when a URL is configured. */
static int init_pusher(gw *d) {
  const cfg *c = d->cfg;
  if (!c->reports.push_url[0]) return 0;
  char err[1024];
  char token[SECRET_MAX + 1] = "";
  if (c->reports.token_file[0] &&
      service_read_secret("reports.token_file", c->reports.token_file, token,
                          sizeof token) != 0)
    return -1;
  pusher_options pso = {.url = c->reports.push_url,
                        .ca_file = c->reports.ca_file,
                        .token = token,
                        .timeout_ms = c->reports.push_timeout_ms,
                        .want_next = gw__push_want_next,
                        .accepted = gw__push_accepted,
                        .failing = gw__push_failing,
                        .ctx = d};
  int rc = pusher_new(&d->pusher, &d->loop, &pso, err, sizeof err);
  memset(token, 0, sizeof token);
  if (rc != 0) {
    log_error("reports: %s", err);
    return -1;
  }
  log_info("reports are pushed to %s", c->reports.push_url);
  pusher_kick(d->pusher); /* whatever an earlier run could not deliver */
  return 0;
}

/* A broker client for configuration C (not connected yet: see
 * start_delivery). */
int gw__publisher_new(gw *d, const cfg *c, publisher **out) {
  char err[1024];
  char secret[SECRET_MAX + 1];
  if (read_secret(c, secret, sizeof secret) != 0) return -1;
  char will[256], will_topic[256];
  snprintf(will, sizeof will, "{\"online\":false,\"version\":\"%s\"}", IC_VERSION);
  snprintf(will_topic, sizeof will_topic, "%s/%s/gateway/state", c->mqtt.topic_prefix,
           c->site.id);
  publisher_options po = {
      .url = c->mqtt.url,
      .client_id = c->mqtt.client_id,
      .version = c->mqtt.version,
      .username = c->mqtt.username[0] ? c->mqtt.username : NULL,
      .password = secret[0] ? secret : NULL,
      .keepalive_s = (int)(c->mqtt.keepalive_ms / 1000),
      .ca_file = c->mqtt.ca_file,
      .cert_file = c->mqtt.cert_file,
      .key_file = c->mqtt.key_file,
      .will_topic = will_topic,
      .will_payload = will,
      .max_inflight = MAX_INFLIGHT + SITE_HEADROOM,
      .notify = gw__notify,
      .notify_ctx = d,
  };
  int rc = publisher_new(out, &po, err, sizeof err);
  memset(secret, 0, sizeof secret);
  if (rc != 0) {
    log_error("mqtt: %s", err);
    return -1;
  }
  return 0;
}

static int init_publisher(gw *d) { return gw__publisher_new(d, d->cfg, &d->pub); }

/* A serial line keeps a thread of its own; network buses run on the loop. */
static int init_buses(gw *d) {
  const cfg *c = d->cfg;
  char err[1024];
  if (netbuses_new(&d->net, &d->loop, gw__on_net_result, d, err, sizeof err) != 0) {
    log_error("%s", err);
    return -1;
  }
  for (size_t b = 0; b < c->nbuses; b++) {
    char w[512];
    if (busload_warning(c, b, w, sizeof w)) log_warn("%s", w);
  }
  return gw__buses_open(d);
}

/* The watchdog's question (docs/daemon.md, Under systemd): this runs on
 * the loop, so the loop turns; the store's writer has come round its loop
 * within the watchdog interval (it does every half second while waiting);
 * and paho's side has given every connection attempt and every message an
 * outcome in the time it allows itself (publisher_progressing). */
static bool gw_alive(void *ctx, int64_t limit_ms, char *why, size_t len) {
  gw *d = ctx;
  int64_t silent = store_writer_silent_ms(d->store);
  bool ok = true;
  if (silent > limit_ms) {
    snprintf(why, len, "the store's writer thread has been inside one round for %lld ms",
             (long long)silent);
    ok = false;
  } else if (!publisher_progressing(d->pub, limit_ms, why, len)) {
    ok = false;
  }
  if (!ok)
    log_once(&d->stuck_told, LOGL_ERROR,
             "watchdog: not telling systemd the gateway is alive: %s", why);
  else if (d->stuck_told) {
    d->stuck_told = false;
    log_info("watchdog: the gateway makes progress again");
  }
  return ok;
}

/* The STATUS line systemctl status shows. */
static void gw_describe(void *ctx, char *buf, size_t len) {
  gw *d = ctx;
  size_t on = 0;
  for (size_t i = 0; i < d->cfg->nmeters; i++)
    if (d->meters[i]->st.state == MSTATE_ONLINE) on++;
  store_stats ss;
  store_get_stats(d->store, &ss);
  snprintf(buf, len, "%zu/%zu meters online, %llu readings awaiting delivery%s%s", on,
           d->cfg->nmeters, (unsigned long long)ss.undelivered,
           d->connected ? "" : ", broker not connected",
           ss.failing ? ", storage failing" : "");
}

/* Signals, the site's timers, maintenance now and periodically, and the
 * report periods (windows that closed while the gateway was down first). */
static void on_hup(void *ctx) { gw__reload_start(ctx); }

static int init_timers(gw *d) {
  const cfg *c = d->cfg;
  service_signals_start(&d->signals, &d->loop, &d->stopping, on_hup, d);
  sdnotify_start(&d->sd, &d->loop, gw_alive, gw_describe, d);
  uv_timer_t *timers[] = {&d->gw_timer,    &d->replay_timer,    &d->site_timer,
                          &d->maint_timer, &d->reconnect_timer, &d->seq_timer};
  for (size_t i = 0; i < sizeof timers / sizeof *timers; i++) {
    uv_timer_init(&d->loop, timers[i]);
    timers[i]->data = d;
  }
  uv_timer_start(&d->gw_timer, gw__on_gateway_timer, GATEWAY_STATE_MS, GATEWAY_STATE_MS);
  (void)store_maintain(d->store, clock_wall_ms()); /* if refused, the first tick */
  uv_timer_start(&d->maint_timer, gw__on_maintenance, (uint64_t)c->storage.maintenance_ms,
                 (uint64_t)c->storage.maintenance_ms);
  for (size_t i = 0; i < d->nperiods; i++) {
    period_rt *p = &d->period_rt[i];
    uv_timer_init(&d->loop, &p->timer);
    p->timer.data = p;
    gw__request_reports(p);
    gw__arm_period(p);
  }
  return 0;
}

/* Each meter: its state, its topics and its first slot; its key is its
 * index. */
static int init_meters(gw *d) {
  const cfg *c = d->cfg;
  int64_t now = clock_wall_ms();
  d->meters = calloc(c->nmeters ? c->nmeters : 1, sizeof *d->meters);
  if (!d->meters || gw__keys_reserve(d, c->nmeters) != 0) {
    log_error("out of memory");
    return -1;
  }
  for (size_t i = 0; i < c->nmeters; i++)
    (void)store_meter_configured(d->store, c->meters[i].id, d->started_ms); /* reports */
  for (size_t i = 0; i < c->nmeters; i++) {
    if (!(d->meters[i] = gw__meter_alloc(d, c, i))) {
      log_error("out of memory");
      return -1;
    }
    gw__meter_start(d, d->meters[i], now);
  }
  return 0;
}

/* The start-up line and one line a bus. */
static void log_site(const gw *d) {
  const cfg *c = d->cfg;
  log_info("intake-collector %s: site %s, %zu meters on %zu buses, broker %s, "
           "database %s", IC_VERSION, c->site.id, c->nmeters, c->nbuses,
           c->mqtt.url, c->storage.path);
  for (size_t b = 0; b < c->nbuses; b++) {
    const cfg_bus *bus = &c->buses[b];
    char reg[CFG_REG_TEXT_MAX];
    if (bus->transport == CFG_TRANSPORT_RTU)
      log_info("bus %s: rtu %s %d %c%d%d, timeout %lld ms", bus->id, bus->device,
               bus->baud, bus->parity, bus->data_bits, bus->stop_bits,
               (long long)bus->timeout_ms);
    else if (bus->transport == CFG_TRANSPORT_RTU_DTU)
      log_info("bus %s: rtu-dtu, DTU %s dialling in to server %s, timeout %lld ms", bus->id,
               cfg_bus_registration_text(bus, reg, sizeof reg),
               c->dtu_servers[bus->server].id, (long long)bus->timeout_ms);
    else
      log_info("bus %s: %s %s:%d, timeout %lld ms", bus->id,
               cfg_transport_name(bus->transport), bus->host, bus->port,
               (long long)bus->timeout_ms);
  }
}

/* Connecting to the broker begins; the rest follows from its events. */
static int start_delivery(gw *d) {
  char err[1024];
  log_site(d);
  if (publisher_start(d->pub, err, sizeof err) != 0) {
    log_error("mqtt: %s", err);
    return -1;
  }
  return 0;
}

static int (*const start_steps[])(gw *d) = {
    init_loop,      init_periods, init_plans,  init_store,  init_reporter, init_pusher,
    init_publisher, init_buses,   gw__dtu_start, init_timers, init_meters, gw__uplink_start,
    gw__metrics_start, start_delivery,
};

/* ------------------------------------------------------------------------ */
/* Stop                                                                     */

/* No new polls; the request in progress on each bus finishes within its
 * timeout, queued ones are abandoned. Readings already taken then go to the
 * store, and acknowledgements that arrived are recorded. */
static void stop_polling(gw *d) {
  const cfg *c = d->cfg;
  for (size_t i = 0; i < c->nmeters; i++) uv_timer_stop(&d->meters[i]->timer);
  uv_timer_stop(&d->replay_timer);
  uv_timer_stop(&d->site_timer);
  uv_timer_stop(&d->maint_timer);
  uv_timer_stop(&d->reconnect_timer);
  for (size_t i = 0; i < d->nperiods; i++) uv_timer_stop(&d->period_rt[i].timer);
  dtuservers_stop(d->dtus);
  netbuses_stop(d->net); /* network polls in progress are abandoned */
  for (size_t b = 0; b < c->nbuses; b++)
    if (d->buses[b]) busworker_stop(d->buses[b]->w);
  for (size_t b = 0; b < c->nbuses; b++)
    if (d->buses[b]) busworker_join(d->buses[b]->w);
  gw__closing_stop(d);
  gw__on_wake(&d->wake);
}

static void close_store(gw *d, bool clean) {
  store_stats fin;
  store_run_stop(d->store, clock_wall_ms());
  store_close(d->store, &fin);
  d->store = NULL;
  if (clean)
    log_info("stopped after %llu polls: %llu readings taken, %llu committed, "
             "%llu awaiting delivery, %llu removed by the size limit",
             (unsigned long long)d->polls, (unsigned long long)d->successes,
             (unsigned long long)fin.committed, (unsigned long long)fin.undelivered,
             (unsigned long long)fin.removed);
  if (fin.held)
    log_error("storage: %llu readings the database never took are lost",
              (unsigned long long)fin.held);
}

/* A clean stop (or a reload's change of broker settings) says so on the
 * gateway's state; the Last Will covers the unclean ones. */
void gw__publisher_close(gw *d, bool clean) {
  if (clean && publisher_is_connected(d->pub)) {
    d->connected = true;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "online", false);
    cJSON_AddStringToObject(o, "version", IC_VERSION);
    gw__add_ts(o, "started", d->started_ms);
    gw__add_ts(o, "stopped", clock_wall_ms());
    gw__publish_json(d, d->topic_gateway, o, true, -1);
    cJSON_Delete(o);
  }
  publisher_stop(d->pub, 300);
  publisher_free(d->pub);
  d->pub = NULL;
}

static void free_meter(gw *d, meter_rt *m) {
  if (m->key < d->nkeys && d->by_key[m->key] == m) d->by_key[m->key] = NULL;
  free(m->topic_reading);
  free(m);
}

static void free_gw(gw *d) {
  pusher_free(d->pusher);
  dtuservers_free(d->dtus);
  uplink_free(d->uplink);
  free(d->upvals);
  netbuses_free(d->net);
  gw__pubq_free(d);
  store_event_free(d->replay_ev);
  if (d->loop_ready) uv_loop_close(&d->loop);
  for (size_t i = 0; i < d->nperiods; i++) {
    free(d->period_rt[i].latest);
    pending_report *r = d->period_rt[i].pending;
    while (r) {
      pending_report *next = r->next;
      free(r->body);
      free(r);
      r = next;
    }
  }
  for (size_t i = 0; d->meters && i < d->cfg->nmeters; i++)
    if (d->meters[i]) free_meter(d, d->meters[i]);
  for (size_t k = 0; k < d->nkeys; k++) /* removed, their polls abandoned */
    if (d->by_key[k]) free_meter(d, d->by_key[k]);
  free(d->meters);
  free(d->by_key);
  free(d->acks);
  gw__removed_free(d);
  while (d->old_gens) {
    gw_gen *g = d->old_gens;
    d->old_gens = g->next;
    gw__gen_free(g);
  }
  gw__gen_free(d->gen);
  cfg_free(d->owned_cfg);
  free(d);
}

/* Everything start-up made, in reverse; CLEAN after a stop by signal. */
static void finish(gw *d, bool clean) {
  for (size_t b = 0; d->buses && b < d->cfg->nbuses; b++)
    if (d->buses[b]) {
      busworker_free(d->buses[b]->w);
      d->buses[b]->w = NULL;
    }
  gw__closing_free(d);
  dtuservers_stop(d->dtus);
  netbuses_stop(d->net);
  reporter_free(d->reporter);
  d->reporter = NULL;
  if (d->store) close_store(d, clean);
  if (d->pub) gw__publisher_close(d, clean);
  pusher_close(d->pusher);
  uplink_close(d->uplink);
  gw__metrics_stop(d);
  if (d->loop_ready) service_close_all(&d->loop);
  for (size_t b = 0; d->buses && b < d->cfg->nbuses; b++) free(d->buses[b]);
  free(d->buses);
  free_gw(d);
}

int daemon_run(cfg *c, const char *profile_dir) {
  gw *d = calloc(1, sizeof *d);
  if (!d) {
    cfg_free(c);
    return 1;
  }
  d->cfg = d->owned_cfg = c;
  d->profile_dir = profile_dir;
  bool started = true;
  for (size_t i = 0; started && i < sizeof start_steps / sizeof *start_steps; i++) {
    started = start_steps[i](d) == 0;
    if (start_steps[i] == init_loop) d->loop_ready = true;
  }
  if (started) {
    printf("ready: polling %zu meters on %zu buses\n", d->cfg->nmeters, d->cfg->nbuses);
    fflush(stdout);
    log_info("ready");
    sdnotify_ready(&d->sd);
    uv_run(&d->loop, UV_RUN_DEFAULT);
    sdnotify_stop(&d->sd);
    stop_polling(d);
  }
  finish(d, started);
  return started ? 0 : 1;
}
