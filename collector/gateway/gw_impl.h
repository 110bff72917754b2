/* The gateway daemon's private header: its state (struct gw, one per run,
 * owned by the loop thread) and the functions its files share. Every
 * function here runs on the loop thread. Shared functions are named gw__*;
 * each file's own are static. The files:
 *   daemon.c     start-up and stop, as a list of named steps
 *   schedule.c   the poll schedule, wall-clock steps, periodic timers
 *   pipeline.c   the loop's wake-up: poll results in, store and broker
 *                events out, failures of the store
 *   send.c       a reading as an MQTT message
 *   connection.c the broker connection: its limits, acknowledgements,
 *                losses, reconnecting
 *   replay.c     live readings after their commit, the outbox replay
 *   seqcheck.c   sequence numbers checked against the broker's at connect
 *   site.c       the site topics: meter and gateway state, online rate
 *   periods.c    report periods: timers, the reporter's results, pushing
 *   observe.c    the metrics endpoint: /metrics and /status
 *   reload.c     a new configuration read and applied as a difference
 *   buses.c      the buses: opened, closed, polls handed to them
 *   dtu.c        the DTU servers: start, their events logged, their state
 *   centre.c     the bureau's monitoring centre: the uplink client
 */
#ifndef IC_GW_IMPL_H
#define IC_GW_IMPL_H

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
#include "poll/dtuserver.h"
#include "base/clock.h"
#include "base/log.h"
#include "meter/mstate.h"
#include "profile/planner.h"
#include "mqtt/publisher.h"
#include "reports/pusher.h"
#include "meter/quality.h"
#include "reports/rate.h"
#include "base/sdnotify.h"
#include "base/secret.h"
#include "base/service.h"
#include "meter/reading.h"
#include "reports/reporter.h"
#include "store/store.h"
#include "metrics/http.h"
#include "metrics/metrics.h"
#include "uplink/uplink.h"

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

/* A configuration in use: the current one, or one replaced by a reload
 * that polls still in flight refer to (their meter's settings and plan),
 * freed when the last of them ends. */
typedef struct gw_gen {
  struct gw_gen *next;
  cfg *c;
  mb_plan **plans; /* by meter index in c */
  size_t refs;     /* polls in flight submitted with it */
} gw_gen;

/* Upper bounds (seconds) of the poll-duration histogram's buckets. */
#define POLL_HIST_BUCKETS 11
extern const double gw__poll_hist_le[POLL_HIST_BUCKETS];
typedef struct {
  uint64_t count[POLL_HIST_BUCKETS + 1]; /* the last: over every bound */
  double sum_s;
} poll_hist;

/* A bus: a serial line's worker thread, or a network bus on the loop. It
 * outlives a reload that leaves its settings alone. */
typedef struct bus_rt {
  cfg_bus conf;  /* its settings, as opened */
  busworker *w;  /* serial lines */
  netbus *nb;    /* network buses */
  poll_hist hist;
  double load;   /* share of a serial line's time its polls need (planned) */
  struct bus_rt *next; /* closing: the list of serial lines being closed */
} bus_rt;

