/* uplink: the gateway as the intake's telemetry terminal towards the
 * bureau's monitoring centre. See uplink.h and docs/uplink.md. */
#include "uplink/uplink.h"

#include <math.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/backoff.h"
#include "base/clock.h"
#include "base/lookup.h"
#include "proto/szy206.h"
#include "transport/tr_net.h"

/* A slot's report is built this long after the slot, so that the poll of
 * the slot itself has answered (as the online-rate reports wait). */
#define UPLINK_GRACE_MS 1500
/* Connecting (the name resolved and the TCP handshake) may take this long. */
#define UPLINK_CONNECT_MS 10000
/* Reconnecting: 1 s after the first failure, doubling up to a minute. */
#define UPLINK_RETRY_MIN_MS 1000
#define UPLINK_RETRY_MAX_MS 60000
/* Resends of a report not confirmed (FCB 3 -> 0). */
#define UPLINK_RESENDS 3
/* Bytes written and not yet taken by the centre: past this it is not
 * reading, and the connection is closed. */
#define UPLINK_WRITE_MAX 65536
#define UPLINK_RBUF 1024
/* Bytes from the centre that frame nothing, in a row, before the link is
 * dropped: a centre's noise is a few bytes, a stream of it is hostile or
 * broken, and every byte costs a search. */
#define UPLINK_JUNK_MAX 4096
/* A station answers one query in this long: a centre that confirms our
 * answer (AFN B0 back, as a query is) must not start a ping-pong. */
#define UPLINK_QUERY_GAP_MS 1000

typedef enum { LINK_NONE, LINK_RESOLVING, LINK_CONNECTING, LINK_UP, LINK_CLOSING } link_state;


struct uplink {
  uplink_options o;
  const cfg_uplink *uc;
  int tp_len;
  link_state state;
  bool closing_all;
  lookup *lk;            /* the centre's host name looked up, while
                            LINK_RESOLVING (base/lookup.h) */
  struct addrinfo *addrs, *next_ai; /* the centre's addresses, tried in turn */
  uv_async_t lookup_async;
  uv_connect_t creq;
  uv_tcp_t tcp;
  uv_timer_t slot_timer, confirm_timer, heartbeat_timer, retry_timer, connect_timer;
  int64_t backoff_ms;
  int64_t next_slot_ms;
  uint8_t rbuf[UPLINK_RBUF];
  size_t rlen;
  /* Stored reports not yet confirmed, oldest first; the head is in flight
   * while INFLIGHT, on its TRIES-th resend. */
  store_uplink *head, *tail;
  size_t qlen;
  bool inflight;
  int tries;
  uplink_stats st;
  int64_t *answered_ms; /* each station's last answer to a query (monotonic) */
  bool told_unreachable; /* a failed connect logged at warn since the last link */
  bool told_full;        /* reports removed for the bound logged since below it */
  size_t junk;           /* bytes skipped since the last good frame */
  char text[512];
};

/* --- Pure parts ------------------------------------------------------------ */

void uplink_values_from(const mb_profile *p, const double *values, int64_t ts_ms,
                        uplink_values *out) {
  memset(out, 0, sizeof *out);
  out->ts_ms = ts_ms;
  double num, den;
  int fi = profile_role_index(p, PROF_ROLE_FLOW);
  if (fi >= 0 && profile_unit_ratio(p->fields[fi].unit, &num, &den) == PROF_UNIT_FLOW &&
      isfinite(values[fi])) {
    out->has_flow = true;
    out->flow_m3s = values[fi] * den / num / 3600.0;
  }
  for (size_t i = 0; i < p->nfields; i++)
    if (p->fields[i].role == PROF_ROLE_STATUS && isfinite(values[i]) && values[i] != 0)
      out->fault = true;
  int ti = profile_role_index(p, PROF_ROLE_TOTAL);
  if (ti >= 0 && profile_unit_ratio(p->fields[ti].unit, &num, &den) == PROF_UNIT_VOLUME &&
      isfinite(values[ti])) {
    out->has_total = true;
    out->total_m3 = values[ti] * den / num;
  }
}

