/* The broker connection: its CONNACK limits, acknowledgements, refusals,
 * losses, and reconnecting with back-off. */
#include "gateway/gw_impl.h"

static void on_reconnect(uv_timer_t *t) {
  gw *d = t->data;
  if (!d->stopping && !d->connected && publisher_reconnect(d->pub) != 0)
    uv_timer_start(&d->reconnect_timer, on_reconnect, 1000, 0);
}

/* The next connection attempt: after 1 s, doubling up to 30 s (60 s after a
 * refusal, such as a wrong password), or at once when the next attempt
 * changes what failed. Returns the delay. */
static int64_t schedule_reconnect(gw *d, bool refused, bool now) {
  int64_t cap = refused ? 60000 : 30000;
  if (now) {
    uv_timer_start(&d->reconnect_timer, on_reconnect, 0, 0);
    return 0;
  }
  backoff_next(&d->reconnect_ms, 1000, cap);
  uv_timer_start(&d->reconnect_timer, on_reconnect, (uint64_t)d->reconnect_ms, 0);
  return d->reconnect_ms;
}

/* The broker closed the connection with TAG the oldest message it had not
 * acknowledged. The second time in a row that is the same message, its
 * topic is set aside for this run (held back as after a refusal: a meter's
 * readings stay in the outbox), so that one message a broker will not take
 * and closes the connection on, as brokers do for a packet larger than they
 * allow or a topic they forbid, cannot block everything behind it. */
static void suspect_loss(gw *d, uint64_t tag) {
  log_debug("mqtt: connection lost on %s (row %lld, meter index %d)",
            tag ? "a known message" : "no known message", (long long)tag_row(tag),
            tag_meter(tag));
  if (!tag || tag != d->suspect_tag) {
    d->suspect_tag = tag;
    d->suspect_losses = tag ? 1 : 0;
    return;
  }
  if (++d->suspect_losses < 2) return;
  d->suspect_tag = 0;
  d->suspect_losses = 0;
  int64_t row = tag_row(tag);
  int mi = tag_meter(tag);
  d->set_aside++;
  meter_rt *m = gw__meter_by_key(d, mi);
  if (m) {
    m->refused = true;
    log_warn("mqtt: the broker closed the connection twice on the %s of meter %s: its "
             "messages are set aside until the gateway restarts (its readings stay in "
             "the outbox)",
             row ? "reading" : "state", m->cfg->id);
  } else if (mi >= TAG_GATEWAY && mi <= TAG_REPORTS) {
    bool *flag = mi == TAG_GATEWAY ? &d->gateway_refused
                 : mi == TAG_RATE  ? &d->rate_refused
                                   : &d->reports_refused;
    *flag = true;
    log_warn("mqtt: the broker closed the connection twice on the site's %s message: "
             "set aside until the gateway restarts",
             mi == TAG_GATEWAY ? "gateway state" : mi == TAG_RATE ? "online-rate" : "report");
  }
}

/* What a new connection's CONNACK said, logged when it matters. */
static void take_limits(gw *d) {
  publisher_get_limits(d->pub, &d->lim);
  const pub_limits *l = &d->lim;
  if (l->fell_back)
    log_once(&d->told_fallback, LOGL_WARN,
             "mqtt: the broker %s does not take MQTT 5: using MQTT 3.1.1 (no refusals by "
             "reason code, no flow-control window from the broker)",
             d->cfg->mqtt.url);
  if (!l->retain_available)
    log_once(&d->told_no_retain, LOGL_WARN,
             "mqtt: the broker keeps no retained messages (Retain Available 0): the state "
             "topics are published unretained, so a subscriber sees them only at their "
             "next change");
  if (l->server_keep_alive > 0 &&
      l->server_keep_alive != (int)(d->cfg->mqtt.keepalive_ms / 1000))
    log_once(&d->told_keepalive, LOGL_WARN,
             "mqtt: the broker sets the keep alive to %d s (mqtt.keepalive is %lld s); used "
             "from the next connection on",
             l->server_keep_alive, (long long)(d->cfg->mqtt.keepalive_ms / 1000));
  log_info("mqtt: MQTT %s, receive maximum %u, maximum packet size %u%s%s",
           l->version == 5 ? "5" : "3.1.1", l->receive_maximum,
           (unsigned)l->maximum_packet_size,
           l->assigned_client_id[0] ? ", assigned client id " : "",
           l->assigned_client_id);
}

