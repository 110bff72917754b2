/* Committed readings going out live, a chunk a loop turn, and the replay of
 * the outbox after a reconnect or a restart. */
#include "gateway/gw_impl.h"

/* Ask the store for the next replay rows if the in-flight window (its lower
 * half: live readings keep the rest) and this tick's budget have room. */
static bool may_deliver(const gw *d) {
  return d->connected && d->seq_phase == SEQ_CHECKED;
}

void gw__replay_more(gw *d) {
  if (!may_deliver(d) || !d->replay_active || d->replay_requested || d->stopping)
    return;
  size_t room = MAX_INFLIGHT / 2 > d->inflight ? MAX_INFLIGHT / 2 - d->inflight : 0;
  size_t limit = room < d->replay_budget ? room : d->replay_budget;
  if (limit == 0 || (limit < REPLAY_MIN_BATCH && limit < d->replay_budget)) return;
  if (store_request_replay(d->store, d->replay_cursor, d->replay_upto, limit) == 0) {
    d->replay_requested = true;
    d->replay_req_upto = d->replay_upto;
  }
}

static void on_replay_tick(uv_timer_t *t) {
  gw *d = t->data;
  d->replay_budget = REPLAY_RATE * REPLAY_TICK_MS / 1000;
  gw__replay_more(d);
}

/* Make sure rows up to UPTO get replayed in this connection. */
static void start_replay(gw *d, int64_t upto) {
  if (upto > d->replay_upto) d->replay_upto = upto;
  if (d->replay_active) return;
  d->replay_active = true;
  d->replay_started_ms = clock_mono_ms();
  double avg, starved;
  publisher_occupancy(d->pub, true, &avg, &starved);
  uv_timer_start(&d->replay_timer, on_replay_tick, 0, REPLAY_TICK_MS);
}

/* Free the publish queue. */
void gw__pubq_free(gw *d) {
  store_event_free(d->pubq_head); /* the events are chained */
  d->pubq_head = d->pubq_tail = NULL;
  d->pubq_next = NULL;
}

/* Publish up to PUB_CHUNK queued readings (the caller comes back on the
 * next loop turn while some are left). */
void gw__publish_committed(gw *d) {
  size_t budget = PUB_CHUNK;
  while (d->pubq_head && budget) {
    store_reading *r = d->pubq_next;
    if (!r) {
      store_event *e = d->pubq_head;
      d->pubq_head = e->next;
      if (!d->pubq_head) d->pubq_tail = NULL;
      e->next = NULL;
      store_event_free(e);
      d->pubq_next = d->pubq_head ? d->pubq_head->readings : NULL;
      continue;
    }
    d->pubq_next = r->next;
    budget--;
    if (d->stopping) continue;
    /* Committed before a step was noticed and not sent yet: its row is
     * flagged by now (or is being), and so is this copy. */
    if (!r->clock_step_ms && r->taken_base_ms) r->clock_step_ms = gw__step_after(d, r->taken_base_ms);
    send_result sr = SEND_LATER;
    if (may_deliver(d) && d->inflight < MAX_INFLIGHT) sr = gw__send_reading(d, r);
    if (sr != SEND_LATER) continue;
    /* Could not go out live: it stays in the outbox for the replay. */
    if (d->connected) start_replay(d, r->id);
  }
}

/* Keep coming back on every loop turn while live or replayed readings wait
 * to be sent. */
static void on_pub_idle(uv_idle_t *h);
void gw__pub_idle_update(gw *d) {
  if (d->pubq_head || (d->replay_ev && d->replay_next))
    uv_idle_start(&d->pub_idle, on_pub_idle);
  else
    uv_idle_stop(&d->pub_idle);
}

static void on_pub_idle(uv_idle_t *h) {
  gw *d = h->data;
  gw__publish_committed(d);
  gw__replay_continue(d);
  gw__pub_idle_update(d);
}

/* The connection changed: a batch asked for and not come yet belongs to the
 * old one (the store answers requests in order, so it comes first). */
void gw__replay_forget(gw *d) {
  if (d->replay_requested && !d->replay_ev) d->replay_stale++;
}

/* Drop the replay batch being sent (the connection changed: the replay
 * starts over from the outbox). */
void gw__replay_drop(gw *d) {
  store_event_free(d->replay_ev);
  d->replay_ev = NULL;
  d->replay_next = NULL;
  d->replay_requested = false;
}

/* Send up to PUB_CHUNK more readings of the replay batch; at its end, ask
 * for the next one or finish the replay. */
void gw__replay_continue(gw *d) {
  store_event *ev = d->replay_ev;
  if (!ev) return;
  if (ev->detail[0]) {
    log_error("storage: %s", ev->detail);
    gw__replay_drop(d); /* the next tick asks again */
    return;
  }
  bool all = true;
  size_t budget = PUB_CHUNK;
  store_reading *r = d->replay_next;
  for (; r && budget; r = r->next, budget--) {
    if (!may_deliver(d)) {
      all = false;
      break;
    }
    int mi = cfg_meter_index(d->cfg, r->meter);
    if (mi >= 0 && d->meters[mi]->refused) {
      d->replay_cursor = r->id; /* held back, stays in the outbox */
      continue;
    }
    send_result sr = gw__send_reading(d, r);
    if (sr == SEND_LATER) {
      all = false; /* from this row again on the next tick */
      break;
    }
    if (sr == SEND_NEVER)
      /* Skipped rather than block the rows behind it; it stays in the
       * outbox (gw__send_reading said why, once per meter). */
      log_debug("replay: reading %lld of meter %s cannot be sent; left in the outbox",
                (long long)r->id, r->meter);
    else
      d->replay_sent++;
    if (d->replay_budget) d->replay_budget--;
    d->replay_cursor = r->id;
  }
  d->replay_next = r;
  if (all && r) return; /* more of this batch on the next loop turn */
  /* Done only up to the bound it was asked for: rows that could not go
   * out live since then raised the bound. */
  bool done = ev->replay_done && d->replay_upto <= d->replay_req_upto;
  gw__replay_drop(d);
  if (all && done && d->connected) {
    if (d->replay_sent) {
      /* The pace, and the round trip that bounds it with the window. */
      double secs = (double)(clock_mono_ms() - d->replay_started_ms) / 1000.0, p50, p99;
      double avg, starved;
      size_t n = publisher_rtt(d->pub, &p50, &p99);
      publisher_occupancy(d->pub, false, &avg, &starved);
      log_info("replay done: %llu stored readings sent in %.1f s (%.0f a second; window "
               "%u, %.1f outstanding on average, room with nothing to send %.1f %% of the "
               "time; PUBLISH to PUBACK median %.2f ms, p99 %.2f ms, of the last %zu)",
               (unsigned long long)d->replay_sent, secs,
               secs > 0 ? (double)d->replay_sent / secs : 0.0, d->lim.receive_maximum, avg,
               100.0 * starved, p50, p99, n);
    }
    d->replay_active = false;
    d->replay_sent = 0;
    uv_timer_stop(&d->replay_timer);
    return;
  }
  if (all) gw__replay_more(d);
}

/* Replay everything undelivered on this connection. */
void gw__begin_replay(gw *d) {
  store_stats ss;
  store_get_stats(d->store, &ss);
  int64_t upto = ss.max_id > d->max_committed_id ? ss.max_id : d->max_committed_id;
  d->replay_cursor = 0;
  d->replay_upto = 0;
  d->replay_active = false;
  d->replay_requested = false;
  d->replay_sent = 0;
  if (ss.undelivered > 0 || upto > 0) start_replay(d, upto);
}
