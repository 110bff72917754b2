/* store: durable readings in SQLite, written off the loop thread.
 *
 * One writer thread owns the database connection. The loop hands it work
 * (readings, delivery acknowledgements, meter state changes, poll outcomes,
 * gateway run times, replay requests) through a bounded queue; the thread
 * takes everything queued, applies it in one transaction (group commit), and
 * hands back what was committed: readings with their row id and per-meter
 * sequence number, assigned in the same transaction as the meter's last_seq is
 * advanced, so an uncommitted reading consumes no number and a crash leaves no
 * gap. The loop is told through the notify callback (a uv_async_send) and
 * drains the results with store_take_events. Nothing here blocks the loop.
 *
 * When a transaction fails (disk full, file system turned read-only, I/O
 * errors), it is rolled back and its operations are held in memory, up to a
 * bound, and retried with back-off, behind which later operations queue. The
 * readings of each failed batch come back once, without id or sequence
 * number, in a STORE_EV_TROUBLE event, so the loop can publish them live; when
 * the database takes them at last they are committed as historical readings.
 *
 * Schema: see docs/daemon.md (Storage); versioned by numbered migrations applied at
 * open (PRAGMA user_version).
 */
#ifndef IC_STORE_H
#define IC_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport/transport.h"

typedef struct store store;

/* A reading on its way to the database and back. */
typedef struct store_reading {
  struct store_reading *next;
  const char *meter;  /* meter id; must outlive the reading (cfg or owned) */
  int meter_index;    /* index in the configuration, or -1 when unknown */
  char *meter_owned;  /* set for rows read back from the database */
  int64_t ts_ms;
  char *fields;       /* JSON object text, owned */
  int quality;        /* quality_value */
  int64_t id;         /* row id, assigned at commit */
  int64_t seq;        /* per-meter sequence, assigned at commit */
  int64_t seq_reserved; /* the meter's reservation after it (see
                           store_seq_check); 0 for rows read back */
  int32_t seq_block;  /* numbers to reserve at a time for its meter (0: the
                         default, STORE_SEQ_BLOCK) */
  bool historical;    /* read back for replay */
  int64_t clock_step_ms; /* the wall clock stepped by this after it was taken */
  int64_t taken_base_ms; /* wall minus monotonic clock when it was taken (in
                            memory only; 0 for rows read back) */
  char text[];        /* FIELDS, when made by store_reading_new */
} store_reading;

/* A reading with a copy of the LEN bytes of FIELDS, in one allocation;
 * meter_index -1, the rest zero. NULL when out of memory. */
store_reading *store_reading_new(const char *fields, size_t len);

void store_reading_free(store_reading *r);

/* A report to the bureau's monitoring centre (the uplink, docs/uplink.md):
 * the frame as it goes on the wire, kept until the centre confirms it. */
#define STORE_UPLINK_FRAME_MAX 260
/* Reports kept at most: past this the oldest go, counted (at 5-minute
 * reports, about 35 days of one station). */
#define STORE_UPLINK_MAX 10000
typedef struct store_uplink {
  struct store_uplink *next;
  int64_t id;      /* row id, assigned at commit */
  int64_t slot_ms; /* the report slot (wall clock) */
  size_t len;
  uint8_t frame[STORE_UPLINK_FRAME_MAX];
} store_uplink;

void store_uplink_free(store_uplink *u);

typedef enum {
  STORE_EV_COMMITTED = 1, /* readings: a committed batch, in commit order */
  STORE_EV_REPLAY,        /* readings: undelivered rows, oldest first */
  STORE_EV_TROUBLE,       /* the database cannot be written, or can again */
  STORE_EV_MAINTAINED,    /* the bounds were enforced: see the counts */
  STORE_EV_SEQ_CHECKED,   /* items: store_seq_check's answer */
  STORE_EV_UPLINK,        /* uplinks: a stored report, or the kept ones */
} store_event_kind;

/* Sequence numbers are reserved per meter, a block at a time (the reading's
 * seq_block, or STORE_SEQ_BLOCK), in the transaction of the reading that
 * needs them. */
#define STORE_SEQ_BLOCK 100

/* One meter in store_seq_check. */
typedef struct {
  char meter[64];
  int meter_index;         /* the caller's, returned as is */
  int64_t broker_reserved; /* the reservation the broker holds; 0: none */
  /* Answers */
  int64_t db_reserved;     /* the database's reservation before the check */
  int64_t reserved;        /* ...and after it */
  int64_t last_seq;        /* the last number given */
  int64_t renumbered;      /* readings taken since the open numbered anew */
  int64_t first_seq;       /* ...from this number on */
} store_seq_item;

/* Retry of operations held while the database cannot be written: after this
 * long, doubling up to the maximum. */