/* Acknowledged rows are marked delivered in one operation per wake-up. */
static void ack(gw *d, int64_t row) {
  if (d->nacks == d->acks_cap) {
    size_t cap = d->acks_cap ? d->acks_cap * 2 : 256;
    int64_t *a = realloc(d->acks, cap * sizeof *a);
    if (!a) {
      /* Not marked (the store is as short of memory): the row stays
       * undelivered and is sent again, at least once as promised. */
      (void)store_mark_delivered(d->store, row);
      return;
    }
    d->acks = a;
    d->acks_cap = cap;
  }
  d->acks[d->nacks++] = row;
}

void gw__flush_acks(gw *d) {
  if (!d->nacks) return;
  if (store_mark_delivered_many(d->store, d->acks, d->nacks) != 0)
    for (size_t i = 0; i < d->nacks; i++) store_mark_delivered(d->store, d->acks[i]);
  d->nacks = 0;
}

static void on_connected(gw *d) {
  d->connected = true;
  d->connect_fail_told[0] = '\0';
  backoff_reset(&d->reconnect_ms);
  uv_timer_stop(&d->reconnect_timer);
  d->inflight = 0;
  take_limits(d);
  /* The replay below covers every committed reading, those still
   * queued for live publishing too. */
  gw__pubq_free(d);
  gw__replay_forget(d);
  gw__replay_drop(d);
  log_info("broker connected: %s", d->cfg->mqtt.url);
  gw__publish_gateway_state(d, true);
  gw__publish_removed(d); /* before the meters': one may have come back */
  for (size_t i = 0; i < d->cfg->nmeters; i++) gw__publish_meter_state(d, d->meters[i]);
  gw__publish_online_rate(d);
  gw__publish_latest_reports(d);
  for (size_t i = 0; i < d->cfg->nmeters; i++) d->meters[i]->seq_announced = 0;
  if (d->seq_phase == SEQ_CHECKED)
    gw__begin_replay(d);
  else if (d->seq_phase != SEQ_STORING)
    gw__seq_read_start(d);
}

static void on_lost(gw *d, const pub_event *ev) {
  if (d->connected) log_warn("broker connection lost: %s", ev->detail);
  d->connected = false;
  if (d->seq_phase == SEQ_READING) {
    /* Read again, whole, at the next connect. */
    uv_timer_stop(&d->seq_timer);
    d->seq_phase = SEQ_UNCHECKED;
  }
  suspect_loss(d, ev->tag);
  if (!d->stopping) schedule_reconnect(d, false, false);
  gw__pubq_free(d); /* they stay in the outbox for the replay */
  gw__replay_forget(d);
  gw__replay_drop(d);
  d->inflight = 0;
  d->replay_active = false;
  uv_timer_stop(&d->replay_timer);
}

/* A new broker client replaces the old one (a reload changed mqtt.*):
 * what the old connection had in flight is forgotten, as on a loss. A
 * check of sequence numbers still reading starts again on the new
 * connection; one done stands (the database is the same). */
void gw__connection_reset(gw *d) {
  d->connected = false;
  if (d->seq_phase == SEQ_READING) {
    uv_timer_stop(&d->seq_timer);
    d->seq_phase = SEQ_UNCHECKED;
  }
  uv_timer_stop(&d->reconnect_timer);
  backoff_reset(&d->reconnect_ms);
  d->suspect_tag = 0;
  d->suspect_losses = 0;
  gw__pubq_free(d);
  gw__replay_forget(d);
  gw__replay_drop(d);
  d->inflight = 0;
  d->replay_active = false;
  uv_timer_stop(&d->replay_timer);
}

