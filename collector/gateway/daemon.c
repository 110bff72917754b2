#include "gateway/daemon.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <uv.h>

#include <cjson/cJSON.h>

#include "base/backoff.h"
#include "poll/busload.h"
#include "poll/busworker.h"
#include "poll/netbus.h"
#include "base/clock.h"
#include "base/log.h"
#include "meter/mstate.h"
#include "profile/planner.h"
#include "mqtt/publisher.h"
#include "reports/pusher.h"
#include "meter/quality.h"
#include "reports/rate.h"
#include "base/secret.h"
#include "meter/reading.h"
#include "reports/reporter.h"
#include "store/store.h"

/* Failure kinds counted in the gateway state, in tr_code order (-1..-8). */
#define NFAILKINDS 8

/* In-flight QoS 1 numbered readings we allow; replay only uses the lower
 * half so live readings always find room. paho's window is larger by
 * SITE_HEADROOM, so that state, online-rate and report messages, and the
 * readings sent live while the database cannot take them, are never refused
 * for want of room when readings fill their share. */
#define MAX_INFLIGHT 1024
#define SITE_HEADROOM 256
/* Committed readings published per loop turn: about 2 ms of the loop's
 * time at most, so that a slot is never held up longer by a big commit. */
#define PUB_CHUNK 64
/* Historical readings sent per second at most while live polling goes on,
 * budgeted per tick; within a tick the replay asks for more as soon as
 * acknowledgements make room, so the broker's pace sets the rate. */
#define REPLAY_RATE 50000
#define REPLAY_TICK_MS 100
/* Ask the store for replay rows in batches of at least this many (unless
 * the tick's budget is smaller), not one row per acknowledgement. */
#define REPLAY_MIN_BATCH 64
/* A wall-clock step larger than this re-aligns the schedule. */
#define CLOCK_JUMP_MS 1000
#define GATEWAY_STATE_MS 60000
/* Meter state changes within this long share one gateway state and one
 * online-rate message. */
#define SITE_COALESCE_MS 200
/* A report is built this long after its window closes, so that readings of
 * the window's last slots are committed. */
#define REPORT_GRACE_MS 1500
/* At the first connect, the meters' retained sequence reservations are read
 * back for at most this long (they come right after the SUBACK; a meter
 * never announced has none). */
#define SEQ_READ_MS 2000
/* A meter's numbers are reserved (and announced) about this long ahead: a
 * database restored from a copy older than that is told apart. */
#define SEQ_BLOCK_MS 10000

/* Where the check of sequence numbers against the broker stands (see
 * docs/daemon.md, "A database restored from a backup"). */
typedef enum {
  SEQ_UNCHECKED, /* not yet: no reading is published */
  SEQ_READING,   /* subscribed to the reservations, reading them */
  SEQ_STORING,   /* handed to the store, waiting for its answer */
  SEQ_CHECKED,   /* readings may go */
} seq_phase;

typedef struct gw gw;

typedef struct {
  gw *d;
  const cfg_meter *cfg;
  uint32_t index;
  mstate st;
  quality_prev qprev;
  uv_timer_t timer;
  int64_t due_ms;   /* wall time of the next slot */
  int64_t phase_ms; /* offset of this meter's slots within the interval */
  int64_t retry_at_ms; /* while offline: no poll before this (back-off) */
  bool pending;     /* a poll is queued or running on the bus worker */
  bool refused;     /* the broker refuses this meter's topics: hold them back */
  bool too_big_told; /* a reading larger than the broker takes was logged */
  char *topic_reading; /* "{prefix}/{site}/{meter}/reading", .../state and */
  char *topic_state;   /* .../seq: one allocation of their exact size */
  char *topic_seq;
  int64_t seq_reserved;    /* the store's reservation, as last heard */
  int64_t seq_announced;   /* the reservation announced on this connection */
  int64_t broker_reserved; /* read back at the first connect (0: none) */
} meter_rt;

typedef struct {
  gw *d;
  int index;
  uv_timer_t timer;
  char topic[256];
  /* Reports not yet handed to the broker, oldest first (bounded by the
   * reporter's catch-up limit): every one goes out, in order. */
  struct pending_report *pending, **pending_tail;
  size_t npending;
  /* The newest report, sent again at every connect: a retained message lost
   * with a dropped connection (clean sessions) would leave the topic stale. */
  char *latest;
} period_rt;

typedef struct pending_report {
  struct pending_report *next;
  char *body;
} pending_report;

struct gw {
  const cfg *cfg;
  rate_period periods[CFG_PERIODS_MAX];
  period_rt period_rt[CFG_PERIODS_MAX];
  size_t nperiods;
  reporter *reporter;
  char topic_rate[256];
  /* Pushing reports to the bureau: one post at a time, oldest first. */
  pusher *pusher;
  uv_loop_t loop;
  uv_async_t wake;
  uv_signal_t sigterm, sigint;
  uv_timer_t gw_timer, replay_timer;
  /* Sequence numbers against the broker's retained reservations. */
  seq_phase seq_phase;
  uv_timer_t seq_timer;
  size_t seq_heard;
  uint64_t seq_sync;   /* the marker that ends the reading */
  char seq_filter[256];
  char topic_seq_sync[256];
  char connect_fail_told[256]; /* the last connect failure logged */
  uv_timer_t site_timer; /* coalesces the site topics after state changes */
  store *store;
  publisher *pub;
  busworker **workers; /* serial lines; NULL for network buses */
  netbuses *net;       /* the TCP and RTU-over-TCP buses, on the loop */
  mb_plan **plans;
  meter_rt *meters;
  int64_t started_ms;
  bool stopping;
  bool connected;
  bool storage_over;
  /* Site topics the broker refused: held back until restart, as meters are. */
  bool gateway_refused, rate_refused, reports_refused;
  uv_timer_t maint_timer;
  uv_timer_t reconnect_timer; /* after a lost connection or a failed attempt */
  int64_t reconnect_ms;
  pub_limits lim;             /* the current connection's, from its CONNACK */
  bool told_fallback, told_no_retain, told_keepalive;
  /* A message the broker closed the connection on (the oldest one then
   * unacknowledged), and how many losses in a row it was that one. At two
   * its topic is set aside, held back like a refused one. */
  uint64_t suspect_tag;
  int suspect_losses;
  uint64_t set_aside;
  bool too_big_told[3];       /* gateway state, online rate, report */
  size_t inflight;
  int64_t max_committed_id;
  /* Committed readings waiting to go out live, oldest first. A commit can
   * hold a thousand readings; they go out PUB_CHUNK per loop turn, so the
   * slot timers run in between instead of waiting for all of them. */
  store_event *pubq_head, *pubq_tail;
  store_reading *pubq_next; /* the next reading of pubq_head */
  uv_idle_t pub_idle;
  bool replay_active, replay_requested;
  int64_t replay_cursor, replay_upto;
  int64_t replay_req_upto;    /* replay_upto when the batch was asked for */
  unsigned replay_stale;      /* batches asked for before the connection
                                 changed, still to come: ignored */
  store_event *replay_ev;     /* the replay batch being sent */
  store_reading *replay_next; /* its next reading */
  uint64_t replay_sent;
  int64_t replay_started_ms; /* monotonic, for the pace in the log */
  size_t replay_budget; /* rows this tick may still send */
  int64_t *acks;        /* rows acknowledged in this wake-up */
  size_t nacks, acks_cap;
  /* Wall-clock steps: wall minus monotonic as last seen, the steps so far,
   * the last one's size and (wall) time, and the
   * readings of this run (ids above run_from_id) that a step can flag. */
  int64_t clock_base_ms;
  uint64_t clock_steps;
  int64_t last_step_ms, last_step_wall_ms;
  /* The latest steps: the wall-minus-monotonic base before each, and its
   * size (see step_after). */
  struct { int64_t base_before, step; } steps[16];
  int64_t run_from_id;
  int64_t last_refusal_log_ms;
  char topic_gateway[256];
  /* counters for the gateway state */
  uint64_t polls, successes, suspect, skipped;
  uint64_t failures[NFAILKINDS + 1];
  uint64_t published, delivered, refused, historical, unstored;
  uint64_t too_large;         /* messages larger than the broker takes */
};

static const char *fail_name(int code) { return tr_code_name(code); }

/* A message's tag carries the row id of a reading (0 for a state message) and
 * the index of its meter plus one (0 when the meter is not configured), so an
 * acknowledgement or a refusal can be traced to both. */
#define TAG_METER_BITS 16
static uint64_t make_tag(int64_t row, int meter) {
  return ((uint64_t)row << TAG_METER_BITS) | (uint64_t)(meter + 1);
}
static int64_t tag_row(uint64_t tag) { return (int64_t)(tag >> TAG_METER_BITS); }
static int tag_meter(uint64_t tag) {
  return (int)(tag & ((1u << TAG_METER_BITS) - 1)) - 1;
}

/* Site-level topics tagged in the meter field (configurations hold at most
 * 10,000 meters), so a refusal of one of them is traced too. */
enum { TAG_GATEWAY = 60000, TAG_RATE, TAG_REPORTS };

/* ------------------------------------------------------------------------ */
/* Publishing helpers                                                       */

/* Does a TOPIC message of LEN bytes fit the broker's Maximum Packet Size? */
static bool fits(gw *d, const char *topic, size_t len) {
  return !d->lim.maximum_packet_size ||
         publisher_packet_size(d->pub, topic, len, 1) <= d->lim.maximum_packet_size;
}

/* A site document (online rate, report) larger than the broker's Maximum
 * Packet Size is trimmed to fit rather than never delivered: first its
 * per-meter list goes ("meters_omitted": how many), then the repair list
 * loses entries from its end, the shortest outages ("repair_omitted": how
 * many). The rate, the counts and the longest outages stay. Returns the text
 * to send (perhaps still too large), or NULL. */
