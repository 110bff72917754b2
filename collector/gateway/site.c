/* The site topics: meter and gateway state and the online rate, each
 * sized to the broker's Maximum Packet Size. */
#include "gateway/gw_impl.h"

/* Does a TOPIC message of LEN bytes fit the broker's Maximum Packet Size? */
bool gw__fits(gw *d, const char *topic, size_t len) {
  return !d->lim.maximum_packet_size ||
         publisher_packet_size(d->pub, topic, len, 1) <= d->lim.maximum_packet_size;
}

/* A site document (online rate, report) larger than the broker's Maximum
 * Packet Size is trimmed to fit rather than never delivered: first its
 * per-meter list goes ("meters_omitted": how many), then the repair list
 * loses entries from its end, the shortest outages ("repair_omitted": how
 * many). The rate, the counts and the longest outages stay. Returns the text
 * to send (perhaps still too large), or NULL. */
static char *fit_document(gw *d, const char *topic, cJSON *o) {
  char *s = cJSON_PrintUnformatted(o);
  if (!s || gw__fits(d, topic, strlen(s))) return s;
  cJSON *meters = cJSON_GetObjectItemCaseSensitive(o, "meters");
  if (cJSON_IsArray(meters)) {
    int n = cJSON_GetArraySize(meters);
    cJSON_DeleteItemFromObjectCaseSensitive(o, "meters");
    cJSON_AddNumberToObject(o, "meters_omitted", n);
    free(s);
    s = cJSON_PrintUnformatted(o);
    if (!s || gw__fits(d, topic, strlen(s))) return s;
  }
  cJSON *repair = cJSON_GetObjectItemCaseSensitive(o, "repair");
  int n = cJSON_IsArray(repair) ? cJSON_GetArraySize(repair) : 0;
  if (n == 0) return s;
  /* The size with k entries kept is the size with none plus the first k
   * entries and their commas: find the largest k that fits in one pass. */
  size_t *len = calloc((size_t)n, sizeof *len);
  if (!len) return s;
  int i = 0;
  for (cJSON *it = repair->child; it && i < n; it = it->next, i++) {
    char *t = cJSON_PrintUnformatted(it);
    len[i] = t ? strlen(t) : 0;
    free(t);
  }
  cJSON *kept = cJSON_DetachItemFromObjectCaseSensitive(o, "repair");
  cJSON_AddItemToObject(o, "repair", cJSON_CreateArray());
  cJSON *omitted = cJSON_AddNumberToObject(o, "repair_omitted", n);
  free(s);
  s = cJSON_PrintUnformatted(o);
  size_t size = s ? strlen(s) : 0;
  int k = 0;
  while (s && k < n && gw__fits(d, topic, size + len[k] + (k ? 1 : 0))) size += len[k] + (k ? 1 : 0), k++;
  free(len);
  free(s);
  cJSON_DeleteItemFromObjectCaseSensitive(o, "repair");
  while (cJSON_GetArraySize(kept) > k) cJSON_DeleteItemFromArray(kept, k);
  cJSON_AddItemToObject(o, "repair", kept);
  cJSON_SetNumberValue(omitted, n - k);
  return cJSON_PrintUnformatted(o);
}

/* A site message (TAG_GATEWAY, TAG_RATE or TAG_REPORTS) that does not fit
 * even trimmed: counted, logged once per topic kind. */
void gw__too_large(gw *d, int site_tag, const char *topic, size_t len) {
  d->too_large++;
  log_once(&d->too_big_told[site_tag - TAG_GATEWAY], LOGL_WARN, "mqtt: %s: a message of %zu bytes is larger than the broker takes (Maximum "
           "Packet Size %u): not sent",
           topic, len, (unsigned)d->lim.maximum_packet_size);
}

/* Publish a JSON document at QoS 1; METER >= 0 tags it so that a refusal is
 * traced to that meter. */
