#include "fleet/fleetd.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <cjson/cJSON.h>

#include "base/backoff.h"
#include "base/clock.h"
#include "base/log.h"
#include "store/outbox.h"
#include "mqtt/publisher.h"
#include "reports/pusher.h"
#include "reports/rate.h"
#include "base/sdnotify.h"
#include "base/secret.h"
#include "base/service.h"

#define PUBLISH_DEBOUNCE_MS 200
#define PUBLISH_EVERY_MS 60000
#define UNREGISTERED_MAX 10000
/* Gateway window reports kept to assemble fleet reports (oldest replaced). */
#define GW_REPORTS_MAX 4096

typedef struct {
  char id[CFG_ID_MAX];
  bool online;
  char last_error[32];
} gw_report_meter;

typedef struct {
  bool used;
  char site[CFG_ID_MAX];
  char period[CFG_PERIOD_NAME_MAX];
  int64_t start_ms;
  size_t nmeters;
  gw_report_meter *meters;
} gw_report;

typedef struct {
  bool heard;
  bool online;
  int64_t since_ms;
  char last_error[32];
} member_state;

typedef struct {
  char site[CFG_ID_MAX];
  bool heard;
  bool online;
  int64_t since_ms;
} gateway_state;

typedef struct {
  char site[CFG_ID_MAX];
  char meter[CFG_ID_MAX];
  bool online;
} stranger;

typedef struct fleet fleet;

typedef struct {
  fleet *fl;
  rate_period period;
  uv_timer_t timer;
  char topic[256];
} fleet_period;

struct fleet {
  const fleet_cfg *f;
  fleet_period periods[CFG_PERIODS_MAX];
  size_t nperiods;
  gw_report *reports; /* a ring of GW_REPORTS_MAX */
  size_t next_report;
  char filter_reports[256];
  outbox *outbox;  /* reports waiting for the bureau, with push_url */
  pusher *pusher;
  uv_loop_t loop;
  uv_async_t wake;
  service_signals signals;
  sdnotify sd;     /* READY, STATUS, WATCHDOG to systemd */
  bool stuck_told; /* the watchdog is withheld, and the log says why */
  uv_timer_t debounce, periodic, reconnect;
  int64_t reconnect_ms;
  publisher *pub;
  bool connected;
  bool dirty;
  member_state *members;
  gateway_state *gateways;
  size_t ngateways;
  stranger *strangers;
  size_t nstrangers;
  char topic_rate[256];
  char filter[256];
  int64_t started_ms;
};

static int member_index(const fleet *fl, const char *site, const char *meter) {
  for (size_t i = 0; i < fl->f->nmembers; i++)
    if (!strcmp(fl->f->members[i].site, site) && !strcmp(fl->f->members[i].meter, meter))
      return (int)i;
  return -1;
}

static gateway_state *gateway_of(fleet *fl, const char *site) {
  for (size_t i = 0; i < fl->ngateways; i++)
    if (!strcmp(fl->gateways[i].site, site)) return &fl->gateways[i];
  return NULL;
}

static int64_t parse_ts(const char *s) {
  /* "2026-11-28T16:59:12.002Z" as the gateways write it. */
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  const char *end = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
  if (!end) return 0;
  int ms = 0;
  if (*end == '.') ms = atoi(end + 1);
  return (int64_t)timegm(&tm) * 1000 + ms;
}

/* "2026-11-29T01:38:20+08:00" (a report's window edge) as epoch ms. */
static int64_t parse_local_ts(const char *s) {
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  const char *end = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
  if (!end) return -1;
  int hh = 0, mm = 0;
  char sign = '+';
  if (*end != 'Z' && sscanf(end, "%c%2d:%2d", &sign, &hh, &mm) != 3) return -1;
  long off = (hh * 3600L + mm * 60L) * (sign == '-' ? -1 : 1);
  return ((int64_t)timegm(&tm) - off) * 1000;
}

