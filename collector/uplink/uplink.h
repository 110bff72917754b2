/* uplink: the gateway as the intake's telemetry terminal towards the
 * bureau's water-resources monitoring centre (SZY206 / SL/T 427,
 * docs/uplink.md).
 *
 * One TCP client connection on the loop: a login (AFN 02H, F0) for each
 * station on connect, a heartbeat (F2) when nothing was sent for the
 * configured time, and at each report slot one C0H report a station, built
 * from its meters' latest valid readings. A report is stored first
 * (store_uplink_add); once the store hands it back it is queued, and the
 * queue goes out oldest first, one report in flight at a time: the next is
 * sent when the centre confirms the one before (a frame for the same
 * address and AFN), which removes it from the store. A report not
 * confirmed within confirm_timeout is sent again with its FCB one lower,
 * three times; after that the connection is closed and opened again with
 * back-off, and the queue starts over from its oldest report. A centre's
 * B0H query is answered at once with current values. A centre that is down
 * costs the loop nothing but a timer.
 *
 * Runs on the loop thread only. Library-style: it does not log, it tells its
 * owner (UPLINK_SAY) what happened and the owner logs it.
 */
#ifndef IC_UPLINK_H
#define IC_UPLINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cfg.h"
#include "store/store.h"

/* A meter's latest valid reading, as the uplink reports it. */
typedef struct {
  int64_t ts_ms;    /* when it was taken; 0: no valid reading yet */
  bool has_flow;    /* the profile has a flow field in a known unit */
  bool has_total;   /* ...and a totalizer in m3 */
  double flow_m3s;
  double total_m3;
  bool fault;       /* a status field (the meter's own alarm bits) is not 0 */
} uplink_values;

/* The flow (converted to m3/s from m3/h, m3/s or l/s), the forward
 * totalizer (m3) and whether any status field is not 0, of a reading of
 * profile P (VALUES, one a field), taken at TS_MS. Pure. */
void uplink_values_from(const mb_profile *p, const double *values, int64_t ts_ms,
                        uplink_values *out);

/* The data of a report (C0H, or the answer to B0H) for STATION of C: each
 * meter's pair from VALUES (indexed by meter; a meter whose reading is older
 * than FRESH_FROM_MS, moved back by how much longer its own interval is
 * than the report interval, or missing, is AA AA AA AA AA for both and sets
 * alarm D5; a meter that reports a fault of its own sends its values and sets D5
 * too), then the alarm and status words, then the time label of TP_MS in
 * local time (TZ). Flow in m3/s, three decimals, rounded; volume in whole m3,
 * truncated. Returns the frame's length in OUT (at least
 * STORE_UPLINK_FRAME_MAX bytes), with C, AFN as given, or a negative
 * szy206 code. Pure but for the time zone. */
int uplink_build_report(const cfg *c, const cfg_uplink_station *station,
                        const uplink_values *values, int64_t fresh_from_ms,
                        int64_t tp_ms, uint8_t ctl, uint8_t afn, uint8_t *out);

/* The first report slot strictly after WALL_MS: each day's local midnight
 * (TZ) and multiples of INTERVAL_MS after it within the day. */
int64_t uplink_next_slot(int64_t wall_ms, int64_t interval_ms);

typedef struct uplink uplink;

typedef enum {
  UPLINK_SAY_INFO,
  UPLINK_SAY_WARN,
  UPLINK_SAY_ERROR,
  UPLINK_SAY_DEBUG,
} uplink_say_level;

typedef struct {
  const cfg *cfg;
  uv_loop_t *loop;
  store *store;
  /* The latest valid reading of each configured meter (an array of
   * cfg->nmeters, owned and kept current by the caller). */
  const uplink_values *values;
  /* What happened, for the owner's log; CHANGED after the connection came
   * or went (the owner publishes its state). */
  void (*say)(void *ctx, uplink_say_level level, const char *text);
  void (*changed)(void *ctx);
  void *ctx;
} uplink_options;

/* Start: ask the store for the kept reports, arm the report slots, begin
 * connecting. 0, or -1 with ERR. */
int uplink_start(uplink **out, const uplink_options *o, char *err, size_t errlen);

/* A reload's configuration NC, whose uplink section is the same as the one
 * running (meters may have moved in it), and VALUES, the caller's array of
 * NC->nmeters in NC's order: used from now on. */
void uplink_rebind(uplink *u, const cfg *nc, const uplink_values *values);

/* A STORE_EV_UPLINK event of the store (the caller frees the event). */
void uplink_store_event(uplink *u, const store_event *e);

typedef struct {
  bool connected;
  uint64_t pending;        /* reports stored and not yet confirmed */
  uint64_t sent;           /* report frames written, resends included */
  uint64_t resent;         /* ...of which resends */
  uint64_t confirmed;      /* reports the centre confirmed */
  uint64_t dropped;        /* reports removed unconfirmed (the bound) */
  uint64_t queries;        /* B0H queries answered */
  uint64_t connects;       /* connections made */
  int64_t last_confirm_ms; /* wall clock; 0: none yet */
} uplink_stats;

void uplink_get_stats(const uplink *u, uplink_stats *out);

/* Close the connection and the timers (the loop then runs their close
 * callbacks); what is unconfirmed stays stored. NULL is a no-op. */
void uplink_close(uplink *u);

/* Free, after uplink_close and a turn of the loop. NULL is a no-op. */
void uplink_free(uplink *u);

#endif