static char *fit_document(gw *d, const char *topic, cJSON *o) {
  char *s = cJSON_PrintUnformatted(o);
  if (!s || fits(d, topic, strlen(s))) return s;
  cJSON *meters = cJSON_GetObjectItemCaseSensitive(o, "meters");
  if (cJSON_IsArray(meters)) {
    int n = cJSON_GetArraySize(meters);
    cJSON_DeleteItemFromObjectCaseSensitive(o, "meters");
    cJSON_AddNumberToObject(o, "meters_omitted", n);
    free(s);
    s = cJSON_PrintUnformatted(o);
    if (!s || fits(d, topic, strlen(s))) return s;
  }
  cJSON *repair = cJSON_GetObjectItemCaseSensitive(o, "repair");
  int n = cJSON_IsArray(repair) ? cJSON_GetArraySize(repair) : 0;
  if (n == 0) return s;
  /* The size with k entries kept is the size with none plus the first k
   * entries and their commas: find the largest k that fits in one pass. */
  size_t *len = calloc((size_t)n, sizeof *len);
  if (!len) return s;
  int i = 0;
  for (cJSON *it = repair->child; it && i < n; it = it->next, i++) {
    char *t = cJSON_PrintUnformatted(it);
    len[i] = t ? strlen(t) : 0;
    free(t);
  }
  cJSON *kept = cJSON_DetachItemFromObjectCaseSensitive(o, "repair");
  cJSON_AddItemToObject(o, "repair", cJSON_CreateArray());
  cJSON *omitted = cJSON_AddNumberToObject(o, "repair_omitted", n);
  free(s);
  s = cJSON_PrintUnformatted(o);
  size_t size = s ? strlen(s) : 0;
  int k = 0;
  while (s && k < n && fits(d, topic, size + len[k] + (k ? 1 : 0))) size += len[k] + (k ? 1 : 0), k++;
  free(len);
  free(s);
  cJSON_DeleteItemFromObjectCaseSensitive(o, "repair");
  while (cJSON_GetArraySize(kept) > k) cJSON_DeleteItemFromArray(kept, k);
  cJSON_AddItemToObject(o, "repair", kept);
  cJSON_SetNumberValue(omitted, n - k);
  return cJSON_PrintUnformatted(o);
}

/* A site message (TAG_GATEWAY, TAG_RATE or TAG_REPORTS) that does not fit
 * even trimmed: counted, logged once per topic kind. */
static void too_large(gw *d, int site_tag, const char *topic, size_t len) {
  d->too_large++;
  bool *told = &d->too_big_told[site_tag - TAG_GATEWAY];
  if (*told) return;
  *told = true;
  log_warn("mqtt: %s: a message of %zu bytes is larger than the broker takes (Maximum "
           "Packet Size %u): not sent",
           topic, len, (unsigned)d->lim.maximum_packet_size);
}

/* Publish a JSON document at QoS 1; METER >= 0 tags it so that a refusal is
 * traced to that meter. */
static void publish_json(gw *d, const char *topic, cJSON *o, bool retained,
                         int meter) {
  if (!d->connected) return;
  char *s = fit_document(d, topic, o);
  if (!s) return;
  if (publisher_send(d->pub, topic, s, strlen(s), 1, retained,
                     meter >= 0 ? make_tag(0, meter) : 0) == PUB_ETOOBIG) {
    if (meter >= TAG_GATEWAY && meter <= TAG_REPORTS) {
      too_large(d, meter, topic, strlen(s));
    } else {
      d->too_large++;
      if (meter >= 0 && meter < (int)d->cfg->nmeters && !d->meters[meter].too_big_told) {
        d->meters[meter].too_big_told = true;
        log_warn("mqtt: %s: a message of %zu bytes is larger than the broker takes "
                 "(Maximum Packet Size %u): not sent",
                 topic, strlen(s), (unsigned)d->lim.maximum_packet_size);
      }
    }
  }
  free(s);
}

/* Publish a report's text, trimmed like any site document when it is larger
 * than the broker takes. 0 when taken. */
static int publish_report_text(gw *d, const char *topic, const char *body) {
  if (fits(d, topic, strlen(body)))
    return publisher_send(d->pub, topic, body, strlen(body), 1, true,
                          make_tag(0, TAG_REPORTS));
  cJSON *o = cJSON_Parse(body);
  char *s = o ? fit_document(d, topic, o) : NULL;
  cJSON_Delete(o);
  if (!s) return PUB_ENOMEM;
  int rc = publisher_send(d->pub, topic, s, strlen(s), 1, true, make_tag(0, TAG_REPORTS));
  if (rc == PUB_ETOOBIG) {
    too_large(d, TAG_REPORTS, topic, strlen(s));
    rc = 0; /* it never will fit: do not keep it pending */
  }
  free(s);
  return rc;
}

static void add_ts(cJSON *o, const char *key, int64_t ms) {
  char ts[CLOCK_RFC3339_LEN + 8];
  cJSON_AddStringToObject(o, key, clock_format_rfc3339(ms, ts, sizeof ts));
}

static void publish_meter_state(gw *d, meter_rt *m) {
  if (m->st.state == MSTATE_UNKNOWN || m->refused) return;
  cJSON *o = cJSON_CreateObject();
  cJSON_AddBoolToObject(o, "online", m->st.state == MSTATE_ONLINE);
  add_ts(o, "since", m->st.since_ms);
  if (m->st.last_error) {
    cJSON *e = cJSON_AddObjectToObject(o, "last_error");
    cJSON_AddStringToObject(e, "kind", fail_name(m->st.last_error));
    cJSON_AddStringToObject(e, "detail", m->st.last_error_detail);
  } else {
    cJSON_AddNullToObject(o, "last_error");
  }
  if (m->st.last_valid_ms) add_ts(o, "last_valid", m->st.last_valid_ms);
  publish_json(d, m->topic_state, o, true, (int)m->index);
  cJSON_Delete(o);
}

static void publish_gateway_state(gw *d, bool online) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddBoolToObject(o, "online", online);
  cJSON_AddStringToObject(o, "version", IC_VERSION);
  add_ts(o, "started", d->started_ms);
  add_ts(o, "ts", clock_wall_ms());
  size_t on = 0;
  for (size_t i = 0; i < d->cfg->nmeters; i++)
    if (d->meters[i].st.state == MSTATE_ONLINE) on++;
  cJSON_AddNumberToObject(o, "meters_online", (double)on);
  cJSON_AddNumberToObject(o, "meters_total", (double)d->cfg->nmeters);
  store_stats ss;
  store_get_stats(d->store, &ss);
  cJSON_AddStringToObject(o, "storage", ss.failing ? "failing" : "ok");
  if (d->clock_steps) {
    cJSON *k = cJSON_AddObjectToObject(o, "clock_step");
    cJSON_AddNumberToObject(k, "ms", (double)d->last_step_ms);
    add_ts(k, "at", d->last_step_wall_ms);
  }
  cJSON *c = cJSON_AddObjectToObject(o, "counters");
  cJSON_AddNumberToObject(c, "polls", (double)d->polls);
  cJSON_AddNumberToObject(c, "readings", (double)d->successes);
  cJSON_AddNumberToObject(c, "suspect", (double)d->suspect);
  cJSON *f = cJSON_AddObjectToObject(c, "failures");
  for (int k = 1; k <= NFAILKINDS; k++)
    cJSON_AddNumberToObject(f, fail_name(-k), (double)d->failures[k]);
  cJSON_AddNumberToObject(c, "skipped_slots", (double)d->skipped);
  cJSON_AddNumberToObject(c, "outbox", (double)ss.undelivered);
  cJSON_AddNumberToObject(c, "rows_dropped", (double)ss.dropped);
  cJSON_AddNumberToObject(c, "rows_removed", (double)ss.removed);
  cJSON_AddNumberToObject(c, "storage_errors", (double)ss.errors);
  cJSON_AddNumberToObject(c, "held_in_memory", (double)ss.held);
  cJSON_AddNumberToObject(c, "unstored_published", (double)d->unstored);
  cJSON_AddNumberToObject(c, "published", (double)d->published);
  cJSON_AddNumberToObject(c, "delivered", (double)d->delivered);
  cJSON_AddNumberToObject(c, "refused", (double)d->refused);
  cJSON_AddNumberToObject(c, "historical", (double)d->historical);
  cJSON_AddNumberToObject(c, "clock_steps", (double)d->clock_steps);
  cJSON_AddNumberToObject(c, "too_large", (double)d->too_large);
  cJSON_AddNumberToObject(c, "set_aside", (double)d->set_aside);
  if (d->connected) {
    /* What this connection to the broker is, from its CONNACK. */
    cJSON *m = cJSON_AddObjectToObject(o, "mqtt");
    cJSON_AddStringToObject(m, "version", d->lim.version == 5 ? "5" : "3.1.1");
    cJSON_AddBoolToObject(m, "fallback", d->lim.fell_back);
    cJSON_AddNumberToObject(m, "receive_maximum", d->lim.receive_maximum);
    cJSON_AddNumberToObject(m, "maximum_packet_size", d->lim.maximum_packet_size);
    cJSON_AddBoolToObject(m, "retain_available", d->lim.retain_available);
    double p50, p99;
    if (publisher_rtt(d->pub, &p50, &p99)) {
      cJSON *r = cJSON_AddObjectToObject(m, "rtt_ms");
      cJSON_AddNumberToObject(r, "p50", round(p50 * 1000) / 1000);
      cJSON_AddNumberToObject(r, "p99", round(p99 * 1000) / 1000);
    }
  }
  if (!d->gateway_refused) publish_json(d, d->topic_gateway, o, true, TAG_GATEWAY);
  cJSON_Delete(o);
}

typedef struct {
  size_t meter;
  int64_t since;
  const char *error;
} repair_item;

