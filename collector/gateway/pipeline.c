/* The loop's wake-up: poll results, the reporter's reports, the broker's
 * events and the store's, in that order; a poll result's effect on its
 * meter. */
#include "gateway/gw_impl.h"

/* The result of meter M's poll, taken with the settings MC. */
static void handle_result(gw *d, meter_rt *m, const cfg_meter *mc, bus_result *r) {
  d->polls++;
  gw__count_poll(d, m, r);
  if (r->rc == TR_OK) {
    /* Each field: its name (at most PROF_NAME_MAX - 1), quotes, colon,
     * comma and a number of at most 25 characters. */
    size_t fcap = 2 + mc->profile->nfields * (PROF_NAME_MAX + 32);
    char fbuf[2048], *fheap = fcap > sizeof fbuf ? malloc(fcap) : NULL;
    char *fields = fheap ? fheap : fbuf;
    int flen = reading_fields_json(mc->profile, r->values, fields, fheap ? fcap : sizeof fbuf);
    if (flen < 0) {
      free(fheap);
      r->rc = TR_EDECODE;
      snprintf(r->err.detail, sizeof r->err.detail, "a value is not finite");
    } else {
      char why[200];
      quality_value q = quality_assess(mc->profile, r->values, r->start_ms,
                                       &m->qprev, why, sizeof why);
      if (q == QUALITY_SUSPECT) {
        d->suspect++;
        log_debug("meter %s: suspect reading: %s", mc->id, why);
      }
      d->successes++;
      store_reading *sr = store_reading_new(fields, (size_t)flen);
      free(fheap);
      if (sr) {
        /* Taken on a wall clock that has stepped since: its wall minus
         * monotonic time is not the loop's (whatever thread read it when). */
        sr->taken_base_ms = r->start_ms - r->start_mono_ms;
        sr->clock_step_ms = gw__step_after(d, sr->taken_base_ms);
        /* Its own copy of the id: a reload may free the settings MC is
         * part of while the reading waits in the store's queue. */
        sr->meter_owned = strdup(mc->id);
        sr->meter = sr->meter_owned ? sr->meter_owned : "";
        sr->meter_index = (int)m->key;
        /* Reserve about SEQ_BLOCK_MS of this meter's numbers at a time. */
        int64_t blk = SEQ_BLOCK_MS / (mc->interval_ms > 0 ? mc->interval_ms : 1);
        sr->seq_block = blk < 8 ? 8 : blk > 100000 ? 100000 : (int32_t)blk;
        sr->ts_ms = r->start_ms;
        sr->quality = q;
        /* Counts the poll too. A full queue frees the reading and counts it
         * dropped (store_get_stats, in the gateway state and the stop line). */
        (void)store_add_polled_reading(d->store, sr);
      } else {
        (void)store_count_poll(d->store, mc->id, r->start_ms, /* as below */
                               q == QUALITY_SUSPECT ? STORE_POLL_SUSPECT : STORE_POLL_OK);
      }
      m->retry_at_ms = 0;
      gw__uplink_reading(d, m->index, mc->profile, r->values, r->start_ms);
      gw__meter_changed(d, m, mstate_success(&m->st, r->start_ms));
      return;
    }
  }
  int k = -r->rc;
  if (k >= 1 && k <= TR_NKINDS) d->failures[k]++, m->failures[k]++;
  /* Poll counts are statistics, refused only while stopping or out of
   * memory (only readings meet a full queue). */
  (void)store_count_poll(d->store, mc->id, r->start_ms, store_poll_failed(r->rc));
  log_debug("meter %s: poll failed: %s: %s", mc->id, fail_name(r->rc), r->err.detail);
  mstate_change ch = mstate_failure(&m->st, r->end_ms, r->rc, r->err.detail,
                                    d->cfg->online.offline_after);
  if (m->st.state == MSTATE_OFFLINE)
    m->retry_at_ms = r->end_ms + mstate_retry_ms(&m->st, mc->interval_ms,
                                                 d->cfg->online.backoff_max_ms) -
                     mc->interval_ms / 2;
  gw__meter_changed(d, m, ch);
}

/* The database cannot be written, or can again. Readings it could not take
 * go out live now without a sequence number (they are held in memory and
 * published again, numbered and historical, once stored). */
static void handle_trouble(gw *d, store_event *e) {
  if (e->changed && e->failing) {
    log_error("storage: cannot write the database (%s); readings are published "
              "live without a sequence number and held in memory (at most %zu "
              "operations) until writes succeed again",
              e->detail, (size_t)d->cfg->storage.hold_max);
  } else if (e->changed) {
    log_info("storage: writing again after %.1f s; %lld held readings stored",
             (double)e->duration_ms / 1000.0, (long long)e->held);
  }
  if (e->lost)
    log_warn("storage: %lld held readings dropped: more than can be held in memory",
             (long long)e->lost);
  for (store_reading *r = e->readings; r; r = r->next) {
    if (!d->connected || d->stopping) break;
    gw__send_unstored(d, r);
  }
  if (e->changed) gw__publish_gateway_state(d, true);
}

