/* Sequence numbers checked against the broker's retained reservations at
 * the first connect (docs/daemon.md, "A database restored from a backup"). */
#include "gateway/gw_impl.h"

/* The reservations read back go to the store, which compares them with its
 * own; readings wait for its answer. */
static void seq_read_done(gw *d) {
  uv_timer_stop(&d->seq_timer);
  if (d->connected) (void)publisher_unsubscribe(d->pub, d->seq_filter);
  size_t n = d->cfg->nmeters;
  store_seq_item *items = calloc(n ? n : 1, sizeof *items);
  if (!items) {
    log_error("out of memory checking sequence numbers; checked at the next connect");
    d->seq_phase = SEQ_UNCHECKED;
    return;
  }
  for (size_t i = 0; i < n; i++) {
    snprintf(items[i].meter, sizeof items[i].meter, "%s", d->meters[i]->cfg->id);
    items[i].meter_index = (int)d->meters[i]->key;
    items[i].broker_reserved = d->meters[i]->broker_reserved;
  }
  if (store_seq_check(d->store, items, n) != 0) {
    log_error("storage: cannot check sequence numbers; checked at the next connect");
    d->seq_phase = SEQ_UNCHECKED;
    return;
  }
  d->seq_phase = SEQ_STORING;
}

static void on_seq_timer(uv_timer_t *t) {
  gw *d = t->data;
  if (d->seq_phase == SEQ_READING) seq_read_done(d);
}

/* Connected for the first time (or again before the check was done): read
 * the meters' retained reservations back. */
void gw__seq_read_start(gw *d) {
  for (size_t i = 0; i < d->cfg->nmeters; i++) d->meters[i]->broker_reserved = 0;
  d->seq_heard = 0;
  d->seq_phase = SEQ_READING;
  if (!d->lim.retain_available) {
    log_warn("mqtt: the broker keeps no retained messages, so sequence numbers cannot "
             "be checked against what was published before; a database restored "
             "from an older copy would give published numbers to new readings");
    seq_read_done(d);
    return;
  }
  if (d->cfg->nmeters == 0 || publisher_subscribe(d->pub, d->seq_filter) != 0) {
    seq_read_done(d);
    return;
  }
  /* The broker sends the retained messages as it takes the SUBSCRIBE, so
   * a message published after it and heard back comes after them all: the
   * reading ends then, or after SEQ_READ_MS if it never comes back. */
  char body[64];
  d->seq_sync = (uint64_t)clock_mono_ms() ^ ((uint64_t)getpid() << 32);
  int n = snprintf(body, sizeof body, "{\"sync\":%llu}", (unsigned long long)d->seq_sync);
  (void)publisher_send(d->pub, d->topic_seq_sync, body, (size_t)n, 1, false,
                       make_tag(0, TAG_GATEWAY));
  uv_timer_start(&d->seq_timer, on_seq_timer, SEQ_READ_MS, 0);
}

/* A retained reservation came back: {prefix}/{site}/{meter}/seq. */
void gw__seq_heard(gw *d, const char *topic, const char *payload) {
  if (strcmp(topic, d->topic_seq_sync) == 0) {
    char want[64];
    snprintf(want, sizeof want, "{\"sync\":%llu}", (unsigned long long)d->seq_sync);
    if (strcmp(payload, want) == 0) seq_read_done(d);
    return;
  }
  size_t pl = strlen(d->seq_filter) - strlen("+/seq");
  size_t tl = strlen(topic);
  if (strncmp(topic, d->seq_filter, pl) != 0 || tl < pl + sizeof "/seq" ||
      strcmp(topic + tl - 4, "/seq") != 0)
    return;
  char id[128];
  size_t il = tl - pl - 4;
  if (il == 0 || il >= sizeof id) return;
  memcpy(id, topic + pl, il);
  id[il] = '\0';
  int mi = cfg_meter_index(d->cfg, id);
  if (mi < 0) return; /* a meter no longer configured */
  cJSON *o = cJSON_Parse(payload);
  const cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "reserved");
  if (cJSON_IsNumber(r) && r->valuedouble >= 1 && r->valuedouble < 9e15) {
    meter_rt *m = d->meters[mi];
    if (!m->broker_reserved) d->seq_heard++;
    m->broker_reserved = (int64_t)r->valuedouble;
  } else {
    log_warn("mqtt: ignoring the sequence reservation of meter %s, not understood: %.80s",
             id, payload);
  }
  cJSON_Delete(o);
  if (d->seq_heard == d->cfg->nmeters) seq_read_done(d);
}

/* The store's answer: each meter's reservation, and the meters whose
 * numbers the broker had seen beyond the database's. */
void gw__seq_checked(gw *d, const store_event *e) {
  for (size_t i = 0; i < e->n; i++) {
    const store_seq_item *it = &e->items[i];
    meter_rt *m = gw__meter_by_key(d, it->meter_index);
    if (!m) continue; /* removed by a reload meanwhile */
    if (it->reserved > m->seq_reserved) m->seq_reserved = it->reserved;
    if (it->broker_reserved <= it->db_reserved) continue;
    if (it->renumbered)
      log_warn("meter %s: the broker has seen sequence numbers up to %lld, beyond this "
               "database's %lld (restored from an older copy?): the %lld readings taken "
               "since start are numbered from %lld on, and later ones above them",
               it->meter, (long long)it->broker_reserved, (long long)it->db_reserved,
               (long long)it->renumbered, (long long)it->first_seq);
    else
      log_warn("meter %s: the broker has seen sequence numbers up to %lld, beyond this "
               "database's %lld (restored from an older copy?): numbering continues "
               "from %lld",
               it->meter, (long long)it->broker_reserved, (long long)it->db_reserved,
               (long long)it->last_seq + 1);
  }
  d->seq_phase = SEQ_CHECKED;
  /* Readings queued since carry the numbers from before the check: the
   * replay sends them from the database, numbered anew where needed. */
  gw__pubq_free(d);
  if (d->connected) gw__begin_replay(d);
}