/* Earliest outage start (longest outage) first, then by meter order. */
static int by_since(const void *a, const void *b) {
  const repair_item *x = a, *y = b;
  if (x->since != y->since) return x->since < y->since ? -1 : 1;
  return x->meter < y->meter ? -1 : (x->meter > y->meter);
}

/* The retained online-rate topic: the site's rate now, by the same rule as
 * the meters' state topics, with the same keys as the reports. */
static void publish_online_rate(gw *d) {
  const cfg *c = d->cfg;
  int64_t now = clock_wall_ms();
  size_t on = 0;
  cJSON *o = cJSON_CreateObject();
  cJSON *site = cJSON_AddObjectToObject(o, "site");
  cJSON_AddStringToObject(site, "id", c->site.id);
  cJSON_AddStringToObject(site, "name", c->site.name);
  char buf[40];
  rate_format_local(now, buf, sizeof buf);
  cJSON_AddStringToObject(o, "ts", buf);
  cJSON *meters = cJSON_CreateArray();
  cJSON *repair = cJSON_CreateArray();
  repair_item *items = calloc(c->nmeters ? c->nmeters : 1, sizeof *items);
  size_t nitems = 0;
  for (size_t i = 0; i < c->nmeters; i++) {
    const meter_rt *m = &d->meters[i];
    bool online = m->st.state == MSTATE_ONLINE;
    if (online) on++;
    cJSON *mo = cJSON_CreateObject();
    cJSON_AddStringToObject(mo, "id", m->cfg->id);
    cJSON_AddBoolToObject(mo, "online", online);
    if (m->st.last_valid_ms) {
      rate_format_local(m->st.last_valid_ms, buf, sizeof buf);
      cJSON_AddStringToObject(mo, "last_seen", buf);
    } else {
      cJSON_AddNullToObject(mo, "last_seen");
    }
    const char *err = m->st.last_error ? fail_name(m->st.last_error) : NULL;
    if (!online && !err) err = m->st.last_valid_ms ? "no_valid_reading" : "never_seen";
    if (err) cJSON_AddStringToObject(mo, "last_error", err);
    else cJSON_AddNullToObject(mo, "last_error");
    cJSON_AddItemToArray(meters, mo);
    if (!online && items) {
      items[nitems].meter = i;
      items[nitems].since = m->st.state == MSTATE_OFFLINE ? m->st.since_ms
                            : m->st.last_valid_ms         ? m->st.last_valid_ms
                                                          : d->started_ms;
      items[nitems].error = err;
      nitems++;
    }
  }
  /* Longest outage first, as in the reports. */
  if (items) qsort(items, nitems, sizeof *items, by_since);
  for (size_t k = 0; k < nitems; k++) {
    const meter_rt *m = &d->meters[items[k].meter];
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "id", m->cfg->id);
    cJSON_AddStringToObject(r, "name", m->cfg->name);
    rate_format_local(items[k].since, buf, sizeof buf);
    cJSON_AddStringToObject(r, "since", buf);
    cJSON_AddNumberToObject(r, "outage_s", (double)((now - items[k].since) / 1000));
    cJSON_AddStringToObject(r, "last_error", items[k].error);
    cJSON_AddItemToArray(repair, r);
  }
  free(items);
  double rate = c->nmeters ? (double)on / (double)c->nmeters : 0;
  cJSON_AddNumberToObject(o, "meters_total", (double)c->nmeters);
  cJSON_AddNumberToObject(o, "meters_online", (double)on);
  cJSON_AddNumberToObject(o, "online_rate", round(rate * 1e6) / 1e6);
  cJSON_AddNumberToObject(o, "baseline", c->online.baseline);
  cJSON_AddNumberToObject(o, "delta_pp",
                          rate_delta_pp(rate, c->online.baseline));
  cJSON_AddBoolToObject(o, "meets_baseline", rate_meets(rate, c->online.baseline));
  cJSON_AddItemToObject(o, "meters", meters);
  cJSON_AddItemToObject(o, "repair", repair);
  if (!d->rate_refused) publish_json(d, d->topic_rate, o, true, TAG_RATE);
  cJSON_Delete(o);
}

static void publish_latest_reports(gw *d);
static void handle_report(gw *d, reporter_result *r);

/* Send one committed reading; TAG is its row id. */
/* How sending a reading went. */
typedef enum {
  SEND_OK = 0,
  SEND_LATER,  /* held back or not taken now (window full or disconnected) */
  SEND_NEVER,  /* it cannot be sent at all (its payload cannot be built, or
                  it is larger than the broker takes, or set aside) */
} send_result;



/* A reading's message: in BUF (LEN bytes) when it fits, which it does for
 * all but profiles of many fields, else in a heap block left in *HEAP. */
static int reading_message(const store_reading *r, int64_t seq, bool historical, char *buf,
                           size_t len, char **heap, const char **out) {
  *heap = NULL;
  *out = buf;
  /* ts, seq, quality and the flags take well under 256 bytes. */
  size_t need = strlen(r->fields) + 256;
  if (need > len) {
    if (!(*heap = malloc(need))) return -1;
    *out = buf = *heap;
    len = need;
  }
  return reading_payload(buf, len, r->ts_ms, seq, r->fields, r->quality != 0, historical,
                         r->clock_step_ms);
}

/* Announce meter M's reservation (retained) before a reading numbered
 * within it goes out on this connection: the broker then knows every number
 * published, also after the database is replaced by an older copy. */
static int announce_seq(gw *d, meter_rt *m, int64_t reserved) {
  char body[128], ts[CLOCK_RFC3339_LEN + 8];
  int n = snprintf(body, sizeof body, "{\"reserved\":%lld,\"ts\":\"%s\"}",
                   (long long)reserved, clock_format_rfc3339(clock_wall_ms(), ts, sizeof ts));
  int rc = publisher_send(d->pub, m->topic_seq, body, (size_t)n, 1, true,
                          make_tag(0, (int)m->index));
  if (rc == 0) m->seq_announced = reserved;
  return rc;
}

/* Send reading R as the message PAYLOAD (N bytes, or N < 0: it could not be
 * written). */
static send_result send_reading_text(gw *d, const store_reading *r, const char *payload,
                                     int n) {
  if (n < 0) {
    log_warn("reading %lld of meter %s cannot be written as a message; left in the "
             "outbox", (long long)r->id, r->meter);
    return SEND_NEVER;
  }
  char topic[256];
  const char *t = topic;
  int mi = r->meter_index >= 0 ? r->meter_index : cfg_meter_index(d->cfg, r->meter);
  if (mi >= 0 && d->meters[mi].refused) return SEND_LATER;
  if (mi >= 0 && r->seq > d->meters[mi].seq_announced && d->lim.retain_available) {
    meter_rt *m = &d->meters[mi];
    int64_t h = m->seq_reserved;
    if (r->seq_reserved > h) h = r->seq_reserved;
    if (r->seq > h) h = r->seq; /* not expected: the store reserves first */
    if (announce_seq(d, m, h) != 0) return SEND_LATER;
  }
  if (mi >= 0) {
    t = d->meters[mi].topic_reading;
  } else {
    snprintf(topic, sizeof topic, "%s/%s/%s/reading", d->cfg->mqtt.topic_prefix,
             d->cfg->site.id, r->meter);
  }
  int rc = publisher_send(d->pub, t, payload, (size_t)n, 1, false, make_tag(r->id, mi));
  if (rc == PUB_ETOOBIG) {
    /* Kept in the outbox: a broker with a larger limit takes it later. */
    d->too_large++;
    if (mi >= 0 && !d->meters[mi].too_big_told) {
      d->meters[mi].too_big_told = true;
      log_warn("mqtt: a reading of meter %s is %d bytes, larger than the broker "
               "takes (Maximum Packet Size %u): such readings stay in the outbox",
               r->meter, n, (unsigned)d->lim.maximum_packet_size);
    }
    return SEND_NEVER;
  }
  if (rc != 0) return SEND_LATER;
  d->inflight++;
  d->published++;
  if (r->historical) d->historical++;
  return SEND_OK;
}

static send_result send_reading(gw *d, const store_reading *r) {
  char buf[4096], *heap;
  const char *payload;
  int n = reading_message(r, r->seq, r->historical, buf, sizeof buf, &heap, &payload);
  send_result res = send_reading_text(d, r, payload, n);
  free(heap);
  return res;
}

/* Send a reading the database could not take: no sequence number, marked
 * unstored, not counted in flight (its delivery marks no row). */
static void send_unstored(gw *d, const store_reading *r) {
  char buf[4096], *heap;
  const char *payload;
  int n = reading_message(r, 0, false, buf, sizeof buf, &heap, &payload);
  int mi = r->meter_index;
  if (n >= 0 && mi >= 0 && !d->meters[mi].refused &&
      publisher_send(d->pub, d->meters[mi].topic_reading, payload, (size_t)n, 1, false,
                     make_tag(0, mi)) == 0) {
    d->published++;
    d->unstored++;
  }
  free(heap);
}

/* ------------------------------------------------------------------------ */
/* Replay                                                                   */

/* Ask the store for the next replay rows if the in-flight window (its lower
 * half: live readings keep the rest) and this tick's budget have room. */
static bool may_deliver(const gw *d) {
  return d->connected && d->seq_phase == SEQ_CHECKED;
}

static void replay_more(gw *d) {
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
  replay_more(d);
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

static int64_t step_after(const gw *d, int64_t base);

/* Free the publish queue. */
static void pubq_free(gw *d) {
  store_event_free(d->pubq_head); /* the events are chained */
  d->pubq_head = d->pubq_tail = NULL;
  d->pubq_next = NULL;
}

/* Publish up to PUB_CHUNK queued readings (the caller comes back on the
 * next loop turn while some are left). */
static void publish_committed(gw *d) {
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
    if (!r->clock_step_ms && r->taken_base_ms) r->clock_step_ms = step_after(d, r->taken_base_ms);
    send_result sr = SEND_LATER;
    if (may_deliver(d) && d->inflight < MAX_INFLIGHT) sr = send_reading(d, r);
    if (sr != SEND_LATER) continue;
    /* Could not go out live: it stays in the outbox for the replay. */
    if (d->connected) start_replay(d, r->id);
  }
}