/* Keep a gateway's window report: which of its meters were online. */
static void keep_report(fleet *fl, const char *site, const char *period, cJSON *j) {
  int64_t start = parse_local_ts(
      cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "window"), "start")));
  if (start < 0) return;
  gw_report *r = NULL;
  for (size_t i = 0; i < GW_REPORTS_MAX && !r; i++) {
    gw_report *c = &fl->reports[i];
    if (c->used && c->start_ms == start && !strcmp(c->site, site) &&
        !strcmp(c->period, period))
      r = c;
  }
  if (!r) {
    r = &fl->reports[fl->next_report];
    fl->next_report = (fl->next_report + 1) % GW_REPORTS_MAX;
  }
  free(r->meters);
  memset(r, 0, sizeof *r);
  const cJSON *ms = cJSON_GetObjectItem(j, "meters");
  size_t n = (size_t)cJSON_GetArraySize(ms);
  r->meters = calloc(n ? n : 1, sizeof *r->meters);
  if (!r->meters) return;
  r->used = true;
  snprintf(r->site, sizeof r->site, "%s", site);
  snprintf(r->period, sizeof r->period, "%s", period);
  r->start_ms = start;
  const cJSON *m;
  cJSON_ArrayForEach(m, ms) {
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(m, "id"));
    if (!id || r->nmeters == n) continue;
    gw_report_meter *gm = &r->meters[r->nmeters++];
    snprintf(gm->id, sizeof gm->id, "%s", id);
    gm->online = cJSON_IsTrue(cJSON_GetObjectItem(m, "online"));
    const char *le = cJSON_GetStringValue(cJSON_GetObjectItem(m, "last_error"));
    snprintf(gm->last_error, sizeof gm->last_error, "%s", le ? le : "");
  }
}

static const gw_report *find_report(const fleet *fl, const char *site,
                                    const char *period, int64_t start) {
  for (size_t i = 0; i < GW_REPORTS_MAX; i++) {
    const gw_report *c = &fl->reports[i];
    if (c->used && c->start_ms == start && !strcmp(c->site, site) &&
        !strcmp(c->period, period))
      return c;
  }
  return NULL;
}

/* Per-county rows for the online flags ONLINE[i] of the registered meters,
 * counties in the order they first appear in the register. */
static cJSON *county_rows(const fleet_cfg *f, const bool *online) {
  cJSON *counties = cJSON_CreateArray();
  for (size_t i = 0; i < f->nmembers; i++) {
    const fleet_member *m = &f->members[i];
    bool first = true;
    for (size_t j = 0; j < i && first; j++)
      if (!strcmp(f->members[j].county, m->county)) first = false;
    if (!first) continue;
    size_t tot = 0, on = 0;
    for (size_t j = i; j < f->nmembers; j++) {
      if (strcmp(f->members[j].county, m->county)) continue;
      tot++;
      if (online[j]) on++;
    }
    double r = tot ? (double)on / (double)tot : 0;
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "county", m->county);
    cJSON_AddNumberToObject(c, "meters_total", (double)tot);
    cJSON_AddNumberToObject(c, "meters_online", (double)on);
    cJSON_AddNumberToObject(c, "online_rate", round(r * 1e6) / 1e6);
    cJSON_AddNumberToObject(c, "delta_pp", rate_delta_pp(r, f->baseline));
    cJSON_AddBoolToObject(c, "meets_baseline", rate_meets(r, f->baseline));
    cJSON_AddItemToArray(counties, c);
  }
  return counties;
}

static void add_rate(cJSON *o, const fleet_cfg *f, size_t online) {
  double rate = f->nmembers ? (double)online / (double)f->nmembers : 0;
  cJSON_AddNumberToObject(o, "meters_total", (double)f->nmembers);
  cJSON_AddNumberToObject(o, "meters_online", (double)online);
  cJSON_AddNumberToObject(o, "online_rate", round(rate * 1e6) / 1e6);
  cJSON_AddNumberToObject(o, "baseline", f->baseline);
  cJSON_AddNumberToObject(o, "delta_pp", rate_delta_pp(rate, f->baseline));
  cJSON_AddBoolToObject(o, "meets_baseline", rate_meets(rate, f->baseline));
}

static cJSON *fleet_header(const fleet_cfg *f) {
  cJSON *o = cJSON_CreateObject();
  cJSON *fo = cJSON_AddObjectToObject(o, "fleet");
  cJSON_AddStringToObject(fo, "id", f->id);
  cJSON_AddStringToObject(fo, "name", f->name);
  return o;
}

