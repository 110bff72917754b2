#include "poll/busworker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/backoff.h"
#include "base/clock.h"
#include "base/xqueue.h"
#include "transport/mb_poll.h"

int bus_jobs_push(bus_jobs *q, bus_job j) {
  if (q->count == q->cap) {
    size_t cap = q->cap ? q->cap * 2 : 16;
    bus_job *v = calloc(cap, sizeof *v);
    if (!v) return -1;
    for (size_t i = 0; i < q->count; i++) v[i] = q->v[(q->head + i) % q->cap];
    free(q->v);
    q->v = v;
    q->head = 0;
    q->cap = cap;
  }
  q->v[(q->head + q->count) % q->cap] = j;
  q->count++;
  return 0;
}

bool bus_jobs_pop(bus_jobs *q, bus_job *out) {
  if (!q->count) return false;
  *out = q->v[q->head];
  q->head = (q->head + 1) % q->cap;
  q->count--;
  return true;
}

void bus_jobs_free(bus_jobs *q) {
  bus_job j;
  while (bus_jobs_pop(q, &j)) bus_result_free(j.res);
  free(q->v);
  *q = (bus_jobs){0};
}

/* Everything the bus shares with its thread (the job ring, the running and
 * stopping flags) is guarded by mu; results go back through their own
 * queue. */
struct busworker {
  cfg_bus conf;       /* the bus's settings, a copy */
  const cfg_bus *bus; /* &conf */
  transport *tr;
  pthread_mutex_t mu;
  pthread_cond_t work;  /* a job was queued, or the worker stops */
  pthread_cond_t idle;  /* a job ended */
  pthread_t thread;
  bool started;         /* the thread runs (join it) */
  bool joined;
  bus_jobs jobs;
  bool stopping;
  bool running;   /* the thread is running one of the jobs */
  uint32_t running_meter; /* ...and its meter */
  /* New settings for the line (busworker_reconfigure): taken by the thread
   * between two jobs. */
  bool reconf;
  cfg_bus next_conf;
  xqueue results; /* to the loop, oldest first */
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

static void run_job(busworker *w, const bus_job *j) {
  const cfg_meter *m = j->m;
  const mb_plan *plan = j->plan;
  bus_result *r = j->res;
  r->start_ms = clock_wall_ms();
  r->start_mono_ms = clock_mono_ms();
  if (plan->total_words > w->buf_words) {
    /* A meter re-planned on a reload may read more than the bus did. */
    uint16_t *b = realloc(w->buf, plan->total_words * sizeof *b);
    if (!b) {
      r->rc = tr_fail(&r->err, TR_EIO, "out of memory");
      r->end_ms = clock_wall_ms();
      xqueue_post(&w->results, r);
      return;
    }
    w->buf = b;
    w->buf_words = plan->total_words;
  }
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
  xqueue_post(&w->results, r);
}

/* New settings (the worker's thread, between two jobs): the line is
 * closed and opened again with them at the next poll. */
static void apply_conf(busworker *w, const cfg_bus *conf) {
  transport_options topt;
  cfg_bus_transport_options(conf, &topt);
  char err[256];
  transport *tr = transport_new(&topt, err, sizeof err);
  if (!tr) return; /* out of memory: the line goes on as it was */
  transport_close(w->tr);
  transport_free(w->tr);
  w->tr = tr;
  w->conf = *conf;
  w->reopen_at_ms = 0;
  backoff_reset(&w->reopen_delay_ms);
}

/* The bus's thread runs its jobs one after another, in order. */
static void *worker_main(void *arg) {
  busworker *w = arg;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    while (!w->jobs.count && !w->stopping) pthread_cond_wait(&w->work, &w->mu);
    if (w->stopping) break; /* queued jobs were abandoned by busworker_stop */
    bus_job j;
    (void)bus_jobs_pop(&w->jobs, &j); /* there is one */
    w->running = true;
    w->running_meter = j.meter;
    bool reconf = w->reconf;
    w->reconf = false;
    cfg_bus conf = w->next_conf;
    pthread_mutex_unlock(&w->mu);
    if (reconf) apply_conf(w, &conf);
    run_job(w, &j);
    pthread_mutex_lock(&w->mu);
    w->running = false;
    pthread_cond_broadcast(&w->idle);
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

static int start_thread(busworker *w, char *err, size_t errlen) {
  /* The jobs need little stack: libmodbus, the protocol core and snprintf. */
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  int rc = pthread_create(&w->thread, &attr, worker_main, w);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    snprintf(err, errlen, "bus %s: cannot start a bus thread", w->bus->id);
    return -1;
  }
  w->started = true;
  return 0;
}

int busworker_start(busworker **out, const cfg_bus *bus, void (*notify)(void *),
                    void *ctx, char *err, size_t errlen) {
  busworker *w = calloc(1, sizeof *w);
  if (!w) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  w->conf = *bus;
  w->bus = &w->conf;
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->work, NULL);
  pthread_cond_init(&w->idle, NULL);
  XQUEUE_INIT(&w->results, bus_result, next, notify, ctx);
  transport_options topt;
  cfg_bus_transport_options(w->bus, &topt);
  w->tr = transport_new(&topt, err, errlen);
  if (!w->tr) {
    char e2[256];
    snprintf(e2, sizeof e2, "bus %s: %s", w->bus->id, err);
    snprintf(err, errlen, "%s", e2);
    busworker_free(w);
    return -1;
  }
  if (start_thread(w, err, errlen) != 0) {
    busworker_free(w);
    return -1;
  }
  *out = w;
  return 0;
}