void gw__publish_json(gw *d, const char *topic, cJSON *o, bool retained,
                         int meter) {
  if (!d->connected) return;
  char *s = fit_document(d, topic, o);
  if (!s) return;
  if (publisher_send(d->pub, topic, s, strlen(s), 1, retained,
                     meter >= 0 ? make_tag(0, meter) : 0) == PUB_ETOOBIG) {
    if (meter >= TAG_GATEWAY && meter <= TAG_REPORTS) {
      gw__too_large(d, meter, topic, strlen(s));
    } else {
      d->too_large++;
      meter_rt *m = gw__meter_by_key(d, meter);
      if (m)
        log_once(&m->too_big_told, LOGL_WARN,
                 "mqtt: %s: a message of %zu bytes is larger than the broker takes "
                 "(Maximum Packet Size %u): not sent",
                 topic, strlen(s), (unsigned)d->lim.maximum_packet_size);
    }
  }
  free(s);
}

/* Publish a report's text, trimmed like any site document when it is larger
 * than the broker takes. 0 when taken. */
int gw__publish_report_text(gw *d, const char *topic, const char *body) {
  if (gw__fits(d, topic, strlen(body)))
    return publisher_send(d->pub, topic, body, strlen(body), 1, true,
                          make_tag(0, TAG_REPORTS));
  cJSON *o = cJSON_Parse(body);
  char *s = o ? fit_document(d, topic, o) : NULL;
  cJSON_Delete(o);
  if (!s) return PUB_ENOMEM;
  int rc = publisher_send(d->pub, topic, s, strlen(s), 1, true, make_tag(0, TAG_REPORTS));
  if (rc == PUB_ETOOBIG) {
    gw__too_large(d, TAG_REPORTS, topic, strlen(s));
    rc = 0; /* it never will fit: do not keep it pending */
  }
  free(s);
  return rc;
}

void gw__add_ts(cJSON *o, const char *key, int64_t ms) {
  char ts[CLOCK_RFC3339_LEN + 8];
  cJSON_AddStringToObject(o, key, clock_format_rfc3339(ms, ts, sizeof ts));
}

void gw__publish_meter_state(gw *d, meter_rt *m) {
  if (m->st.state == MSTATE_UNKNOWN || m->refused) return;
  cJSON *o = cJSON_CreateObject();
  cJSON_AddBoolToObject(o, "online", m->st.state == MSTATE_ONLINE);
  gw__add_ts(o, "since", m->st.since_ms);
  if (m->st.last_error) {
    cJSON *e = cJSON_AddObjectToObject(o, "last_error");
    cJSON_AddStringToObject(e, "kind", fail_name(m->st.last_error));
    cJSON_AddStringToObject(e, "detail", m->st.last_error_detail);
  } else {
    cJSON_AddNullToObject(o, "last_error");
  }
  if (m->st.last_valid_ms) gw__add_ts(o, "last_valid", m->st.last_valid_ms);
  gw__publish_json(d, m->topic_state, o, true, (int)m->key);
  cJSON_Delete(o);
}

/* The gateway state document, as published and as the metrics endpoint's
 * /status gives it. */
