#include "reports/report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "meter/mstate.h"

sqlite3 *report_open_db(const char *path, char *err, size_t errlen) {
  sqlite3 *db = NULL;
  int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
  if (rc != SQLITE_OK) {
    snprintf(err, errlen, "cannot open %s: %s", path,
             db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close(db);
    return NULL;
  }
  sqlite3_busy_timeout(db, 5000);
  return db;
}

/* A growing array. */
typedef struct {
  void *v;
  size_t n, cap, size;
} vec;

static void *vec_push(vec *a) {
  if (a->n == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 64;
    void *nv = realloc(a->v, cap * a->size);
    if (!nv) return NULL;
    a->v = nv;
    a->cap = cap;
  }
  return (char *)a->v + a->size * a->n++;
}

typedef struct {
  vec readings; /* rate_reading */
  vec changes;  /* rate_change */
  int64_t configured_since;
} history;

static int load_history(sqlite3 *db, const cfg_meter *m, int64_t start,
                        int64_t end, history *h, char *err, size_t errlen) {
  const mb_profile *p = m->profile;
  int ti = profile_role_index(p, PROF_ROLE_TOTAL);
  int fi = profile_role_index(p, PROF_ROLE_FLOW);
  char tpath[80], fpath[80];
  snprintf(tpath, sizeof tpath, "$.%s", ti >= 0 ? p->fields[ti].name : "-");
  snprintf(fpath, sizeof fpath, "$.%s", fi >= 0 ? p->fields[fi].name : "-");
  h->readings.size = sizeof(rate_reading);
  h->changes.size = sizeof(rate_change);
  h->configured_since = 0;

  sqlite3_stmt *st = NULL;
  int rc;
  /* The last reading at or before the start, then the window's. */
  const char *q =
      "SELECT ts_ms, json_extract(fields, ?2), json_extract(fields, ?3) FROM ("
      "  SELECT * FROM (SELECT ts_ms, fields FROM readings WHERE meter = ?1 AND ts_ms <= ?4"
      "                 ORDER BY ts_ms DESC LIMIT 1)"
      "  UNION ALL"
      "  SELECT ts_ms, fields FROM readings WHERE meter = ?1 AND ts_ms > ?4 AND ts_ms <= ?5)"
      " ORDER BY ts_ms";
  if ((rc = sqlite3_prepare_v2(db, q, -1, &st, NULL)) != SQLITE_OK) goto sqlerr;
  sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, tpath, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, fpath, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 4, start);
  sqlite3_bind_int64(st, 5, end);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    rate_reading *r = vec_push(&h->readings);
    if (!r) goto oom;
    r->ts_ms = sqlite3_column_int64(st, 0);
    r->total_m3 = sqlite3_column_type(st, 1) == SQLITE_NULL ? NAN : sqlite3_column_double(st, 1);
    r->flow_m3h = sqlite3_column_type(st, 2) == SQLITE_NULL ? NAN : sqlite3_column_double(st, 2);
  }
  if (rc != SQLITE_DONE) goto sqlerr;
  sqlite3_finalize(st);

  /* State changes from the last one before the start. */
  q = "SELECT ts_ms, online, coalesce(error, '') FROM state_changes WHERE meter = ?1"
      " AND ts_ms < ?3 AND ts_ms >= coalesce((SELECT max(ts_ms) FROM state_changes"
      "   WHERE meter = ?1 AND ts_ms < ?2), 0) ORDER BY ts_ms, id";
  if ((rc = sqlite3_prepare_v2(db, q, -1, &st, NULL)) != SQLITE_OK) goto sqlerr;
  sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, start);
  sqlite3_bind_int64(st, 3, end);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    rate_change *c = vec_push(&h->changes);
    if (!c) goto oom;
    c->ts_ms = sqlite3_column_int64(st, 0);
    c->online = sqlite3_column_int(st, 1) != 0;
    snprintf(c->error, sizeof c->error, "%s", (const char *)sqlite3_column_text(st, 2));
  }
  if (rc != SQLITE_DONE) goto sqlerr;
  sqlite3_finalize(st);

  q = "SELECT configured_since_ms FROM meters WHERE id = ?1";
  if ((rc = sqlite3_prepare_v2(db, q, -1, &st, NULL)) != SQLITE_OK) goto sqlerr;
  sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  /* Never recorded: the meter has not been polled by any run yet, so it is
   * configured now and nothing was expected of it before. */
  h->configured_since = rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL
                            ? sqlite3_column_int64(st, 0)
                            : INT64_MAX;
  sqlite3_finalize(st);
  return 0;