static void on_connect_failed(gw *d, const pub_event *ev) {
  if (d->stopping) return;
  /* A refusal (a broker being reconfigured, a password being fixed)
   * backs off further than a broker that is away. */
  int64_t ms = schedule_reconnect(d, ev->reason >= 0x80, ev->retry_now);
  /* The same cause again (a broker that keeps refusing, or keeps giving a
   * CONNACK that cannot be used) is said once, until it changes or a
   * connection succeeds. */
  char *told = d->connect_fail_told;
  size_t n = sizeof d->connect_fail_told;
  if (ev->reason == 0x9B)
    /* Not a passing state: the broker's configuration must change. */
    log_changed(told, n, ev->detail, LOGL_ERROR,
                "cannot use the broker %s: %s; retrying in %lld s", d->cfg->mqtt.url,
                ev->detail, (long long)(ms / 1000));
  else if (ev->reason >= 0x80)
    log_changed(told, n, ev->detail, LOGL_WARN,
                "cannot connect to the broker %s: %s; retrying in %lld s", d->cfg->mqtt.url,
                ev->detail, (long long)(ms / 1000));
  else
    log_changed(told, n, ev->detail, LOGL_WARN,
                "cannot connect to the broker %s: %s; retrying", d->cfg->mqtt.url,
                ev->detail);
}

static void on_delivered(gw *d, const pub_event *ev) {
  if (tag_row(ev->tag) == 0) return; /* a state message */
  if (d->inflight) d->inflight--;
  d->delivered++;
  ack(d, tag_row(ev->tag));
  if (d->replay_active) gw__replay_more(d);
}

static void on_failed(gw *d, const pub_event *ev) {
  int64_t row = tag_row(ev->tag);
  int mi = tag_meter(ev->tag);
  if (row && d->inflight) d->inflight--;
  if (ev->reason < 0x80) return; /* not sent: replayed after a reconnect */
  d->refused++;
  meter_rt *m = gw__meter_by_key(d, mi);
  if (m && !m->refused) {
    /* A broker that refuses a topic will refuse it again (and some close
     * the connection each time): hold this meter's messages back until
     * the gateway restarts, and let the others through. */
    m->refused = true;
    log_warn("broker refused a message of meter %s: %s; its readings stay "
             "in the outbox until the gateway restarts",
             m->cfg->id, ev->detail);
  } else if (mi >= TAG_GATEWAY && mi <= TAG_REPORTS) {
    bool *flag = mi == TAG_GATEWAY ? &d->gateway_refused
                 : mi == TAG_RATE  ? &d->rate_refused
                                   : &d->reports_refused;
    if (!*flag)
      log_warn("broker refused the site's %s topic: %s; held back until the "
               "gateway restarts",
               mi == TAG_GATEWAY ? "gateway state" : mi == TAG_RATE ? "online-rate"
                                                                    : "report",
               ev->detail);
    *flag = true;
  } else if (mi < 0) {
    int64_t now = clock_mono_ms();
    if (now - d->last_refusal_log_ms > 10000) {
      log_warn("broker refused a message: %s", ev->detail);
      d->last_refusal_log_ms = now;
    }
  }
}

void gw__handle_pub_event(gw *d, pub_event *ev) {
  switch (ev->kind) {
    case PUB_EV_MESSAGE:
      if (d->seq_phase == SEQ_READING && ev->topic && ev->payload)
        gw__seq_heard(d, ev->topic, ev->payload);
      break;
    case PUB_EV_CONNECTED: on_connected(d); break;
    case PUB_EV_LOST: on_lost(d, ev); break;
    case PUB_EV_CONNECT_FAILED: on_connect_failed(d, ev); break;
    case PUB_EV_DELIVERED: on_delivered(d, ev); break;
    case PUB_EV_FAILED: on_failed(d, ev); break;
    case PUB_EV_STRAY_ACK:
      /* paho ignores it; a broker that does this may be confusing this
       * client's session with another's. Said once, counted always. */
      d->stray_acks++;
      log_once(&d->told_stray_ack, LOGL_WARN,
               "mqtt: the broker %s acknowledged packet id %d, which has no message in "
               "flight (a PUBACK for an unknown packet id, a protocol error): ignored; "
               "said once, counted in the gateway state (stray_acks)",
               d->cfg->mqtt.url, ev->reason);
      break;
  }
}