cJSON *gw__gateway_state_json(gw *d, bool online) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddBoolToObject(o, "online", online);
  cJSON_AddStringToObject(o, "version", IC_VERSION);
  gw__add_ts(o, "started", d->started_ms);
  gw__add_ts(o, "ts", clock_wall_ms());
  size_t on = 0;
  for (size_t i = 0; i < d->cfg->nmeters; i++)
    if (d->meters[i]->st.state == MSTATE_ONLINE) on++;
  cJSON_AddNumberToObject(o, "meters_online", (double)on);
  cJSON_AddNumberToObject(o, "meters_total", (double)d->cfg->nmeters);
  gw__add_config_state(d, o);
  store_stats ss;
  store_get_stats(d->store, &ss);
  cJSON_AddStringToObject(o, "storage", ss.failing ? "failing" : "ok");
  if (d->clock_steps) {
    cJSON *k = cJSON_AddObjectToObject(o, "clock_step");
    cJSON_AddNumberToObject(k, "ms", (double)d->last_step_ms);
    gw__add_ts(k, "at", d->last_step_wall_ms);
  }
  cJSON *c = cJSON_AddObjectToObject(o, "counters");
  cJSON_AddNumberToObject(c, "polls", (double)d->polls);
  cJSON_AddNumberToObject(c, "readings", (double)d->successes);
  cJSON_AddNumberToObject(c, "suspect", (double)d->suspect);
  cJSON *f = cJSON_AddObjectToObject(c, "failures");
  for (int k = 1; k <= TR_NKINDS; k++)
    cJSON_AddNumberToObject(f, fail_name(-k), (double)d->failures[k]);
  cJSON_AddNumberToObject(c, "skipped_slots", (double)d->skipped);
  cJSON_AddNumberToObject(c, "outbox", (double)ss.undelivered);
  cJSON_AddNumberToObject(c, "rows_dropped", (double)ss.dropped);
  cJSON_AddNumberToObject(c, "rows_removed", (double)ss.removed);
  cJSON_AddNumberToObject(c, "storage_errors", (double)ss.errors);
  cJSON_AddNumberToObject(c, "held_in_memory", (double)ss.held);
  cJSON_AddNumberToObject(c, "unstored_published", (double)d->unstored);
  cJSON_AddNumberToObject(c, "published", (double)d->published);
  cJSON_AddNumberToObject(c, "delivered", (double)d->delivered);
  cJSON_AddNumberToObject(c, "refused", (double)d->refused);
  cJSON_AddNumberToObject(c, "historical", (double)d->historical);
  cJSON_AddNumberToObject(c, "clock_steps", (double)d->clock_steps);
  cJSON_AddNumberToObject(c, "too_large", (double)d->too_large);
  cJSON_AddNumberToObject(c, "set_aside", (double)d->set_aside);
  cJSON_AddNumberToObject(c, "stray_acks", (double)d->stray_acks);
  gw__dtu_state_json(d, o);
  gw__uplink_state_json(d, o);
  if (d->connected) {
    /* What this connection to the broker is, from its CONNACK. */
    cJSON *m = cJSON_AddObjectToObject(o, "mqtt");
    cJSON_AddStringToObject(m, "version", d->lim.version == 5 ? "5" : "3.1.1");
    cJSON_AddBoolToObject(m, "fallback", d->lim.fell_back);
    cJSON_AddNumberToObject(m, "receive_maximum", d->lim.receive_maximum);
    cJSON_AddNumberToObject(m, "maximum_packet_size", d->lim.maximum_packet_size);
    cJSON_AddBoolToObject(m, "retain_available", d->lim.retain_available);
    double p50, p99;
    if (publisher_rtt(d->pub, &p50, &p99)) {
      cJSON *r = cJSON_AddObjectToObject(m, "rtt_ms");
      cJSON_AddNumberToObject(r, "p50", round(p50 * 1000) / 1000);
      cJSON_AddNumberToObject(r, "p99", round(p99 * 1000) / 1000);
    }
  }
  return o;
}

void gw__publish_gateway_state(gw *d, bool online) {
  cJSON *o = gw__gateway_state_json(d, online);
  if (!d->gateway_refused) gw__publish_json(d, d->topic_gateway, o, true, TAG_GATEWAY);
  cJSON_Delete(o);
}

typedef struct {
  size_t meter;
  int64_t since;
  const char *error;
} repair_item;

/* Earliest outage start (longest outage) first, then by meter order. */
static int by_since(const void *a, const void *b) {
  const repair_item *x = a, *y = b;
  if (x->since != y->since) return x->since < y->since ? -1 : 1;
  return x->meter < y->meter ? -1 : (x->meter > y->meter);
}

/* The retained online-rate topic: the site's rate now, by the same rule as
 * the meters' state topics, with the same keys as the reports. */
