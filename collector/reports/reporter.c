#include "reports/reporter.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/xqueue.h"
#include "reports/report.h"
#include "store/reports.h"

typedef enum { JOB_BUILD = 0, JOB_NEXT_PUSH, JOB_MARK_PUSHED } job_kind;

typedef struct job {
  struct job *next;
  job_kind kind;
  int period;
  int64_t upto_ms;
  int64_t id;
} job;

struct reporter {
  /* The configuration a report is built with: swapped by a reload under
   * cfg_mu, which a build holds. */
  const cfg *cfg;
  pthread_mutex_t cfg_mu;
  const rate_period *periods;
  size_t nperiods;
  int64_t run_start_ms;
  sqlite3 *db;
  pthread_t thread;
  bool started;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  job *jobs;
  size_t njobs;
  bool stopping;
  xqueue results; /* to the loop, oldest first */
};

void reporter_result_free(reporter_result *r) {
  while (r) {
    reporter_result *next = r->next;
    free(r->body);
    free(r);
    r = next;
  }
}

static void post(reporter *rp, reporter_result *r) { xqueue_post(&rp->results, r); }

static int64_t query_i64(sqlite3 *db, const char *sql, const char *text,
                         int64_t dflt) {
  sqlite3_stmt *st;
  int64_t v = dflt;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return dflt;
  if (text) sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);
  if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
    v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

static bool stopping(reporter *rp) {
  pthread_mutex_lock(&rp->mu);
  bool s = rp->stopping;
  pthread_mutex_unlock(&rp->mu);
  return s;
}

static void run_job(reporter *rp, const job *j) {
  const rate_period *period = &rp->periods[j->period];
  /* Resume after the last window reported; a first report starts with the
   * window in which the gateway first ran. */
  int64_t from = -1; /* none reported, or the table cannot be read */
  if (store_reports_last_end(rp->db, period->name, &from) != SQLITE_ROW) from = -1;
  if (from < 0) {
    int64_t first = query_i64(rp->db, "SELECT min(start_ms) FROM gateway_runs", NULL, -1);
    if (first < 0) return;
    int64_t s, e;
    rate_window(period, first, &s, &e);
    from = s;
  }
  int64_t s, e;
  rate_window(period, from, &s, &e);
  /* At most REPORTER_CATCHUP_MAX windows: the oldest missing ones are
   * skipped (and said so), the newest built. */
  size_t missing = 0;
  for (int64_t we = e; we <= j->upto_ms && missing <= REPORTER_CATCHUP_MAX; missing++) {
    int64_t ns;
    rate_window(period, we, &ns, &we);
  }
  if (missing > REPORTER_CATCHUP_MAX) {
    int64_t ls, le;
    rate_window(period, j->upto_ms - 1, &ls, &le);
    for (size_t k = 1; k < REPORTER_CATCHUP_MAX; k++) {
      int64_t ps, pe;
      rate_window(period, ls - 1, &ps, &pe);
      ls = ps;
      le = pe;
    }
    reporter_result *r = calloc(1, sizeof *r);
    if (r) {
      r->period = j->period;
      r->start_ms = s;
      snprintf(r->error, sizeof r->error,
               "more than %d %s windows to catch up; the oldest are skipped",
               REPORTER_CATCHUP_MAX, period->name);
      post(rp, r);
    }
    s = ls;
    e = le;
  }
  while (e <= j->upto_ms && !stopping(rp)) {
    reporter_result *r = calloc(1, sizeof *r);
    if (!r) return;
    r->period = j->period;
    r->start_ms = s;
    r->end_ms = e;
    char err[180];
    pthread_mutex_lock(&rp->cfg_mu);
    cJSON *rep = report_build(rp->cfg, rp->db, period, s, e, clock_wall_ms(),
                              rp->run_start_ms, err, sizeof err);
    pthread_mutex_unlock(&rp->cfg_mu);
    if (!rep) {
      snprintf(r->error, sizeof r->error, "%.31s report for %lld: %s", period->name,
               (long long)s, err);
      post(rp, r);
      return;
    }
    r->body = cJSON_PrintUnformatted(rep);
    cJSON_Delete(rep);
    if (store_reports_put(rp->db, period->name, s, e, clock_wall_ms(),
                          r->body ? r->body : "{}", &r->id) != SQLITE_OK)
      snprintf(r->error, sizeof r->error, "storing the %s report: %s", period->name,
               sqlite3_errmsg(rp->db));
    post(rp, r);
    int64_t ns, ne;
    rate_window(period, e, &ns, &ne);
    s = ns;
    e = ne;
  }
}

static void next_push(reporter *rp) {
  reporter_result *r = calloc(1, sizeof *r);
  if (!r) return;
  r->kind = REPORTER_NOTHING_TO_PUSH;
  int rc = store_reports_next_unpushed(rp->db, &r->id, &r->body);
  if (rc == SQLITE_ROW)
    r->kind = REPORTER_TO_PUSH;
  else if (rc != SQLITE_DONE)
    snprintf(r->error, sizeof r->error, "reading the report outbox: %s",
             sqlite3_errmsg(rp->db));
  post(rp, r);
}