static void send_doc(fleet *fl, const char *topic, cJSON *o) {
  char *txt = cJSON_PrintUnformatted(o);
  if (txt && fl->connected)
    /* Not taken (out of memory, or the connection going): the next change,
     * or the next connection, publishes the document anew. */
    (void)publisher_send(fl->pub, topic, txt, strlen(txt), 1, true, 0);
  free(txt);
}

/* Pushing: the outbox answers the pusher's questions. */
static void kept_for_push(void *ctx) {
  fleet *fl = ctx;
  pusher_kick(fl->pusher);
}

static void offer_next(void *ctx, int64_t id, const char *body) {
  fleet *fl = ctx;
  if (id)
    pusher_offer(fl->pusher, id, body);
  else
    pusher_offer_none(fl->pusher);
}

static void outbox_failed(void *ctx, const char *what) {
  (void)ctx;
  log_error("outbox: %s", what);
}

static void push_want_next(void *ctx) {
  fleet *fl = ctx;
  outbox_next(fl->outbox, offer_next, fl);
}

static void push_accepted(void *ctx, int64_t id) {
  fleet *fl = ctx;
  log_debug("report %lld accepted by the bureau", (long long)id);
  outbox_mark(fl->outbox, id);
}

static void push_failing(void *ctx, bool failing, const char *detail) {
  fleet *fl = ctx;
  service_push_failing(fl->f->push_url, failing, detail);
}

/* The fleet's report of window [s, e) of period P, from the gateways'
 * reports of that window: a meter whose gateway sent none is offline. */
static void publish_window(fleet *fl, fleet_period *p, int64_t s, int64_t e) {
  const fleet_cfg *f = fl->f;
  bool *online = calloc(f->nmembers ? f->nmembers : 1, sizeof *online);
  if (!online) return;
  cJSON *o = fleet_header(f);
  cJSON_AddStringToObject(o, "period", p->period.name);
  char start[40], buf[40];
  rate_format_local(s, start, sizeof start);
  cJSON *w = cJSON_AddObjectToObject(o, "window");
  cJSON_AddStringToObject(w, "start", start);
  rate_format_local(e, buf, sizeof buf);
  cJSON_AddStringToObject(w, "end", buf);
  rate_format_local(clock_wall_ms(), buf, sizeof buf);
  cJSON_AddStringToObject(o, "generated", buf);
  cJSON *repair = cJSON_CreateArray();
  size_t on = 0, reporting = 0;
  for (size_t i = 0; i < f->nmembers; i++) {
    const fleet_member *m = &f->members[i];
    const gw_report *r = find_report(fl, m->site, p->period.name, s);
    const char *why = "gateway_report_missing";
    if (r) {
      why = "not_in_gateway_report";
      for (size_t k = 0; k < r->nmeters; k++) {
        if (strcmp(r->meters[k].id, m->meter)) continue;
        online[i] = r->meters[k].online;
        why = r->meters[k].last_error[0] ? r->meters[k].last_error : "offline";
      }
    }
    if (online[i]) {
      on++;
      continue;
    }
    cJSON *rr = cJSON_CreateObject();
    cJSON_AddStringToObject(rr, "site", m->site);
    cJSON_AddStringToObject(rr, "id", m->meter);
    cJSON_AddStringToObject(rr, "name", m->name);
    cJSON_AddStringToObject(rr, "county", m->county);
    cJSON_AddStringToObject(rr, "last_error", why);
    cJSON_AddItemToArray(repair, rr);
  }
  for (size_t i = 0; i < GW_REPORTS_MAX; i++)
    if (fl->reports[i].used && fl->reports[i].start_ms == s &&
        !strcmp(fl->reports[i].period, p->period.name))
      reporting++;
  add_rate(o, f, on);
  cJSON_AddNumberToObject(o, "gateways_reporting", (double)reporting);
  cJSON_AddItemToObject(o, "counties", county_rows(f, online));
  cJSON_AddItemToObject(o, "repair", repair);
  log_info("fleet %s report %s: %zu of %zu meters online, %zu gateway reports",
           p->period.name, start, on, f->nmembers, reporting);
  send_doc(fl, p->topic, o);
  if (fl->outbox) {
    char *txt = cJSON_PrintUnformatted(o);
    if (txt && outbox_add(fl->outbox, p->period.name, s, txt, kept_for_push, fl) != 0)
      log_error("outbox: out of memory; a report was not kept");
    free(txt);
  }
  cJSON_Delete(o);
  free(online);
}