/* A poll's result, from a bus worker or a network bus. A meter a reload
 * removed while its poll was out takes no more readings: the result is
 * dropped. */
void gw__on_poll_result(gw *d, bus_result *r) {
  meter_rt *m = r->meter < d->nkeys ? d->by_key[r->meter] : NULL;
  if (!m || !m->pending) return; /* not expected: a poll is pinned until it ends */
  const cfg_meter *mc = m->pending_cfg;
  if (!m->retired) handle_result(d, m, mc, r);
  gw__poll_ended(d, m);
}

/* A commit: its readings are queued for publishing (gw__publish_committed). */
static void on_committed(gw *d, store_event *e) {
  for (store_reading *r = e->readings; r; r = r->next) {
    if (r->id > d->max_committed_id) d->max_committed_id = r->id;
    meter_rt *m = gw__meter_by_key(d, r->meter_index);
    if (m && r->seq_reserved > m->seq_reserved) m->seq_reserved = r->seq_reserved;
  }
  if (d->pubq_tail)
    d->pubq_tail->next = e;
  else {
    d->pubq_head = e;
    d->pubq_next = e->readings;
  }
  d->pubq_tail = e;
}

static void on_maintained(gw *d, const store_event *e) {
  d->rows_aged += (uint64_t)e->aged;
  if (e->aged)
    log_info("storage: %lld delivered readings older than the retention removed",
             (long long)e->aged);
  if (e->dropped_delivered)
    log_info("storage: over %lld bytes: removed the %lld oldest delivered readings",
             (long long)d->cfg->storage.max_size, (long long)e->dropped_delivered);
  if (e->dropped_undelivered)
    log_warn("storage: over %lld bytes with nothing delivered left to remove: "
             "dropped the %lld oldest undelivered readings",
             (long long)d->cfg->storage.max_size, (long long)e->dropped_undelivered);
  if (e->detail[0])
    log_error("storage: maintenance stopped: %s; no reading was removed past the "
              "failure",
              e->detail);
  if (e->over && !d->storage_over)
    log_error("storage: %lld bytes, over the %lld limit, and nothing left to remove",
              (long long)e->bytes, (long long)d->cfg->storage.max_size);
  d->storage_over = e->over;
  if (e->bytes > 0) d->storage_bytes = e->bytes;
}

/* The store's events, in order. A commit's and a replay batch's event is
 * kept (their readings are sent from it); the rest are freed here. */
static void take_store_events(gw *d) {
  store_event *se = store_take_events(d->store), *done = NULL;
  for (store_event *e = se, *next; e; e = next) {
    next = e->next;
    e->next = NULL;
    if (e->kind == STORE_EV_COMMITTED) {
      on_committed(d, e);
      continue;
    }
    if (e->kind == STORE_EV_REPLAY && !d->replay_stale) {
      /* Sent PUB_CHUNK a loop turn, like live readings (an answer to one
       * request at a time: replay_requested stays set until its end). */
      gw__replay_drop(d);
      d->replay_ev = e;
      d->replay_next = e->readings;
      d->replay_requested = true;
      gw__replay_continue(d);
      continue;
    }
    e->next = done;
    done = e;
    if (e->kind == STORE_EV_REPLAY)
      d->replay_stale--; /* asked for on a connection gone since */
    else if (e->kind == STORE_EV_SEQ_CHECKED)
      gw__seq_checked(d, e);
    else if (e->kind == STORE_EV_MAINTAINED)
      on_maintained(d, e);
    else if (e->kind == STORE_EV_TROUBLE)
      handle_trouble(d, e);
    else if (e->kind == STORE_EV_UPLINK)
      uplink_store_event(d->uplink, e);
  }
  store_event_free(done);
}

void gw__on_wake(uv_async_t *a) {
  gw *d = a->data;
  gw__check_clock(d); /* before results taken across a step come in */
  gw__take_worker_results(d);
  if (d->reporter) {
    reporter_result *rr = reporter_take(d->reporter);
    for (reporter_result *r = rr; r; r = r->next) gw__handle_report(d, r);
    reporter_result_free(rr);
  }
  pub_event *pe = publisher_take_events(d->pub);
  for (pub_event *e = pe; e; e = e->next) gw__handle_pub_event(d, e);
  pub_event_free(pe);
  gw__flush_acks(d);
  take_store_events(d);
  gw__publish_committed(d);
  gw__pub_idle_update(d);
}

void gw__notify(void *ctx) {
  gw *d = ctx;
  uv_async_send(&d->wake);
}

/* A network bus's poll ended (on the loop itself). */
void gw__on_net_result(void *ctx, bus_result *r) {
  gw *d = ctx;
  gw__check_clock(d);
  gw__on_poll_result(d, r);
  bus_result_free(r);
}