/* A mark that fails leaves the report unaccepted: it is offered again, and
 * the bureau takes a report of the same window twice. */
static void mark_pushed(reporter *rp, int64_t id) {
  (void)store_reports_mark_pushed(rp->db, id, clock_wall_ms());
}

static void *reporter_main(void *arg) {
  reporter *rp = arg;
  for (;;) {
    pthread_mutex_lock(&rp->mu);
    while (!rp->jobs && !rp->stopping) pthread_cond_wait(&rp->cv, &rp->mu);
    if (rp->stopping) {
      pthread_mutex_unlock(&rp->mu);
      break;
    }
    job *j = rp->jobs;
    rp->jobs = j->next;
    rp->njobs--;
    pthread_mutex_unlock(&rp->mu);
    if (j->kind == JOB_BUILD)
      run_job(rp, j);
    else if (j->kind == JOB_NEXT_PUSH)
      next_push(rp);
    else
      mark_pushed(rp, j->id);
    free(j);
  }
  return NULL;
}

int reporter_start(reporter **out, const cfg *c, const rate_period *periods,
                   size_t nperiods, int64_t run_start_ms, void (*notify)(void *),
                   void *ctx, char *err, size_t errlen) {
  reporter *rp = calloc(1, sizeof *rp);
  if (!rp) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  rp->cfg = c;
  rp->periods = periods;
  rp->nperiods = nperiods;
  rp->run_start_ms = run_start_ms;
  XQUEUE_INIT(&rp->results, reporter_result, next, notify, ctx);
  pthread_mutex_init(&rp->mu, NULL);
  pthread_mutex_init(&rp->cfg_mu, NULL);
  pthread_cond_init(&rp->cv, NULL);
  if (sqlite3_open_v2(c->storage.path, &rp->db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
    snprintf(err, errlen, "reports: cannot open %s: %s", c->storage.path,
             sqlite3_errmsg(rp->db));
    reporter_free(rp);
    return -1;
  }
  sqlite3_busy_timeout(rp->db, 10000);
  /* A report reads each meter's rows once: a small page cache will do, and
   * the memory is the gateway's. */
  (void)sqlite3_exec(rp->db, "PRAGMA cache_size = -512", NULL, NULL, NULL); /* a saving only */
  if (pthread_create(&rp->thread, NULL, reporter_main, rp) != 0) {
    snprintf(err, errlen, "reports: cannot start the thread");
    reporter_free(rp);
    return -1;
  }
  rp->started = true;
  *out = rp;
  return 0;
}

void reporter_set_config(reporter *rp, const cfg *c) {
  pthread_mutex_lock(&rp->cfg_mu);
  rp->cfg = c;
  pthread_mutex_unlock(&rp->cfg_mu);
}

int reporter_request(reporter *rp, int period, int64_t upto_ms) {
  job *j = calloc(1, sizeof *j);
  if (!j) return -1;
  j->period = period;
  j->upto_ms = upto_ms;
  pthread_mutex_lock(&rp->mu);
  /* Bounded: one request per period is enough, it catches up everything. */
  for (job *k = rp->jobs; k; k = k->next) {
    if (k->kind == JOB_BUILD && k->period == period) {
      if (upto_ms > k->upto_ms) k->upto_ms = upto_ms;
      pthread_mutex_unlock(&rp->mu);
      free(j);
      return 0;
    }
  }
  job **pp = &rp->jobs;
  while (*pp) pp = &(*pp)->next;
  *pp = j;
  rp->njobs++;
  pthread_cond_signal(&rp->cv);
  pthread_mutex_unlock(&rp->mu);
  return 0;
}

static int enqueue_job(reporter *rp, job_kind kind, int64_t id) {
  job *j = calloc(1, sizeof *j);
  if (!j) return -1;
  j->kind = kind;
  j->id = id;
  pthread_mutex_lock(&rp->mu);
  job **pp = &rp->jobs;
  while (*pp) pp = &(*pp)->next;
  *pp = j;
  rp->njobs++;
  pthread_cond_signal(&rp->cv);
  pthread_mutex_unlock(&rp->mu);
  return 0;
}

int reporter_next_push(reporter *rp) { return enqueue_job(rp, JOB_NEXT_PUSH, 0); }

int reporter_mark_pushed(reporter *rp, int64_t id) {
  return enqueue_job(rp, JOB_MARK_PUSHED, id);
}

reporter_result *reporter_take(reporter *rp) { return xqueue_take(&rp->results); }

void reporter_free(reporter *rp) {
  if (!rp) return;
  if (rp->started) {
    pthread_mutex_lock(&rp->mu);
    rp->stopping = true;
    pthread_cond_signal(&rp->cv);
    pthread_mutex_unlock(&rp->mu);
    pthread_join(rp->thread, NULL);
  }
  while (rp->jobs) {
    job *j = rp->jobs;
    rp->jobs = j->next;
    free(j);
  }
  reporter_result_free(xqueue_take(&rp->results));
  xqueue_destroy(&rp->results);
  sqlite3_close(rp->db);
  pthread_cond_destroy(&rp->cv);
  pthread_mutex_destroy(&rp->mu);
  pthread_mutex_destroy(&rp->cfg_mu);
  free(rp);
}