/* The fleet's figures now, as a retained JSON document. */
static void publish_rate(fleet *fl) {
  const fleet_cfg *f = fl->f;
  int64_t now = clock_wall_ms();
  bool *online = calloc(f->nmembers ? f->nmembers : 1, sizeof *online);
  if (!online) return;
  cJSON *o = fleet_header(f);
  char buf[40];
  rate_format_local(now, buf, sizeof buf);
  cJSON_AddStringToObject(o, "ts", buf);
  size_t on = 0;
  cJSON *repair = cJSON_CreateArray();
  for (size_t i = 0; i < f->nmembers; i++) {
    const fleet_member *m = &f->members[i];
    const member_state *st = &fl->members[i];
    const gateway_state *g = gateway_of(fl, m->site);
    bool gw_up = g && g->online;
    if (st->online && gw_up) {
      online[i] = true;
      on++;
      continue;
    }
    const char *why = !st->heard ? "never_heard"
                      : !gw_up   ? "gateway_offline"
                      : st->last_error[0] ? st->last_error : "offline";
    int64_t since = !st->heard ? fl->started_ms
                    : (!gw_up && g && g->since_ms) ? g->since_ms
                                                   : st->since_ms;
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "site", m->site);
    cJSON_AddStringToObject(r, "id", m->meter);
    cJSON_AddStringToObject(r, "name", m->name);
    cJSON_AddStringToObject(r, "county", m->county);
    rate_format_local(since, buf, sizeof buf);
    cJSON_AddStringToObject(r, "since", buf);
    cJSON_AddNumberToObject(r, "outage_s", (double)((now - since) / 1000));
    cJSON_AddStringToObject(r, "last_error", why);
    cJSON_AddItemToArray(repair, r);
  }
  add_rate(o, f, on);
  cJSON_AddItemToObject(o, "counties", county_rows(f, online));
  cJSON_AddItemToObject(o, "repair", repair);
  cJSON *un = cJSON_AddArrayToObject(o, "unregistered");
  for (size_t i = 0; i < fl->nstrangers; i++) {
    cJSON *u = cJSON_CreateObject();
    cJSON_AddStringToObject(u, "site", fl->strangers[i].site);
    cJSON_AddStringToObject(u, "id", fl->strangers[i].meter);
    cJSON_AddBoolToObject(u, "online", fl->strangers[i].online);
    cJSON_AddItemToArray(un, u);
  }
  send_doc(fl, fl->topic_rate, o);
  cJSON_Delete(o);
  free(online);
  fl->dirty = false;
}

/* Window reports: due report_grace after each window of a period closes,
 * so that late gateway reports still count. */
static void on_period(uv_timer_t *t);

static void arm_period(fleet_period *p) {
  fleet *fl = p->fl;
  int64_t now = clock_wall_ms(), grace = fl->f->report_grace_ms;
  int64_t s, e;
  rate_window(&p->period, now - grace, &s, &e);
  int64_t delay = e + grace - now;
  uv_update_time(&fl->loop);
  uv_timer_start(&p->timer, on_period, (uint64_t)(delay > 0 ? delay : 0), 0);
}

static void on_period(uv_timer_t *t) {
  fleet_period *p = t->data;
  int64_t s, e;
  /* The window that closed report_grace ago. */
  rate_window(&p->period, clock_wall_ms() - p->fl->f->report_grace_ms - 1, &s, &e);
  publish_window(p->fl, p, s, e);
  arm_period(p);
}

static void on_debounce(uv_timer_t *t) { publish_rate(t->data); }
static void on_periodic(uv_timer_t *t) { publish_rate(t->data); }

