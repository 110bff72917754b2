/* Reloading the site file (SIGHUP, or `intake-collector reload`): the new
 * file is read and validated as at start; a file that fails is refused and
 * the running configuration goes on untouched. A valid one is applied as a
 * difference (docs/daemon.md, "Reloading the configuration"): buses whose
 * settings did not change keep their connections and their queued polls,
 * meters keep their state and sequence numbers, and what a reload cannot
 * change (the database, the site, the reports, the metrics endpoint) is
 * refused with the setting's name. */
#include "gateway/gw_impl.h"

#include <openssl/evp.h>

/* ------------------------------------------------------------------------ */
/* Configurations in use                                                    */

gw_gen *gw__gen_new(cfg *c, char *err, size_t errlen) {
  gw_gen *g = calloc(1, sizeof *g);
  if (g) g->plans = calloc(c->nmeters ? c->nmeters : 1, sizeof *g->plans);
  if (!g || !g->plans) {
    free(g);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  g->c = c;
  for (size_t i = 0; i < c->nmeters; i++) {
    const cfg_bus *b = cfg_meter_bus(c, &c->meters[i]);
    char e[512];
    g->plans[i] = plan_build(c->meters[i].profile, b->max_gap, b->max_registers, e,
                             sizeof e);
    if (!g->plans[i]) {
      snprintf(err, errlen, "meter %s: %s", c->meters[i].id, e);
      while (i--) plan_free(g->plans[i]);
      free(g->plans);
      free(g); /* C is still the caller's */
      return NULL;
    }
  }
  return g;
}

void gw__gen_free(gw_gen *g) {
  if (!g) return;
  for (size_t i = 0; g->c && i < g->c->nmeters; i++) plan_free(g->plans[i]);
  free(g->plans);
  cfg_free(g->c);
  free(g);
}

/* A poll in flight on G ended: a replaced configuration goes with its
 * last one. */
void gw__gen_release(gw *d, gw_gen *g) {
  if (g->refs) g->refs--;
  if (g == d->gen || g->refs) return;
  for (gw_gen **p = &d->old_gens; *p; p = &(*p)->next)
    if (*p == g) {
      *p = g->next;
      break;
    }
  gw__gen_free(g);
}

/* ------------------------------------------------------------------------ */
/* Meters                                                                   */

/* M's topics under the current prefix and site: one allocation. */
static int meter_topics(gw *d, const cfg *c, meter_rt *m) {
  (void)d;
  int tl = snprintf(NULL, 0, "%s/%s/%s/", c->mqtt.topic_prefix, c->site.id, m->cfg->id);
  char *t = malloc(3 * (size_t)tl + sizeof "reading" + sizeof "state" + sizeof "seq");
  if (!t) return -1;
  free(m->topic_reading);
  m->topic_reading = t;
  sprintf(m->topic_reading, "%s/%s/%s/reading", c->mqtt.topic_prefix, c->site.id,
          m->cfg->id);
  m->topic_state = m->topic_reading + tl + sizeof "reading";
  sprintf(m->topic_state, "%s/%s/%s/state", c->mqtt.topic_prefix, c->site.id, m->cfg->id);
  m->topic_seq = m->topic_state + tl + sizeof "state";
  sprintf(m->topic_seq, "%s/%s/%s/seq", c->mqtt.topic_prefix, c->site.id, m->cfg->id);
  return 0;
}

static void on_meter_closed(uv_handle_t *h) {
  meter_rt *m = h->data;
  free(m->topic_reading);
  free(m);
}

/* Meter INDEX of configuration C, new to this run, with its topics; not
 * started (gw__meter_start). NULL when out of memory. */
meter_rt *gw__meter_alloc(gw *d, const cfg *c, size_t index) {
  meter_rt *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  m->d = d;
  m->cfg = &c->meters[index];
  m->index = (uint32_t)index;
  if (meter_topics(d, c, m) != 0) {
    free(m);
    return NULL;
  }
  return m;
}

/* Make room for N more keys (see meter_rt.key). */
int gw__keys_reserve(gw *d, size_t n) {
  if (d->nkeys + n > GW_KEYS_MAX) return -1;
  if (d->nkeys + n <= d->keys_cap) return 0;
  size_t cap = d->keys_cap ? d->keys_cap : 64;
  while (cap < d->nkeys + n) cap *= 2;
  meter_rt **k = realloc(d->by_key, cap * sizeof *k);
  if (!k) return -1;
  d->by_key = k;
  d->keys_cap = cap;
  return 0;
}

/* M (from gw__meter_alloc, with a key reserved) starts: a key, its state,
 * and its first slot, the next aligned one. */
void gw__meter_start(gw *d, meter_rt *m, int64_t now) {
  m->key = (uint32_t)d->nkeys;
  d->by_key[d->nkeys++] = m;
  mstate_init(&m->st, now);
  m->phase_ms = cfg_meter_phase_ms(d->cfg, m->index);
  uv_timer_init(&d->loop, &m->timer);
  m->timer.data = m;
  m->due_ms = clock_next_slot(now, m->cfg->interval_ms, m->phase_ms);
  gw__schedule(m, now);
}

/* A removed meter, once no poll of its is out: its timer's close callback
 * frees it. */
void gw__meter_free(meter_rt *m) {
  gw *d = m->d;
  if (d->by_key[m->key] == m) d->by_key[m->key] = NULL;
  uv_close((uv_handle_t *)&m->timer, on_meter_closed);
}

/* ------------------------------------------------------------------------ */
/* The file's digest                                                        */

/* PATH's SHA-256 as 64 hex digits: what `sha256sum` prints for the file,
 * so that an operator can tell which file is applied. */
int gw__file_digest(const char *path, char out[65]) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  EVP_MD_CTX *x = EVP_MD_CTX_new();
  int ok = x && EVP_DigestInit_ex(x, EVP_sha256(), NULL) == 1;
  unsigned char buf[8192], md[EVP_MAX_MD_SIZE];
  size_t n;
  while (ok && (n = fread(buf, 1, sizeof buf, f)) > 0)
    ok = EVP_DigestUpdate(x, buf, n) == 1;
  unsigned len = 0;
  ok = ok && !ferror(f) && EVP_DigestFinal_ex(x, md, &len) == 1 && len == 32;
  EVP_MD_CTX_free(x);
  fclose(f);
  if (!ok) return -1;
  for (unsigned i = 0; i < len; i++) sprintf(out + 2 * i, "%02x", md[i]);
  return 0;
}

