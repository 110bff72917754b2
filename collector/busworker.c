#include "busworker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "mb_poll.h"

typedef struct job {
  uint32_t meter;
  int64_t slot_ms;
} job;

struct busworker {
  const cfg *cfg;
  const cfg_bus *bus;
  mb_plan *const *plans;
  transport *tr;
  pthread_t thread;
  bool started;
  bool joined;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  job *jobs; /* ring buffer */
  size_t cap, head, count;
  bool stopping;
  bus_result *res_head, *res_tail;
  void (*notify)(void *);
  void *ctx;
  uint16_t *buf;
  size_t buf_words;
  /* open back-off */
  int64_t reopen_at_ms;
  int64_t reopen_delay_ms;
  tr_error open_err;
};

void bus_result_free(bus_result *r) {
  while (r) {
    bus_result *next = r->next;
    free(r->values);
    free(r);
    r = next;
  }
}

static void post(busworker *w, bus_result *r) {
  pthread_mutex_lock(&w->mu);
  r->next = NULL;
  if (w->res_tail)
    w->res_tail->next = r;
  else
    w->res_head = r;
  w->res_tail = r;
  pthread_mutex_unlock(&w->mu);
  if (w->notify) w->notify(w->ctx);
}

/* Open the transport unless a recent attempt failed and its back-off has not
 * run out; then report that failure again without touching the network. */
static int ensure_open(busworker *w, tr_error *e) {
  if (transport_is_open(w->tr)) return TR_OK;
  int64_t now = clock_mono_ms();
  if (w->reopen_at_ms && now < w->reopen_at_ms) {
    *e = w->open_err;
    return e->code;
  }
  int rc = transport_open(w->tr, e);
  if (rc == TR_OK) {
    w->reopen_at_ms = 0;
    w->reopen_delay_ms = 0;
    return TR_OK;
  }
  w->reopen_delay_ms = w->reopen_delay_ms ? w->reopen_delay_ms * 2 : 1000;
  if (w->reopen_delay_ms > 30000) w->reopen_delay_ms = 30000;
  w->reopen_at_ms = clock_mono_ms() + w->reopen_delay_ms;
  w->open_err = *e;
  return rc;
}

static void run_job(busworker *w, const job *j) {
  const cfg_meter *m = &w->cfg->meters[j->meter];
  const mb_plan *plan = w->plans[j->meter];
  bus_result *r = calloc(1, sizeof *r);
  if (!r) return; /* nothing to answer with; the stuck-bus rule notices */
  r->meter = j->meter;
  r->slot_ms = j->slot_ms;
  r->start_ms = clock_wall_ms();
  r->start_mono_ms = clock_mono_ms();
  r->rc = ensure_open(w, &r->err);
  if (r->rc == TR_OK) {
    r->values = calloc(m->profile->nfields ? m->profile->nfields : 1,
                       sizeof *r->values);
    if (!r->values) {
      /* Still answer, so the meter's poll is not left pending forever. */
      r->rc = TR_EIO;
      snprintf(r->err.detail, sizeof r->err.detail, "out of memory");
      r->end_ms = clock_wall_ms();
      post(w, r);
      return;
    }
    r->start_ms = clock_wall_ms();
  r->start_mono_ms = clock_mono_ms();
    r->rc = mb_poll_meter(w->tr, m->unit, plan, m->profile, w->buf, r->values,
                          &r->err, &r->requests);
    if (r->rc != TR_OK) {
      free(r->values);
      r->values = NULL;
    }
  }
  r->end_ms = clock_wall_ms();
  post(w, r);
}

static void *worker_main(void *arg) {
  busworker *w = arg;
  for (;;) {
    pthread_mutex_lock(&w->mu);
    while (w->count == 0 && !w->stopping) pthread_cond_wait(&w->cv, &w->mu);
    if (w->stopping) {
      pthread_mutex_unlock(&w->mu);
      break;
    }
    job j = w->jobs[w->head];
    w->head = (w->head + 1) % w->cap;
    w->count--;
    pthread_mutex_unlock(&w->mu);
    run_job(w, &j);
  }
  transport_close(w->tr);
  return NULL;
}

int busworker_start(busworker **out, const cfg *c, size_t bus,
                    mb_plan *const *plans, void (*notify)(void *), void *ctx,
                    char *err, size_t errlen) {
  busworker *w = calloc(1, sizeof *w);
  if (!w) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  w->cfg = c;
  w->bus = &c->buses[bus];
  w->plans = plans;
  w->notify = notify;
  w->ctx = ctx;
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  size_t n = 0;
  for (size_t i = 0; i < c->nmeters; i++) {
    if (c->meters[i].bus != bus) continue;
    n++;
    if (plans[i]->total_words > w->buf_words) w->buf_words = plans[i]->total_words;
  }
  w->cap = n ? n : 1;
  w->jobs = calloc(w->cap, sizeof *w->jobs);
  w->buf = calloc(w->buf_words ? w->buf_words : 1, sizeof *w->buf);
  w->tr = transport_new(w->bus, err, errlen);
  if (!w->jobs || !w->buf || !w->tr) {
    if (!w->tr) {
      char e2[256];
      snprintf(e2, sizeof e2, "bus %s: %s", w->bus->id, err);
      snprintf(err, errlen, "%s", e2);
    } else {
      snprintf(err, errlen, "out of memory");
    }
    busworker_free(w);
    return -1;
  }
  if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
    snprintf(err, errlen, "bus %s: cannot start its thread", w->bus->id);
    busworker_free(w);
    return -1;
  }
  w->started = true;
  *out = w;
  return 0;
}

int busworker_submit(busworker *w, uint32_t meter, int64_t slot_ms) {
  pthread_mutex_lock(&w->mu);
  if (w->stopping || w->count == w->cap) {
    pthread_mutex_unlock(&w->mu);
    return -1;
  }
  w->jobs[(w->head + w->count) % w->cap] = (job){meter, slot_ms};
  w->count++;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
  return 0;
}

bus_result *busworker_take_results(busworker *w) {
  pthread_mutex_lock(&w->mu);
  bus_result *r = w->res_head;
  w->res_head = w->res_tail = NULL;
  pthread_mutex_unlock(&w->mu);
  return r;
}

void busworker_stop(busworker *w) {
  if (!w) return;
  pthread_mutex_lock(&w->mu);
  w->stopping = true;
  w->count = 0;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

void busworker_join(busworker *w) {
  if (!w || !w->started || w->joined) return;
  busworker_stop(w);
  pthread_join(w->thread, NULL);
  w->joined = true;
}

void busworker_free(busworker *w) {
  if (!w) return;
  busworker_join(w);
  transport_free(w->tr);
  bus_result_free(w->res_head);
  free(w->jobs);
  free(w->buf);
  pthread_cond_destroy(&w->cv);
  pthread_mutex_destroy(&w->mu);
  free(w);
}