sqlerr:
  snprintf(err, errlen, "reading the history of %s: %s", m->id, sqlite3_errmsg(db));
  sqlite3_finalize(st);
  return -1;
oom:
  snprintf(err, errlen, "out of memory");
  sqlite3_finalize(st);
  return -1;
}

static int load_runs(sqlite3 *db, int64_t start, int64_t end, int64_t now_ms,
                     int64_t live_run_ms, vec *runs, char *err, size_t errlen) {
  runs->size = sizeof(rate_span);
  sqlite3_stmt *st = NULL;
  const char *q =
      "SELECT start_ms, coalesce(stop_ms, alive_ms), stop_ms IS NULL"
      " FROM gateway_runs WHERE start_ms < ?2 ORDER BY start_ms";
  if (sqlite3_prepare_v2(db, q, -1, &st, NULL) != SQLITE_OK) {
    snprintf(err, errlen, "reading the gateway runs: %s", sqlite3_errmsg(db));
    return -1;
  }
  sqlite3_bind_int64(st, 1, start);
  sqlite3_bind_int64(st, 2, end);
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    rate_span sp = {sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1)};
    /* The running gateway's run lasts until now. */
    if (live_run_ms && sqlite3_column_int(st, 2) && sp.start_ms == live_run_ms)
      sp.end_ms = now_ms;
    if (sp.end_ms <= start) continue;
    rate_span *slot = vec_push(runs);
    if (!slot) break;
    *slot = sp;
  }
  sqlite3_finalize(st);
  return 0;
}

static void add_local(cJSON *o, const char *key, int64_t ms) {
  char buf[40];
  rate_format_local(ms, buf, sizeof buf);
  cJSON_AddStringToObject(o, key, buf);
}

static cJSON *volume_flags_json(unsigned f) {
  cJSON *a = cJSON_CreateArray();
  if (f & RATE_VOL_UNKNOWN) cJSON_AddItemToArray(a, cJSON_CreateString("unknown"));
  if (f & RATE_VOL_INCOMPLETE) cJSON_AddItemToArray(a, cJSON_CreateString("incomplete"));
  if (f & RATE_VOL_ROLLOVER) cJSON_AddItemToArray(a, cJSON_CreateString("rollover"));
  if (f & RATE_VOL_RESET) cJSON_AddItemToArray(a, cJSON_CreateString("reset"));
  if (f & RATE_VOL_SUSPECT) cJSON_AddItemToArray(a, cJSON_CreateString("suspect"));
  return a;
}

static double round6(double x) { return round(x * 1e6) / 1e6; }

typedef struct {
  const char *id;
  const char *name;
  int64_t since;
  int64_t outage_ms;
  char error[32];
} repair_row;

static int by_outage(const void *a, const void *b) {
  const repair_row *x = a, *y = b;
  if (x->outage_ms != y->outage_ms) return x->outage_ms < y->outage_ms ? 1 : -1;
  return strcmp(x->id, y->id);
}