/* The removed meters' states held: published (retained) now, dropped. */
void gw__publish_removed(gw *d) {
  while (d->removed && d->connected) {
    removed_state *r = d->removed;
    d->removed = r->next;
    (void)publisher_send(d->pub, r->topic, r->body, strlen(r->body), 1,
                         d->lim.retain_available, 0); /* lost with the connection: as
                                                         other state messages */
    free(r->body);
    free(r);
  }
}

void gw__removed_free(gw *d) {
  while (d->removed) {
    removed_state *r = d->removed;
    d->removed = r->next;
    free(r->body);
    free(r);
  }
}

void gw__add_config_state(gw *d, cJSON *o) {
  cJSON *c = cJSON_AddObjectToObject(o, "config");
  cJSON_AddStringToObject(c, "path", d->cfg->path);
  if (d->config_digest[0]) cJSON_AddStringToObject(c, "sha256", d->config_digest);
  gw__add_ts(c, "applied", d->config_applied_ms);
  cJSON_AddNumberToObject(c, "reloads", (double)d->reloads_applied);
  cJSON_AddNumberToObject(c, "reloads_refused", (double)d->reloads_refused);
}

/* ------------------------------------------------------------------------ */
/* What changed                                                             */

static bool dtu_servers_same(const cfg *a, const cfg *b) {
  if (a->ndtu_servers != b->ndtu_servers) return false;
  for (size_t i = 0; i < a->ndtu_servers; i++) {
    const cfg_dtu_server *x = &a->dtu_servers[i], *y = &b->dtu_servers[i];
    if (strcmp(x->id, y->id) != 0 || strcmp(x->host, y->host) != 0 || x->port != y->port ||
        x->idle_timeout_ms != y->idle_timeout_ms ||
        x->register_timeout_ms != y->register_timeout_ms ||
        x->max_pending != y->max_pending || x->takeover_hold_ms != y->takeover_hold_ms ||
        x->nallow != y->nallow || memcmp(x->allow, y->allow, x->nallow * sizeof *x->allow))
      return false;
  }
  return true;
}