void gw__publish_online_rate(gw *d) {
  const cfg *c = d->cfg;
  int64_t now = clock_wall_ms();
  size_t on = 0;
  cJSON *o = cJSON_CreateObject();
  cJSON *site = cJSON_AddObjectToObject(o, "site");
  cJSON_AddStringToObject(site, "id", c->site.id);
  cJSON_AddStringToObject(site, "name", c->site.name);
  char buf[40];
  rate_format_local(now, buf, sizeof buf);
  cJSON_AddStringToObject(o, "ts", buf);
  cJSON *meters = cJSON_CreateArray();
  cJSON *repair = cJSON_CreateArray();
  repair_item *items = calloc(c->nmeters ? c->nmeters : 1, sizeof *items);
  size_t nitems = 0;
  for (size_t i = 0; i < c->nmeters; i++) {
    const meter_rt *m = d->meters[i];
    bool online = m->st.state == MSTATE_ONLINE;
    if (online) on++;
    cJSON *mo = cJSON_CreateObject();
    cJSON_AddStringToObject(mo, "id", m->cfg->id);
    cJSON_AddBoolToObject(mo, "online", online);
    if (m->st.last_valid_ms) {
      rate_format_local(m->st.last_valid_ms, buf, sizeof buf);
      cJSON_AddStringToObject(mo, "last_seen", buf);
    } else {
      cJSON_AddNullToObject(mo, "last_seen");
    }
    const char *err = m->st.last_error ? fail_name(m->st.last_error) : NULL;
    if (!online && !err) err = m->st.last_valid_ms ? "no_valid_reading" : "never_seen";
    if (err) cJSON_AddStringToObject(mo, "last_error", err);
    else cJSON_AddNullToObject(mo, "last_error");
    cJSON_AddItemToArray(meters, mo);
    if (!online && items) {
      items[nitems].meter = i;
      items[nitems].since = m->st.state == MSTATE_OFFLINE ? m->st.since_ms
                            : m->st.last_valid_ms         ? m->st.last_valid_ms
                                                          : d->started_ms;
      items[nitems].error = err;
      nitems++;
    }
  }
  /* Longest outage first, as in the reports. */
  if (items) qsort(items, nitems, sizeof *items, by_since);
  for (size_t k = 0; k < nitems; k++) {
    const meter_rt *m = d->meters[items[k].meter];
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "id", m->cfg->id);
    cJSON_AddStringToObject(r, "name", m->cfg->name);
    rate_format_local(items[k].since, buf, sizeof buf);
    cJSON_AddStringToObject(r, "since", buf);
    cJSON_AddNumberToObject(r, "outage_s", (double)((now - items[k].since) / 1000));
    cJSON_AddStringToObject(r, "last_error", items[k].error);
    cJSON_AddItemToArray(repair, r);
  }
  free(items);
  double rate = c->nmeters ? (double)on / (double)c->nmeters : 0;
  cJSON_AddNumberToObject(o, "meters_total", (double)c->nmeters);
  cJSON_AddNumberToObject(o, "meters_online", (double)on);
  cJSON_AddNumberToObject(o, "online_rate", round(rate * 1e6) / 1e6);
  cJSON_AddNumberToObject(o, "baseline", c->online.baseline);
  cJSON_AddNumberToObject(o, "delta_pp",
                          rate_delta_pp(rate, c->online.baseline));
  cJSON_AddBoolToObject(o, "meets_baseline", rate_meets(rate, c->online.baseline));
  cJSON_AddItemToObject(o, "meters", meters);
  cJSON_AddItemToObject(o, "repair", repair);
  if (!d->rate_refused) gw__publish_json(d, d->topic_rate, o, true, TAG_RATE);
  cJSON_Delete(o);
}

static void on_site_timer(uv_timer_t *t) {
  gw *d = t->data;
  if (d->stopping) return;
  gw__publish_gateway_state(d, true);
  gw__publish_online_rate(d);
}

void gw__meter_changed(gw *d, meter_rt *m, mstate_change ch) {
  if (ch == MSTATE_NO_CHANGE) return;
  bool online = ch == MSTATE_WENT_ONLINE;
  if (online)
    log_info("meter %s online", m->cfg->id);
  else
    log_warn("meter %s offline after %d failed poll%s: %s: %s", m->cfg->id,
             m->st.consecutive_failures, m->st.consecutive_failures == 1 ? "" : "s",
             m->st.last_error ? fail_name(m->st.last_error) : "no valid reading",
             m->st.last_error ? m->st.last_error_detail : "the bus could not poll it");
  /* Refused only while stopping or out of memory (only readings meet a
   * full queue); the state topic below still says it. */
  (void)store_add_state(d->store, m->cfg->id, m->st.since_ms, online,
                  online || !m->st.last_error ? NULL : fail_name(m->st.last_error),
                  online ? NULL : m->st.last_error_detail);
  gw__publish_meter_state(d, m);
  /* The gateway state and the online rate count the meters online: publish
   * them once for the changes of the next moment, not once per change (at
   * start-up a thousand meters come online within a second, and the
   * online-rate document lists them all). */
  if (!uv_is_active((uv_handle_t *)&d->site_timer))
    uv_timer_start(&d->site_timer, on_site_timer, SITE_COALESCE_MS, 0);
}