#define STORE_RETRY_MIN_MS 1000
#define STORE_RETRY_MAX_MS 8000

/* Operations queued within this long of each other share a transaction
 * (storage.commit_interval). */
#define STORE_COMMIT_WINDOW_MS 50

typedef struct store_event {
  struct store_event *next;
  store_event_kind kind;
  store_reading *readings; /* list, owned by the event */
  size_t n;               /* readings, or items */
  store_seq_item *items;   /* STORE_EV_SEQ_CHECKED, owned by the event */
  store_uplink *uplinks;   /* STORE_EV_UPLINK, owned by the event, oldest first */
  bool uplink_loaded;      /* STORE_EV_UPLINK: store_uplink_load's answer (else
                              one report store_uplink_add stored) */
  int64_t uplink_dropped;  /* STORE_EV_UPLINK: the oldest kept reports removed
                              to stay within STORE_UPLINK_MAX */
  int64_t replay_last_id;  /* STORE_EV_REPLAY: the last id scanned */
  bool replay_done;        /* STORE_EV_REPLAY: nothing more up to the bound */
  /* STORE_EV_MAINTAINED */
  int64_t aged;            /* readings older than the retention, removed */
  int64_t dropped_delivered;   /* delivered readings removed for the size */
  int64_t dropped_undelivered; /* undelivered readings removed for the size */
  int64_t bytes;           /* the database files afterwards */
  bool over;               /* still over max_size: nothing left to remove */
  /* STORE_EV_MAINTAINED with detail set: a statement failed (and nothing
   * was removed past it). */
  /* STORE_EV_TROUBLE: readings (copies, no id or sequence number) that could
   * not be stored now and are held in memory, for live publishing. */
  bool failing;            /* the database cannot be written */
  bool changed;            /* ...and this is news: it started or ended */
  int64_t held;            /* readings held in memory (when it ended: stored) */
  int64_t lost;            /* held readings dropped past the bound */
  int64_t duration_ms;     /* when it ended: how long it lasted */
  char detail[256];        /* STORE_EV_TROUBLE when it started: why;
                              STORE_EV_MAINTAINED: what failed */
} store_event;

void store_event_free(store_event *ev);

typedef struct {
  const char *path;
  bool synchronous_full;   /* PRAGMA synchronous FULL (default) or NORMAL */
  size_t queue_max;        /* pending operations; 0: 65536 */
  int64_t max_size;        /* bytes for the database, -wal and -shm; 0: none */
  int64_t retention_ms;    /* readings and history older go; 0: kept */
  size_t hold_max;         /* operations held in memory while the database
                              cannot be written; 0: 20000 */
  int64_t commit_window_ms; /* group commit: how long the first queued
                              operation waits for others; 0: the default,
                              negative: none */
  void (*notify)(void *ctx); /* called from the writer thread after each batch */
  void *notify_ctx;
} store_options;

/* Open (creating and migrating) the database and start the writer thread.
 * Returns 0, or a negative code with err filled. */
int store_open(store **out, const store_options *opt, char *err, size_t errlen);

/* Queue a reading. Takes ownership. Returns 0, or -1 when the queue is full
 * (the reading is freed and counted as dropped). */
int store_add_reading(store *s, store_reading *r);

/* The same, and count the poll that took it ("ok" or "suspect" by its
 * quality) in the meter's hourly poll counts, in the same operation. */
int store_add_polled_reading(store *s, store_reading *r);

/* Mark row ID delivered (a PUBACK arrived). */
int store_mark_delivered(store *s, int64_t id);

/* Mark the N rows of IDS delivered, in one operation. */
int store_mark_delivered_many(store *s, const int64_t *ids, size_t n);

/* Record a meter state change. ERROR is a failure-kind name or NULL. */
int store_add_state(store *s, const char *meter, int64_t ts_ms, bool online,
                    const char *error, const char *detail);

/* What a poll came to, as the hourly poll_stats rows count it: a success
 * (ok or suspect), a slot never polled, or one of the failure kinds (see
 * store_poll_failed). */
typedef enum {
  STORE_POLL_OK,
  STORE_POLL_SUSPECT,
  STORE_POLL_SKIPPED,
  STORE_POLL_FAILED, /* the first failure kind (TR_ETIMEOUT); the others follow
                        in tr_code order */
  STORE_POLL_KINDS = STORE_POLL_FAILED + TR_NKINDS
} store_poll_kind;

/* The outcome of a poll that failed with CODE (a tr_code below 0). */
static inline store_poll_kind store_poll_failed(int code) {
  return (store_poll_kind)(STORE_POLL_FAILED - 1 - code);
}