static void replay_continue(gw *d);

/* Keep coming back on every loop turn while live or replayed readings wait
 * to be sent. */
static void on_pub_idle(uv_idle_t *h);
static void pub_idle_update(gw *d) {
  if (d->pubq_head || (d->replay_ev && d->replay_next))
    uv_idle_start(&d->pub_idle, on_pub_idle);
  else
    uv_idle_stop(&d->pub_idle);
}

static void on_pub_idle(uv_idle_t *h) {
  gw *d = h->data;
  publish_committed(d);
  replay_continue(d);
  pub_idle_update(d);
}


/* The connection changed: a batch asked for and not come yet belongs to the
 * old one (the store answers requests in order, so it comes first). */
static void replay_forget(gw *d) {
  if (d->replay_requested && !d->replay_ev) d->replay_stale++;
}

/* Drop the replay batch being sent (the connection changed: the replay
 * starts over from the outbox). */
static void replay_drop(gw *d) {
  store_event_free(d->replay_ev);
  d->replay_ev = NULL;
  d->replay_next = NULL;
  d->replay_requested = false;
}

/* Send up to PUB_CHUNK more readings of the replay batch; at its end, ask
 * for the next one or finish the replay. */
static void replay_continue(gw *d) {
  store_event *ev = d->replay_ev;
  if (!ev) return;
  if (ev->detail[0]) {
    log_error("storage: %s", ev->detail);
    replay_drop(d); /* the next tick asks again */
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
    if (mi >= 0 && d->meters[mi].refused) {
      d->replay_cursor = r->id; /* held back, stays in the outbox */
      continue;
    }
    send_result sr = send_reading(d, r);
    if (sr == SEND_LATER) {
      all = false; /* from this row again on the next tick */
      break;
    }
    if (sr == SEND_NEVER)
      /* Skipped rather than block the rows behind it; it stays in the
       * outbox (send_reading said why, once per meter). */
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
  replay_drop(d);
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
  if (all) replay_more(d);
}

/* ------------------------------------------------------------------------ */
/* Poll results                                                             */

static void on_site_timer(uv_timer_t *t) {
  gw *d = t->data;
  if (d->stopping) return;
  publish_gateway_state(d, true);
  publish_online_rate(d);
}

static void meter_changed(gw *d, meter_rt *m, mstate_change ch) {
  if (ch == MSTATE_NO_CHANGE) return;
  bool online = ch == MSTATE_WENT_ONLINE;
  if (online)
    log_info("meter %s online", m->cfg->id);
  else
    log_warn("meter %s offline after %d failed poll%s: %s: %s", m->cfg->id,
             m->st.consecutive_failures, m->st.consecutive_failures == 1 ? "" : "s",
             m->st.last_error ? fail_name(m->st.last_error) : "no valid reading",
             m->st.last_error ? m->st.last_error_detail : "the bus could not poll it");
  store_add_state(d->store, m->cfg->id, m->st.since_ms, online,
                  online || !m->st.last_error ? NULL : fail_name(m->st.last_error),
                  online ? NULL : m->st.last_error_detail);
  publish_meter_state(d, m);
  /* The gateway state and the online rate count the meters online: publish
   * them once for the changes of the next moment, not once per change (at
   * start-up a thousand meters come online within a second, and the
   * online-rate document lists them all). */
  if (!uv_is_active((uv_handle_t *)&d->site_timer))
    uv_timer_start(&d->site_timer, on_site_timer, SITE_COALESCE_MS, 0);
}

static void handle_result(gw *d, bus_result *r) {
  meter_rt *m = &d->meters[r->meter];
  m->pending = false;
  d->polls++;
  const cfg_meter *mc = m->cfg;
  if (r->rc == TR_OK) {
    /* Each field: its name (at most PROF_NAME_MAX - 1), quotes, colon,
     * comma and a number of at most 25 characters. */
    size_t fcap = 2 + mc->profile->nfields * (PROF_NAME_MAX + 32);
    char fbuf[2048], *fheap = fcap > sizeof fbuf ? malloc(fcap) : NULL;
    char *fields = fheap ? fheap : fbuf;
    int flen = reading_fields_json(mc->profile, r->values, fields, fheap ? fcap : sizeof fbuf);
    if (flen < 0) {
      free(fheap);
      r->rc = TR_EDECODE;
      snprintf(r->err.detail, sizeof r->err.detail, "a value is not finite");
    } else {
      char why[200];
      quality_value q = quality_assess(mc->profile, r->values, r->start_ms,
                                       &m->qprev, why, sizeof why);
      if (q == QUALITY_SUSPECT) {
        d->suspect++;
        log_debug("meter %s: suspect reading: %s", mc->id, why);
      }
      d->successes++;
      store_reading *sr = store_reading_new(fields, (size_t)flen);
      free(fheap);
      if (sr) {
        /* Taken on a wall clock that has stepped since: its wall minus
         * monotonic time is not the loop's (whatever thread read it when). */
        sr->taken_base_ms = r->start_ms - r->start_mono_ms;
        sr->clock_step_ms = step_after(d, sr->taken_base_ms);
        sr->meter = mc->id;
        sr->meter_index = (int)r->meter;
        /* Reserve about SEQ_BLOCK_MS of this meter's numbers at a time. */
        int64_t blk = SEQ_BLOCK_MS / (m->cfg->interval_ms > 0 ? m->cfg->interval_ms : 1);
        sr->seq_block = blk < 8 ? 8 : blk > 100000 ? 100000 : (int32_t)blk;
        sr->ts_ms = r->start_ms;
        sr->quality = q;
        store_add_polled_reading(d->store, sr); /* counts the poll too */
      } else {
        store_count_poll(d->store, mc->id, r->start_ms,
                         q == QUALITY_SUSPECT ? "suspect" : "ok");
      }
      m->retry_at_ms = 0;
      meter_changed(d, m, mstate_success(&m->st, r->start_ms));
      return;
    }
  }
  int k = -r->rc;
  if (k >= 1 && k <= NFAILKINDS) d->failures[k]++;
  store_count_poll(d->store, mc->id, r->start_ms, fail_name(r->rc));
  log_debug("meter %s: poll failed: %s: %s", mc->id, fail_name(r->rc), r->err.detail);
  mstate_change ch = mstate_failure(&m->st, r->end_ms, r->rc, r->err.detail,
                                    d->cfg->online.offline_after);
  if (m->st.state == MSTATE_OFFLINE)
    m->retry_at_ms = r->end_ms + mstate_retry_ms(&m->st, mc->interval_ms,
                                                 d->cfg->online.backoff_max_ms) -
                     mc->interval_ms / 2;
  meter_changed(d, m, ch);
}

/* ------------------------------------------------------------------------ */
/* Events from the other threads                                            */

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
  if (mi >= 0 && mi < (int)d->cfg->nmeters) {
    d->meters[mi].refused = true;
    log_warn("mqtt: the broker closed the connection twice on the %s of meter %s: its "
             "messages are set aside until the gateway restarts (its readings stay in "
             "the outbox)",
             row ? "reading" : "state", d->cfg->meters[mi].id);
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
  if (l->fell_back && !d->told_fallback) {
    d->told_fallback = true;
    log_warn("mqtt: the broker %s does not take MQTT 5: using MQTT 3.1.1 (no "
             "refusals by reason code, no flow-control window from the broker)",
             d->cfg->mqtt.url);
  }
  if (!l->retain_available && !d->told_no_retain) {
    d->told_no_retain = true;
    log_warn("mqtt: the broker keeps no retained messages (Retain Available 0): the "
             "state topics are published unretained, so a subscriber sees them only "
             "at their next change");
  }
  if (l->server_keep_alive > 0 &&
      l->server_keep_alive != (int)(d->cfg->mqtt.keepalive_ms / 1000) && !d->told_keepalive) {
    d->told_keepalive = true;
    log_warn("mqtt: the broker sets the keep alive to %d s (mqtt.keepalive is %lld s); "
             "used from the next connection on",
             l->server_keep_alive, (long long)(d->cfg->mqtt.keepalive_ms / 1000));
  }
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
      store_mark_delivered(d->store, row);
      return;
    }
    d->acks = a;
    d->acks_cap = cap;
  }
  d->acks[d->nacks++] = row;
}

static void flush_acks(gw *d) {
  if (!d->nacks) return;
  if (store_mark_delivered_many(d->store, d->acks, d->nacks) != 0)
    for (size_t i = 0; i < d->nacks; i++) store_mark_delivered(d->store, d->acks[i]);
  d->nacks = 0;
}