cJSON *report_build(const cfg *c, sqlite3 *db, const rate_period *period,
                    int64_t start_ms, int64_t end_ms, int64_t now_ms,
                    int64_t live_run_ms, char *err, size_t errlen) {
  /* The window holding now is measured up to now: the rest has not
   * happened, and counted as gateway downtime it listed every meter for
   * repair. */
  int64_t nominal_end = end_ms;
  bool partial = now_ms > start_ms && now_ms < end_ms;
  if (partial) end_ms = now_ms;
  vec runs = {0};
  if (load_runs(db, start_ms, end_ms, now_ms, live_run_ms, &runs, err, errlen) != 0)
    return NULL;
  rate_params rp = {.min_readings = c->online.min_readings,
                    .min_completeness = c->online.min_completeness};
  cJSON *rep = cJSON_CreateObject();
  cJSON *site = cJSON_AddObjectToObject(rep, "site");
  cJSON_AddStringToObject(site, "id", c->site.id);
  cJSON_AddStringToObject(site, "name", c->site.name);
  cJSON_AddStringToObject(site, "timezone", c->site.timezone);
  cJSON_AddStringToObject(rep, "period", period->name);
  cJSON *win = cJSON_AddObjectToObject(rep, "window");
  add_local(win, "start", start_ms);
  add_local(win, "end", nominal_end);
  if (partial) {
    cJSON_AddBoolToObject(win, "partial", true);
    add_local(win, "measured_to", end_ms);
  }
  add_local(rep, "generated", now_ms);
  cJSON *defs = cJSON_AddObjectToObject(rep, "definitions");
  cJSON_AddNumberToObject(defs, "offline_after", c->online.offline_after);
  cJSON_AddNumberToObject(defs, "min_readings", c->online.min_readings);
  cJSON_AddNumberToObject(defs, "min_completeness", c->online.min_completeness);
  cJSON_AddStringToObject(defs, "online",
      "a meter is online for the window when it has at least min_readings valid "
      "readings and a completeness of at least min_completeness");
  cJSON_AddStringToObject(defs, "online_rate", "meters online / meters configured");
  cJSON_AddStringToObject(defs, "completeness",
      "valid readings / aligned poll slots while configured, gateway downtime included");
  cJSON_AddStringToObject(defs, "availability", "time online / time configured");
  cJSON_AddStringToObject(defs, "volume",
      "totalizer at the last valid reading at or before the window end minus the "
      "same at or before its start; wraps add the distance to the rollover, resets "
      "count on from zero, suspect jumps are excluded");

  cJSON *meters = cJSON_CreateArray();
  repair_row *repair = calloc(c->nmeters ? c->nmeters : 1, sizeof *repair);
  size_t nrepair = 0, configured = 0, online = 0;
  long valid = 0, expected = 0;
  double avail_sum = 0, volume_total = 0;
  for (size_t i = 0; i < c->nmeters; i++) {
    const cfg_meter *m = &c->meters[i];
    history h = {0};
    if (load_history(db, m, start_ms, end_ms, &h, err, errlen) != 0) {
      free(h.readings.v);
      free(h.changes.v);
      cJSON_Delete(rep);
      cJSON_Delete(meters);
      free(repair);
      free(runs.v);
      return NULL;
    }
    int ti = profile_role_index(m->profile, PROF_ROLE_TOTAL);
    rate_meter_input in = {
        .interval_ms = m->interval_ms,
        .phase_ms = cfg_meter_phase_ms(c, i),
        .configured_since_ms = h.configured_since,
        .rollover_m3 = ti >= 0 ? m->profile->fields[ti].rollover : 0,
        .readings = h.readings.v,
        .nreadings = h.readings.n,
        .changes = h.changes.v,
        .nchanges = h.changes.n,
    };
    rate_meter_result r;
    rate_meter(&in, runs.v, runs.n, start_ms, end_ms, &rp, &r);
    if (!r.configured) {
      /* Not in the configuration during this window (added later, or the
       * gateway never ran with it yet): listed, but not counted. */
      cJSON *o = cJSON_CreateObject();
      cJSON_AddStringToObject(o, "id", m->id);
      cJSON_AddStringToObject(o, "name", m->name);
      cJSON_AddBoolToObject(o, "configured", false);
      cJSON_AddItemToArray(meters, o);
      free(h.readings.v);
      free(h.changes.v);
      continue;
    }
    configured++;
    if (r.online) online++;
    valid += r.valid;
    expected += r.expected;
    avail_sum += r.availability;
    if (!isnan(r.volume_m3)) volume_total += r.volume_m3;

    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", m->id);
    cJSON_AddStringToObject(o, "name", m->name);
    cJSON_AddBoolToObject(o, "configured", true);
    cJSON_AddBoolToObject(o, "online", r.online);
    cJSON_AddNumberToObject(o, "valid_readings", (double)r.valid);
    cJSON_AddNumberToObject(o, "expected_readings", (double)r.expected);
    cJSON_AddNumberToObject(o, "completeness", round6(r.completeness));
    cJSON_AddNumberToObject(o, "availability", round6(r.availability));
    if (isnan(r.volume_m3))
      cJSON_AddNullToObject(o, "volume_m3");
    else
      cJSON_AddNumberToObject(o, "volume_m3", round6(r.volume_m3));
    cJSON_AddItemToObject(o, "volume_flags", volume_flags_json(r.volume_flags));
    if (r.excluded_m3 > 0) cJSON_AddNumberToObject(o, "volume_excluded_m3", round6(r.excluded_m3));
    cJSON *outs = cJSON_AddArrayToObject(o, "outages");
    for (size_t k = 0; k < r.noutages; k++) {
      cJSON *ou = cJSON_CreateObject();
      add_local(ou, "start", r.outages[k].start_ms);
      add_local(ou, "end", r.outages[k].end_ms);
      cJSON_AddStringToObject(ou, "error", r.outages[k].error);
      cJSON_AddItemToArray(outs, ou);
    }
    if (r.outages_dropped)
      cJSON_AddNumberToObject(o, "outages_dropped", (double)r.outages_dropped);
    if (r.last_seen_ms)
      add_local(o, "last_seen", r.last_seen_ms);
    else
      cJSON_AddNullToObject(o, "last_seen");
    /* The last failure kind known at the window's end. */
    const char *last_error = NULL;
    for (size_t k = 0; k < h.changes.n; k++) {
      const rate_change *ch = &((rate_change *)h.changes.v)[k];
      if (!ch->online && ch->error[0]) last_error = ch->error;
    }
    if (!r.online) last_error = r.last_error;
    if (last_error)
      cJSON_AddStringToObject(o, "last_error", last_error);
    else
      cJSON_AddNullToObject(o, "last_error");
    cJSON_AddItemToArray(meters, o);
    if (!r.online) {
      repair_row *rr = &repair[nrepair++];
      rr->id = m->id;
      rr->name = m->name;
      rr->since = r.outage_since_ms;
      rr->outage_ms = r.outage_ms;
      snprintf(rr->error, sizeof rr->error, "%s", r.last_error);
    }
    free(h.readings.v);
    free(h.changes.v);
  }
  free(runs.v);

  double rate = configured ? (double)online / (double)configured : 0;
  double baseline = c->online.baseline;
  cJSON_AddNumberToObject(rep, "meters_total", (double)configured);
  cJSON_AddNumberToObject(rep, "meters_online", (double)online);
  cJSON_AddNumberToObject(rep, "online_rate", round6(rate));
  cJSON_AddNumberToObject(rep, "baseline", baseline);
  cJSON_AddNumberToObject(rep, "delta_pp", rate_delta_pp(rate, baseline));
  cJSON_AddBoolToObject(rep, "meets_baseline", rate_meets(rate, baseline));
  cJSON_AddNumberToObject(rep, "completeness",
                          round6(expected ? (double)valid / (double)expected : 0));
  cJSON_AddNumberToObject(rep, "availability",
                          round6(configured ? avail_sum / (double)configured : 0));
  cJSON_AddNumberToObject(rep, "volume_m3", round6(volume_total));
  cJSON_AddItemToObject(rep, "meters", meters);
  qsort(repair, nrepair, sizeof *repair, by_outage);
  cJSON *rl = cJSON_AddArrayToObject(rep, "repair");
  for (size_t i = 0; i < nrepair; i++) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", repair[i].id);
    cJSON_AddStringToObject(o, "name", repair[i].name);
    add_local(o, "since", repair[i].since);
    cJSON_AddNumberToObject(o, "outage_s", (double)(repair[i].outage_ms / 1000));
    cJSON_AddStringToObject(o, "last_error", repair[i].error);
    cJSON_AddItemToArray(rl, o);
  }
  free(repair);
  return rep;
}