/* The uplink sections of A and B say the same (their stations' meters by
 * id: their indexes may differ). */
static bool uplink_same(const cfg *a, const cfg *b) {
  const cfg_uplink *x = &a->uplink, *y = &b->uplink;
  if (x->enabled != y->enabled || x->protocol != y->protocol ||
      strcmp(x->host, y->host) != 0 || x->port != y->port ||
      x->report_interval_ms != y->report_interval_ms || x->heartbeat_ms != y->heartbeat_ms ||
      x->confirm_timeout_ms != y->confirm_timeout_ms ||
      x->delay_minutes != y->delay_minutes || x->nstations != y->nstations)
    return false;
  for (size_t i = 0; i < x->nstations; i++) {
    const cfg_uplink_station *s = &x->stations[i], *t = &y->stations[i];
    if (memcmp(s->address, t->address, sizeof s->address) != 0 || s->nmeters != t->nmeters)
      return false;
    for (size_t k = 0; k < s->nmeters; k++)
      if (strcmp(a->meters[s->meters[k]].id, b->meters[t->meters[k]].id) != 0) return false;
  }
  return true;
}

/* The first setting of B that differs from A's and that a reload cannot
 * change, or NULL. */
static const char *unchangeable(const cfg *a, const cfg *b) {
  if (strcmp(a->storage.path, b->storage.path) != 0) return "storage.path";
  if (a->storage.max_size != b->storage.max_size ||
      a->storage.retention_ms != b->storage.retention_ms ||
      a->storage.maintenance_ms != b->storage.maintenance_ms ||
      a->storage.commit_ms != b->storage.commit_ms ||
      a->storage.hold_max != b->storage.hold_max)
    return "storage";
  if (strcmp(a->site.id, b->site.id) != 0) return "site.id";
  if (strcmp(a->site.timezone, b->site.timezone) != 0) return "site.timezone";
  bool periods = a->reports.nperiods == b->reports.nperiods;
  for (size_t i = 0; periods && i < a->reports.nperiods; i++)
    periods = strcmp(a->reports.periods[i], b->reports.periods[i]) == 0;
  if (!periods) return "reports.periods";
  if (strcmp(a->reports.push_url, b->reports.push_url) != 0 ||
      strcmp(a->reports.ca_file, b->reports.ca_file) != 0 ||
      strcmp(a->reports.token_file, b->reports.token_file) != 0 ||
      a->reports.push_timeout_ms != b->reports.push_timeout_ms)
    return "reports";
  if (strcmp(a->metrics.host, b->metrics.host) != 0 || a->metrics.port != b->metrics.port)
    return "metrics.listen";
  if (!dtu_servers_same(a, b)) return "dtu_servers";
  if (!uplink_same(a, b)) return "uplink";
  return NULL;
}