/* Replay everything undelivered on this connection. */
static void begin_replay(gw *d) {
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

/* ------------------------------------------------------------------------ */
/* Sequence numbers after a restore                                         */

/* The reservations read back go to the store, which compares them with its
 * own; readings wait for its answer. */
static void seq_read_done(gw *d) {
  uv_timer_stop(&d->seq_timer);
  if (d->connected) (void)publisher_unsubscribe(d->pub, d->seq_filter);
  size_t n = d->cfg->nmeters;
  store_seq_item *items = calloc(n ? n : 1, sizeof *items);
  if (!items) {
    log_error("out of memory checking sequence numbers; checked at the next connect");
    d->seq_phase = SEQ_UNCHECKED;
    return;
  }
  for (size_t i = 0; i < n; i++) {
    snprintf(items[i].meter, sizeof items[i].meter, "%s", d->meters[i].cfg->id);
    items[i].meter_index = (int)i;
    items[i].broker_reserved = d->meters[i].broker_reserved;
  }
  if (store_seq_check(d->store, items, n) != 0) {
    log_error("storage: cannot check sequence numbers; checked at the next connect");
    d->seq_phase = SEQ_UNCHECKED;
    return;
  }
  d->seq_phase = SEQ_STORING;
}

static void on_seq_timer(uv_timer_t *t) {
  gw *d = t->data;
  if (d->seq_phase == SEQ_READING) seq_read_done(d);
}

/* Connected for the first time (or again before the check was done): read
 * the meters' retained reservations back. */
static void seq_read_start(gw *d) {
  for (size_t i = 0; i < d->cfg->nmeters; i++) d->meters[i].broker_reserved = 0;
  d->seq_heard = 0;
  d->seq_phase = SEQ_READING;
  if (!d->lim.retain_available) {
    log_warn("mqtt: the broker keeps no retained messages, so sequence numbers cannot "
             "be checked against what was published before; a database restored "
             "from an older copy would give published numbers to new readings");
    seq_read_done(d);
    return;
  }
  if (d->cfg->nmeters == 0 || publisher_subscribe(d->pub, d->seq_filter) != 0) {
    seq_read_done(d);
    return;
  }
  /* The broker sends the retained messages as it takes the SUBSCRIBE, so
   * a message published after it and heard back comes after them all: the
   * reading ends then, or after SEQ_READ_MS if it never comes back. */
  char body[64];
  d->seq_sync = (uint64_t)clock_mono_ms() ^ ((uint64_t)getpid() << 32);
  int n = snprintf(body, sizeof body, "{\"sync\":%llu}", (unsigned long long)d->seq_sync);
  (void)publisher_send(d->pub, d->topic_seq_sync, body, (size_t)n, 1, false,
                       make_tag(0, TAG_GATEWAY));
  uv_timer_start(&d->seq_timer, on_seq_timer, SEQ_READ_MS, 0);
}

/* A retained reservation came back: {prefix}/{site}/{meter}/seq. */
static void seq_heard(gw *d, const char *topic, const char *payload) {
  if (strcmp(topic, d->topic_seq_sync) == 0) {
    char want[64];
    snprintf(want, sizeof want, "{\"sync\":%llu}", (unsigned long long)d->seq_sync);
    if (strcmp(payload, want) == 0) seq_read_done(d);
    return;
  }
  size_t pl = strlen(d->seq_filter) - strlen("+/seq");
  size_t tl = strlen(topic);
  if (strncmp(topic, d->seq_filter, pl) != 0 || tl < pl + sizeof "/seq" ||
      strcmp(topic + tl - 4, "/seq") != 0)
    return;
  char id[128];
  size_t il = tl - pl - 4;
  if (il == 0 || il >= sizeof id) return;
  memcpy(id, topic + pl, il);
  id[il] = '\0';
  int mi = cfg_meter_index(d->cfg, id);
  if (mi < 0) return; /* a meter no longer configured */
  cJSON *o = cJSON_Parse(payload);
  const cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "reserved");
  if (cJSON_IsNumber(r) && r->valuedouble >= 1 && r->valuedouble < 9e15) {
    meter_rt *m = &d->meters[mi];
    if (!m->broker_reserved) d->seq_heard++;
    m->broker_reserved = (int64_t)r->valuedouble;
  } else {
    log_warn("mqtt: ignoring the sequence reservation of meter %s, not understood: %.80s",
             id, payload);
  }
  cJSON_Delete(o);
  if (d->seq_heard == d->cfg->nmeters) seq_read_done(d);
}

/* The store's answer: each meter's reservation, and the meters whose
 * numbers the broker had seen beyond the database's. */
static void seq_checked(gw *d, const store_event *e) {
  for (size_t i = 0; i < e->n; i++) {
    const store_seq_item *it = &e->items[i];
    if (it->meter_index < 0 || (size_t)it->meter_index >= d->cfg->nmeters) continue;
    meter_rt *m = &d->meters[it->meter_index];
    if (it->reserved > m->seq_reserved) m->seq_reserved = it->reserved;
    if (it->broker_reserved <= it->db_reserved) continue;
    if (it->renumbered)
      log_warn("meter %s: the broker has seen sequence numbers up to %lld, beyond this "
               "database's %lld (restored from an older copy?): the %lld readings taken "
               "since start are numbered from %lld on, and later ones above them",
               it->meter, (long long)it->broker_reserved, (long long)it->db_reserved,
               (long long)it->renumbered, (long long)it->first_seq);
    else
      log_warn("meter %s: the broker has seen sequence numbers up to %lld, beyond this "
               "database's %lld (restored from an older copy?): numbering continues "
               "from %lld",
               it->meter, (long long)it->broker_reserved, (long long)it->db_reserved,
               (long long)it->last_seq + 1);
  }
  d->seq_phase = SEQ_CHECKED;
  /* Readings queued since carry the numbers from before the check: the
   * replay sends them from the database, numbered anew where needed. */
  pubq_free(d);
  if (d->connected) begin_replay(d);
}

