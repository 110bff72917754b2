/* Report periods: their timers, the reporter's reports published and
 * pushed to the bureau. */
#include "gateway/gw_impl.h"

/* Reports: ask for every window of each period closed by now. */
static void on_period(uv_timer_t *t);

void gw__arm_period(period_rt *p) {
  gw *d = p->d;
  int64_t now = clock_wall_ms();
  int64_t s, e;
  rate_window(&d->periods[p->index], now - REPORT_GRACE_MS, &s, &e);
  int64_t delay = e + REPORT_GRACE_MS - now;
  if (delay < 0) delay = 0;
  uv_update_time(&d->loop);
  uv_timer_start(&p->timer, on_period, (uint64_t)delay, 0);
}

void gw__request_reports(period_rt *p) {
  gw *d = p->d;
  int64_t s, e;
  /* The window in progress starts where the last closed one ends. */
  rate_window(&d->periods[p->index], clock_wall_ms() - REPORT_GRACE_MS, &s, &e);
  /* Refused only when out of memory: the next period's request asks for
   * every window not reported yet, this one too. */
  (void)reporter_request(d->reporter, p->index, s);
}

static void on_period(uv_timer_t *t) {
  period_rt *p = t->data;
  if (p->d->stopping) return;
  gw__request_reports(p);
  gw__arm_period(p);
}

/* The pusher's questions, answered by the reporter (its results come back
 * through gw__handle_report). */
void gw__push_want_next(void *ctx) {
  gw *d = ctx;
  if (reporter_next_push(d->reporter) != 0) pusher_offer_none(d->pusher);
}

void gw__push_accepted(void *ctx, int64_t id) {
  gw *d = ctx;
  log_debug("report %lld accepted by the bureau", (long long)id);
  /* Not recorded (out of memory): the report is pushed again later, and the
   * bureau takes a report again by its window. */
  (void)reporter_mark_pushed(d->reporter, id);
}

void gw__push_failing(void *ctx, bool failing, const char *detail) {
  gw *d = ctx;
  service_push_failing(d->cfg->reports.push_url, failing, detail);
}

void gw__publish_latest_reports(gw *d) {
  if (!d->connected) return;
  for (size_t i = 0; i < d->nperiods; i++) {
    period_rt *p = &d->period_rt[i];
    if (d->reports_refused) continue; /* kept in the database */
    if (!p->pending && p->latest) gw__publish_report_text(d, p->topic, p->latest);
    while (p->pending) {
      pending_report *r = p->pending;
      if (gw__publish_report_text(d, p->topic, r->body) != 0) break;
      p->pending = r->next;
      if (!p->pending) p->pending_tail = &p->pending;
      p->npending--;
      free(r->body);
      free(r);
    }
  }
}

void gw__handle_report(gw *d, reporter_result *r) {
  if (r->kind == REPORTER_TO_PUSH) {
    if (d->pusher && !d->stopping) pusher_offer(d->pusher, r->id, r->body);
    return;
  }
  if (r->kind == REPORTER_NOTHING_TO_PUSH) {
    if (r->error[0]) log_error("report: %s", r->error);
    if (d->pusher) pusher_offer_none(d->pusher);
    return;
  }
  period_rt *p = &d->period_rt[r->period];
  if (r->error[0]) {
    log_error("report: %s", r->error);
    if (!r->body) return;
  }
  cJSON *rep = cJSON_Parse(r->body);
  if (rep) {
    const cJSON *win = cJSON_GetObjectItem(rep, "window");
    const cJSON *rate = cJSON_GetObjectItem(rep, "online_rate");
    const cJSON *on = cJSON_GetObjectItem(rep, "meters_online");
    const cJSON *tot = cJSON_GetObjectItem(rep, "meters_total");
    const cJSON *rep_list = cJSON_GetObjectItem(rep, "repair");
    log_info("%s report %s: %d of %d meters online, rate %.2f %% (baseline %.2f %%), "
             "%d to repair", d->periods[r->period].name,
             cJSON_GetStringValue(cJSON_GetObjectItem(win, "start")),
             on ? on->valueint : 0, tot ? tot->valueint : 0,
             rate ? rate->valuedouble * 100 : 0, d->cfg->online.baseline * 100,
             cJSON_GetArraySize(rep_list));
    cJSON_Delete(rep);
  }
  /* Every report goes out, in order; the retained one is the newest. */
  if (p->npending >= REPORTER_CATCHUP_MAX) {
    pending_report *old = p->pending;
    p->pending = old->next;
    if (!p->pending) p->pending_tail = &p->pending;
    p->npending--;
    free(old->body);
    free(old);
    log_warn("%s reports: the broker is away; dropping the oldest unsent one "
             "(it stays in the database)", d->periods[r->period].name);
  }
  pending_report *pr = calloc(1, sizeof *pr);
  if (!pr) return;
  free(p->latest);
  p->latest = strdup(r->body);
  pr->body = r->body;
  r->body = NULL;
  *p->pending_tail = pr;
  p->pending_tail = &pr->next;
  p->npending++;
  gw__publish_latest_reports(d);
  pusher_kick(d->pusher);
}