/* The local time of MS as a time label. */
static void local_tp(int64_t ms, int delay, szy_tp *tp) {
  time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
  struct tm tm;
  localtime_r(&t, &tm);
  tp->sec = (uint8_t)(tm.tm_sec > 59 ? 59 : tm.tm_sec); /* a leap second */
  tp->min = (uint8_t)tm.tm_min;
  tp->hour = (uint8_t)tm.tm_hour;
  tp->day = (uint8_t)tm.tm_mday;
  tp->month = (uint8_t)(tm.tm_mon + 1);
  tp->year = (uint8_t)(tm.tm_year % 100);
  tp->delay = (uint8_t)delay;
}

int uplink_build_report(const cfg *c, const cfg_uplink_station *station,
                        const uplink_values *values, int64_t fresh_from_ms,
                        int64_t tp_ms, uint8_t ctl, uint8_t afn, uint8_t *out) {
  static szy_report r; /* the loop's alone */
  memset(&r, 0, sizeof r);
  r.n = station->nmeters;
  for (size_t i = 0; i < station->nmeters; i++) {
    uint32_t m = station->meters[i];
    const uplink_values *v = &values[m];
    /* A meter polled less often than the reports go has its own interval
     * to answer in: not having been polled since is no fault. */
    int64_t from = fresh_from_ms;
    if (c->meters && c->meters[m].interval_ms > c->uplink.report_interval_ms)
      from -= c->meters[m].interval_ms - c->uplink.report_interval_ms;
    bool fresh = v->ts_ms > 0 && v->ts_ms >= from;
    /* Flow rounded to the thousandth; volume truncated to the cubic metre. */
    bool flow_ok = fresh && v->has_flow &&
                   szy_flow_encode(r.flow[i], llround(v->flow_m3s * 1000.0)) == SZY_OK;
    bool vol_ok = fresh && v->has_total && v->total_m3 >= 0 &&
                  v->total_m3 < (double)SZY_VOLUME_MAX + 1 &&
                  szy_volume_encode(r.volume[i], (uint64_t)v->total_m3) == SZY_OK;
    if (!flow_ok) szy_value_none(r.flow[i]);
    if (!vol_ok) szy_value_none(r.volume[i]);
    if (!fresh) {
      szy_value_none(r.flow[i]);
      szy_value_none(r.volume[i]);
    }
    if (!fresh || v->fault) r.alarm |= SZY_ALARM_METER_FAULT;
  }
  r.tp_len = cfg_uplink_tp_len(c->uplink.protocol);
  local_tp(tp_ms, c->uplink.delay_minutes, &r.tp);
  uint8_t data[SZY_FRAME_MAX];
  int n = szy_report_encode(data, sizeof data, &r);
  if (n < 0) return n;
  return szy_build(out, STORE_UPLINK_FRAME_MAX, ctl, station->address, afn, data, (size_t)n);
}

/* Local midnight of the day holding T (seconds), DAYS days on. */
static int64_t local_midnight_ms(time_t t, int days) {
  struct tm tm;
  localtime_r(&t, &tm);
  tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
  tm.tm_mday += days;
  tm.tm_isdst = -1;
  return (int64_t)mktime(&tm) * 1000;
}

int64_t uplink_next_slot(int64_t wall_ms, int64_t interval_ms) {
  time_t t = (time_t)(wall_ms >= 0 ? wall_ms / 1000 : (wall_ms - 999) / 1000);
  int64_t day = local_midnight_ms(t, 0), next_day = local_midnight_ms(t, 1);
  int64_t next = day + ((wall_ms - day) / interval_ms + 1) * interval_ms;
  /* Each day starts over at midnight: an interval that does not divide the
   * day leaves its last slot closer to midnight's. */
  return next < next_day ? next : next_day;
}