static void handle_pub_event(gw *d, pub_event *ev) {
  switch (ev->kind) {
    case PUB_EV_MESSAGE:
      if (d->seq_phase == SEQ_READING && ev->topic && ev->payload)
        seq_heard(d, ev->topic, ev->payload);
      break;
    case PUB_EV_CONNECTED: {
      d->connected = true;
      d->connect_fail_told[0] = '\0';
      backoff_reset(&d->reconnect_ms);
      uv_timer_stop(&d->reconnect_timer);
      d->inflight = 0;
      take_limits(d);
      /* The replay below covers every committed reading, those still
       * queued for live publishing too. */
      pubq_free(d);
      replay_forget(d);
      replay_drop(d);
      log_info("broker connected: %s", d->cfg->mqtt.url);
      publish_gateway_state(d, true);
      for (size_t i = 0; i < d->cfg->nmeters; i++) publish_meter_state(d, &d->meters[i]);
      publish_online_rate(d);
      publish_latest_reports(d);
      for (size_t i = 0; i < d->cfg->nmeters; i++) d->meters[i].seq_announced = 0;
      if (d->seq_phase == SEQ_CHECKED)
        begin_replay(d);
      else if (d->seq_phase != SEQ_STORING)
        seq_read_start(d);
      break;
    }
    case PUB_EV_LOST:
      if (d->connected) log_warn("broker connection lost: %s", ev->detail);
      d->connected = false;
      if (d->seq_phase == SEQ_READING) {
        /* Read again, whole, at the next connect. */
        uv_timer_stop(&d->seq_timer);
        d->seq_phase = SEQ_UNCHECKED;
      }
      suspect_loss(d, ev->tag);
      if (!d->stopping) schedule_reconnect(d, false, false);
      pubq_free(d); /* they stay in the outbox for the replay */
      replay_forget(d);
      replay_drop(d);
      d->inflight = 0;
      d->replay_active = false;
      uv_timer_stop(&d->replay_timer);
      break;
    case PUB_EV_CONNECT_FAILED: {
      if (d->stopping) break;
      /* A refusal (a broker being reconfigured, a password being fixed)
       * backs off further than a broker that is away. */
      int64_t ms = schedule_reconnect(d, ev->reason >= 0x80, ev->retry_now);
      /* The same cause again (a broker that keeps refusing, or keeps giving a
       * CONNACK that cannot be used) is said once, until it changes or a
       * connection succeeds. */
      if (strcmp(d->connect_fail_told, ev->detail) == 0) {
        log_debug("cannot connect to the broker %s: %s (again); retrying in %lld s",
                  d->cfg->mqtt.url, ev->detail, (long long)(ms / 1000));
        break;
      }
      snprintf(d->connect_fail_told, sizeof d->connect_fail_told, "%s", ev->detail);
      if (ev->reason == 0x9B)
        /* Not a passing state: the broker's configuration must change. */
        log_error("cannot use the broker %s: %s; retrying in %lld s", d->cfg->mqtt.url,
                  ev->detail, (long long)(ms / 1000));
      else if (ev->reason >= 0x80)
        log_warn("cannot connect to the broker %s: %s; retrying in %lld s",
                 d->cfg->mqtt.url, ev->detail, (long long)(ms / 1000));
      else
        log_warn("cannot connect to the broker %s: %s; retrying", d->cfg->mqtt.url,
                 ev->detail);
      break;
    }
    case PUB_EV_DELIVERED:
      if (tag_row(ev->tag) == 0) break; /* a state message */
      if (d->inflight) d->inflight--;
      d->delivered++;
      ack(d, tag_row(ev->tag));
      if (d->replay_active) replay_more(d);
      break;
    case PUB_EV_FAILED: {
      int64_t row = tag_row(ev->tag);
      int mi = tag_meter(ev->tag);
      if (row && d->inflight) d->inflight--;
      if (ev->reason < 0x80) break; /* not sent: replayed after a reconnect */
      d->refused++;
      if (mi >= 0 && mi < (int)d->cfg->nmeters && !d->meters[mi].refused) {
        /* A broker that refuses a topic will refuse it again (and some close
         * the connection each time): hold this meter's messages back until
         * the gateway restarts, and let the others through. */
        d->meters[mi].refused = true;
        log_warn("broker refused a message of meter %s: %s; its readings stay "
                 "in the outbox until the gateway restarts",
                 d->cfg->meters[mi].id, ev->detail);
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
      break;
    }
  }
}

/* The database cannot be written, or can again. Readings it could not take
 * go out live now without a sequence number (they are held in memory and
 * published again, numbered and historical, once stored). */
static void handle_trouble(gw *d, store_event *e) {
  if (e->changed && e->failing) {
    log_error("storage: cannot write the database (%s); readings are published "
              "live without a sequence number and held in memory (at most %zu "
              "operations) until writes succeed again",
              e->detail, (size_t)d->cfg->storage.hold_max);
  } else if (e->changed) {
    log_info("storage: writing again after %.1f s; %lld held readings stored",
             (double)e->duration_ms / 1000.0, (long long)e->held);
  }
  if (e->lost)
    log_warn("storage: %lld held readings dropped: more than can be held in memory",
             (long long)e->lost);
  for (store_reading *r = e->readings; r; r = r->next) {
    if (!d->connected || d->stopping) break;
    send_unstored(d, r);
  }
  if (e->changed) publish_gateway_state(d, true);
}

static void check_clock(gw *d);

static void on_wake(uv_async_t *a) {
  gw *d = a->data;
  check_clock(d); /* before results taken across a step come in */
  /* The serial lines' results. */
  for (size_t b = 0; b < d->cfg->nbuses; b++) {
    if (!d->workers[b]) continue;
    bus_result *r = busworker_take_results(d->workers[b]);
    while (r) {
      bus_result *next = r->next;
      r->next = NULL;
      handle_result(d, r);
      bus_result_free(r);
      r = next;
    }
  }
  if (d->reporter) {
    reporter_result *rr = reporter_take(d->reporter);
    for (reporter_result *r = rr; r; r = r->next) handle_report(d, r);
    reporter_result_free(rr);
  }
  pub_event *pe = publisher_take_events(d->pub);
  for (pub_event *e = pe; e; e = e->next) handle_pub_event(d, e);
  pub_event_free(pe);
  flush_acks(d);

  store_event *se = store_take_events(d->store), *done = NULL;
  for (store_event *e = se, *next; e; e = next) {
    next = e->next;
    e->next = NULL;
    if (e->kind == STORE_EV_COMMITTED) {
      for (store_reading *r = e->readings; r; r = r->next) {
        if (r->id > d->max_committed_id) d->max_committed_id = r->id;
        if (r->meter_index >= 0 && (size_t)r->meter_index < d->cfg->nmeters &&
            r->seq_reserved > d->meters[r->meter_index].seq_reserved)
          d->meters[r->meter_index].seq_reserved = r->seq_reserved;
      }
      /* Queued for publishing, which starts below. */
      if (d->pubq_tail)
        d->pubq_tail->next = e;
      else {
        d->pubq_head = e;
        d->pubq_next = e->readings;
      }
      d->pubq_tail = e;
      continue;
    }
    e->next = done;
    done = e;
    if (e->kind == STORE_EV_REPLAY && d->replay_stale) {
      d->replay_stale--; /* asked for on a connection gone since */
    } else if (e->kind == STORE_EV_REPLAY) {
      /* Sent PUB_CHUNK a loop turn, like live readings (an answer to one
       * request at a time: replay_requested stays set until its end). */
      done = e->next;
      e->next = NULL;
      replay_drop(d);
      d->replay_ev = e;
      d->replay_next = e->readings;
      d->replay_requested = true;
      replay_continue(d);
    } else if (e->kind == STORE_EV_SEQ_CHECKED) {
      seq_checked(d, e);
    } else if (e->kind == STORE_EV_MAINTAINED) {
      if (e->aged)
        log_info("storage: %lld delivered readings older than the retention removed",
                 (long long)e->aged);
      if (e->dropped_delivered)
        log_info("storage: over %lld bytes: removed the %lld oldest delivered readings",
                 (long long)d->cfg->storage.max_size, (long long)e->dropped_delivered);
      if (e->dropped_undelivered)
        log_warn("storage: over %lld bytes with nothing delivered left to remove: "
                 "dropped the %lld oldest undelivered readings",
                 (long long)d->cfg->storage.max_size, (long long)e->dropped_undelivered);
      if (e->detail[0])
        log_error("storage: maintenance stopped: %s; no reading was removed past the "
                  "failure",
                  e->detail);
      if (e->over && !d->storage_over)
        log_error("storage: %lld bytes, over the %lld limit, and nothing left to remove",
                  (long long)e->bytes, (long long)d->cfg->storage.max_size);
      d->storage_over = e->over;
    } else if (e->kind == STORE_EV_TROUBLE) {
      handle_trouble(d, e);
    }
  }
  store_event_free(done);
  publish_committed(d);
  pub_idle_update(d);
}

static void notify(void *ctx) {
  gw *d = ctx;
  uv_async_send(&d->wake);
}

/* A network bus's poll ended (on the loop itself). */
static void on_net_result(void *ctx, bus_result *r) {
  gw *d = ctx;
  check_clock(d);
  handle_result(d, r);
  bus_result_free(r);
}

static int submit_poll(gw *d, const cfg_meter *mc, uint32_t meter, int64_t slot) {
  if (d->workers[mc->bus]) return busworker_submit(d->workers[mc->bus], meter, slot);
  return netbuses_submit(d->net, mc->bus, meter, slot);
}

/* ------------------------------------------------------------------------ */
/* Schedule                                                                 */

static void on_slot(uv_timer_t *t);

/* The step that first followed a reading taken when the wall clock stood at
 * BASE against the monotonic one (the store flags its row with that one), or
 * 0 when none has since. */
static int64_t step_after(const gw *d, int64_t base) {
  int64_t off = d->clock_base_ms - base;
  if (!d->clock_steps || (off <= CLOCK_JUMP_MS && off >= -CLOCK_JUMP_MS)) return 0;
  uint64_t n = d->clock_steps < 16 ? d->clock_steps : 16;
  for (uint64_t i = d->clock_steps - n; i < d->clock_steps; i++) {
    int64_t b = d->steps[i % 16].base_before - base;
    if (b <= CLOCK_JUMP_MS && b >= -CLOCK_JUMP_MS) return d->steps[i % 16].step;
  }
  return off; /* older than the steps kept: all of them */
}

/* Notice a step of the wall clock against the monotonic one (NTP setting a
 * gateway that booted with a wrong clock, or someone setting it by hand).
 * Slow slewing moves the difference too, a little at a time: only a change
 * of more than CLOCK_JUMP_MS between two looks is a step. The readings of
 * this run taken before it carry the step from now on: those in the store
 * are flagged there (and so when replayed), those still on the bus when
 * their result comes in. */
static void check_clock(gw *d) {
  int64_t mono = clock_mono_ms();
  int64_t wall = clock_wall_ms();
  int64_t base = wall - mono;
  int64_t step = base - d->clock_base_ms;
  d->clock_base_ms = base;
  if (step <= CLOCK_JUMP_MS && step >= -CLOCK_JUMP_MS) return;
  d->steps[d->clock_steps % 16].base_before = base - step;
  d->steps[d->clock_steps % 16].step = step;
  d->clock_steps++;
  d->last_step_ms = step;
  d->last_step_wall_ms = wall;
  log_warn("wall clock stepped by %+lld ms: re-aligning the schedule; readings taken "
           "before it are flagged with clock_step_ms",
           (long long)step);
  store_clock_step(d->store, d->run_from_id, step);
  publish_gateway_state(d, true);
}

static void schedule(meter_rt *m, int64_t now) {
  int64_t delay = m->due_ms - now;
  if (delay < 0) delay = 0;
  uv_update_time(&m->d->loop);
  uv_timer_start(&m->timer, on_slot, (uint64_t)delay, 0);
}

static void skip_slot(gw *d, meter_rt *m, int64_t slot) {
  d->skipped++;
  store_count_poll(d->store, m->cfg->id, slot, "skipped");
  log_debug("meter %s: bus %s is busy, slot skipped", m->cfg->id,
            d->cfg->buses[m->cfg->bus].id);
}

static void on_slot(uv_timer_t *t) {
  meter_rt *m = t->data;
  gw *d = m->d;
  if (d->stopping) return;
  const cfg_meter *mc = m->cfg;
  check_clock(d);
  int64_t now = clock_wall_ms();
  int64_t slot = m->due_ms;
  if (now - slot > CLOCK_JUMP_MS || slot - now > CLOCK_JUMP_MS) {
    /* The wall clock stepped (or the loop was held up that long): re-align
     * to it without polling now, so there is neither a stall nor a burst of
     * catch-up polls. */
    m->due_ms = clock_next_slot(now, mc->interval_ms, m->phase_ms);
    m->st.watch_from_ms = now;
    schedule(m, now);
    return;
  }
  if (now < slot) {
    /* The monotonic timer and the wall clock round differently: never poll
     * before the slot, wait the last millisecond out. */
    schedule(m, now);
    return;
  }
  meter_changed(d, m, mstate_tick(&m->st, now, mc->interval_ms,
                                  d->cfg->online.offline_after,
                                  d->cfg->buses[mc->bus].timeout_ms));
  if (m->st.state == MSTATE_OFFLINE && m->retry_at_ms && now < m->retry_at_ms) {
    /* Backing off a dead meter: this slot is not polled. */
  } else if (m->pending) {
    skip_slot(d, m, slot);
  } else {
    /* Pending before submitting: a network bus may answer at once (a poll
     * that fails while the bus backs off), and its result clears it. */
    m->pending = true;
    if (submit_poll(d, mc, m->index, slot) != 0) {
      m->pending = false;
      skip_slot(d, m, slot);
    }
  }
  int64_t base = now > slot ? now : slot;
  m->due_ms = clock_next_slot(base, mc->interval_ms, m->phase_ms);
  schedule(m, now);
}

static void on_maintenance(uv_timer_t *t) {
  gw *d = t->data;
  store_maintain(d->store, clock_wall_ms());
}

static void on_gateway_timer(uv_timer_t *t) {
  gw *d = t->data;
  store_run_alive(d->store, clock_wall_ms());
  publish_gateway_state(d, true);
  publish_online_rate(d);
}

/* Reports: ask for every window of each period closed by now. */
static void on_period(uv_timer_t *t);

static void arm_period(period_rt *p) {
  gw *d = p->d;
  int64_t now = clock_wall_ms();
  int64_t s, e;
  rate_window(&d->periods[p->index], now - REPORT_GRACE_MS, &s, &e);
  int64_t delay = e + REPORT_GRACE_MS - now;
  if (delay < 0) delay = 0;
  uv_update_time(&d->loop);
  uv_timer_start(&p->timer, on_period, (uint64_t)delay, 0);
}

static void request_reports(period_rt *p) {
  gw *d = p->d;
  int64_t s, e;
  /* The window in progress starts where the last closed one ends. */
  rate_window(&d->periods[p->index], clock_wall_ms() - REPORT_GRACE_MS, &s, &e);
  reporter_request(d->reporter, p->index, s);
}

static void on_period(uv_timer_t *t) {
  period_rt *p = t->data;
  if (p->d->stopping) return;
  request_reports(p);
  arm_period(p);
}

/* The pusher's questions, answered by the reporter (its results come back
 * through handle_report). */
static void push_want_next(void *ctx) {
  gw *d = ctx;
  if (reporter_next_push(d->reporter) != 0) pusher_offer_none(d->pusher);
}

static void push_accepted(void *ctx, int64_t id) {
  gw *d = ctx;
  reporter_mark_pushed(d->reporter, id);
}

static void publish_latest_reports(gw *d) {
  if (!d->connected) return;
  for (size_t i = 0; i < d->nperiods; i++) {
    period_rt *p = &d->period_rt[i];
    if (d->reports_refused) continue; /* kept in the database */
    if (!p->pending && p->latest) publish_report_text(d, p->topic, p->latest);
    while (p->pending) {
      pending_report *r = p->pending;
      if (publish_report_text(d, p->topic, r->body) != 0) break;
      p->pending = r->next;
      if (!p->pending) p->pending_tail = &p->pending;
      p->npending--;
      free(r->body);
      free(r);
    }
  }
}

static void handle_report(gw *d, reporter_result *r) {
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
  publish_latest_reports(d);
  pusher_kick(d->pusher);
}

/* ------------------------------------------------------------------------ */
/* Start and stop                                                           */

static void on_signal(uv_signal_t *s, int signum) {
  gw *d = s->data;
  if (d->stopping) return;
  log_info("signal %d: stopping", signum);
  d->stopping = true;
  uv_stop(&d->loop);
}

static int read_secret(const cfg *c, char *out, size_t len) {
  out[0] = '\0';
  if (c->mqtt.password_file[0]) {
    bool exposed;
    char why[160];
    if (secret_read_file(c->mqtt.password_file, out, len, &exposed, why, sizeof why) != 0) {
      log_error("cannot read mqtt.password_file %s: %s", c->mqtt.password_file, why);
      return -1;
    }
    if (exposed)
      log_warn("%s can be read by others than its owner; chmod 600 it",
               c->mqtt.password_file);
  } else if (c->mqtt.password_env[0]) {
    const char *v = getenv(c->mqtt.password_env);
    if (!v) {
      log_error("mqtt.password_env names %s, which is not set", c->mqtt.password_env);
      return -1;
    }
    if (strlen(v) >= len) {
      log_error("mqtt.password_env %s: the password is longer than %zu bytes",
                c->mqtt.password_env, len - 1);
      return -1;
    }
    snprintf(out, len, "%s", v);
  }
  return 0;
}

/* Descriptors besides the buses': the database and its journal (twice,
 * writer and reports), the broker, the loop's own, libcurl's. */
#define FD_BASE 64

/* Every bus holds a descriptor (a tty or a socket), and a concentrator may
 * serve thousands of DTUs, while the usual soft limit is 1,024 (systemd,
 * login shells). Raise it to what the buses need, up to the hard limit, and
 * say so plainly when even that is short: the buses past it would fail
 * with "too many open files". */
static void ensure_fd_room(const cfg *c) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  rlim_t need = (rlim_t)c->nbuses + FD_BASE;
  if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need) return;
  rlim_t want = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need ? rl.rlim_max : need;
  if (want > rl.rlim_cur) {
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
      log_info("open-file limit raised from %llu to %llu for %zu buses",
               (unsigned long long)was, (unsigned long long)want, c->nbuses);
  }
  if (want < need)
    log_warn("%zu buses need about %llu open files, but the limit is %llu: "
             "buses past it fail with \"too many open files\"; raise the hard "
             "limit (LimitNOFILE= in a systemd unit, ulimit -Hn)",
             c->nbuses, (unsigned long long)need, (unsigned long long)want);
}

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