static bool mqtt_same(const cfg *a, const cfg *b) {
  return strcmp(a->mqtt.url, b->mqtt.url) == 0 &&
         strcmp(a->mqtt.client_id, b->mqtt.client_id) == 0 &&
         strcmp(a->mqtt.topic_prefix, b->mqtt.topic_prefix) == 0 &&
         a->mqtt.version == b->mqtt.version &&
         strcmp(a->mqtt.username, b->mqtt.username) == 0 &&
         strcmp(a->mqtt.password_file, b->mqtt.password_file) == 0 &&
         strcmp(a->mqtt.password_env, b->mqtt.password_env) == 0 &&
         a->mqtt.keepalive_ms == b->mqtt.keepalive_ms &&
         strcmp(a->mqtt.ca_file, b->mqtt.ca_file) == 0 &&
         strcmp(a->mqtt.cert_file, b->mqtt.cert_file) == 0 &&
         strcmp(a->mqtt.key_file, b->mqtt.key_file) == 0;
}

static bool bus_same(const cfg_bus *a, const cfg_bus *b) {
  return strcmp(a->id, b->id) == 0 && a->transport == b->transport &&
         strcmp(a->host, b->host) == 0 && a->baud == b->baud && a->parity == b->parity &&
         a->data_bits == b->data_bits && a->stop_bits == b->stop_bits &&
         a->port == b->port && a->timeout_ms == b->timeout_ms &&
         a->turnaround_ms == b->turnaround_ms && a->max_gap == b->max_gap &&
         a->max_registers == b->max_registers && a->sim_wire_time == b->sim_wire_time &&
         a->server == b->server && a->reglen == b->reglen && a->hblen == b->hblen &&
         memcmp(a->registration, b->registration, a->reglen) == 0 &&
         memcmp(a->heartbeat, b->heartbeat, a->hblen) == 0 &&
         a->registration_every_packet == b->registration_every_packet &&
         a->sim_heartbeat_ms == b->sim_heartbeat_ms;
}

/* What changed in a meter kept by a reload, for its log line ("" for
 * nothing that changes how it is polled). */
static void meter_changes(const cfg *oc, const cfg_meter *a, const cfg *nc,
                          const cfg_meter *b, char *out, size_t len) {
  size_t n = 0;
  out[0] = '\0';
#define ADD(...) \
  n += (size_t)snprintf(out + n, n < len ? len - n : 0, __VA_ARGS__), n = n < len ? n : len
  const char *ob = oc->buses[a->bus].id, *nb = nc->buses[b->bus].id;
  if (strcmp(ob, nb) != 0) ADD("%sbus %s -> %s", n ? ", " : "", ob, nb);
  if (a->unit != b->unit) ADD("%sunit %d -> %d", n ? ", " : "", a->unit, b->unit);
  bool prof = strcmp(a->profile_ref, b->profile_ref) == 0 &&
              a->profile->nfields == b->profile->nfields;
  for (size_t i = 0; prof && i < a->profile->nfields; i++)
    prof = strcmp(a->profile->fields[i].name, b->profile->fields[i].name) == 0;
  if (!prof) ADD("%sprofile %s -> %s", n ? ", " : "", a->profile_ref, b->profile_ref);
  if (a->interval_ms != b->interval_ms)
    ADD("%sinterval %lld ms -> %lld ms", n ? ", " : "", (long long)a->interval_ms,
        (long long)b->interval_ms);
#undef ADD
}

/* ------------------------------------------------------------------------ */
/* Applying                                                                 */

/* A reload being applied: the new configuration, and what becomes of the
 * old one's buses and meters. Everything that can fail is done in
 * plan_reload, before anything running is touched. */
typedef struct {
  gw_gen *g;
  const cfg *oc, *nc;
  bus_rt **buses;    /* in the new order: kept ones, or NULL (to open) */
  long *bus_was;     /* by new bus: its old index, or -1 */
  bool *bus_reconf;  /* by new bus: a serial line kept, with new settings */
  bool *bus_kept;    /* by old bus */
  meter_rt **meters; /* in the new order: kept ones, or allocated (added) */
  bool *meter_kept;  /* by old meter */
  bool *added;       /* by new meter */
  publisher *pub;    /* a new broker client when mqtt.* changed */
  uplink_values *upvals; /* the uplink's latest values, in the new order */
  size_t nadded, nremoved, nchanged;
} reload_plan;