static void mark_dirty(fleet *fl) {
  if (fl->dirty) return;
  fl->dirty = true;
  uv_timer_start(&fl->debounce, on_debounce, PUBLISH_DEBOUNCE_MS, 0);
}

/* {prefix}/{site}/{meter}/state or {prefix}/{site}/gateway/state. */
static void handle_message(fleet *fl, const char *topic, const char *payload) {
  const char *prefix = fl->f->mqtt.topic_prefix;
  size_t pl = strlen(prefix);
  if (strncmp(topic, prefix, pl) != 0 || topic[pl] != '/') return;
  char site[CFG_ID_MAX], meter[CFG_ID_MAX], kind[CFG_PERIOD_NAME_MAX];
  if (sscanf(topic + pl + 1, "%63[^/]/%63[^/]/%31s", site, meter, kind) != 3) return;
  if (strcmp(site, "fleet") == 0) return;
  if (strcmp(meter, "report") == 0) {
    cJSON *rj = cJSON_Parse(payload);
    if (!rj) {
      log_warn("fleet: %s: not JSON, ignored", topic);
      return;
    }
    keep_report(fl, site, kind, rj);
    cJSON_Delete(rj);
    return;
  }
  if (strcmp(kind, "state") != 0) return;
  cJSON *j = cJSON_Parse(payload);
  if (!j) {
    log_warn("fleet: %s: not JSON, ignored", topic);
    return;
  }
  const cJSON *on = cJSON_GetObjectItem(j, "online");
  if (!cJSON_IsBool(on)) {
    cJSON_Delete(j);
    return;
  }
  bool online = cJSON_IsTrue(on);
  int64_t since = parse_ts(cJSON_GetStringValue(cJSON_GetObjectItem(j, "since")));
  if (!strcmp(meter, "gateway")) {
    gateway_state *g = gateway_of(fl, site);
    if (!g) {
      gateway_state *ng = realloc(fl->gateways, (fl->ngateways + 1) * sizeof *ng);
      if (!ng) {
        cJSON_Delete(j);
        return;
      }
      fl->gateways = ng;
      g = &fl->gateways[fl->ngateways++];
      memset(g, 0, sizeof *g);
      snprintf(g->site, sizeof g->site, "%s", site);
    }
    if (g->online != online || !g->heard) {
      g->since_ms = clock_wall_ms();
      log_info("gateway %s %s", site, online ? "online" : "offline");
    }
    g->heard = true;
    g->online = online;
  } else {
    int mi = member_index(fl, site, meter);
    if (mi >= 0) {
      member_state *s = &fl->members[mi];
      s->heard = true;
      s->online = online;
      s->since_ms = since ? since : clock_wall_ms();
      s->last_error[0] = '\0';
      const cJSON *le = cJSON_GetObjectItem(j, "last_error");
      const char *k = cJSON_GetStringValue(cJSON_GetObjectItem(le, "kind"));
      if (!online && k) snprintf(s->last_error, sizeof s->last_error, "%s", k);
    } else {
      stranger *st = NULL;
      for (size_t i = 0; i < fl->nstrangers; i++)
        if (!strcmp(fl->strangers[i].site, site) && !strcmp(fl->strangers[i].meter, meter))
          st = &fl->strangers[i];
      if (!st && fl->nstrangers < UNREGISTERED_MAX) {
        stranger *ns = realloc(fl->strangers, (fl->nstrangers + 1) * sizeof *ns);
        if (ns) {
          fl->strangers = ns;
          st = &fl->strangers[fl->nstrangers++];
          snprintf(st->site, sizeof st->site, "%s", site);
          snprintf(st->meter, sizeof st->meter, "%s", meter);
          log_warn("fleet: meter %s of site %s is not in the register", meter, site);
        }
      }
      if (st) st->online = online;
    }
  }
  cJSON_Delete(j);
  mark_dirty(fl);
}

static void on_reconnect(uv_timer_t *t) {
  fleet *fl = t->data;
  if (!fl->connected && publisher_reconnect(fl->pub) != 0)
    uv_timer_start(&fl->reconnect, on_reconnect, 1000, 0);
}