int daemon_run(const cfg *c) {
  gw *d = calloc(1, sizeof *d);
  if (!d) return 1;
  int exit_code = 1;
  char err[1024];
  d->cfg = c;
  d->started_ms = clock_wall_ms();
  d->clock_base_ms = d->started_ms - clock_mono_ms();
  ensure_fd_room(c);
  uv_loop_init(&d->loop);
  uv_async_init(&d->loop, &d->wake, on_wake);
  d->wake.data = d;
  uv_idle_init(&d->loop, &d->pub_idle);
  d->pub_idle.data = d;
  snprintf(d->topic_gateway, sizeof d->topic_gateway, "%s/%s/gateway/state",
           c->mqtt.topic_prefix, c->site.id);
  snprintf(d->topic_rate, sizeof d->topic_rate, "%s/%s/online-rate",
           c->mqtt.topic_prefix, c->site.id);
  /* Report windows follow the site's time zone; logs and timestamps are UTC
   * and unaffected. */
  setenv("TZ", c->site.timezone, 1);
  tzset();
  for (size_t i = 0; i < c->reports.nperiods; i++) {
    if (rate_period_parse(c->reports.periods[i], &d->periods[i]) != 0) {
      log_error("reports: cannot use period \"%s\"", c->reports.periods[i]);
      goto out;
    }
    period_rt *p = &d->period_rt[i];
    p->d = d;
    p->index = (int)i;
    p->pending_tail = &p->pending;
    snprintf(p->topic, sizeof p->topic, "%s/%s/report/%s", c->mqtt.topic_prefix,
             c->site.id, d->periods[i].name);
    d->nperiods++;
  }

  d->plans = calloc(c->nmeters, sizeof *d->plans);
  d->meters = calloc(c->nmeters, sizeof *d->meters);
  d->workers = calloc(c->nbuses, sizeof *d->workers);
  if (!d->plans || !d->meters || !d->workers) goto out;
  for (size_t i = 0; i < c->nmeters; i++) {
    const cfg_bus *b = cfg_meter_bus(c, &c->meters[i]);
    d->plans[i] = plan_build(c->meters[i].profile, b->max_gap, b->max_registers,
                             err, sizeof err);
    if (!d->plans[i]) {
      log_error("meter %s: %s", c->meters[i].id, err);
      goto out;
    }
  }

  store_options so = {.path = c->storage.path,
                      .synchronous_full = true,
                      .max_size = c->storage.max_size,
                      .retention_ms = c->storage.retention_ms,
                      .hold_max = (size_t)c->storage.hold_max,
                      /* 0 in the options means the default; negative, none */
                      .commit_window_ms = c->storage.commit_ms ? c->storage.commit_ms : -1,
                      .notify = notify,
                      .notify_ctx = d};
  if (store_open(&d->store, &so, err, sizeof err) != 0) {
    log_error("storage: %s", err);
    goto out;
  }
  const char *check_note, *broken = store_integrity(d->store, &check_note);
  if (broken)
    log_error("storage: %s failed its integrity check: %s; the readings that can be read "
              "are kept and sent, and a statement that fails removes nothing",
              c->storage.path, broken);
  if (check_note) log_info("storage: integrity check %s", check_note);
  if (store_open_note(d->store)) log_info("storage: %s", store_open_note(d->store));
  {
    int sy = store_synchronous(d->store);
    if (sy >= 2)
      log_info("storage: WAL, synchronous %s: a commit is durable before its readings are "
               "published", sy == 2 ? "FULL" : "EXTRA");
    else
      log_error("storage: synchronous is %s, not FULL: a power cut could undo commits "
                "whose readings were published",
                sy == 1 ? "NORMAL" : sy == 0 ? "OFF" : "unknown");
  }
  store_run_start(d->store, d->started_ms);
  {
    store_stats ss;
    store_get_stats(d->store, &ss);
    d->run_from_id = ss.max_id; /* a step flags this run's readings only */
  }
  if (reporter_start(&d->reporter, c, d->periods, d->nperiods, d->started_ms, notify,
                     d, err, sizeof err) != 0) {
    log_error("%s", err);
    goto out;
  }
  if (c->reports.push_url[0]) {
    char token[SECRET_MAX + 1] = "";
    if (c->reports.token_file[0]) {
      bool exposed;
      char why[160];
      if (secret_read_file(c->reports.token_file, token, sizeof token, &exposed, why,
                           sizeof why) != 0) {
        log_error("cannot read reports.token_file %s: %s", c->reports.token_file, why);
        goto out;
      }
      if (exposed)
        log_warn("%s can be read by others than its owner; chmod 600 it",
                 c->reports.token_file);
    }
    pusher_options pso = {.url = c->reports.push_url,
                          .ca_file = c->reports.ca_file,
                          .token = token,
                          .timeout_ms = c->reports.push_timeout_ms,
                          .want_next = push_want_next,
                          .accepted = push_accepted,
                          .ctx = d};
    int prc2 = pusher_new(&d->pusher, &d->loop, &pso, err, sizeof err);
    memset(token, 0, sizeof token);
    if (prc2 != 0) {
      log_error("reports: %s", err);
      goto out;
    }
    log_info("reports are pushed to %s", c->reports.push_url);
    pusher_kick(d->pusher); /* whatever an earlier run could not deliver */
  }
  for (size_t i = 0; i < c->nmeters; i++)
    store_meter_configured(d->store, c->meters[i].id, d->started_ms);

  char secret[SECRET_MAX + 1];
  if (read_secret(c, secret, sizeof secret) != 0) goto out;
  char will[256];
  snprintf(will, sizeof will, "{\"online\":false,\"version\":\"%s\"}", IC_VERSION);
  publisher_options po = {
      .url = c->mqtt.url,
      .client_id = c->mqtt.client_id,
      .version = c->mqtt.version,
      .username = c->mqtt.username[0] ? c->mqtt.username : NULL,
      .password = secret[0] ? secret : NULL,
      .keepalive_s = (int)(c->mqtt.keepalive_ms / 1000),
      .ca_file = c->mqtt.ca_file,
      .cert_file = c->mqtt.cert_file,
      .key_file = c->mqtt.key_file,
      .will_topic = d->topic_gateway,
      .will_payload = will,
      .max_inflight = MAX_INFLIGHT + SITE_HEADROOM,
      .notify = notify,
      .notify_ctx = d,
  };
  int prc = publisher_new(&d->pub, &po, err, sizeof err);
  memset(secret, 0, sizeof secret);
  if (prc != 0) {
    log_error("mqtt: %s", err);
    goto out;
  }

  /* A serial line keeps a thread of its own; network buses run on the
   * loop. */
  if (netbuses_new(&d->net, &d->loop, c, d->plans, on_net_result, d, err,
                   sizeof err) != 0) {
    log_error("%s", err);
    goto out;
  }
  for (size_t b = 0; b < c->nbuses; b++) {
    char w[512];
    if (busload_warning(c, b, w, sizeof w)) log_warn("%s", w);
  }
  for (size_t b = 0; b < c->nbuses; b++) {
    if (c->buses[b].transport != CFG_TRANSPORT_RTU) continue;
    if (busworker_start(&d->workers[b], c, b, d->plans, notify, d, err,
                        sizeof err) != 0) {
      log_error("%s", err);
      goto out;
    }
  }

  uv_signal_init(&d->loop, &d->sigterm);
  uv_signal_init(&d->loop, &d->sigint);
  d->sigterm.data = d->sigint.data = d;
  uv_signal_start(&d->sigterm, on_signal, SIGTERM);
  uv_signal_start(&d->sigint, on_signal, SIGINT);
  uv_timer_init(&d->loop, &d->gw_timer);
  uv_timer_init(&d->loop, &d->replay_timer);
  uv_timer_init(&d->loop, &d->site_timer);
  d->gw_timer.data = d->replay_timer.data = d->site_timer.data = d;
  uv_timer_start(&d->gw_timer, on_gateway_timer, GATEWAY_STATE_MS, GATEWAY_STATE_MS);
  uv_timer_init(&d->loop, &d->maint_timer);
  d->maint_timer.data = d;
  uv_timer_init(&d->loop, &d->reconnect_timer);
  d->reconnect_timer.data = d;
  uv_timer_init(&d->loop, &d->seq_timer);
  d->seq_timer.data = d;
  snprintf(d->seq_filter, sizeof d->seq_filter, "%s/%s/+/seq", c->mqtt.topic_prefix,
           c->site.id);
  snprintf(d->topic_seq_sync, sizeof d->topic_seq_sync, "%s/%s/gateway/seq",
           c->mqtt.topic_prefix, c->site.id);
  store_maintain(d->store, clock_wall_ms()); /* at start, then periodically */
  uv_timer_start(&d->maint_timer, on_maintenance, (uint64_t)c->storage.maintenance_ms,
                 (uint64_t)c->storage.maintenance_ms);
  for (size_t i = 0; i < d->nperiods; i++) {
    period_rt *p = &d->period_rt[i];
    uv_timer_init(&d->loop, &p->timer);
    p->timer.data = p;
    request_reports(p); /* windows that closed while the gateway was down */
    arm_period(p);
  }

  int64_t now = clock_wall_ms();
  for (size_t i = 0; i < c->nmeters; i++) {
    meter_rt *m = &d->meters[i];
    m->d = d;
    m->cfg = &c->meters[i];
    m->index = (uint32_t)i;
    mstate_init(&m->st, now);
    m->phase_ms = cfg_meter_phase_ms(c, i);
    int tl = snprintf(NULL, 0, "%s/%s/%s/", c->mqtt.topic_prefix, c->site.id, m->cfg->id);
    m->topic_reading =
        malloc(3 * (size_t)tl + sizeof "reading" + sizeof "state" + sizeof "seq");
    if (!m->topic_reading) {
      log_error("out of memory");
      goto out;
    }
    sprintf(m->topic_reading, "%s/%s/%s/reading", c->mqtt.topic_prefix, c->site.id,
            m->cfg->id);
    m->topic_state = m->topic_reading + tl + sizeof "reading";
    sprintf(m->topic_state, "%s/%s/%s/state", c->mqtt.topic_prefix, c->site.id,
            m->cfg->id);
    m->topic_seq = m->topic_state + tl + sizeof "state";
    sprintf(m->topic_seq, "%s/%s/%s/seq", c->mqtt.topic_prefix, c->site.id, m->cfg->id);
    uv_timer_init(&d->loop, &m->timer);
    m->timer.data = m;
    m->due_ms = clock_next_slot(now, m->cfg->interval_ms, m->phase_ms);
    schedule(m, now);
  }

  log_info("intake-collector %s: site %s, %zu meters on %zu buses, broker %s, "
           "database %s", IC_VERSION, c->site.id, c->nmeters, c->nbuses,
           c->mqtt.url, c->storage.path);
  for (size_t b = 0; b < c->nbuses; b++) {
    const cfg_bus *bus = &c->buses[b];
    if (bus->transport == CFG_TRANSPORT_RTU)
      log_info("bus %s: rtu %s %d %c%d%d, timeout %lld ms", bus->id, bus->device,
               bus->baud, bus->parity, bus->data_bits, bus->stop_bits,
               (long long)bus->timeout_ms);
    else
      log_info("bus %s: %s %s:%d, timeout %lld ms", bus->id,
               cfg_transport_name(bus->transport), bus->host, bus->port,
               (long long)bus->timeout_ms);
  }
  if (publisher_start(d->pub, err, sizeof err) != 0) {
    log_error("mqtt: %s", err);
    goto out;
  }
  printf("ready: polling %zu meters on %zu buses\n", c->nmeters, c->nbuses);
  fflush(stdout);
  log_info("ready");

  uv_run(&d->loop, UV_RUN_DEFAULT);

  /* Stopping: no new polls; the request in progress on each bus finishes
   * within its timeout, queued ones are abandoned. */
  for (size_t i = 0; i < c->nmeters; i++) uv_timer_stop(&d->meters[i].timer);
  uv_timer_stop(&d->replay_timer);
  uv_timer_stop(&d->site_timer);
  uv_timer_stop(&d->maint_timer);
  uv_timer_stop(&d->reconnect_timer);
  for (size_t i = 0; i < d->nperiods; i++) uv_timer_stop(&d->period_rt[i].timer);
  netbuses_stop(d->net); /* network polls in progress are abandoned */
  for (size_t b = 0; b < c->nbuses; b++) busworker_stop(d->workers[b]);
  for (size_t b = 0; b < c->nbuses; b++) busworker_join(d->workers[b]);
  /* Readings already taken go to the store; acknowledgements that arrived
   * are recorded. */
  on_wake(&d->wake);
  exit_code = 0;
out:
  if (d->workers) {
    for (size_t b = 0; b < c->nbuses; b++) busworker_free(d->workers[b]);
  }
  netbuses_stop(d->net);
  reporter_free(d->reporter);
  d->reporter = NULL;
  if (d->store) {
    store_stats fin;
    store_run_stop(d->store, clock_wall_ms());
    store_close(d->store, &fin);
    d->store = NULL;
    if (exit_code == 0)
      log_info("stopped after %llu polls: %llu readings taken, %llu committed, "
               "%llu awaiting delivery, %llu removed by the size limit",
               (unsigned long long)d->polls, (unsigned long long)d->successes,
               (unsigned long long)fin.committed, (unsigned long long)fin.undelivered,
               (unsigned long long)fin.removed);
    if (fin.held)
      log_error("storage: %llu readings the database never took are lost",
                (unsigned long long)fin.held);
  }
  if (d->pub) {
    if (exit_code == 0 && publisher_is_connected(d->pub)) {
      /* A clean stop says so; the Last Will covers the unclean ones. */
      d->connected = true;
      cJSON *o = cJSON_CreateObject();
      cJSON_AddBoolToObject(o, "online", false);
      cJSON_AddStringToObject(o, "version", IC_VERSION);
      add_ts(o, "started", d->started_ms);
      add_ts(o, "stopped", clock_wall_ms());
      publish_json(d, d->topic_gateway, o, true, -1);
      cJSON_Delete(o);
    }
    publisher_stop(d->pub, 300);
    publisher_free(d->pub);
  }
  pusher_close(d->pusher);
  uv_walk(&d->loop, close_walk, NULL);
  uv_run(&d->loop, UV_RUN_DEFAULT);
  pusher_free(d->pusher);
  netbuses_free(d->net);
  pubq_free(d);
  store_event_free(d->replay_ev);
  uv_loop_close(&d->loop);
  if (d->plans)
    for (size_t i = 0; i < c->nmeters; i++) plan_free(d->plans[i]);
  for (size_t i = 0; i < d->nperiods; i++) {
    free(d->period_rt[i].latest);
    pending_report *r = d->period_rt[i].pending;
    while (r) {
      pending_report *next = r->next;
      free(r->body);
      free(r);
      r = next;
    }
  }
  free(d->plans);
  if (d->meters)
    for (size_t i = 0; i < c->nmeters; i++) free(d->meters[i].topic_reading);
  free(d->meters);
  free(d->acks);
  free(d->workers);
  free(d);
  return exit_code;
}