/* --- Telling the owner -------------------------------------------------------- */

static void say(uplink *u, uplink_say_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(uplink *u, uplink_say_level lvl, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(u->text, sizeof u->text, fmt, ap);
  va_end(ap);
  if (u->o.say) u->o.say(u->o.ctx, lvl, u->text);
}

static void changed(uplink *u) {
  if (u->o.changed) u->o.changed(u->o.ctx);
}

/* "530381/13" or the raw address. */
static const char *station_name(const uint8_t a[5], char *buf, size_t len) {
  snprintf(buf, len, "%02X%02X%02X/%u", a[0], a[1], a[2], (unsigned)(a[3] | a[4] << 8));
  return buf;
}

/* --- The connection ------------------------------------------------------------ */

static void start_connect(uplink *u);
static void send_head(uplink *u);

static void on_retry(uv_timer_t *t) { start_connect(t->data); }

static void schedule_retry(uplink *u) {
  if (u->closing_all) return;
  int64_t ms = backoff_next(&u->backoff_ms, UPLINK_RETRY_MIN_MS, UPLINK_RETRY_MAX_MS);
  uv_timer_start(&u->retry_timer, on_retry, (uint64_t)ms, 0);
}

static void free_addrs(uplink *u) {
  if (u->addrs) freeaddrinfo(u->addrs);
  u->addrs = u->next_ai = NULL;
}

static void on_closed(uv_handle_t *h) {
  uplink *u = h->data;
  u->state = LINK_NONE;
  free_addrs(u);
  schedule_retry(u);
}

/* Give up on the lookup in flight (base/lookup.h). */
static void give_up_lookup(uplink *u) {
  lookup_abandon(u->lk);
  u->lk = NULL;
}

/* The connection is gone (or never came): close it, keep the queue. */
static void drop_link(uplink *u, const char *why) {
  if (u->state == LINK_NONE || u->state == LINK_CLOSING) return;
  bool was_up = u->state == LINK_UP;
  uv_timer_stop(&u->connect_timer);
  uv_timer_stop(&u->confirm_timer);
  uv_timer_stop(&u->heartbeat_timer);
  u->inflight = false;
  u->tries = 0;
  u->rlen = 0;
  if (u->state == LINK_RESOLVING) {
    give_up_lookup(u);
    u->state = LINK_NONE;
    schedule_retry(u);
  } else {
    u->state = LINK_CLOSING;
    uv_close((uv_handle_t *)&u->tcp, on_closed);
  }
  if (was_up) {
    u->st.connected = false;
    say(u, UPLINK_SAY_WARN, "uplink: connection to %s:%d lost: %s; %zu reports kept",
        u->uc->host, u->uc->port, why, u->qlen);
    changed(u);
  } else if (!u->told_unreachable) {
    /* Once a stretch at warn: a wrong host or port must be seen at the
     * default log level, a centre down for hours must not fill the log. */
    u->told_unreachable = true;
    say(u, UPLINK_SAY_WARN, "uplink: cannot connect to %s:%d: %s; retrying with back-off, "
        "%zu reports kept (further failures are logged at debug level)", u->uc->host,
        u->uc->port, why, u->qlen);
  } else {
    say(u, UPLINK_SAY_DEBUG, "uplink: cannot connect to %s:%d: %s", u->uc->host,
        u->uc->port, why);
  }
}

typedef struct {
  uv_write_t req;
  uv_buf_t buf;
  uint8_t data[STORE_UPLINK_FRAME_MAX];
} wreq;

static void on_written(uv_write_t *req, int status) {
  wreq *w = (wreq *)req;
  uplink *u = req->data;
  free(w);
  if (status < 0 && status != UV_ECANCELED && u->state == LINK_UP)
    drop_link(u, uv_strerror(status));
}

static void on_heartbeat(uv_timer_t *t);

/* Write one frame; any write restarts the heartbeat's wait. */
static int send_frame(uplink *u, const uint8_t *p, size_t n) {
  if (u->state != LINK_UP) return -1;
  if (uv_stream_get_write_queue_size((uv_stream_t *)&u->tcp) > UPLINK_WRITE_MAX) {
    drop_link(u, "the centre takes nothing we send");
    return -1;
  }
  wreq *w = malloc(sizeof *w);
  if (!w) return -1;
  memcpy(w->data, p, n);
  w->buf = uv_buf_init((char *)w->data, (unsigned)n);
  w->req.data = u;
  int rc = uv_write(&w->req, (uv_stream_t *)&u->tcp, &w->buf, 1, on_written);
  if (rc < 0) {
    free(w);
    drop_link(u, uv_strerror(rc));
    return -1;
  }
  uv_timer_start(&u->heartbeat_timer, on_heartbeat, (uint64_t)u->uc->heartbeat_ms, 0);
  return 0;
}

/* A link check (login or heartbeat) for every station. */
static void send_link(uplink *u, uint8_t what) {
  uint8_t data[8], out[SZY_FRAME_MAX];
  szy_tp tp;
  local_tp(clock_wall_ms(), u->uc->delay_minutes, &tp);
  data[0] = what;
  int tn = szy_tp_encode(data + 1, sizeof data - 1, u->tp_len, &tp);
  for (size_t i = 0; tn > 0 && i < u->uc->nstations && u->state == LINK_UP; i++) {
    int n = szy_build(out, sizeof out, SZY_C_LINK, u->uc->stations[i].address,
                      SZY_AFN_LINK, data, 1 + (size_t)tn);
    if (n > 0) (void)send_frame(u, out, (size_t)n);
  }
}

static void on_heartbeat(uv_timer_t *t) {
  uplink *u = t->data;
  if (u->state == LINK_UP) send_link(u, SZY_LINK_HEARTBEAT);
}

/* --- The queue of reports ---------------------------------------------------- */

static void on_confirm_timeout(uv_timer_t *t) {
  uplink *u = t->data;
  if (!u->inflight) return;
  u->inflight = false;
  if (++u->tries <= UPLINK_RESENDS) {
    send_head(u);
    return;
  }
  char name[32];
  say(u, UPLINK_SAY_WARN,
      "uplink: report %lld of station %s not confirmed after %d tries; kept, "
      "reconnecting",
      (long long)u->head->id, station_name(u->head->frame + 4, name, sizeof name),
      UPLINK_RESENDS + 1);
  drop_link(u, "reports not confirmed");
}

/* Send the oldest report (again, with its FCB one lower, on a resend). */
static void send_head(uplink *u) {
  if (u->state != LINK_UP || u->inflight || !u->head) return;
  uint8_t f[STORE_UPLINK_FRAME_MAX];
  size_t n = u->head->len;
  if (n < SZY_FRAME_MIN) return;
  memcpy(f, u->head->frame, n);
  if (u->tries > 0) {
    f[3] = (uint8_t)((f[3] & ~0x30u) | (unsigned)(UPLINK_RESENDS - u->tries) << SZY_C_FCB_SHIFT);
    f[n - 2] = szy_crc8(f + 3, f[1]);
  }
  if (send_frame(u, f, n) != 0) return;
  u->st.sent++;
  if (u->tries > 0) u->st.resent++;
  u->inflight = true;
  uv_timer_start(&u->confirm_timer, on_confirm_timeout, (uint64_t)u->uc->confirm_timeout_ms, 0);
}

/* Append a stored report; past STORE_UPLINK_MAX the oldest goes, as the
 * store's own bound removes it. */
static void enqueue(uplink *u, store_uplink *r) {
  r->next = NULL;
  if (u->tail) u->tail->next = r;
  else u->head = r;
  u->tail = r;
  u->qlen++;
  while (u->qlen > STORE_UPLINK_MAX) {
    store_uplink *old = u->head;
    if (u->inflight) {
      uv_timer_stop(&u->confirm_timer);
      u->inflight = false;
      u->tries = 0;
    }
    /* The store removed the same report, and counts it
     * (store_stats.uplink_dropped). */
    u->head = old->next;
    u->qlen--;
    free(old);
  }
  u->st.pending = u->qlen;
}

void uplink_store_event(uplink *u, const store_event *e) {
  if (!u || e->kind != STORE_EV_UPLINK) return;
  if (e->uplink_dropped > 0 && !u->told_full) {
    u->told_full = true;
    say(u, UPLINK_SAY_WARN, "uplink: %d unconfirmed reports kept, the most there is room "
        "for: the oldest are removed to make room for new ones (counted as dropped)",
        STORE_UPLINK_MAX);
  }
  size_t n = 0;
  for (const store_uplink *r = e->uplinks; r; r = r->next) {
    if (r->len < SZY_FRAME_MIN || szy_parse(r->frame, r->len, NULL) != SZY_OK) {
      /* A row that is no frame (a damaged database) would stop the queue. */
      say(u, UPLINK_SAY_ERROR, "uplink: kept report %lld is not a frame; removed",
          (long long)r->id);
      (void)store_uplink_done(u->o.store, r->id);
      u->st.dropped++;
      continue;
    }
    store_uplink *c = malloc(sizeof *c);
    if (!c) break;
    *c = *r;
    enqueue(u, c);
    n++;
  }
  if (e->uplink_loaded && n)
    say(u, UPLINK_SAY_INFO, "uplink: %zu reports kept from before are sent first", n);
  send_head(u);
}

/* A confirm for the report in flight: it is done. */
static void confirmed(uplink *u) {
  store_uplink *r = u->head;
  uv_timer_stop(&u->confirm_timer);
  (void)store_uplink_done(u->o.store, r->id); /* only stopping refuses it */
  u->head = r->next;
  if (!u->head) u->tail = NULL;
  u->qlen--;
  free(r);
  u->inflight = false;
  u->tries = 0;
  u->st.confirmed++;
  u->st.pending = u->qlen;
  u->st.last_confirm_ms = clock_wall_ms();
  if (u->qlen < STORE_UPLINK_MAX) u->told_full = false;
  backoff_reset(&u->backoff_ms);
  send_head(u);
}

/* The centre's B0H query: the report of now, at once. */
static void answer_query(uplink *u, size_t i) {
  const cfg_uplink_station *st = &u->uc->stations[i];
  int64_t mono = clock_mono_ms();
  if (u->answered_ms[i] && mono - u->answered_ms[i] < UPLINK_QUERY_GAP_MS) return;
  u->answered_ms[i] = mono;
  uint8_t out[STORE_UPLINK_FRAME_MAX];
  int64_t now = clock_wall_ms();
  int n = uplink_build_report(u->o.cfg, st, u->o.values, now - u->uc->report_interval_ms,
                              now, SZY_C_REPORT, SZY_AFN_QUERY, out);
  if (n > 0 && send_frame(u, out, (size_t)n) == 0) u->st.queries++;
}

static void handle_frame(uplink *u, const uint8_t *p, size_t n) {
  szy_frame f;
  char name[32];
  if (szy_parse(p, n, &f) != SZY_OK || (f.c & SZY_C_DIR)) {
    say(u, UPLINK_SAY_DEBUG, "uplink: a frame from the centre that is not for us ignored");
    return;
  }
  if (f.afn == SZY_AFN_QUERY) {
    for (size_t i = 0; i < u->uc->nstations; i++)
      if (memcmp(u->uc->stations[i].address, f.addr, SZY_ADDR_LEN) == 0) {
        answer_query(u, i);
        return;
      }
    say(u, UPLINK_SAY_DEBUG, "uplink: a query for station %s, not one of ours",
        station_name(f.addr, name, sizeof name));
    return;
  }
  if (u->inflight && memcmp(u->head->frame + 4, f.addr, SZY_ADDR_LEN) == 0 &&
      u->head->frame[9] == f.afn)
    confirmed(u);
}

/* The first whole, good frame starting after AT in what was read, or
 * RLEN when there is none. */
static size_t next_good(const uplink *u, size_t at) {
  for (size_t j = at + 1; j < u->rlen; j++) {
    if (u->rbuf[j] != SZY_START) continue;
    int len = szy_frame_len(u->rbuf + j, u->rlen - j);
    if (len > 0 && (size_t)len <= u->rlen - j &&
        szy_parse(u->rbuf + j, (size_t)len, NULL) == SZY_OK)
      return j;
  }
  return u->rlen;
}

/* Frames out of what the centre sent. Bytes that start no frame, and a
 * frame that does not parse (a bad CS, a wrong end byte), are skipped to
 * the next 0x68 after their first byte, so that a good frame behind noise
 * is still found; so are the bytes before a good frame when they start a
 * frame that has not come whole (noise that looks like a header must not
 * swallow the confirm behind it). */
static void take_frames(uplink *u) {
  size_t at = 0;
  while (at < u->rlen && u->state == LINK_UP) {
    int len = szy_frame_len(u->rbuf + at, u->rlen - at);
    if (len == SZY_ENEEDMORE || (len > 0 && (size_t)len > u->rlen - at)) {
      size_t j = next_good(u, at);
      if (j == u->rlen) break;
      u->junk += j - at;
      at = j;
      continue;
    }
    if (len < 0 || szy_parse(u->rbuf + at, (size_t)len, NULL) != SZY_OK) {
      size_t from = at++;
      while (at < u->rlen && u->rbuf[at] != SZY_START) at++;
      u->junk += at - from;
      continue;
    }
    u->junk = 0;
    handle_frame(u, u->rbuf + at, (size_t)len);
    at += (size_t)len;
  }
  if (u->state != LINK_UP) return;
  if (u->junk > UPLINK_JUNK_MAX) {
    char why[96];
    snprintf(why, sizeof why, "more than %d bytes from the centre frame nothing",
             UPLINK_JUNK_MAX);
    drop_link(u, why);
    return;
  }
  memmove(u->rbuf, u->rbuf + at, u->rlen - at);
  u->rlen -= at;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  uplink *u = h->data;
  (void)suggested;
  *buf = uv_buf_init((char *)u->rbuf + u->rlen, (unsigned)(UPLINK_RBUF - u->rlen));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  uplink *u = s->data;
  (void)buf;
  if (n < 0) {
    drop_link(u, n == UV_EOF ? "closed by the centre" : uv_strerror((int)n));
    return;
  }
  u->rlen += (size_t)n;
  take_frames(u);
}

static void on_closed_next(uv_handle_t *h);

static void on_connect(uv_connect_t *req, int status) {
  uplink *u = req->data;
  if (u->state != LINK_CONNECTING) return; /* dropped meanwhile */
  if (status < 0 && u->next_ai) {
    u->state = LINK_CLOSING;
    uv_close((uv_handle_t *)&u->tcp, on_closed_next);
    return;
  }
  if (status < 0) {
    drop_link(u, uv_strerror(status));
    return;
  }
  free_addrs(u);
  uv_timer_stop(&u->connect_timer);
  u->state = LINK_UP;
  u->told_unreachable = false;
  u->st.connected = true;
  u->st.connects++;
  u->rlen = 0;
  u->junk = 0;
  uv_tcp_nodelay(&u->tcp, 1);
  uv_read_start((uv_stream_t *)&u->tcp, on_alloc, on_read);
  say(u, UPLINK_SAY_INFO, "uplink: connected to %s:%d; %zu reports to send", u->uc->host,
      u->uc->port, u->qlen);
  changed(u);
  send_link(u, SZY_LINK_LOGIN);
  send_head(u);
}

/* Connect to the next of the centre's addresses. */
static void try_addr(uplink *u) {
  struct addrinfo *ai = u->next_ai;
  u->next_ai = ai->ai_next;
  uv_tcp_init(u->o.loop, &u->tcp);
  u->tcp.data = u;
  u->state = LINK_CONNECTING;
  u->creq.data = u;
  int rc = uv_tcp_connect(&u->creq, &u->tcp, ai->ai_addr, on_connect);
  if (rc < 0) drop_link(u, uv_strerror(rc));
}

/* An address refused: the next one, if any, within the same deadline. */
static void on_closed_next(uv_handle_t *h) {
  uplink *u = h->data;
  u->state = LINK_NONE;
  if (u->closing_all || !u->next_ai) {
    free_addrs(u);
    schedule_retry(u);
    return;
  }
  try_addr(u);
}

/* Connect to the addresses of LIST in turn (kept until connected). */
static void connect_to(uplink *u, struct addrinfo *list) {
  free_addrs(u);
  u->addrs = u->next_ai = list;
  try_addr(u);
}

static void on_lookup(uv_async_t *a) {
  uplink *u = a->data;
  int rc;
  struct addrinfo *res;
  if (!u->lk || u->state != LINK_RESOLVING || !lookup_take(u->lk, &rc, &res)) return;
  u->lk = NULL;
  if (rc != 0 || !res) {
    if (res) freeaddrinfo(res);
    drop_link(u, gai_strerror(rc));
    return;
  }
  connect_to(u, res);
}

static void on_connect_timeout(uv_timer_t *t) {
  uplink *u = t->data;
  /* Between two of the centre's addresses: the deadline covers them all. */
  if (u->state == LINK_CLOSING) u->next_ai = NULL;
  drop_link(u, "timed out");
}

static void start_connect(uplink *u) {
  if (u->closing_all || u->state != LINK_NONE) return;
  uv_timer_start(&u->connect_timer, on_connect_timeout, UPLINK_CONNECT_MS, 0);
  struct addrinfo *res = NULL;
  if (tr_net_resolve(u->uc->host, u->uc->port, true, &res) == 0 && res) {
    connect_to(u, res);
    return;
  }
  int err;
  if (!(u->lk = lookup_start(u->uc->host, u->uc->port, &u->lookup_async, &err))) {
    uv_timer_stop(&u->connect_timer);
    schedule_retry(u);
    return;
  }
  u->state = LINK_RESOLVING;
}

/* --- Report slots ------------------------------------------------------------ */

static void on_slot(uv_timer_t *t);

/* The next slot after now (a wall-clock step moves it with the clock). */
static void arm_next_slot(uplink *u) {
  int64_t now = clock_wall_ms();
  u->next_slot_ms = uplink_next_slot(now, u->uc->report_interval_ms);
  int64_t wait = u->next_slot_ms + UPLINK_GRACE_MS - now;
  uv_timer_start(&u->slot_timer, on_slot, (uint64_t)(wait > 0 ? wait : 0), 0);
}

/* Each station's report of the slot, stored before anything is sent. */
static void on_slot(uv_timer_t *t) {
  uplink *u = t->data;
  int64_t slot = u->next_slot_ms;
  /* The wall clock stepped while the timer ran (it runs on the monotonic
   * clock): no report with a time label the clock no longer agrees with;
   * the slots start again from the clock as it is. */
  int64_t late = clock_wall_ms() - (slot + UPLINK_GRACE_MS);
  if (late < -2000 || late > 2000) {
    say(u, UPLINK_SAY_WARN, "uplink: the wall clock stepped by about %lld s; report slots "
        "follow it", (long long)(late / 1000));
    arm_next_slot(u);
    return;
  }
  /* A reading counts when its poll started within the report interval
   * before the slot (the grace again for timers' jitter): a meter whose
   * answer to the slot's own poll is not in yet (a slow meter, a DTU's
   * round trip) is reported with the reading of the slot before, not as
   * at fault. Readings are stamped with their poll's start. */
  int64_t fresh_from = slot - u->uc->report_interval_ms - UPLINK_GRACE_MS;
  for (size_t i = 0; i < u->uc->nstations; i++) {
    store_uplink *r = calloc(1, sizeof *r);
    if (!r) break;
    int n = uplink_build_report(u->o.cfg, &u->uc->stations[i], u->o.values, fresh_from, slot,
                                SZY_C_REPORT, SZY_AFN_REPORT, r->frame);
    if (n < 0) {
      free(r);
      continue;
    }
    r->len = (size_t)n;
    r->slot_ms = slot;
    if (store_uplink_add(u->o.store, r) != 0)
      say(u, UPLINK_SAY_ERROR, "uplink: the store refused a report");
  }
  arm_next_slot(u);
}

void uplink_rebind(uplink *u, const cfg *nc, const uplink_values *values) {
  if (!u) return;
  u->o.cfg = nc;
  u->o.values = values;
  u->uc = &nc->uplink;
}

/* --- Start and stop -------------------------------------------------------------- */

int uplink_start(uplink **out, const uplink_options *o, char *err, size_t errlen) {
  *out = NULL;
  if (!o->cfg->uplink.enabled) return 0;
  uplink *u = calloc(1, sizeof *u);
  if (!u) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  u->o = *o;
  u->uc = &o->cfg->uplink;
  u->tp_len = cfg_uplink_tp_len(u->uc->protocol);
  u->answered_ms = calloc(u->uc->nstations ? u->uc->nstations : 1, sizeof *u->answered_ms);
  if (!u->answered_ms) {
    free(u);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  uv_timer_t *timers[] = {&u->slot_timer, &u->confirm_timer, &u->heartbeat_timer,
                          &u->retry_timer, &u->connect_timer};
  for (size_t i = 0; i < sizeof timers / sizeof *timers; i++) {
    uv_timer_init(o->loop, timers[i]);
    timers[i]->data = u;
  }
  uv_async_init(o->loop, &u->lookup_async, on_lookup);
  u->lookup_async.data = u;
  if (store_uplink_load(o->store) != 0) {
    snprintf(err, errlen, "the store refused to load the kept reports");
    uplink_close(u);
    *out = u; /* freed by the caller after the loop closes the timers */
    return -1;
  }
  arm_next_slot(u);
  start_connect(u);
  *out = u;
  return 0;
}

void uplink_get_stats(const uplink *u, uplink_stats *out) {
  if (!u) {
    memset(out, 0, sizeof *out);
    return;
  }
  *out = u->st;
}

void uplink_close(uplink *u) {
  if (!u || u->closing_all) return;
  u->closing_all = true;
  uv_timer_t *timers[] = {&u->slot_timer, &u->confirm_timer, &u->heartbeat_timer,
                          &u->retry_timer, &u->connect_timer};
  for (size_t i = 0; i < sizeof timers / sizeof *timers; i++)
    if (!uv_is_closing((uv_handle_t *)timers[i])) uv_close((uv_handle_t *)timers[i], NULL);
  give_up_lookup(u); /* before its wake-up closes */
  if (!uv_is_closing((uv_handle_t *)&u->lookup_async))
    uv_close((uv_handle_t *)&u->lookup_async, NULL);
  if (u->state == LINK_RESOLVING) {
    u->state = LINK_NONE;
  } else if (u->state == LINK_CONNECTING || u->state == LINK_UP) {
    u->state = LINK_CLOSING;
    uv_close((uv_handle_t *)&u->tcp, on_closed);
  }
}

void uplink_free(uplink *u) {
  if (!u) return;
  while (u->head) {
    store_uplink *next = u->head->next;
    free(u->head);
    u->head = next;
  }
  free_addrs(u);
  free(u->answered_ms);
  free(u);
}