typedef struct {
  gw *d;
  const cfg_meter *cfg;
  uint32_t index;   /* in the current configuration's meters */
  uint32_t key;     /* this run's number for the meter: stable across
                       reloads, carried by poll results, stored readings and
                       message tags (see gw__meter_by_key) */
  bool retired;     /* removed by a reload; kept while its poll is out */
  gw_gen *pending_gen; /* the configuration its poll in flight refers to */
  bus_rt *pending_bus; /* and the bus it went to */
  const cfg_meter *pending_cfg; /* and the settings it was taken with */
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
  uint64_t polls;          /* for the metrics: polls and failures by kind */
  uint64_t failures[TR_NKINDS + 1];
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

/* A removed meter's last state ("reason":"removed"), held while the broker
 * is not connected. */
typedef struct removed_state {
  struct removed_state *next;
  char *body;
  char topic[];
} removed_state;

struct gw {
  const cfg *cfg;   /* gen->c */
  gw_gen *gen;      /* the configuration in use */
  gw_gen *old_gens; /* replaced ones still referred to by polls */
  cfg *owned_cfg;   /* the first configuration, until init_plans takes it */
  const char *profile_dir; /* for reloads */
  /* Reloads: when the configuration was last applied, its file's SHA-256
   * (hex), and the reloads so far by result. */
  int64_t config_applied_ms;
  char config_digest[65];
  uint64_t reloads_applied, reloads_refused, reloads_unchanged;
  bool reloading, reload_again; /* a reload's file reading is under way */
  removed_state *removed; /* to publish at the next connect */
  rate_period periods[CFG_PERIODS_MAX];
  period_rt period_rt[CFG_PERIODS_MAX];
  size_t nperiods;
  reporter *reporter;
  char topic_rate[256];
  /* Pushing reports to the bureau: one post at a time, oldest first. */
  pusher *pusher;
  uv_loop_t loop;
  uv_async_t wake;
  service_signals signals;
  sdnotify sd;      /* READY, STATUS, WATCHDOG to systemd */
  bool stuck_told;  /* the watchdog is withheld, and the log says why */
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
  netbuses *net;     /* the set the network buses (TCP, RTU over TCP, DTU) belong to */
  dtuservers *dtus;  /* the servers DTUs dial in to; NULL without */
  bus_rt **buses;    /* as the configuration orders them */
  bus_rt *closing;   /* serial lines a reload closed, until their last
                        request ends */
  meter_rt **meters; /* as the configuration orders them */
  meter_rt **by_key; /* by key: live, retired (while its poll is out), or NULL */
  size_t nkeys, keys_cap;
  int64_t started_ms;
  bool loop_ready;  /* the loop is initialised: the stop closes it */
  bool stopping;
  bool connected;
  bool storage_over;
  /* Site topics the broker refused: held back until restart, as meters are. */
  bool gateway_refused, rate_refused, reports_refused;
  uv_timer_t maint_timer;
  uv_timer_t reconnect_timer; /* after a lost connection or a failed attempt */
  int64_t reconnect_ms;
  pub_limits lim;             /* the current connection's, from its CONNACK */
  bool told_fallback, told_no_retain, told_keepalive, told_stray_ack;
  uint64_t stray_acks; /* PUBACKs for packet ids with no message in flight */
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
  uint64_t failures[TR_NKINDS + 1];
  uint64_t published, delivered, refused, historical, unstored;
  uint64_t too_large;         /* messages larger than the broker takes */
  /* The metrics endpoint (NULL when off) and the database's size at the
   * last maintenance pass. */
  httpd *metrics;
  int64_t storage_bytes;
  uint64_t rows_aged; /* delivered readings removed by the retention */
  /* The bureau's monitoring centre (NULL when not configured), and each
   * meter's latest valid reading as it reports them. */
  uplink *uplink;
  uplink_values *upvals;
};

static inline const char *fail_name(int code) { return tr_code_name(code); }

/* The configured meter with KEY (see meter_rt.key), or NULL (an unknown key,
 * or a meter a reload removed). */
static inline meter_rt *gw__meter_by_key(const gw *d, int key) {
  if (key < 0 || (size_t)key >= d->nkeys) return NULL;
  meter_rt *m = d->by_key[key];
  return m && !m->retired ? m : NULL;
}

/* A message's tag carries the row id of a reading (0 for a state message) and
 * the index of its meter plus one (0 when the meter is not configured), so an
 * acknowledgement or a refusal can be traced to both. */
#define TAG_METER_BITS 16
static inline uint64_t make_tag(int64_t row, int meter) {
  return ((uint64_t)row << TAG_METER_BITS) | (uint64_t)(meter + 1);
}
static inline int64_t tag_row(uint64_t tag) { return (int64_t)(tag >> TAG_METER_BITS); }
static inline int tag_meter(uint64_t tag) {
  return (int)(tag & ((1u << TAG_METER_BITS) - 1)) - 1;
}

/* Site-level topics tagged in the meter field (configurations hold at most
 * 10,000 meters, and a run's keys stay below GW_KEYS_MAX), so a refusal of
 * one of them is traced too. */
#define GW_KEYS_MAX 50000
enum { TAG_GATEWAY = 60000, TAG_RATE, TAG_REPORTS };

/* How sending a reading went. */
typedef enum {
  SEND_OK = 0,
  SEND_LATER,  /* held back or not taken now (window full or disconnected) */
  SEND_NEVER,  /* it cannot be sent at all (its payload cannot be built, or
                  it is larger than the broker takes, or set aside) */
} send_result;

/* Shared between the gateway's files (see the list above). */
/* site.c */
bool gw__fits(gw *d, const char *topic, size_t len);
void gw__too_large(gw *d, int site_tag, const char *topic, size_t len);
void gw__publish_json(gw *d, const char *topic, cJSON *o, bool retained, int meter);
int gw__publish_report_text(gw *d, const char *topic, const char *body);
void gw__add_ts(cJSON *o, const char *key, int64_t ms);
void gw__publish_meter_state(gw *d, meter_rt *m);
cJSON *gw__gateway_state_json(gw *d, bool online);
void gw__publish_gateway_state(gw *d, bool online);
void gw__publish_online_rate(gw *d);
void gw__meter_changed(gw *d, meter_rt *m, mstate_change ch);

/* send.c */
send_result gw__send_reading(gw *d, const store_reading *r);
void gw__send_unstored(gw *d, const store_reading *r);

/* replay.c */
void gw__replay_more(gw *d);
void gw__pubq_free(gw *d);
void gw__publish_committed(gw *d);
void gw__pub_idle_update(gw *d);
void gw__replay_forget(gw *d);
void gw__replay_drop(gw *d);
void gw__replay_continue(gw *d);
void gw__begin_replay(gw *d);

/* pipeline.c */
void gw__on_wake(uv_async_t *a);
void gw__notify(void *ctx);
void gw__on_net_result(void *ctx, bus_result *r);
int gw__submit_poll(gw *d, meter_rt *m, int64_t slot);
void gw__on_poll_result(gw *d, bus_result *r);

/* connection.c */
void gw__flush_acks(gw *d);
void gw__handle_pub_event(gw *d, pub_event *ev);
void gw__connection_reset(gw *d);

/* daemon.c */
int gw__publisher_new(gw *d, const cfg *c, publisher **out);
void gw__publisher_close(gw *d, bool clean);
void gw__site_topics(gw *d);

/* seqcheck.c */
void gw__seq_read_start(gw *d);
void gw__seq_heard(gw *d, const char *topic, const char *payload);
void gw__seq_checked(gw *d, const store_event *e);

/* schedule.c */
int64_t gw__step_after(const gw *d, int64_t base);
void gw__check_clock(gw *d);
void gw__schedule(meter_rt *m, int64_t now);
void gw__on_maintenance(uv_timer_t *t);
void gw__on_gateway_timer(uv_timer_t *t);

/* buses.c */
int gw__buses_open(gw *d);
int gw__bus_open(gw *d, bus_rt *b, const cfg *c, size_t index);
void gw__bus_close(gw *d, bus_rt *b);
void gw__closing_stop(gw *d);
void gw__closing_free(gw *d);
void gw__take_worker_results(gw *d);
void gw__poll_ended(gw *d, meter_rt *m);

/* reload.c */
void gw__reload_start(gw *d);
void gw__gen_release(gw *d, gw_gen *g);
void gw__gen_free(gw_gen *g);
gw_gen *gw__gen_new(cfg *c, char *err, size_t errlen);
meter_rt *gw__meter_alloc(gw *d, const cfg *c, size_t index);
int gw__keys_reserve(gw *d, size_t n);
void gw__meter_start(gw *d, meter_rt *m, int64_t now);
void gw__meter_free(meter_rt *m);
int gw__file_digest(const char *path, char out[65]);
void gw__add_config_state(gw *d, cJSON *o);
void gw__publish_removed(gw *d);
void gw__removed_free(gw *d);

/* dtu.c */
int gw__dtu_start(gw *d);
void gw__dtu_state_json(gw *d, cJSON *o);
void gw__dtu_metrics(gw *d, mtext *t);

/* observe.c */
int gw__metrics_start(gw *d);
void gw__metrics_stop(gw *d);
void gw__count_poll(gw *d, meter_rt *m, const bus_result *r);

/* centre.c */
int gw__uplink_start(gw *d);
void gw__uplink_reading(gw *d, uint32_t i, const mb_profile *p, const double *values,
                        int64_t ts_ms);
void gw__uplink_state_json(gw *d, cJSON *o);
void gw__uplink_metrics(gw *d, mtext *t);

/* periods.c */
void gw__arm_period(period_rt *p);
void gw__request_reports(period_rt *p);
void gw__push_want_next(void *ctx);
void gw__push_accepted(void *ctx, int64_t id);
void gw__push_failing(void *ctx, bool failing, const char *detail);
void gw__publish_latest_reports(gw *d);
void gw__handle_report(gw *d, reporter_result *r);

#endif