static void reload_plan_free(reload_plan *p) {
  for (size_t j = 0; p->meters && p->added && j < p->nc->nmeters; j++)
    if (p->added[j] && p->meters[j]) {
      free(p->meters[j]->topic_reading);
      free(p->meters[j]);
    }
  free(p->buses);
  free(p->bus_was);
  free(p->bus_reconf);
  free(p->bus_kept);
  free(p->meters);
  free(p->meter_kept);
  free(p->added);
  free(p->upvals);
  if (p->pub) publisher_free(p->pub);
}

static int by_id(const void *a, const void *b, void *ctx) {
  const cfg *c = ctx;
  return strcmp(c->buses[*(const size_t *)a].id, c->buses[*(const size_t *)b].id);
}

/* Which buses stay as they are (kept with their connections and queues). */
static int plan_buses(gw *d, reload_plan *p) {
  const cfg *oc = p->oc, *nc = p->nc;
  size_t *order = calloc(oc->nbuses ? oc->nbuses : 1, sizeof *order);
  p->buses = calloc(nc->nbuses ? nc->nbuses : 1, sizeof *p->buses);
  p->bus_was = calloc(nc->nbuses ? nc->nbuses : 1, sizeof *p->bus_was);
  p->bus_kept = calloc(oc->nbuses ? oc->nbuses : 1, sizeof *p->bus_kept);
  p->bus_reconf = calloc(nc->nbuses ? nc->nbuses : 1, sizeof *p->bus_reconf);
  if (!order || !p->buses || !p->bus_was || !p->bus_kept || !p->bus_reconf) {
    free(order);
    return -1;
  }
  for (size_t i = 0; i < oc->nbuses; i++) order[i] = i;
  qsort_r(order, oc->nbuses, sizeof *order, by_id, (void *)oc);
  for (size_t j = 0; j < nc->nbuses; j++) {
    size_t lo = 0, hi = oc->nbuses;
    p->bus_was[j] = -1;
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      int r = strcmp(oc->buses[order[mid]].id, nc->buses[j].id);
      if (r == 0) {
        p->bus_was[j] = (long)order[mid];
        break;
      }
      if (r < 0) lo = mid + 1;
      else hi = mid;
    }
    long i = p->bus_was[j];
    if (i < 0 || !d->buses[i]) continue;
    bool same = bus_same(&d->buses[i]->conf, &nc->buses[j]);
    /* A serial line that stays one is set anew on its own thread. */
    bool reconf = !same && d->buses[i]->w && nc->buses[j].transport == CFG_TRANSPORT_RTU;
    if (same || reconf) {
      p->buses[j] = d->buses[i];
      p->bus_kept[i] = true;
      p->bus_reconf[j] = reconf;
    }
  }
  free(order);
  return 0;
}

/* Which meters stay (by id), which come, which go. */
static int plan_meters(gw *d, reload_plan *p) {
  const cfg *oc = p->oc, *nc = p->nc;
  p->meters = calloc(nc->nmeters ? nc->nmeters : 1, sizeof *p->meters);
  p->added = calloc(nc->nmeters ? nc->nmeters : 1, sizeof *p->added);
  p->meter_kept = calloc(oc->nmeters ? oc->nmeters : 1, sizeof *p->meter_kept);
  if (!p->meters || !p->added || !p->meter_kept) return -1;
  for (size_t j = 0; j < nc->nmeters; j++) {
    int oi = cfg_meter_index(oc, nc->meters[j].id);
    if (oi >= 0) {
      p->meters[j] = d->meters[oi];
      p->meter_kept[oi] = true;
      char ch[256];
      meter_changes(oc, &oc->meters[oi], nc, &nc->meters[j], ch, sizeof ch);
      if (ch[0]) p->nchanged++;
    } else {
      p->added[j] = true;
      p->nadded++;
      if (!(p->meters[j] = gw__meter_alloc(d, nc, j))) return -1;
    }
  }
  p->nremoved = oc->nmeters + p->nadded - nc->nmeters;
  if (d->upvals && !(p->upvals = calloc(nc->nmeters ? nc->nmeters : 1, sizeof *p->upvals)))
    return -1;
  return gw__keys_reserve(d, p->nadded);
}