/* The next connection attempt (the publisher leaves the pacing to us):
 * after 1 s doubling to 30 s, 60 s after a refusal, or at once when the
 * next attempt changes what failed. */
static void schedule_reconnect(fleet *fl, bool refused, bool now) {
  int64_t cap = refused ? 60000 : 30000;
  if (!now) {
    backoff_next(&fl->reconnect_ms, 1000, cap);
  }
  uv_timer_start(&fl->reconnect, on_reconnect, now ? 0 : (uint64_t)fl->reconnect_ms, 0);
}

static void on_wake(uv_async_t *a) {
  fleet *fl = a->data;
  pub_event *ev = publisher_take_events(fl->pub);
  for (pub_event *e = ev; e; e = e->next) {
    switch (e->kind) {
      case PUB_EV_CONNECTED:
        fl->connected = true;
        backoff_reset(&fl->reconnect_ms);
        log_info("broker connected: %s", fl->f->mqtt.url);
        int src = publisher_subscribe(fl->pub, fl->filter);
        if (src == 0) src = publisher_subscribe(fl->pub, fl->filter_reports);
        if (src != 0)
          log_error("mqtt: cannot subscribe to the gateways' topics under %s: %s; the "
                    "fleet view hears nothing until the next connection",
                    fl->f->mqtt.topic_prefix, publisher_strerror(src));
        mark_dirty(fl);
        break;
      case PUB_EV_LOST:
        if (fl->connected) log_warn("broker connection lost: %s", e->detail);
        fl->connected = false;
        schedule_reconnect(fl, false, false);
        break;
      case PUB_EV_CONNECT_FAILED:
        schedule_reconnect(fl, e->reason >= 0x80, e->retry_now);
        log_warn("cannot connect to the broker %s: %s; retrying", fl->f->mqtt.url,
                 e->detail);
        break;
      case PUB_EV_MESSAGE:
        handle_message(fl, e->topic, e->payload);
        break;
      default:
        break;
    }
  }
  pub_event_free(ev);
}

/* The watchdog's question: this runs on the loop, so the loop turns; and
 * paho's side gives its attempts and messages an outcome in time. */
static bool fleet_alive(void *ctx, int64_t limit_ms, char *why, size_t len) {
  fleet *fl = ctx;
  bool ok = publisher_progressing(fl->pub, limit_ms, why, len);
  if (!ok)
    log_once(&fl->stuck_told, LOGL_ERROR,
             "watchdog: not telling systemd the fleet view is alive: %s", why);
  else if (fl->stuck_told) {
    fl->stuck_told = false;
    log_info("watchdog: the fleet view makes progress again");
  }
  return ok;
}

/* The STATUS line systemctl status shows. */
static void fleet_describe(void *ctx, char *buf, size_t len) {
  fleet *fl = ctx;
  size_t gw_on = 0, on = 0;
  for (size_t i = 0; i < fl->ngateways; i++)
    if (fl->gateways[i].online) gw_on++;
  for (size_t i = 0; i < fl->f->nmembers; i++)
    if (fl->members[i].online) on++;
  snprintf(buf, len, "%zu gateways heard (%zu online), %zu/%zu meters online%s",
           fl->ngateways, gw_on, on, fl->f->nmembers,
           fl->connected ? "" : ", broker not connected");
}

static void notify(void *ctx) {
  fleet *fl = ctx;
  uv_async_send(&fl->wake);
}