int busworker_submit(busworker *w, uint32_t meter, int64_t slot_ms, const cfg_meter *m,
                     const mb_plan *plan) {
  bus_result *r = bus_result_new(meter, slot_ms, m->profile->nfields);
  if (!r) return -1; /* counted as a skipped slot */
  pthread_mutex_lock(&w->mu);
  if (w->stopping || bus_jobs_push(&w->jobs, (bus_job){meter, slot_ms, r, m, plan}) != 0) {
    pthread_mutex_unlock(&w->mu);
    free(r);
    return -1;
  }
  pthread_cond_signal(&w->work);
  pthread_mutex_unlock(&w->mu);
  return 0;
}

bus_result *busworker_take_results(busworker *w) { return xqueue_take(&w->results); }

void busworker_reconfigure(busworker *w, const cfg_bus *bus) {
  pthread_mutex_lock(&w->mu);
  w->next_conf = *bus;
  w->reconf = true;
  pthread_mutex_unlock(&w->mu);
}

bool busworker_running(busworker *w, uint32_t *meter) {
  pthread_mutex_lock(&w->mu);
  bool r = w->running;
  if (r) *meter = w->running_meter;
  pthread_mutex_unlock(&w->mu);
  return r;
}

void busworker_stop(busworker *w) {
  if (!w || !w->started) return;
  pthread_mutex_lock(&w->mu);
  w->stopping = true;
  bus_job j;
  while (bus_jobs_pop(&w->jobs, &j)) bus_result_free(j.res); /* abandoned */
  pthread_cond_signal(&w->work);
  pthread_mutex_unlock(&w->mu);
}

void busworker_join(busworker *w) {
  if (!w || !w->started || w->joined) return;
  busworker_stop(w);
  pthread_mutex_lock(&w->mu);
  while (w->running) pthread_cond_wait(&w->idle, &w->mu);
  pthread_mutex_unlock(&w->mu);
  /* The thread touches the bus no more. */
  transport_close(w->tr);
  w->joined = true;
}

void busworker_free(busworker *w) {
  if (!w) return;
  busworker_join(w);
  if (w->started) pthread_join(w->thread, NULL);
  bus_result_free(xqueue_take(&w->results));
  xqueue_destroy(&w->results);
  pthread_cond_destroy(&w->work);
  pthread_cond_destroy(&w->idle);
  pthread_mutex_destroy(&w->mu);
  transport_free(w->tr);
  bus_jobs_free(&w->jobs);
  free(w->buf);
  free(w);
}
