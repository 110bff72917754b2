#include "poll/busworker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/backoff.h"
#include "base/clock.h"
#include "transport/mb_poll.h"

typedef struct job {
  uint32_t meter;
  int64_t slot_ms;
  bus_result *res; /* allocated when queued, so a poll that runs can always
                      report back */
} job;

typedef struct buspool buspool;
static void buspool_free(buspool *p);

/* The thread that runs a bus's jobs. Everything the bus shares with it
 * (its job queue, results, running and stopping flags) is guarded by the
 * pool's mutex. */
struct buspool {
  pthread_mutex_t mu;
  pthread_cond_t work;  /* a bus became ready, or the pool stops */
  pthread_cond_t idle;  /* a bus finished a job */
  busworker *ready_head, *ready_tail;
  bus_result *res_head, *res_tail; /* results of all its buses, oldest first */
  bool stopping;
  pthread_t *threads;
  size_t nthreads;
};

struct busworker {
  const cfg *cfg;
  const cfg_bus *bus;
  mb_plan *const *plans;
  transport *tr;
  buspool *pool;
  bool own_pool;  /* a pool of one thread, for this bus alone */
  bool joined;
  job *jobs; /* ring buffer */
  size_t cap, head, count;
  bool stopping;
  bool running;   /* a pool thread is running one of its jobs */
  bool ready;     /* in the pool's ready list */
  busworker *ready_next;
  void (*notify)(void *);
  void *ctx;
  uint16_t *buf;
  size_t buf_words;
  /* open back-off */
  int64_t reopen_at_ms;
  int64_t reopen_delay_ms;
  tr_error open_err;
};

bus_result *bus_result_new(uint32_t meter, int64_t slot_ms, size_t nvalues) {
  bus_result *r = calloc(1, sizeof *r + (nvalues ? nvalues : 1) * sizeof(double));
  if (!r) return NULL;
  r->meter = meter;
  r->slot_ms = slot_ms;
  r->start_ms = clock_wall_ms();
  r->start_mono_ms = clock_mono_ms();
  return r;
}

void bus_result_free(bus_result *r) {
  while (r) {
    bus_result *next = r->next;
    free(r); /* the values are part of it */
    r = next;
  }
}

static void post(busworker *w, bus_result *r) {
  buspool *p = w->pool;
  pthread_mutex_lock(&p->mu);
  r->next = NULL;
  if (p->res_tail)
    p->res_tail->next = r;
  else
    p->res_head = r;
  p->res_tail = r;
  pthread_mutex_unlock(&p->mu);
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
    backoff_reset(&w->reopen_delay_ms);
    return TR_OK;
  }
  w->reopen_at_ms = clock_mono_ms() + backoff_next(&w->reopen_delay_ms, 1000, 30000);
  w->open_err = *e;
  return rc;
}

static void run_job(busworker *w, const job *j) {
  const cfg_meter *m = &w->cfg->meters[j->meter];
  const mb_plan *plan = w->plans[j->meter];
  bus_result *r = j->res;
  r->start_ms = clock_wall_ms();
  r->start_mono_ms = clock_mono_ms();
  r->rc = ensure_open(w, &r->err);
  if (r->rc == TR_OK) {
    r->values = (double *)(r + 1);
    r->start_ms = clock_wall_ms();
    r->start_mono_ms = clock_mono_ms();
    r->rc = mb_poll_meter(w->tr, m->unit, plan, m->profile, w->buf, r->values,
                          &r->err, &r->requests);
    if (r->rc != TR_OK) r->values = NULL;
  }
  r->end_ms = clock_wall_ms();
  post(w, r);
}

/* Queue W in the pool's ready list; the pool's mutex is held. */
static void make_ready(busworker *w) {
  buspool *p = w->pool;
  if (w->ready || w->running || w->stopping || w->count == 0) return;
  w->ready = true;
  w->ready_next = NULL;
  if (p->ready_tail)
    p->ready_tail->ready_next = w;
  else
    p->ready_head = w;
  p->ready_tail = w;
  pthread_cond_signal(&p->work);
}

/* Take W out of the ready list; the pool's mutex is held. */
static void unready(busworker *w) {
  buspool *p = w->pool;
  if (!w->ready) return;
  busworker **pp = &p->ready_head, *prev = NULL;
  while (*pp && *pp != w) {
    prev = *pp;
    pp = &(*pp)->ready_next;
  }
  if (*pp) *pp = w->ready_next;
  if (p->ready_tail == w) p->ready_tail = prev;
  w->ready = false;
}

/* Each pool thread takes the bus at the head of the ready list, runs one of
 * its jobs, and puts it back at the tail if it has more: a bus's jobs run one
 * at a time, in order, and busy buses take turns. */