/* Everything that can fail; REFUSED says why it did. */
static int plan_reload(gw *d, reload_plan *p, char *refused, size_t len) {
  const char *what = unchangeable(p->oc, p->nc);
  if (what && strcmp(what, "storage.path") == 0) {
    snprintf(refused, len,
             "storage.path cannot change on reload (it is %.700s): restart the gateway "
             "to use another database",
             p->oc->storage.path);
    return -1;
  }
  if (what) {
    snprintf(refused, len, "%s cannot change on reload: restart the gateway to apply it",
             what);
    return -1;
  }
  if (plan_buses(d, p) != 0 || plan_meters(d, p) != 0) {
    snprintf(refused, len, d->nkeys + p->nadded > GW_KEYS_MAX
                               ? "too many meters added over this run: restart the "
                                 "gateway to apply the file"
                               : "out of memory");
    return -1;
  }
  if (!mqtt_same(p->oc, p->nc) && gw__publisher_new(d, p->nc, &p->pub) != 0) {
    snprintf(refused, len, "the new mqtt settings cannot be used (see above)");
    return -1;
  }
  return 0;
}

/* Buses: the changed and removed ones closed (a serial line's request in
 * progress ends first, under the old settings), the changed and added ones
 * opened. */
static void apply_buses(gw *d, reload_plan *p) {
  const cfg *oc = p->oc, *nc = p->nc;
  for (size_t i = 0; i < oc->nbuses; i++) {
    if (p->bus_kept[i]) continue;
    gw__bus_close(d, d->buses[i]);
    d->buses[i] = NULL;
  }
  for (size_t j = 0; j < nc->nbuses; j++) {
    if (p->bus_reconf[j]) {
      bus_rt *b = p->buses[j];
      b->conf = nc->buses[j];
      busworker_reconfigure(b->w, &b->conf);
      char e[256];
      int64_t us = busload_us_per_s(nc, j, e, sizeof e);
      b->load = us > 0 ? (double)us / 1e6 : 0;
      log_info("reload: bus %s changed: its line is opened again with the new settings "
               "before its next poll", b->conf.id);
      continue;
    }
    if (p->buses[j]) continue;
    bus_rt *b = calloc(1, sizeof *b);
    if (!b) {
      /* Its meters' slots are skipped (and counted) until a reload or a
       * restart opens it. */
      log_error("bus %s: out of memory: not opened", nc->buses[j].id);
      continue;
    }
    b->conf = nc->buses[j];
    (void)gw__bus_open(d, b, nc, j); /* a failure is logged; polls then fail at once */
    p->buses[j] = b;
    log_info("reload: bus %s %s", b->conf.id, p->bus_was[j] >= 0 ? "changed: reopened" : "added");
    char w[512];
    if (busload_warning(nc, j, w, sizeof w)) log_warn("%s", w);
  }
  free(d->buses);
  d->buses = p->buses;
  p->buses = NULL;
}

/* A meter the new file does not name: polled no more, said offline with
 * reason "removed"; its readings in the database are still delivered. */
static void retire(gw *d, meter_rt *m, int64_t now) {
  uv_timer_stop(&m->timer);
  log_info("reload: meter %s removed: no longer polled; its undelivered readings are "
           "still sent", m->cfg->id);
  (void)store_add_state(d->store, m->cfg->id, now, false, "removed",
                        "removed from the configuration"); /* history only */
  cJSON *o = cJSON_CreateObject();
  cJSON_AddBoolToObject(o, "online", false);
  gw__add_ts(o, "since", now);
  cJSON_AddStringToObject(o, "reason", "removed");
  char *body = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  size_t tl = strlen(m->topic_state) + 1;
  removed_state *r = body ? malloc(sizeof *r + tl) : NULL;
  if (r) {
    r->body = body;
    memcpy(r->topic, m->topic_state, tl);
    r->next = d->removed;
    d->removed = r;
    if (d->connected) gw__publish_removed(d);
  } else {
    free(body);
    log_error("meter %s: out of memory for its removed state", m->cfg->id);
  }
  m->retired = true;
  if (!m->pending) gw__meter_free(m);
}

