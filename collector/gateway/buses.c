/* The buses: opened from the configuration, closed (at a reload that
 * changes or removes one, and at the stop), and polls handed to them. A
 * poll in flight pins the configuration its meter's settings and plan come
 * from (gw_gen.refs) until it ends. */
#include "gateway/gw_impl.h"

/* Open bus B, INDEX of configuration C. */
int gw__bus_open(gw *d, bus_rt *b, const cfg *c, size_t index) {
  static uint16_t serial; /* sets each bus's transaction ids apart */
  char err[1024];
  int64_t us = busload_us_per_s(c, index, err, sizeof err);
  b->load = us > 0 ? (double)us / 1e6 : 0;
  if (b->conf.transport == CFG_TRANSPORT_RTU) {
    if (busworker_start(&b->w, &b->conf, gw__notify, d, err, sizeof err) != 0) {
      log_error("%s", err);
      return -1;
    }
  } else if (!(b->nb = netbus_open(d->net, &b->conf, serial++))) {
    log_error("bus %s: out of memory", b->conf.id);
    return -1;
  }
  return 0;
}

/* Every bus of the configuration, in its order. */
int gw__buses_open(gw *d) {
  const cfg *c = d->cfg;
  d->buses = calloc(c->nbuses ? c->nbuses : 1, sizeof *d->buses);
  if (!d->buses) {
    log_error("out of memory");
    return -1;
  }
  for (size_t i = 0; i < c->nbuses; i++) {
    if (!(d->buses[i] = calloc(1, sizeof *d->buses[i]))) {
      log_error("out of memory");
      return -1;
    }
    d->buses[i]->conf = c->buses[i];
    if (gw__bus_open(d, d->buses[i], c, i) != 0) return -1;
  }
  return 0;
}

/* METER's poll is over (its result was handled, or it was abandoned): the
 * configuration it pinned is released, and a meter a reload removed
 * meanwhile goes now. */
void gw__poll_ended(gw *d, meter_rt *m) {
  m->pending = false;
  m->pending_cfg = NULL;
  m->pending_bus = NULL;
  if (m->pending_gen) {
    gw_gen *g = m->pending_gen;
    m->pending_gen = NULL;
    gw__gen_release(d, g);
  }
  if (m->retired) gw__meter_free(m);
}

static void handle_and_free(gw *d, bus_result *r) {
  while (r) {
    bus_result *next = r->next;
    r->next = NULL;
    gw__on_poll_result(d, r);
    bus_result_free(r);
    r = next;
  }
}

/* Meters whose poll went to bus B and will not come back (abandoned),
 * but for the one with key RUNNING (-1: none). */
static void abandoned(gw *d, bus_rt *b, int64_t running) {
  for (size_t k = 0; k < d->nkeys; k++) {
    meter_rt *m = d->by_key[k];
    if (m && m->pending && m->pending_bus == b && (int64_t)m->key != running)
      gw__poll_ended(d, m);
  }
}

/* Close bus B (a reload changed its kind or removed it). A network bus's
 * polls are abandoned and it goes now. A serial line's queued polls are
 * abandoned; the request in progress ends on its thread, within the bus
 * timeout, without the loop waiting: the line waits in d->closing, its
 * result is handled as any, and it is freed then. */
void gw__bus_close(gw *d, bus_rt *b) {
  if (!b) return;
  if (b->w) {
    busworker_stop(b->w);
    uint32_t key;
    abandoned(d, b, busworker_running(b->w, &key) ? (int64_t)key : -1);
    b->next = d->closing;
    d->closing = b;
    return;
  }
  netbus_close(b->nb);
  abandoned(d, b, -1);
  free(b);
}

/* The closing serial lines: their results handled, and those whose last
 * request has ended freed. */
static void reap_closing(gw *d) {
  for (bus_rt **p = &d->closing; *p;) {
    bus_rt *b = *p;
    handle_and_free(d, busworker_take_results(b->w));
    uint32_t key;
    if (busworker_running(b->w, &key)) {
      p = &b->next;
      continue;
    }
    handle_and_free(d, busworker_take_results(b->w)); /* one that just ended */
    busworker_free(b->w);
    abandoned(d, b, -1);
    *p = b->next;
    free(b);
  }
}

/* At the stop: the closing lines' last requests end, as the others'. */
void gw__closing_stop(gw *d) {
  for (bus_rt *b = d->closing; b; b = b->next) busworker_join(b->w);
}

void gw__closing_free(gw *d) {
  while (d->closing) {
    bus_rt *b = d->closing;
    d->closing = b->next;
    busworker_free(b->w);
    free(b);
  }
}

/* The serial lines' results. */
void gw__take_worker_results(gw *d) {
  for (size_t b = 0; d->buses && b < d->cfg->nbuses; b++)
    if (d->buses[b] && d->buses[b]->w)
      handle_and_free(d, busworker_take_results(d->buses[b]->w));
  reap_closing(d);
}

/* Hand meter M's poll of SLOT to its bus. Pinned first: a network bus
 * backing off ends the poll within netbus_submit. */
int gw__submit_poll(gw *d, meter_rt *m, int64_t slot) {
  bus_rt *b = d->buses[m->cfg->bus];
  if (!b) return -1; /* not opened (out of memory at a reload) */
  const mb_plan *plan = d->gen->plans[m->index];
  m->pending = true;
  m->pending_cfg = m->cfg;
  m->pending_bus = b;
  m->pending_gen = d->gen;
  d->gen->refs++;
  int rc = b->w ? busworker_submit(b->w, m->key, slot, m->cfg, plan)
                : netbus_submit(b->nb, m->key, slot, m->cfg, plan);
  if (rc != 0) {
    m->pending_gen = NULL;
    d->gen->refs--;
    m->pending = false;
    m->pending_cfg = NULL;
    m->pending_bus = NULL;
  }
  return rc;
}