int fleetd_run(const fleet_cfg *f) {
  fleet *fl = calloc(1, sizeof *fl);
  if (!fl) return 1;
  int rc = 1;
  char err[512];
  fl->f = f;
  fl->started_ms = clock_wall_ms();
  fl->members = calloc(f->nmembers, sizeof *fl->members);
  if (!fl->members) goto out_free;
  snprintf(fl->topic_rate, sizeof fl->topic_rate, "%s/fleet/%s/online-rate",
           f->mqtt.topic_prefix, f->id);
  snprintf(fl->filter, sizeof fl->filter, "%s/+/+/state", f->mqtt.topic_prefix);
  snprintf(fl->filter_reports, sizeof fl->filter_reports, "%s/+/report/+",
           f->mqtt.topic_prefix);
  fl->reports = calloc(GW_REPORTS_MAX, sizeof *fl->reports);
  if (!fl->reports) goto out_free;
  /* Windows follow the fleet's time zone, as the gateways' follow theirs. */
  setenv("TZ", f->timezone, 1);
  tzset();
  uv_loop_init(&fl->loop);
  uv_async_init(&fl->loop, &fl->wake, on_wake);
  fl->wake.data = fl;
  publisher_options po = {.url = f->mqtt.url,
                          .client_id = f->mqtt.client_id,
                          .version = f->mqtt.version,
                          .keepalive_s = 30,
                          .notify = notify,
                          .notify_ctx = fl};
  if (publisher_new(&fl->pub, &po, err, sizeof err) != 0) {
    log_error("mqtt: %s", err);
    goto out;
  }
  uv_timer_init(&fl->loop, &fl->debounce);
  uv_timer_init(&fl->loop, &fl->periodic);
  uv_timer_init(&fl->loop, &fl->reconnect);
  fl->debounce.data = fl->periodic.data = fl->reconnect.data = fl;
  uv_timer_start(&fl->periodic, on_periodic, PUBLISH_EVERY_MS, PUBLISH_EVERY_MS);
  for (size_t i = 0; i < f->nperiods; i++) {
    fleet_period *p = &fl->periods[fl->nperiods];
    if (rate_period_parse(f->periods[i], &p->period) != 0) continue;
    p->fl = fl;
    snprintf(p->topic, sizeof p->topic, "%s/fleet/%s/report/%s", f->mqtt.topic_prefix,
             f->id, f->periods[i]);
    uv_timer_init(&fl->loop, &p->timer);
    p->timer.data = p;
    arm_period(p);
    fl->nperiods++;
  }
  service_signals_start(&fl->signals, &fl->loop, NULL, NULL, NULL);
  sdnotify_start(&fl->sd, &fl->loop, fleet_alive, fleet_describe, fl);
  if (f->push_url[0]) {
    if (outbox_open(&fl->outbox, &fl->loop, f->storage_path, outbox_failed, fl, err,
                    sizeof err) != 0) {
      log_error("%s", err);
      goto out;
    }
    char token[SECRET_MAX + 1] = "";
    if (f->token_file[0] &&
        service_read_secret("reports.token_file", f->token_file, token, sizeof token) != 0)
      goto out;
    pusher_options pso = {.url = f->push_url,
                          .ca_file = f->ca_file,
                          .token = token,
                          .timeout_ms = f->push_timeout_ms,
                          .want_next = push_want_next,
                          .accepted = push_accepted,
                          .failing = push_failing,
                          .ctx = fl};
    int prc = pusher_new(&fl->pusher, &fl->loop, &pso, err, sizeof err);
    memset(token, 0, sizeof token);
    if (prc != 0) {
      log_error("reports: %s", err);
      goto out;
    }
    log_info("fleet reports are pushed to %s", f->push_url);
    pusher_kick(fl->pusher); /* whatever an earlier run could not deliver */
  }
  if (publisher_start(fl->pub, err, sizeof err) != 0) {
    log_error("mqtt: %s", err);
    goto out;
  }
  log_info("fleet %s: %zu registered meters, broker %s", f->id, f->nmembers, f->mqtt.url);
  printf("ready: fleet %s, %zu registered meters\n", f->id, f->nmembers);
  fflush(stdout);
  sdnotify_ready(&fl->sd);
  uv_run(&fl->loop, UV_RUN_DEFAULT);
  sdnotify_stop(&fl->sd);
  publish_rate(fl);
  rc = 0;
out:
  if (fl->pub) {
    publisher_stop(fl->pub, 300);
    publisher_free(fl->pub);
  }
  pusher_close(fl->pusher);
  service_close_all(&fl->loop);
  pusher_free(fl->pusher);
  outbox_free(fl->outbox);
  uv_loop_close(&fl->loop);
out_free:
  if (fl->reports)
    for (size_t i = 0; i < GW_REPORTS_MAX; i++) free(fl->reports[i].meters);
  free(fl->reports);
  free(fl->members);
  free(fl->gateways);
  free(fl->strangers);
  free(fl);
  return rc;
}