/* Meters: kept ones follow their new settings (re-planned from the next
 * aligned slot when bus, unit, profile or interval changed, their state and
 * sequence numbers kept); added ones start; removed ones retire. */
static void apply_meters(gw *d, reload_plan *p, int64_t now) {
  const cfg *oc = p->oc, *nc = p->nc;
  for (size_t i = 0; i < oc->nmeters; i++)
    if (!p->meter_kept[i]) retire(d, d->meters[i], now);
  for (size_t j = 0; j < nc->nmeters; j++) {
    meter_rt *m = p->meters[j];
    if (p->added[j]) {
      gw__meter_start(d, m, now);
      (void)store_meter_configured(d->store, m->cfg->id, now); /* reports only */
      log_info("reload: meter %s added on bus %s, unit %d, every %lld ms", m->cfg->id,
               nc->buses[m->cfg->bus].id, m->cfg->unit, (long long)m->cfg->interval_ms);
      p->added[j] = false; /* started: no longer the plan's to free */
      continue;
    }
    char ch[256];
    meter_changes(oc, m->cfg, nc, &nc->meters[j], ch, sizeof ch);
    if (p->upvals) p->upvals[j] = d->upvals[m->index];
    m->cfg = &nc->meters[j];
    m->index = (uint32_t)j;
    if (!ch[0]) continue;
    log_info("reload: meter %s changed: %s", m->cfg->id, ch);
    uv_timer_stop(&m->timer);
    m->phase_ms = cfg_meter_phase_ms(nc, j);
    m->retry_at_ms = 0;
    m->due_ms = clock_next_slot(now, m->cfg->interval_ms, m->phase_ms);
    gw__schedule(m, now);
  }
  free(d->meters);
  d->meters = p->meters;
  p->meters = NULL;
  if (p->upvals) {
    uplink_rebind(d->uplink, nc, p->upvals);
    free(d->upvals);
    d->upvals = p->upvals;
    p->upvals = NULL;
  }
}

/* mqtt.* changed: the old connection says the gateway is offline and
 * closes; the new client connects. Readings in flight stay in the outbox
 * and are replayed on the new connection. */
static void apply_mqtt(gw *d, reload_plan *p) {
  gw__flush_acks(d);
  gw__publisher_close(d, true);
  d->pub = p->pub;
  p->pub = NULL;
  gw__connection_reset(d);
  gw__site_topics(d);
  for (size_t i = 0; i < d->cfg->nmeters; i++)
    if (meter_topics(d, d->cfg, d->meters[i]) != 0)
      log_error("meter %s: out of memory for its topics", d->meters[i]->cfg->id);
  char err[512];
  log_info("reload: mqtt settings changed: connecting to %s", d->cfg->mqtt.url);
  if (publisher_start(d->pub, err, sizeof err) != 0) log_error("mqtt: %s", err);
}

static void refuse(gw *d, const char *why) {
  d->reloads_refused++;
  log_error("reload refused: %s; the running configuration is kept", why);
  gw__publish_gateway_state(d, true);
}

/* A reload's reading of the file, on libuv's thread pool: the file read,
 * parsed and validated, its profiles loaded, its SHA-256 taken and the
 * meters' requests planned, none of it on the loop. */
typedef struct {
  uv_work_t w;
  gw *d;
  char path[CFG_PATH_MAX];
  const char *profile_dir;
  cfg *nc;       /* with G, or NULL when it failed */
  gw_gen *g;
  char err[CFG_ERR_MAX];
  char digest[65];
} reload_job;