static void *pool_main(void *arg) {
  buspool *p = arg;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (!p->ready_head && !p->stopping) pthread_cond_wait(&p->work, &p->mu);
    if (!p->ready_head) break; /* stopping, and nothing ready */
    busworker *w = p->ready_head;
    p->ready_head = w->ready_next;
    if (!p->ready_head) p->ready_tail = NULL;
    w->ready = false;
    if (w->stopping || w->count == 0) continue;
    job j = w->jobs[w->head];
    w->head = (w->head + 1) % w->cap;
    w->count--;
    w->running = true;
    pthread_mutex_unlock(&p->mu);
    run_job(w, &j);
    pthread_mutex_lock(&p->mu);
    w->running = false;
    make_ready(w);
    pthread_cond_broadcast(&p->idle);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

static int buspool_new(buspool **out, size_t nthreads, char *err, size_t errlen) {
  buspool *p = calloc(1, sizeof *p);
  if (!p || !(p->threads = calloc(nthreads ? nthreads : 1, sizeof *p->threads))) {
    free(p);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->work, NULL);
  pthread_cond_init(&p->idle, NULL);
  /* The jobs need little stack: libmodbus, the protocol core and snprintf. */
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  for (size_t i = 0; i < (nthreads ? nthreads : 1); i++) {
    if (pthread_create(&p->threads[i], &attr, pool_main, p) != 0) {
      snprintf(err, errlen, "cannot start a bus thread");
      pthread_attr_destroy(&attr);
      buspool_free(p);
      return -1;
    }
    p->nthreads++;
  }
  pthread_attr_destroy(&attr);
  *out = p;
  return 0;
}

static void buspool_free(buspool *p) {
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  p->stopping = true;
  pthread_cond_broadcast(&p->work);
  pthread_mutex_unlock(&p->mu);
  for (size_t i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
  bus_result_free(p->res_head);
  free(p->threads);
  pthread_cond_destroy(&p->work);
  pthread_cond_destroy(&p->idle);
  pthread_mutex_destroy(&p->mu);
  free(p);
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
  size_t n = 0;
  for (size_t i = 0; i < c->nmeters; i++) {
    if (c->meters[i].bus != bus) continue;
    n++;
    if (plans[i]->total_words > w->buf_words) w->buf_words = plans[i]->total_words;
  }
  w->cap = n ? n : 1;
  w->jobs = calloc(w->cap, sizeof *w->jobs);
  w->buf = calloc(w->buf_words ? w->buf_words : 1, sizeof *w->buf);
  transport_options topt;
  cfg_bus_transport_options(w->bus, &topt);
  w->tr = transport_new(&topt, err, errlen);
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
  if (buspool_new(&w->pool, 1, err, errlen) == 0) {
    w->own_pool = true;
  } else {
    char e2[256];
    snprintf(e2, sizeof e2, "bus %s: %s", w->bus->id, err);
    snprintf(err, errlen, "%s", e2);
    busworker_free(w);
    return -1;
  }
  *out = w;
  return 0;
}

int busworker_submit(busworker *w, uint32_t meter, int64_t slot_ms) {
  bus_result *r =
      bus_result_new(meter, slot_ms, w->cfg->meters[meter].profile->nfields);
  if (!r) return -1; /* counted as a skipped slot */
  pthread_mutex_lock(&w->pool->mu);
  if (w->stopping || w->count == w->cap) {
    pthread_mutex_unlock(&w->pool->mu);
    free(r);
    return -1;
  }
  w->jobs[(w->head + w->count) % w->cap] = (job){meter, slot_ms, r};
  w->count++;
  make_ready(w);
  pthread_mutex_unlock(&w->pool->mu);
  return 0;
}

static bus_result *buspool_take_results(buspool *p) {
  if (!p) return NULL;
  pthread_mutex_lock(&p->mu);
  bus_result *r = p->res_head;
  p->res_head = p->res_tail = NULL;
  pthread_mutex_unlock(&p->mu);
  return r;
}

bus_result *busworker_take_results(busworker *w) {
  return buspool_take_results(w->pool);
}

void busworker_stop(busworker *w) {
  if (!w || !w->pool) return;
  pthread_mutex_lock(&w->pool->mu);
  w->stopping = true;
  for (; w->count; w->count--, w->head = (w->head + 1) % w->cap)
    free(w->jobs[w->head].res); /* abandoned */
  unready(w);
  pthread_mutex_unlock(&w->pool->mu);
}

void busworker_join(busworker *w) {
  if (!w || !w->pool || w->joined) return;
  busworker_stop(w);
  pthread_mutex_lock(&w->pool->mu);
  while (w->running) pthread_cond_wait(&w->pool->idle, &w->pool->mu);
  pthread_mutex_unlock(&w->pool->mu);
  /* No pool thread touches the bus any more. */
  transport_close(w->tr);
  w->joined = true;
}

void busworker_free(busworker *w) {
  if (!w) return;
  busworker_join(w);
  if (w->own_pool) buspool_free(w->pool);
  transport_free(w->tr);
  free(w->jobs);
  free(w->buf);
  free(w);
}