/* Count one poll outcome in the meter's hourly row; -1 for a KIND out of
 * range. */
int store_count_poll(store *s, const char *meter, int64_t ts_ms, store_poll_kind kind);

/* Record that METER is configured from TS_MS on, unless an earlier time is
 * already recorded. */
int store_meter_configured(store *s, const char *meter, int64_t ts_ms);

/* Gateway run bookkeeping: start, a heartbeat while alive, clean stop. */
int store_run_start(store *s, int64_t ts_ms);
int store_run_alive(store *s, int64_t ts_ms);
int store_run_stop(store *s, int64_t ts_ms);

/* Ask for up to LIMIT undelivered readings with AFTER_ID < id <= UPTO_ID,
 * oldest first; they come back as one STORE_EV_REPLAY event. */
int store_request_replay(store *s, int64_t after_id, int64_t upto_id,
                         size_t limit);

/* A database restored from an older copy must not give a published
 * (meter, seq) to another reading. The publisher announces each meter's
 * reservation (retained) before any reading numbered within it; at its first
 * connect it reads the reservations back and hands them here. For each of
 * the N ITEMS (taken, freed by the store): when the broker's reservation is
 * higher than the database's, the readings taken since the open are numbered
 * anew from above the broker's, and so is every later one. The answer comes
 * back as one STORE_EV_SEQ_CHECKED event, once committed. */
int store_seq_check(store *s, store_seq_item *items, size_t n);

/* Enforce the bounds as of NOW_MS: remove what is older than the retention,
 * then, while the files exceed max_size, the oldest delivered readings and
 * only then the oldest undelivered ones; give the freed pages back. The
 * outcome comes back as a STORE_EV_MAINTAINED event. */
int store_maintain(store *s, int64_t now_ms);

/* The wall clock stepped by STEP_MS: flag every reading with an id above
 * AFTER_ID queued before this call and not flagged yet as taken before it. */
int store_clock_step(store *s, int64_t after_id, int64_t step_ms);

/* What the integrity check at open (PRAGMA quick_check, at most
 * STORE_CHECK_MS) found wrong, or NULL when nothing; *NOTE, when not NULL,
 * says it did not finish. */
#define STORE_CHECK_MS 5000
const char *store_integrity(const store *s, const char **note);

/* What opening changed in the database file (auto-vacuum turned on for a
 * database made without it), or NULL. */
const char *store_open_note(const store *s);

/* PRAGMA synchronous of the writer's connection, read back at open: 2 FULL
 * (a commit is on disk before it returns: what a power cut cannot undo),
 * 1 NORMAL; -1 when it could not be read. */
int store_synchronous(const store *s);

/* Store a report for the centre (takes U). Once committed it comes back
 * with its row id in a STORE_EV_UPLINK event; past STORE_UPLINK_MAX kept
 * reports the oldest are removed in the same transaction, counted. */
int store_uplink_add(store *s, store_uplink *u);

/* The centre confirmed report ID: remove it. */
int store_uplink_done(store *s, int64_t id);

/* Ask for every kept report, oldest first (at most STORE_UPLINK_MAX): one
 * STORE_EV_UPLINK event with uplink_loaded set, in order with the reports
 * stored before and after the request. */
int store_uplink_load(store *s);

/* Take every event produced so far (a list, oldest first), or NULL. */
store_event *store_take_events(store *s);

/* Counters, safe from any thread. */
typedef struct {
  uint64_t committed;       /* readings committed */
  uint64_t dropped;         /* readings lost: refused by a full queue or
                               removed by the size limit before delivery */
  uint64_t removed;         /* readings removed by the size limit, delivered
                               or not */
  uint64_t errors;          /* failed transactions */
  uint64_t transactions;
  uint64_t undelivered;     /* rows with delivered = 0 (as of the last commit) */
  int64_t max_id;           /* the highest reading row id committed so far */
  uint64_t held;            /* readings held in memory, not yet stored */
  bool failing;             /* the database cannot be written now */
  uint64_t uplink_dropped;  /* reports for the centre removed unconfirmed
                               (STORE_UPLINK_MAX, retention) */
} store_stats;
void store_get_stats(store *s, store_stats *out);

/* How long (ms) since the writer thread last came round its loop: it does
 * at least every half second while it waits, and after every round
 * (transaction, replay read, maintenance pass), so a large value means it
 * has been inside one round that long. Any thread. */
int64_t store_writer_silent_ms(store *s);

/* Stop the writer after it has committed everything queued so far, close the
 * database. FINAL, when not NULL, receives the counters as they stood at the
 * end. NULL is a no-op. */
void store_close(store *s, store_stats *final);

/* Pure helper, exposed for tests: the schema version this build migrates to. */
int store_schema_version(void);

#endif