static void reload_read(uv_work_t *w) {
  reload_job *j = w->data;
  if (cfg_load(j->path, j->profile_dir, &j->nc, j->err, sizeof j->err) != 0) {
    j->nc = NULL;
    return;
  }
  if (gw__file_digest(j->nc->path, j->digest) != 0) j->digest[0] = '\0';
  if (!(j->g = gw__gen_new(j->nc, j->err, sizeof j->err))) {
    cfg_free(j->nc);
    j->nc = NULL;
  }
}

/* The file J read: applied as a difference, or refused. */
static void reload_apply(gw *d, reload_job *j) {
  cfg *nc = j->nc;
  const char *digest = j->digest;
  if (!nc) {
    refuse(d, j->err);
    return;
  }
  if (digest[0] && strcmp(digest, d->config_digest) == 0) {
    d->reloads_unchanged++;
    log_info("reload: %s is unchanged (sha256 %.12s…): nothing to apply", nc->path, digest);
    gw__gen_free(j->g);
    return;
  }
  char err[CFG_ERR_MAX] = "";
  reload_plan p = {.oc = d->cfg, .nc = nc, .g = j->g};
  if (plan_reload(d, &p, err, sizeof err) != 0 ||
      dtuservers_rebind(d->dtus, nc, p.bus_was) != 0) {
    if (!err[0]) snprintf(err, sizeof err, "out of memory");
    reload_plan_free(&p);
    gw__gen_free(p.g);
    refuse(d, err);
    return;
  }
  gw_gen *old = d->gen;
  int64_t now = clock_wall_ms();
  apply_buses(d, &p);
  d->gen = p.g;
  d->cfg = nc;
  apply_meters(d, &p, now);
  reporter_set_config(d->reporter, nc);
  if (p.pub) apply_mqtt(d, &p);
  if (old->refs) {
    old->next = d->old_gens;
    d->old_gens = old;
  } else {
    gw__gen_free(old);
  }
  snprintf(d->config_digest, sizeof d->config_digest, "%s", digest);
  d->config_applied_ms = now;
  d->reloads_applied++;
  log_info("reload: applied %s (sha256 %.12s…): %zu meters added, %zu removed, %zu "
           "changed; %zu meters on %zu buses",
           nc->path, digest, p.nadded, p.nremoved, p.nchanged, nc->nmeters, nc->nbuses);
  reload_plan_free(&p);
  gw__publish_gateway_state(d, true);
  gw__publish_online_rate(d);
}

static void reload_done(uv_work_t *w, int status) {
  reload_job *j = w->data;
  gw *d = j->d;
  d->reloading = false;
  if (d->stopping || status != 0) {
    gw__gen_free(j->g); /* with its configuration; NULL when none */
    free(j);
    return;
  }
  reload_apply(d, j);
  free(j);
  sdnotify_reloading(&d->sd, false);
  if (d->reload_again) {
    d->reload_again = false;
    gw__reload_start(d);
  }
}

/* SIGHUP: read the file again (off the loop), then apply what changed. A
 * SIGHUP while a reading is under way reads the file once more after it. */
void gw__reload_start(gw *d) {
  if (d->stopping) return;
  if (d->reloading) {
    d->reload_again = true;
    return;
  }
  reload_job *j = calloc(1, sizeof *j);
  if (!j) {
    refuse(d, "out of memory");
    return;
  }
  j->d = d;
  j->w.data = j;
  snprintf(j->path, sizeof j->path, "%s", d->cfg->path);
  j->profile_dir = d->profile_dir;
  log_info("reload: reading %s", j->path);
  if (uv_queue_work(&d->loop, &j->w, reload_read, reload_done) != 0) {
    free(j);
    refuse(d, "cannot start reading the file");
    return;
  }
  d->reloading = true;
  sdnotify_reloading(&d->sd, true);
}