/* ------------------------------------------------------------------------ */

static void csv_str(FILE *f, const char *s) {
  if (!s) return;
  if (!strpbrk(s, ",\"\n\r")) {
    fputs(s, f);
    return;
  }
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"') fputc('"', f);
    fputc(*s, f);
  }
  fputc('"', f);
}

static const char *jstr(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsString(v) ? v->valuestring : "";
}

static void jnum(FILE *f, const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  if (cJSON_IsNumber(v)) fprintf(f, "%.10g", v->valuedouble);
  else if (cJSON_IsBool(v)) fputs(cJSON_IsTrue(v) ? "true" : "false", f);
}

void report_csv_header(FILE *f) {
  fputs("window_start,window_end,kind,id,name,online,online_rate,baseline,delta_pp,"
        "completeness,availability,volume_m3,volume_flags,last_seen,last_error\n", f);
}

void report_csv_rows(FILE *f, const cJSON *rep) {
  const cJSON *win = cJSON_GetObjectItemCaseSensitive(rep, "window");
  const cJSON *site = cJSON_GetObjectItemCaseSensitive(rep, "site");
  /* A window in progress ends, in the rows, where it was measured to. */
  const char *wend = cJSON_GetObjectItemCaseSensitive(win, "measured_to")
                         ? jstr(win, "measured_to")
                         : jstr(win, "end");
  fprintf(f, "%s,%s,site,", jstr(win, "start"), wend);
  csv_str(f, jstr(site, "id"));
  fputc(',', f);
  csv_str(f, jstr(site, "name"));
  fputc(',', f);
  jnum(f, rep, "meets_baseline");
  fputc(',', f);
  jnum(f, rep, "online_rate");
  fputc(',', f);
  jnum(f, rep, "baseline");
  fputc(',', f);
  jnum(f, rep, "delta_pp");
  fputc(',', f);
  jnum(f, rep, "completeness");
  fputc(',', f);
  jnum(f, rep, "availability");
  fputc(',', f);
  jnum(f, rep, "volume_m3");
  fputs(",,,\n", f);
  const cJSON *m;
  cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(rep, "meters")) {
    fprintf(f, "%s,%s,meter,", jstr(win, "start"), wend);
    csv_str(f, jstr(m, "id"));
    fputc(',', f);
    csv_str(f, jstr(m, "name"));
    fputc(',', f);
    jnum(f, m, "online");
    fputs(",,,,", f);
    jnum(f, m, "completeness");
    fputc(',', f);
    jnum(f, m, "availability");
    fputc(',', f);
    jnum(f, m, "volume_m3");
    fputc(',', f);
    const cJSON *fl;
    bool first = true;
    cJSON_ArrayForEach(fl, cJSON_GetObjectItemCaseSensitive(m, "volume_flags")) {
      fprintf(f, "%s%s", first ? "" : ";", fl->valuestring);
      first = false;
    }
    fputc(',', f);
    csv_str(f, jstr(m, "last_seen"));
    fputc(',', f);
    csv_str(f, jstr(m, "last_error"));
    fputc('\n', f);
  }
}
