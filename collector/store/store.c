#include "store/store.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <pwd.h>
#include <time.h>
#include <unistd.h>

#include "base/backoff.h"
#include "base/xqueue.h"
#include "store/dblock.h"
#include "store/migrate.h"

/* ------------------------------------------------------------------------ */
/* Schema                                                                   */

/* The gateway database's schema, whole: every table in it, the reporter's
 * `reports` included (store/reports.c), is made and changed here only. Each
 * migration runs once, in order, in its own transaction; user_version
 * records how many have run (store/migrate.c). Incremental auto-vacuum is
 * chosen before the first, as it only takes effect on an empty database. */
static const char *const migrations[] = {
    /* 1 */
    "CREATE TABLE meters ("
    "  id TEXT PRIMARY KEY,"
    "  last_seq INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE readings ("
    "  id INTEGER PRIMARY KEY,"
    "  meter TEXT NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  ts_ms INTEGER NOT NULL,"
    "  fields TEXT NOT NULL,"
    "  quality TEXT NOT NULL,"
    "  delivered INTEGER NOT NULL DEFAULT 0,"
    "  UNIQUE (meter, seq));"
    "CREATE INDEX readings_undelivered ON readings(id) WHERE delivered = 0;"
    "CREATE INDEX readings_meter_ts ON readings(meter, ts_ms);"
    "CREATE TABLE state_changes ("
    "  id INTEGER PRIMARY KEY,"
    "  meter TEXT NOT NULL,"
    "  ts_ms INTEGER NOT NULL,"
    "  online INTEGER NOT NULL,"
    "  error TEXT,"
    "  detail TEXT);"
    "CREATE INDEX state_changes_meter_ts ON state_changes(meter, ts_ms);"
    "CREATE TABLE poll_stats ("
    "  meter TEXT NOT NULL,"
    "  hour_ms INTEGER NOT NULL,"
    "  polls INTEGER NOT NULL DEFAULT 0,"
    "  ok INTEGER NOT NULL DEFAULT 0,"
    "  suspect INTEGER NOT NULL DEFAULT 0,"
    "  skipped INTEGER NOT NULL DEFAULT 0,"
    "  timeout INTEGER NOT NULL DEFAULT 0,"
    "  crc INTEGER NOT NULL DEFAULT 0,"
    "  exception INTEGER NOT NULL DEFAULT 0,"
    "  connection_refused INTEGER NOT NULL DEFAULT 0,"
    "  connection_reset INTEGER NOT NULL DEFAULT 0,"
    "  malformed INTEGER NOT NULL DEFAULT 0,"
    "  io INTEGER NOT NULL DEFAULT 0,"
    "  decode INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (meter, hour_ms)) WITHOUT ROWID;"
    "CREATE TABLE gateway_runs ("
    "  id INTEGER PRIMARY KEY,"
    "  start_ms INTEGER NOT NULL,"
    "  alive_ms INTEGER NOT NULL,"
    "  stop_ms INTEGER);",
    /* 2: when each meter entered the configuration, for expected readings */
    "ALTER TABLE meters ADD COLUMN configured_since_ms INTEGER;",
    /* 3: online-rate reports, one per period and window */
    "CREATE TABLE reports ("
    "  id INTEGER PRIMARY KEY,"
    "  period TEXT NOT NULL,"
    "  start_ms INTEGER NOT NULL,"
    "  end_ms INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  body TEXT NOT NULL,"
    "  UNIQUE (period, start_ms));",
    /* 4: when the bureau accepted each report (NULL: not yet) */
    "ALTER TABLE reports ADD COLUMN pushed_ms INTEGER;"
    "CREATE INDEX reports_unpushed ON reports(id) WHERE pushed_ms IS NULL;",
    /* 5: the wall-clock step that followed a reading (NULL: none) */
    "ALTER TABLE readings ADD COLUMN clock_step_ms INTEGER;",
    /* 6: readings without the UNIQUE (meter, seq) index. The writer alone
     * numbers readings, one meter's in order; a second index that starts
     * with the meter doubled the pages every commit writes (one per meter
     * and index), which on flash is wear as well as time. */
    "CREATE TABLE readings_new ("
    "  id INTEGER PRIMARY KEY,"
    "  meter TEXT NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  ts_ms INTEGER NOT NULL,"
    "  fields TEXT NOT NULL,"
    "  quality TEXT NOT NULL,"
    "  delivered INTEGER NOT NULL DEFAULT 0,"
    "  clock_step_ms INTEGER);"
    "INSERT INTO readings_new SELECT id, meter, seq, ts_ms, fields, quality, delivered,"
    "  clock_step_ms FROM readings;"
    "DROP TABLE readings;"
    "ALTER TABLE readings_new RENAME TO readings;"
    "CREATE INDEX readings_undelivered ON readings(id) WHERE delivered = 0;"
    "CREATE INDEX readings_meter_ts ON readings(meter, ts_ms);",
    /* 7: retention deletes by age without reading the whole table (it ran
     * every maintenance interval); new rows append at the end of it. */
    "CREATE INDEX readings_ts ON readings(ts_ms);"
    "CREATE INDEX state_changes_ts ON state_changes(ts_ms);",
    /* 8: each meter's reserved sequence numbers (see store_seq_check) */
    "ALTER TABLE meters ADD COLUMN seq_reserved INTEGER NOT NULL DEFAULT 0;",
    /* 9: polls of a bus whose DTU has not dialled in (rtu-dtu) */
    "ALTER TABLE poll_stats ADD COLUMN not_connected INTEGER NOT NULL DEFAULT 0;",
    /* 10: reports for the bureau's monitoring centre, each kept until the
     * centre confirms it (docs/uplink.md) */
    "CREATE TABLE uplink_reports ("
    "  id INTEGER PRIMARY KEY,"
    "  slot_ms INTEGER NOT NULL,"
    "  frame BLOB NOT NULL);",
};

#define NMIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))

int store_schema_version(void) { return NMIGRATIONS; }

/* The poll_stats column of each store_poll_kind: a failure kind's is its
 * name (tr_code_name). */
static const char *poll_column(int kind) {
  static const char *const first[] = {"ok", "suspect", "skipped"};
  if (kind < STORE_POLL_FAILED) return first[kind];
  return tr_code_name(STORE_POLL_FAILED - 1 - kind);
}
#define NKINDS STORE_POLL_KINDS

/* ------------------------------------------------------------------------ */
/* Operations queued for the writer                                         */

typedef enum {
  OP_READING = 1,
  OP_DELIVERED,
  OP_STATE,
  OP_POLL,
  OP_RUN_START,
  OP_RUN_ALIVE,
  OP_RUN_STOP,
  OP_REPLAY,
  OP_CONFIGURED,
  OP_MAINTAIN,
  OP_CLOCK_STEP,
  OP_SEQ_CHECK,
  OP_UPLINK_ADD,
  OP_UPLINK_DONE,
  OP_UPLINK_LOAD,
} op_kind;

typedef struct op {
  struct op *next;
  op_kind kind;
  store_reading *reading;
  int64_t id;
  int64_t ts_ms;
  int64_t upto_id;
  size_t limit;
  int kind_index;  /* OP_POLL, and OP_READING when count is set */
  bool count;      /* OP_READING: count its poll in poll_stats too */
  int64_t *ids;    /* OP_DELIVERED: the rows (id unused), owned */
  size_t nids;
  store_seq_item *items; /* OP_SEQ_CHECK: the meters, owned */
  store_uplink *uplink;  /* OP_UPLINK_ADD: the report; OP_UPLINK_LOAD: the
                            kept ones read in its transaction; owned */
  int64_t uplink_dropped; /* OP_UPLINK_ADD: the oldest removed for the bound */
  bool online;
  /* A meter's id and a state's reason: only the operations that name them
   * (a state change, a poll count, a configured meter) have room for them,
   * not each of the thousands of readings queued a second. */
  struct {
    char meter[64];
    char error[32];
    char detail[160];
  } text[];
} op;

typedef struct {
  char *meter; /* NULL: a free slot */
  int64_t last_seq;
  int64_t reserved; /* numbers up to this may be published (see seq_load) */
  bool touched;
} seq_slot;

struct store {
  sqlite3 *db;
  int lock_fd;          /* dblock: this process's alone (-1: none) */
  int64_t check_until_ms; /* the integrity check's deadline (monotonic) */
  char integrity[512];  /* what the check at open found wrong, or "" */
  char integrity_note[96]; /* the check did not finish, or "" */
  char open_note[256];  /* what opening changed in the file, or "" */
  pthread_t thread;
  bool thread_started;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  op *head, *tail;
  size_t queued;
  size_t queue_max;
  bool stopping;
  xqueue events;   /* to the loop, oldest first */

  sqlite3_stmt *st_insert;
  sqlite3_stmt *st_seq_get;
  sqlite3_stmt *st_seq_set;
  sqlite3_stmt *st_delivered;
  sqlite3_stmt *st_state;
  sqlite3_stmt *st_poll[NKINDS];
  sqlite3_stmt *st_run_start;
  sqlite3_stmt *st_run_alive;
  sqlite3_stmt *st_run_stop;
  sqlite3_stmt *st_replay;
  sqlite3_stmt *st_configured;
  sqlite3_stmt *st_uplink_add, *st_uplink_trim, *st_uplink_done, *st_uplink_load;
  int64_t run_id;

  _Atomic uint64_t committed, dropped, errors, transactions, undelivered, removed;
  _Atomic uint64_t uplink_dropped;
  char path[4096];
  int64_t max_size;
  int64_t retention_ms;
  _Atomic int64_t max_id;
  int64_t open_max_id;  /* rows above this were taken since the open */
  int synchronous;      /* PRAGMA synchronous as read back at open */

  /* While the database cannot be written (disk full, read-only, I/O
   * errors): the operations that failed, oldest first, retried with back-off.
   * Their readings went to the loop once, for live publishing. */
  op *held, *held_tail;
  size_t held_ops, hold_max;
  bool failing;
  int64_t retry_at_ms, backoff_ms, fail_since_ms;
  /* Group commit: operations wait up to commit_window_ms from the first one
   * queued, so that one transaction (and one fsync) carries many. */
  int64_t commit_window_ms, first_queued_ms;
  bool urgent;
  _Atomic uint64_t held_readings;
  seq_slot *seqs;        /* the writer's table of last sequence numbers */
  size_t seq_cap, seq_n;
  size_t *seq_touched;   /* slots advanced by the batch in progress */
  size_t seq_ntouched;
  _Atomic bool failing_flag;
  /* When the writer last came round its loop (monotonic ms): at each
   * wake-up, at least every BEAT_MS while it waits, and after each round. */
  _Atomic int64_t beat_ms;
};

store_reading *store_reading_new(const char *fields, size_t len) {
  store_reading *r = calloc(1, sizeof *r + len + 1);
  if (!r) return NULL;
  memcpy(r->text, fields, len);
  r->text[len] = '\0';
  r->fields = r->text;
  r->meter_index = -1;
  return r;
}

void store_reading_free(store_reading *r) {
  while (r) {
    store_reading *next = r->next;
    if (r->fields != r->text) free(r->fields);
    free(r->meter_owned);
    free(r);
    r = next;
  }
}

void store_uplink_free(store_uplink *u) {
  while (u) {
    store_uplink *next = u->next;
    free(u);
    u = next;
  }
}

void store_event_free(store_event *ev) {
  while (ev) {
    store_event *next = ev->next;
    store_reading_free(ev->readings);
    store_uplink_free(ev->uplinks);
    free(ev->items);
    free(ev);
    ev = next;
  }
}

/* ------------------------------------------------------------------------ */
/* Opening                                                                  */

static int pragma_int(sqlite3 *db, const char *sql, int *out) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
  int rc = sqlite3_step(st);
  *out = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
  sqlite3_finalize(st);
  return rc == SQLITE_ROW ? 0 : -1;
}

static int prepare(store *s, sqlite3_stmt **st, const char *sql, char *err,
                   size_t errlen) {
  if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) !=
      SQLITE_OK) {
    snprintf(err, errlen, "prepare \"%.60s...\": %s", sql, sqlite3_errmsg(s->db));
    return -1;
  }
  return 0;
}

static int prepare_all(store *s, char *err, size_t errlen) {
  if (prepare(s, &s->st_insert,
              "INSERT INTO readings (meter, seq, ts_ms, fields, quality, clock_step_ms) "
              "VALUES (?1, ?2, ?3, ?4, ?5, ?6)", err, errlen) ||
      prepare(s, &s->st_seq_get, "SELECT last_seq, seq_reserved FROM meters WHERE id = ?1",
              err, errlen) ||
      prepare(s, &s->st_seq_set,
              "INSERT INTO meters (id, last_seq, seq_reserved) VALUES (?1, ?2, ?3) "
              "ON CONFLICT(id) DO UPDATE SET last_seq = excluded.last_seq, "
              "seq_reserved = excluded.seq_reserved",
              err, errlen) ||
      prepare(s, &s->st_delivered,
              "UPDATE readings SET delivered = 1 WHERE id = ?1 AND delivered = 0",
              err, errlen) ||
      prepare(s, &s->st_state,
              "INSERT INTO state_changes (meter, ts_ms, online, error, detail) "
              "VALUES (?1, ?2, ?3, ?4, ?5)", err, errlen) ||
      prepare(s, &s->st_run_start,
              "INSERT INTO gateway_runs (start_ms, alive_ms) VALUES (?1, ?1)",
              err, errlen) ||
      prepare(s, &s->st_run_alive,
              "UPDATE gateway_runs SET alive_ms = ?2 WHERE id = ?1", err, errlen) ||
      prepare(s, &s->st_run_stop,
              "UPDATE gateway_runs SET alive_ms = ?2, stop_ms = ?2 WHERE id = ?1",
              err, errlen) ||
      prepare(s, &s->st_configured,
              "INSERT INTO meters (id, last_seq, configured_since_ms) VALUES (?1, 0, ?2) "
              "ON CONFLICT(id) DO UPDATE SET configured_since_ms = "
              "coalesce(meters.configured_since_ms, excluded.configured_since_ms)",
              err, errlen) ||
      prepare(s, &s->st_replay,
              "SELECT id, meter, seq, ts_ms, fields, quality, clock_step_ms FROM readings "
              "WHERE delivered = 0 AND id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3",
              err, errlen) ||
      prepare(s, &s->st_uplink_add,
              "INSERT INTO uplink_reports (slot_ms, frame) VALUES (?1, ?2)", err, errlen) ||
      prepare(s, &s->st_uplink_trim,
              "DELETE FROM uplink_reports WHERE id IN (SELECT id FROM uplink_reports "
              "ORDER BY id DESC LIMIT -1 OFFSET ?1)", err, errlen) ||
      prepare(s, &s->st_uplink_done, "DELETE FROM uplink_reports WHERE id = ?1", err,
              errlen) ||
      prepare(s, &s->st_uplink_load,
              "SELECT id, slot_ms, frame FROM uplink_reports ORDER BY id LIMIT ?1", err,
              errlen))
    return -1;
  for (size_t i = 0; i < NKINDS; i++) {
    char sql[256];
    const char *col = poll_column((int)i);
    bool success = i < 2;
    snprintf(sql, sizeof sql,
             "INSERT INTO poll_stats (meter, hour_ms, polls, %s) VALUES (?1, ?2, %d, 1) "
             "ON CONFLICT(meter, hour_ms) DO UPDATE SET polls = polls + %d, %s = %s + 1",
             col, strcmp(col, "skipped") == 0 ? 0 : 1,
             strcmp(col, "skipped") == 0 ? 0 : 1, col, col);
    if (prepare(s, &s->st_poll[i], sql, err, errlen)) return -1;
    (void)success;
  }
  return 0;
}

static void finalize_all(store *s) {
  sqlite3_stmt *all[] = {s->st_insert, s->st_seq_get, s->st_seq_set,
                         s->st_delivered, s->st_state, s->st_run_start,
                         s->st_run_alive, s->st_run_stop, s->st_replay,
                         s->st_configured, s->st_uplink_add, s->st_uplink_trim,
                         s->st_uplink_done, s->st_uplink_load};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) sqlite3_finalize(all[i]);
  for (size_t i = 0; i < NKINDS; i++) sqlite3_finalize(s->st_poll[i]);
}

static void *writer_main(void *arg);

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
static void seqs_clear(store *s);

/* The writer waits at most this long at a time, so that its heartbeat
 * (store_writer_silent_ms) says it is alive while nothing is queued. */
#define BEAT_MS 500

int64_t store_writer_silent_ms(store *s) {
  int64_t d = mono_ms() - s->beat_ms;
  return d > 0 ? d : 0;
}

static void free_ops(op *o) {
  while (o) {
    op *next = o->next;
    store_reading_free(o->reading);
    free(o->ids);
    free(o->items);
    store_uplink_free(o->uplink);
    free(o);
    o = next;
  }
}

/* PRAGMA quick_check, bounded in time (a progress handler ends it after
 * STORE_CHECK_MS): a partly corrupt database is said so at start, not found
 * out by the size bound. What it finds is kept for store_integrity(). */
static int check_deadline(void *arg) {
  store *s = arg;
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000 > s->check_until_ms;
}

static void check_integrity(store *s) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  s->check_until_ms = (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000 + STORE_CHECK_MS;
  sqlite3_progress_handler(s->db, 10000, check_deadline, s);
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(s->db, "PRAGMA quick_check(5)", -1, &st, NULL) != SQLITE_OK) {
    snprintf(s->integrity, sizeof s->integrity, "%s", sqlite3_errmsg(s->db));
  } else {
    size_t o = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      const char *line = (const char *)sqlite3_column_text(st, 0);
      if (!line || strcmp(line, "ok") == 0) continue;
      int w = snprintf(s->integrity + o, sizeof s->integrity - o, "%s%s", o ? "; " : "", line);
      if (w < 0 || (size_t)w >= sizeof s->integrity - o) break;
      o += (size_t)w;
    }
    if (rc == SQLITE_INTERRUPT)
      snprintf(s->integrity_note, sizeof s->integrity_note,
               "not finished within %d s; the database is large", STORE_CHECK_MS / 1000);
    else if (rc != SQLITE_DONE && rc != SQLITE_ROW && !s->integrity[0])
      snprintf(s->integrity, sizeof s->integrity, "%s", sqlite3_errmsg(s->db));
    sqlite3_finalize(st);
  }
  sqlite3_progress_handler(s->db, 0, NULL, NULL);
}

int store_synchronous(const store *s) { return s->synchronous; }

const char *store_open_note(const store *s) { return s->open_note[0] ? s->open_note : NULL; }

const char *store_integrity(const store *s, const char **note) {
  if (note) *note = s->integrity_note[0] ? s->integrity_note : NULL;
  return s->integrity[0] ? s->integrity : NULL;
}

/* The database must be writable by this process, and so must its folder
 * (SQLite makes the -wal and -shm files there): one that is not would start
 * in disk-trouble mode and lose what it holds at stop. Say so at start, with
 * the path, the user and the system's words. */
static int check_writable(const char *path, char *err, size_t errlen) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash == dir)
    dir[1] = '\0';
  else if (slash)
    *slash = '\0';
  else
    snprintf(dir, sizeof dir, ".");
  struct passwd *pw = getpwuid(geteuid());
  const char *user = pw ? pw->pw_name : "?";
  if (access(dir, W_OK | X_OK) != 0) {
    snprintf(err, errlen, "cannot use the database %s: its folder %s is not writable for "
             "user %s (uid %d): %s",
             path, dir, user, (int)geteuid(), strerror(errno));
    return -1;
  }
  static const char *const suffix[] = {"", "-wal", "-shm"};
  for (size_t i = 0; i < 3; i++) {
    char p[4104];
    snprintf(p, sizeof p, "%s%s", path, suffix[i]);
    if (access(p, F_OK) == 0 && access(p, R_OK | W_OK) != 0) {
      snprintf(err, errlen, "cannot use the database %s: %s is not writable for user %s "
               "(uid %d): %s",
               path, p, user, (int)geteuid(), strerror(errno));
      return -1;
    }
  }
  return 0;
}

int store_open(store **out, const store_options *opt, char *err, size_t errlen) {
  store *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  s->lock_fd = -1;
  pthread_mutex_init(&s->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* retry waits */
  pthread_cond_init(&s->cv, &ca);
  pthread_condattr_destroy(&ca);
  s->queue_max = opt->queue_max ? opt->queue_max : 65536;
  XQUEUE_INIT(&s->events, store_event, next, opt->notify, opt->notify_ctx);
  snprintf(s->path, sizeof s->path, "%s", opt->path);
  s->max_size = opt->max_size;
  s->retention_ms = opt->retention_ms;
  s->hold_max = opt->hold_max ? opt->hold_max : 20000;
  s->commit_window_ms = opt->commit_window_ms < 0 ? 0
                        : opt->commit_window_ms ? opt->commit_window_ms
                                                : STORE_COMMIT_WINDOW_MS;

  if (check_writable(opt->path, err, errlen) != 0) goto fail;
  s->lock_fd = dblock_acquire(opt->path, err, errlen);
  if (s->lock_fd < 0) goto fail;
  int rc = sqlite3_open_v2(opt->path, &s->db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                               SQLITE_OPEN_NOMUTEX,
                           NULL);
  if (rc != SQLITE_OK) {
    int se = s->db ? sqlite3_system_errno(s->db) : 0;
    snprintf(err, errlen, "cannot open %s: %s%s%s", opt->path,
             s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc), se ? ": " : "",
             se ? strerror(se) : "");
    goto fail;
  }
  sqlite3_busy_timeout(s->db, 5000);
  char e[256];
  /* Incremental auto-vacuum, so that the size bound gives freed pages back
   * to the file system. It must be chosen before the first table is made
   * and before WAL mode (SQLite leaves it off otherwise); a database made
   * without it is rebuilt with it once (VACUUM). */
  int av = -1, uv = 0;
  if (pragma_int(s->db, "PRAGMA auto_vacuum", &av) == 0 && av == 0 &&
      store_user_version(s->db, &uv) == 0) {
    if (store_exec(s->db, "PRAGMA auto_vacuum = INCREMENTAL", e, sizeof e) != 0) {
      snprintf(err, errlen, "%s: %s", opt->path, e);
      goto fail;
    }
    if (uv > 0) {
      int64_t t0 = mono_ms();
      if (store_exec(s->db, "VACUUM", e, sizeof e) == 0)
        snprintf(s->open_note, sizeof s->open_note,
                 "incremental auto-vacuum turned on (the database rebuilt once, in %lld ms)",
                 (long long)(mono_ms() - t0));
      else
        snprintf(s->open_note, sizeof s->open_note,
                 "auto-vacuum is off and could not be turned on (VACUUM: %.80s): the size "
                 "bound cannot shrink the file", e);
    }
  }
  if (store_exec(s->db, "PRAGMA journal_mode = WAL", e, sizeof e) != 0 ||
      store_exec(s->db,
           opt->synchronous_full ? "PRAGMA synchronous = FULL"
                                 : "PRAGMA synchronous = NORMAL",
           e, sizeof e) != 0 ||
      store_exec(s->db, "PRAGMA journal_size_limit = 16777216", e, sizeof e) != 0 ||
      store_exec(s->db, "PRAGMA foreign_keys = ON", e, sizeof e) != 0 ||
      /* 1 MiB of pages: the newest index pages of a thousand meters; the
       * rest is the kernel's page cache's to keep. */
      store_exec(s->db, "PRAGMA cache_size = -1024", e, sizeof e) != 0) {
    snprintf(err, errlen, "%s: %s", opt->path, e);
    goto fail;
  }
  /* What the connection does, not what was asked: read back. */
  s->synchronous = -1;
  sqlite3_stmt *sy;
  if (sqlite3_prepare_v2(s->db, "PRAGMA synchronous", -1, &sy, NULL) == SQLITE_OK) {
    if (sqlite3_step(sy) == SQLITE_ROW) s->synchronous = sqlite3_column_int(sy, 0);
    sqlite3_finalize(sy);
  }
  if (s->max_size > 0) {
    /* Keep the write-ahead log within an eighth of the bound, and within
     * 16 MiB: checkpoint that often and truncate it back to that after.
     * Every reading adds an entry at its meter's place in readings(meter,
     * ts_ms), so a commit of a busy gateway's window dirties a page for
     * each of hundreds of meters, and much the same pages every time. With
     * SQLite's default 4 MiB the log was checkpointed every other commit
     * at 10,000 readings a second, copying those pages into the database
     * again each time; a log four times as long copies each once for
     * several commits (17 % less CPU for the writer at 1,000 meters). */
    char pragma[128];
    int64_t wal = s->max_size / 8;
    if (wal > 16 * 1024 * 1024) wal = 16 * 1024 * 1024;
    snprintf(pragma, sizeof pragma, "PRAGMA journal_size_limit = %lld", (long long)wal);
    store_exec(s->db, pragma, e, sizeof e);
    int64_t pages = wal / 4096;
    snprintf(pragma, sizeof pragma, "PRAGMA wal_autocheckpoint = %lld",
             (long long)(pages < 16 ? 16 : pages));
    store_exec(s->db, pragma, e, sizeof e);
  }
  check_integrity(s);
  if (store_migrate(s->db, migrations, NMIGRATIONS, e, sizeof e) != 0) {
    snprintf(err, errlen, "%s: migration failed: %s", opt->path, e);
    goto fail;
  }
  if (prepare_all(s, e, sizeof e) != 0) {
    snprintf(err, errlen, "%s: %s", opt->path, e);
    goto fail;
  }
  sqlite3_stmt *cnt;
  if (sqlite3_prepare_v2(s->db, "SELECT count(*) FROM readings WHERE delivered = 0",
                         -1, &cnt, NULL) == SQLITE_OK) {
    if (sqlite3_step(cnt) == SQLITE_ROW)
      atomic_store(&s->undelivered, (uint64_t)sqlite3_column_int64(cnt, 0));
    sqlite3_finalize(cnt);
  }
  if (sqlite3_prepare_v2(s->db, "SELECT coalesce(max(id), 0) FROM readings", -1,
                         &cnt, NULL) == SQLITE_OK) {
    if (sqlite3_step(cnt) == SQLITE_ROW)
      atomic_store(&s->max_id, sqlite3_column_int64(cnt, 0));
    sqlite3_finalize(cnt);
  }
  s->open_max_id = atomic_load(&s->max_id);
  s->beat_ms = mono_ms();
  if (pthread_create(&s->thread, NULL, writer_main, s) != 0) {
    snprintf(err, errlen, "cannot start the storage thread");
    goto fail;
  }
  s->thread_started = true;
  *out = s;
  return 0;
fail:
  store_close(s, NULL);
  return -1;
}

void store_close(store *s, store_stats *final) {
  if (!s) return;
  if (s->thread_started) {
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
  }
  if (final) store_get_stats(s, final);
  seqs_clear(s);
  free_ops(s->held); /* what the database never took: counted in held */
  s->held = NULL;
  free_ops(s->head);
  store_event_free(xqueue_take(&s->events));
  xqueue_destroy(&s->events);
  if (s->db) {
    finalize_all(s);
    /* A clean close checkpoints the WAL into the main file. */
    sqlite3_close_v2(s->db);
  }
  dblock_release(s->lock_fd);
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

/* ------------------------------------------------------------------------ */
/* Queueing                                                                 */

static int enqueue(store *s, op *o) {
  pthread_mutex_lock(&s->mu);
  if (s->stopping || (o->kind == OP_READING && s->queued >= s->queue_max)) {
    pthread_mutex_unlock(&s->mu);
    if (o->kind == OP_READING) atomic_fetch_add(&s->dropped, 1);
    o->next = NULL;
    free_ops(o);
    return -1;
  }
  o->next = NULL;
  bool was_empty = !s->head;
  if (s->tail)
    s->tail->next = o;
  else
    s->head = o;
  s->tail = o;
  s->queued++;
  if (was_empty) s->first_queued_ms = mono_ms();
  /* A replay request is answered at once: the replay's pace depends on it. */
  if (o->kind == OP_REPLAY) s->urgent = true;
  /* The writer sleeps without a deadline only on an empty queue; otherwise it
   * waits out the commit window, and only an urgent operation cuts it short. */
  if (was_empty || o->kind == OP_REPLAY) pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
  return 0;
}

static op *new_op(op_kind k) {
  bool text = k == OP_STATE || k == OP_POLL || k == OP_CONFIGURED;
  op *o = calloc(1, sizeof *o + (text ? sizeof o->text[0] : 0));
  if (o) o->kind = k;
  return o;
}

static int add_reading(store *s, store_reading *r, bool count) {
  op *o = new_op(OP_READING);
  if (!o) {
    atomic_fetch_add(&s->dropped, 1);
    store_reading_free(r);
    return -1;
  }
  r->next = NULL;
  o->reading = r;
  o->count = count;
  o->kind_index = r->quality ? STORE_POLL_SUSPECT : STORE_POLL_OK;
  return enqueue(s, o);
}

int store_add_reading(store *s, store_reading *r) { return add_reading(s, r, false); }

int store_add_polled_reading(store *s, store_reading *r) {
  return add_reading(s, r, true);
}

int store_mark_delivered(store *s, int64_t id) { return store_mark_delivered_many(s, &id, 1); }

int store_mark_delivered_many(store *s, const int64_t *ids, size_t n) {
  if (n == 0) return 0;
  op *o = new_op(OP_DELIVERED);
  if (!o) return -1;
  o->ids = malloc(n * sizeof *o->ids);
  if (!o->ids) {
    free(o);
    return -1;
  }
  memcpy(o->ids, ids, n * sizeof *ids);
  o->nids = n;
  return enqueue(s, o);
}

int store_add_state(store *s, const char *meter, int64_t ts_ms, bool online,
                    const char *error, const char *detail) {
  op *o = new_op(OP_STATE);
  if (!o) return -1;
  snprintf(o->text->meter, sizeof o->text->meter, "%s", meter);
  o->ts_ms = ts_ms;
  o->online = online;
  snprintf(o->text->error, sizeof o->text->error, "%s", error ? error : "");
  snprintf(o->text->detail, sizeof o->text->detail, "%s", detail ? detail : "");
  return enqueue(s, o);
}

int store_count_poll(store *s, const char *meter, int64_t ts_ms, store_poll_kind kind) {
  if ((int)kind < 0 || kind >= STORE_POLL_KINDS) return -1;
  int idx = (int)kind;
  op *o = new_op(OP_POLL);
  if (!o) return -1;
  snprintf(o->text->meter, sizeof o->text->meter, "%s", meter);
  o->ts_ms = ts_ms;
  o->kind_index = idx;
  return enqueue(s, o);
}

static int run_op(store *s, op_kind k, int64_t ts_ms) {
  op *o = new_op(k);
  if (!o) return -1;
  o->ts_ms = ts_ms;
  return enqueue(s, o);
}

int store_run_start(store *s, int64_t ts_ms) { return run_op(s, OP_RUN_START, ts_ms); }

int store_meter_configured(store *s, const char *meter, int64_t ts_ms) {
  op *o = new_op(OP_CONFIGURED);
  if (!o) return -1;
  snprintf(o->text->meter, sizeof o->text->meter, "%s", meter);
  o->ts_ms = ts_ms;
  return enqueue(s, o);
}
int store_run_alive(store *s, int64_t ts_ms) { return run_op(s, OP_RUN_ALIVE, ts_ms); }
int store_run_stop(store *s, int64_t ts_ms) { return run_op(s, OP_RUN_STOP, ts_ms); }

int store_maintain(store *s, int64_t now_ms) { return run_op(s, OP_MAINTAIN, now_ms); }

int store_clock_step(store *s, int64_t after_id, int64_t step_ms) {
  op *o = new_op(OP_CLOCK_STEP);
  if (!o) return -1;
  o->id = after_id;
  o->ts_ms = step_ms;
  return enqueue(s, o);
}

int store_seq_check(store *s, store_seq_item *items, size_t n) {
  op *o = new_op(OP_SEQ_CHECK);
  if (!o) {
    free(items);
    return -1;
  }
  o->items = items;
  o->nids = n;
  return enqueue(s, o);
}

int store_request_replay(store *s, int64_t after_id, int64_t upto_id,
                         size_t limit) {
  op *o = new_op(OP_REPLAY);
  if (!o) return -1;
  o->id = after_id;
  o->upto_id = upto_id;
  o->limit = limit;
  return enqueue(s, o);
}

int store_uplink_add(store *s, store_uplink *u) {
  op *o = new_op(OP_UPLINK_ADD);
  if (!o) {
    store_uplink_free(u);
    return -1;
  }
  u->next = NULL;
  u->id = 0;
  o->uplink = u;
  return enqueue(s, o);
}

int store_uplink_done(store *s, int64_t id) {
  op *o = new_op(OP_UPLINK_DONE);
  if (!o) return -1;
  o->id = id;
  return enqueue(s, o);
}

int store_uplink_load(store *s) {
  op *o = new_op(OP_UPLINK_LOAD);
  return o ? enqueue(s, o) : -1;
}

store_event *store_take_events(store *s) { return xqueue_take(&s->events); }

void store_get_stats(store *s, store_stats *out) {
  out->committed = atomic_load(&s->committed);
  out->dropped = atomic_load(&s->dropped);
  out->errors = atomic_load(&s->errors);
  out->transactions = atomic_load(&s->transactions);
  out->undelivered = atomic_load(&s->undelivered);
  out->removed = atomic_load(&s->removed);
  out->max_id = atomic_load(&s->max_id);
  out->held = atomic_load(&s->held_readings);
  out->failing = atomic_load(&s->failing_flag);
  out->uplink_dropped = atomic_load(&s->uplink_dropped);
}

/* ------------------------------------------------------------------------ */
/* The writer thread                                                        */

/* The loop is woken once a round, after all its events (writer_main). */
static void post_event(store *s, store_event *ev) { xqueue_push(&s->events, ev); }

static int step_done(sqlite3_stmt *st) {
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : rc;
}

/* Each meter's last sequence number, read from the database once and kept
 * (the writer is the only one to advance it): an open-addressing table by
 * meter id. The entries a batch advanced are written back in its
 * transaction; a failed transaction empties the table, to be read again. */
static uint64_t hash_id(const char *id) {
  uint64_t h = 1469598103934665603u; /* FNV-1a */
  for (; *id; id++) h = (h ^ (unsigned char)*id) * 1099511628211u;
  return h;
}

static void seqs_clear(store *s) {
  for (size_t i = 0; i < s->seq_cap; i++) free(s->seqs[i].meter);
  free(s->seqs);
  free(s->seq_touched);
  s->seqs = NULL;
  s->seq_touched = NULL;
  s->seq_cap = s->seq_n = s->seq_ntouched = 0;
}

static seq_slot *seqs_find(store *s, const char *meter) {
  size_t mask = s->seq_cap - 1;
  for (size_t i = hash_id(meter) & mask;; i = (i + 1) & mask)
    if (!s->seqs[i].meter || strcmp(s->seqs[i].meter, meter) == 0) return &s->seqs[i];
}

static int seqs_grow(store *s) {
  size_t cap = s->seq_cap ? s->seq_cap * 2 : 64;
  seq_slot *old = s->seqs;
  size_t oldcap = s->seq_cap;
  size_t *touched = realloc(s->seq_touched, cap / 2 * sizeof *touched);
  seq_slot *slots = calloc(cap, sizeof *slots);
  if (!slots || !touched) {
    free(slots);
    if (touched) s->seq_touched = touched;
    return SQLITE_NOMEM;
  }
  s->seq_touched = touched;
  s->seqs = slots;
  s->seq_cap = cap;
  s->seq_ntouched = 0;
  for (size_t i = 0; i < oldcap; i++) {
    if (!old[i].meter) continue;
    seq_slot *e = seqs_find(s, old[i].meter);
    *e = old[i];
    if (e->touched) s->seq_touched[s->seq_ntouched++] = (size_t)(e - s->seqs);
  }
  free(old);
  return 0;
}

/* METER's slot, read from the database the first time; NULL with *RC set
 * on an error. */
static seq_slot *seq_load(store *s, const char *meter, int *rc) {
  *rc = 0;
  if ((s->seq_n + 1) * 2 > s->seq_cap && seqs_grow(s)) {
    *rc = SQLITE_NOMEM;
    return NULL;
  }
  seq_slot *e = seqs_find(s, meter);
  if (!e->meter) {
    int64_t last = 0, reserved = 0;
    sqlite3_bind_text(s->st_seq_get, 1, meter, -1, SQLITE_STATIC);
    int r = sqlite3_step(s->st_seq_get);
    if (r == SQLITE_ROW) {
      last = sqlite3_column_int64(s->st_seq_get, 0);
      reserved = sqlite3_column_int64(s->st_seq_get, 1);
    }
    sqlite3_reset(s->st_seq_get);
    sqlite3_clear_bindings(s->st_seq_get);
    if (r != SQLITE_ROW && r != SQLITE_DONE) {
      *rc = r;
      return NULL;
    }
    if (!(e->meter = strdup(meter))) {
      *rc = SQLITE_NOMEM;
      return NULL;
    }
    e->last_seq = last;
    e->reserved = reserved;
    s->seq_n++;
  }
  return e;
}

/* E is written back with the batch in progress. */
static void seq_touch(store *s, seq_slot *e) {
  if (e->touched) return;
  e->touched = true;
  s->seq_touched[s->seq_ntouched++] = (size_t)(e - s->seqs);
}

/* The next number of METER, and the meter's reservation: a number above the
 * reservation moves it STORE_SEQ_BLOCK ahead, in the same transaction. */
static int next_seq(store *s, const char *meter, int32_t block, int64_t *seq,
                    int64_t *reserved) {
  int rc;
  seq_slot *e = seq_load(s, meter, &rc);
  if (!e) return rc;
  seq_touch(s, e);
  *seq = ++e->last_seq;
  if (e->reserved < *seq) e->reserved = *seq + (block > 0 ? block : STORE_SEQ_BLOCK) - 1;
  *reserved = e->reserved;
  return 0;
}

/* Compare one meter's reservation with what the broker holds (see
 * store_seq_check): when the broker's is higher, the database is older than
 * what was published, and the readings taken since the open are numbered
 * anew above the broker's. */
static int seq_check(store *s, store_seq_item *it) {
  int rc;
  seq_slot *e = seq_load(s, it->meter, &rc);
  if (!e) return rc;
  it->renumbered = it->first_seq = 0; /* a retried batch starts over */
  it->db_reserved = e->reserved;
  if (it->broker_reserved > e->reserved) {
    sqlite3_stmt *st;
    int64_t lo = 0, n = 0;
    rc = sqlite3_prepare_v2(s->db,
                            "SELECT coalesce(min(seq), 0), count(*) FROM readings "
                            "WHERE meter = ?1 AND id > ?2",
                            -1, &st, NULL);
    if (rc) return rc;
    sqlite3_bind_text(st, 1, it->meter, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, s->open_max_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      lo = sqlite3_column_int64(st, 0);
      n = sqlite3_column_int64(st, 1);
      rc = 0;
    }
    sqlite3_finalize(st);
    if (rc) return rc;
    if (n > 0 && lo <= it->broker_reserved) {
      int64_t shift = it->broker_reserved + 1 - lo;
      rc = sqlite3_prepare_v2(s->db,
                              "UPDATE readings SET seq = seq + ?3 WHERE meter = ?1 AND id > ?2",
                              -1, &st, NULL);
      if (rc) return rc;
      sqlite3_bind_text(st, 1, it->meter, -1, SQLITE_STATIC);
      sqlite3_bind_int64(st, 2, s->open_max_id);
      sqlite3_bind_int64(st, 3, shift);
      rc = sqlite3_step(st);
      sqlite3_finalize(st);
      if (rc != SQLITE_DONE) return rc;
      it->renumbered = n;
      it->first_seq = lo + shift;
      e->last_seq += shift;
    }
    if (e->last_seq < it->broker_reserved) e->last_seq = it->broker_reserved;
    e->reserved = e->last_seq + STORE_SEQ_BLOCK - 1;
    seq_touch(s, e);
  }
  if (e->reserved < e->last_seq) {
    /* Numbered before reservations were kept. */
    e->reserved = e->last_seq + STORE_SEQ_BLOCK - 1;
    seq_touch(s, e);
  }
  it->reserved = e->reserved;
  it->last_seq = e->last_seq;
  return 0;
}

static int count_poll(store *s, int kind_index, const char *meter, int64_t ts_ms) {
  sqlite3_stmt *st = s->st_poll[kind_index];
  int64_t hour = ts_ms - (ts_ms % 3600000);
  sqlite3_bind_text(st, 1, meter, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, hour);
  return step_done(st);
}

/* The uplink's operations, in the write transaction. A load reads the kept
 * reports into the operation; the event goes out once committed. */
static int apply_uplink(store *s, op *o) {
  int rc;
  switch (o->kind) {
    case OP_UPLINK_ADD: {
      store_uplink *u = o->uplink;
      sqlite3_bind_int64(s->st_uplink_add, 1, u->slot_ms);
      sqlite3_bind_blob(s->st_uplink_add, 2, u->frame, (int)u->len, SQLITE_STATIC);
      if ((rc = step_done(s->st_uplink_add))) return rc;
      u->id = sqlite3_last_insert_rowid(s->db);
      sqlite3_bind_int64(s->st_uplink_trim, 1, STORE_UPLINK_MAX);
      if ((rc = step_done(s->st_uplink_trim))) return rc;
      o->uplink_dropped = sqlite3_changes(s->db);
      return 0;
    }
    case OP_UPLINK_DONE:
      sqlite3_bind_int64(s->st_uplink_done, 1, o->id);
      return step_done(s->st_uplink_done);
    default: {
      sqlite3_stmt *st = s->st_uplink_load;
      store_uplink_free(o->uplink); /* read anew on a retry */
      o->uplink = NULL;
      store_uplink **tail = &o->uplink;
      sqlite3_bind_int64(st, 1, STORE_UPLINK_MAX);
      while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int len = sqlite3_column_bytes(st, 2);
        store_uplink *u = calloc(1, sizeof *u);
        if (!u) break;
        u->id = sqlite3_column_int64(st, 0);
        u->slot_ms = sqlite3_column_int64(st, 1);
        u->len = len > 0 && len <= STORE_UPLINK_FRAME_MAX ? (size_t)len : 0;
        if (u->len) memcpy(u->frame, sqlite3_column_blob(st, 2), u->len);
        *tail = u;
        tail = &u->next;
      }
      sqlite3_reset(st);
      sqlite3_clear_bindings(st);
      return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : rc;
    }
  }
}

/* After a commit: each uplink operation's answer, in order. */
static void post_uplinks(store *s, op *ops) {
  for (op *o = ops; o; o = o->next) {
    if (o->kind != OP_UPLINK_ADD && o->kind != OP_UPLINK_LOAD) continue;
    store_event *ev = calloc(1, sizeof *ev);
    if (!ev) continue; /* the report is kept: the next start loads it */
    ev->kind = STORE_EV_UPLINK;
    ev->uplink_loaded = o->kind == OP_UPLINK_LOAD;
    ev->uplinks = o->uplink;
    ev->uplink_dropped = o->uplink_dropped;
    for (store_uplink *u = o->uplink; u; u = u->next) ev->n++;
    if (o->uplink_dropped) atomic_fetch_add(&s->uplink_dropped, (uint64_t)o->uplink_dropped);
    o->uplink = NULL;
    post_event(s, ev);
  }
}

static int apply(store *s, op *o, size_t *nread, int64_t *delivered) {
  int rc = 0;
  switch (o->kind) {
    case OP_READING: {
      store_reading *r = o->reading;
      rc = next_seq(s, r->meter, r->seq_block, &r->seq, &r->seq_reserved);
      if (rc) return rc;
      sqlite3_bind_text(s->st_insert, 1, r->meter, -1, SQLITE_STATIC);
      sqlite3_bind_int64(s->st_insert, 2, r->seq);
      sqlite3_bind_int64(s->st_insert, 3, r->ts_ms);
      sqlite3_bind_text(s->st_insert, 4, r->fields, -1, SQLITE_STATIC);
      sqlite3_bind_text(s->st_insert, 5, r->quality ? "suspect" : "good", -1,
                        SQLITE_STATIC);
      if (r->clock_step_ms) sqlite3_bind_int64(s->st_insert, 6, r->clock_step_ms);
      rc = step_done(s->st_insert);
      if (rc) return rc;
      r->id = sqlite3_last_insert_rowid(s->db);
      (*nread)++;
      if (o->count) return count_poll(s, o->kind_index, r->meter, r->ts_ms);
      return 0;
    }
    case OP_DELIVERED:
      for (size_t i = 0; i < o->nids && !rc; i++) {
        sqlite3_bind_int64(s->st_delivered, 1, o->ids[i]);
        rc = step_done(s->st_delivered);
        if (!rc) *delivered += sqlite3_changes(s->db);
      }
      return rc;
    case OP_STATE:
      sqlite3_bind_text(s->st_state, 1, o->text->meter, -1, SQLITE_STATIC);
      sqlite3_bind_int64(s->st_state, 2, o->ts_ms);
      sqlite3_bind_int(s->st_state, 3, o->online);
      if (o->text->error[0])
        sqlite3_bind_text(s->st_state, 4, o->text->error, -1, SQLITE_STATIC);
      if (o->text->detail[0])
        sqlite3_bind_text(s->st_state, 5, o->text->detail, -1, SQLITE_STATIC);
      return step_done(s->st_state);
    case OP_POLL:
      return count_poll(s, o->kind_index, o->text->meter, o->ts_ms);
    case OP_RUN_START:
      sqlite3_bind_int64(s->st_run_start, 1, o->ts_ms);
      rc = step_done(s->st_run_start);
      if (!rc) s->run_id = sqlite3_last_insert_rowid(s->db);
      return rc;
    case OP_RUN_ALIVE:
    case OP_RUN_STOP: {
      sqlite3_stmt *st = o->kind == OP_RUN_ALIVE ? s->st_run_alive : s->st_run_stop;
      sqlite3_bind_int64(st, 1, s->run_id);
      sqlite3_bind_int64(st, 2, o->ts_ms);
      return step_done(st);
    }
    case OP_CONFIGURED:
      sqlite3_bind_text(s->st_configured, 1, o->text->meter, -1, SQLITE_STATIC);
      sqlite3_bind_int64(s->st_configured, 2, o->ts_ms);
      return step_done(s->st_configured);
    case OP_CLOCK_STEP: {
      /* Every reading of the run not flagged yet was queued before this
       * operation, so taken before the step. */
      sqlite3_stmt *st;
      rc = sqlite3_prepare_v2(s->db,
                              "UPDATE readings SET clock_step_ms = ?1 "
                              "WHERE id > ?2 AND clock_step_ms IS NULL",
                              -1, &st, NULL);
      if (rc) return rc;
      sqlite3_bind_int64(st, 1, o->ts_ms);
      sqlite3_bind_int64(st, 2, o->id);
      rc = sqlite3_step(st);
      sqlite3_finalize(st);
      return rc == SQLITE_DONE ? 0 : rc;
    }
    case OP_SEQ_CHECK:
      for (size_t i = 0; i < o->nids && !rc; i++) rc = seq_check(s, &o->items[i]);
      return rc;
    case OP_UPLINK_ADD:
    case OP_UPLINK_DONE:
    case OP_UPLINK_LOAD:
      return apply_uplink(s, o);
    case OP_REPLAY:
    case OP_MAINTAIN:
      return 0; /* handled outside the write transaction */
  }
  return 0;
}

static void do_replay(store *s, op *o) {
  store_event *ev = calloc(1, sizeof *ev);
  if (!ev) return;
  ev->kind = STORE_EV_REPLAY;
  ev->replay_last_id = o->id;
  sqlite3_stmt *st = s->st_replay;
  sqlite3_bind_int64(st, 1, o->id);
  sqlite3_bind_int64(st, 2, o->upto_id);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)o->limit);
  store_reading **tail = &ev->readings;
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    store_reading *r = calloc(1, sizeof *r);
    if (!r) break;
    r->id = sqlite3_column_int64(st, 0);
    r->meter_owned = strdup((const char *)sqlite3_column_text(st, 1));
    r->meter = r->meter_owned;
    r->meter_index = -1;
    r->seq = sqlite3_column_int64(st, 2);
    r->ts_ms = sqlite3_column_int64(st, 3);
    r->fields = strdup((const char *)sqlite3_column_text(st, 4));
    const char *q = (const char *)sqlite3_column_text(st, 5);
    r->quality = q && strcmp(q, "suspect") == 0;
    r->clock_step_ms = sqlite3_column_int64(st, 6);
    r->historical = true;
    if (!r->meter_owned || !r->fields) {
      store_reading_free(r);
      break;
    }
    *tail = r;
    tail = &r->next;
    ev->n++;
    ev->replay_last_id = r->id;
  }
  /* Always a replay event, so the loop's request is answered even when the
   * query failed (detail says why; the loop retries on its next tick). */
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    snprintf(ev->detail, sizeof ev->detail, "replay query: %s",
             sqlite3_errmsg(s->db));
    atomic_fetch_add(&s->errors, 1);
  }
  ev->replay_done = ev->n < o->limit && !ev->detail[0];
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  post_event(s, ev);
}

/* Apply the operations in one transaction. Returns 0 when committed: the
 * readings then moved into a STORE_EV_COMMITTED event. On failure everything
 * is rolled back, the readings stay in their operations with no id or
 * sequence number, and ERR says why. */
static int commit_ops(store *s, op *ops, char *err, size_t errlen) {
  size_t n = 0;
  int64_t delivered = 0;
  int rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  for (op *o = ops; o && rc == SQLITE_OK; o = o->next)
    rc = apply(s, o, &n, &delivered);
  for (size_t i = 0; i < s->seq_ntouched && rc == SQLITE_OK; i++) {
    seq_slot *e = &s->seqs[s->seq_touched[i]];
    sqlite3_bind_text(s->st_seq_set, 1, e->meter, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s->st_seq_set, 2, e->last_seq);
    sqlite3_bind_int64(s->st_seq_set, 3, e->reserved);
    rc = step_done(s->st_seq_set);
  }
  if (rc == SQLITE_OK) rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
  if (rc == SQLITE_OK) {
    for (size_t i = 0; i < s->seq_ntouched; i++) s->seqs[s->seq_touched[i]].touched = false;
    s->seq_ntouched = 0;
  } else {
    seqs_clear(s); /* the numbers it advanced were rolled back */
  }
  atomic_fetch_add(&s->transactions, 1);
  if (rc != SQLITE_OK) {
    snprintf(err, errlen, "%s", sqlite3_errmsg(s->db));
    /* If the transaction is already gone, there is nothing to undo. */
    (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    atomic_fetch_add(&s->errors, 1);
    for (op *o = ops; o; o = o->next) {
      if (o->reading) o->reading->seq = 0, o->reading->id = 0;
      if (o->kind == OP_UPLINK_ADD) o->uplink->id = 0, o->uplink_dropped = 0;
    }
    return -1;
  }
  post_uplinks(s, ops);
  store_reading *committed = NULL, **tail = &committed;
  for (op *o = ops; o; o = o->next) {
    if (o->kind != OP_READING || !o->reading) continue;
    store_reading *r = o->reading;
    o->reading = NULL;
    if (r->id > atomic_load(&s->max_id)) atomic_store(&s->max_id, r->id);
    r->next = NULL;
    *tail = r;
    tail = &r->next;
  }
  atomic_fetch_add(&s->committed, n);
  atomic_fetch_add(&s->undelivered, n);
  atomic_fetch_sub(&s->undelivered, (uint64_t)delivered);
  if (n > 0) {
    store_event *ev = calloc(1, sizeof *ev);
    if (ev) {
      ev->kind = STORE_EV_COMMITTED;
      ev->readings = committed;
      ev->n = n;
      post_event(s, ev);
    } else {
      store_reading_free(committed);
    }
  }
  /* After the batch's readings: those numbered before a check in the same
   * batch carry their old numbers, and the loop drops what it holds when
   * the answer comes (the replay reads them back renumbered). */
  for (op *o = ops; o; o = o->next) {
    if (o->kind != OP_SEQ_CHECK) continue;
    store_event *ev = calloc(1, sizeof *ev);
    if (!ev) continue; /* the loop asks again at its next connect */
    ev->kind = STORE_EV_SEQ_CHECKED;
    ev->items = o->items;
    ev->n = o->nids;
    o->items = NULL;
    post_event(s, ev);
  }
  return 0;
}

static store_reading *reading_copy(const store_reading *r) {
  store_reading *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  *c = *r;
  c->next = NULL;
  c->id = c->seq = 0;
  c->fields = strdup(r->fields);
  c->meter_owned = r->meter_owned ? strdup(r->meter_owned) : NULL;
  c->meter = c->meter_owned ? c->meter_owned : r->meter;
  if (!c->fields || (r->meter_owned && !c->meter_owned)) {
    store_reading_free(c);
    return NULL;
  }
  return c;
}

/* Keep OPS (a list) for a later attempt. Their readings not yet handed out
 * go to the loop now, in a STORE_EV_TROUBLE event, for live publishing.
 * Past the bound the oldest held operations go, their readings counted as
 * dropped. */
static void hold(store *s, op *ops, const char *why, bool started) {
  store_event *ev = calloc(1, sizeof *ev);
  store_reading **tail = ev ? &ev->readings : NULL;
  for (op *o = ops; o; o = o->next) {
    s->held_ops++;
    if (!o->reading) continue;
    atomic_fetch_add(&s->held_readings, 1);
    if (o->reading->historical || !ev) continue; /* handed out already */
    o->reading->historical = true; /* when it is stored, it is late */
    store_reading *c = reading_copy(o->reading);
    if (!c) continue;
    c->historical = false;
    *tail = c;
    tail = &c->next;
    ev->n++;
  }
  if (s->held_tail)
    s->held_tail->next = ops;
  else
    s->held = ops;
  for (op *o = ops; o; o = o->next) s->held_tail = o;
  int64_t lost = 0;
  while (s->held_ops > s->hold_max && s->held) {
    op *o = s->held;
    s->held = o->next;
    if (!s->held) s->held_tail = NULL;
    s->held_ops--;
    if (o->reading) {
      lost++;
      atomic_fetch_sub(&s->held_readings, 1);
    }
    o->next = NULL;
    free_ops(o);
  }
  if (lost) atomic_fetch_add(&s->dropped, (uint64_t)lost);
  if (!ev) return;
  ev->kind = STORE_EV_TROUBLE;
  ev->failing = true;
  ev->changed = started;
  ev->held = (int64_t)atomic_load(&s->held_readings);
  ev->lost = lost;
  snprintf(ev->detail, sizeof ev->detail, "%s", why);
  if (ev->n || ev->changed || ev->lost)
    post_event(s, ev);
  else
    free(ev);
}

/* Commit OPS (the new operations of this round, possibly none) behind any
 * held ones. While the database is failing, new operations are held without
 * an attempt until the back-off has passed. */
static void commit_round(store *s, op *ops) {
  int64_t now = mono_ms();
  if (s->failing && now < s->retry_at_ms) {
    if (ops) hold(s, ops, "", false);
    return;
  }
  if (!ops && !s->held) return;
  op *all = ops;
  size_t was_held = (size_t)atomic_load(&s->held_readings);
  if (s->held) {
    s->held_tail->next = ops;
    all = s->held;
    s->held = s->held_tail = NULL;
    s->held_ops = 0;
    atomic_store(&s->held_readings, 0);
  }
  char err[200];
  if (commit_ops(s, all, err, sizeof err) == 0) {
    free_ops(all);
    if (s->failing) {
      s->failing = false;
      atomic_store(&s->failing_flag, false);
      store_event *ev = calloc(1, sizeof *ev);
      if (ev) {
        ev->kind = STORE_EV_TROUBLE;
        ev->failing = false;
        ev->changed = true;
        ev->held = (int64_t)was_held;
        ev->duration_ms = now - s->fail_since_ms;
        post_event(s, ev);
      }
    }
    return;
  }
  bool started = !s->failing;
  if (started) {
    s->failing = true;
    atomic_store(&s->failing_flag, true);
    s->fail_since_ms = now;
    backoff_reset(&s->backoff_ms);
  }
  s->retry_at_ms = now + backoff_next(&s->backoff_ms, STORE_RETRY_MIN_MS, STORE_RETRY_MAX_MS);
  hold(s, all, err, started);
}

static int64_t file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (int64_t)st.st_size : 0;
}

/* The database's footprint: the main file, its -wal and its -shm. */
static int64_t db_bytes(store *s) {
  char p[4200];
  int64_t n = file_size(s->path);
  snprintf(p, sizeof p, "%s-wal", s->path);
  n += file_size(p);
  snprintf(p, sizeof p, "%s-shm", s->path);
  n += file_size(p);
  return n;
}

static int64_t changes_of(store *s, const char *sql, int64_t arg) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
  sqlite3_bind_int64(st, 1, arg);
  int rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? sqlite3_changes(s->db) : -1;
}

/* Best effort: the size check after it measures what was given back, and
 * a checkpoint a reader holds up is done by a later one. */
static void give_back_space(store *s) {
  (void)sqlite3_exec(s->db, "PRAGMA incremental_vacuum", NULL, NULL, NULL);
  (void)sqlite3_exec(s->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
}

/* A maintenance statement failed: say which and why (SQLite's words, with
 * "database disk image is malformed" for a corrupt page), once per pass. */
static void maintain_failed(store *s, store_event *ev, const char *what) {
  if (ev->detail[0]) return;
  snprintf(ev->detail, sizeof ev->detail, "%s failed: %s", what, sqlite3_errmsg(s->db));
}

static void do_maintain(store *s, int64_t now_ms) {
  store_event *ev = calloc(1, sizeof *ev);
  if (!ev) return;
  ev->kind = STORE_EV_MAINTAINED;
  if (s->retention_ms > 0) {
    int64_t cutoff = now_ms - s->retention_ms;
    /* Retention removes delivered readings only: an undelivered one goes
     * only to the size bound, counted. And a reading taken before a
     * wall-clock step of this run is judged by the corrected time (its ts
     * plus the step), so that NTP stepping a gateway's clock forward by
     * months cannot make a reading of a minute ago look old. */
    int64_t n = -1, u = 0;
    bool ok = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK &&
              (n = changes_of(s,
                              "DELETE FROM readings WHERE ts_ms < ?1 AND delivered = 1 "
                              "AND ts_ms + coalesce(clock_step_ms, 0) < ?1",
                              cutoff)) >= 0 &&
              changes_of(s, "DELETE FROM poll_stats WHERE hour_ms < ?1", cutoff) >= 0 &&
              changes_of(s, "DELETE FROM state_changes WHERE ts_ms < ?1", cutoff) >= 0 &&
              changes_of(s, "DELETE FROM reports WHERE end_ms < ?1", cutoff) >= 0 &&
              (u = changes_of(s, "DELETE FROM uplink_reports WHERE slot_ms < ?1", cutoff)) >= 0 &&
              sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
    if (!ok) {
      /* All or nothing, said once; nothing to undo if the BEGIN failed. */
      maintain_failed(s, ev, "removing readings older than the retention");
      (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    } else {
      /* Reports the centre never confirmed within the retention go too,
       * counted (a copy the uplink holds may still go out; its confirm
       * then removes nothing). */
      if (u > 0) atomic_fetch_add(&s->uplink_dropped, (uint64_t)u);
      if (n > 0) {
        ev->aged = n;
        give_back_space(s);
      }
    }
  }
  /* Over the size: delivered readings go first, oldest first; then the
   * oldest undelivered. A batch at a time, giving the pages back between.
   * A batch's transaction, and the vacuum after it, write their pages to the
   * write-ahead log before the checkpoint can empty it: a batch is sized so
   * that this stays within the log's share of the bound (an eighth; about
   * 2 KiB of log a row, counting its index entries and the pages the
   * vacuum moves), 16 to 500 rows. */
  int64_t batch = s->max_size / 8 / 2048;
  if (batch < 16) batch = 16;
  if (batch > 500) batch = 500;
  for (int round = 0; s->max_size > 0 && round < 200; round++) {
    int64_t bytes = db_bytes(s);
    if (bytes <= s->max_size) break;
    int64_t n = changes_of(s,
                           "DELETE FROM readings WHERE id IN (SELECT id FROM readings "
                           "WHERE delivered = 1 ORDER BY id LIMIT ?1)", batch);
    if (n < 0) {
      /* A statement that failed is not "none left": going on to the
       * undelivered rows would drop them for a fault (a corrupt page). */
      maintain_failed(s, ev, "removing delivered readings for the size bound");
      break;
    }
    if (n > 0) {
      ev->dropped_delivered += n;
    } else {
      n = changes_of(s,
                     "DELETE FROM readings WHERE id IN (SELECT id FROM readings "
                     "WHERE delivered = 0 ORDER BY id LIMIT ?1)", batch);
      if (n < 0) {
        maintain_failed(s, ev, "removing undelivered readings for the size bound");
        break;
      }
      if (n == 0) {
        ev->over = true;
        break;
      }
      ev->dropped_undelivered += n;
      atomic_fetch_sub(&s->undelivered, (uint64_t)n);
      atomic_fetch_add(&s->dropped, (uint64_t)n);
    }
    atomic_fetch_add(&s->removed, (uint64_t)n);
    give_back_space(s);
  }
  ev->bytes = db_bytes(s);
  if (s->max_size > 0 && ev->bytes > s->max_size) ev->over = true;
  if (ev->aged || ev->dropped_delivered || ev->dropped_undelivered || ev->over ||
      ev->detail[0])
    post_event(s, ev);
  else
    free(ev);
}

/* Split the operations handled outside the write transaction (replay
 * queries, maintenance) off LIST, keeping both in order. */
static op *split_side(op **list) {
  op *side = NULL, **st = &side, **lt = list;
  for (op *o = *list; o;) {
    op *next = o->next;
    o->next = NULL;
    if (o->kind == OP_REPLAY || o->kind == OP_MAINTAIN) {
      *st = o;
      st = &o->next;
    } else {
      *lt = o;
      lt = &o->next;
    }
    o = next;
  }
  *lt = NULL;
  return side;
}

static void *writer_main(void *arg) {
  store *s = arg;
  for (;;) {
    pthread_mutex_lock(&s->mu);
    for (;;) {
      int64_t now = mono_ms(), until;
      s->beat_ms = now;
      if (s->stopping) break;
      if (s->head) {
        until = s->first_queued_ms + s->commit_window_ms;
        if (s->urgent || now >= until) break;
      } else if (s->failing) {
        until = s->retry_at_ms; /* the next attempt at the held operations */
        if (now >= until) break;
      } else {
        until = INT64_MAX; /* until something is queued */
      }
      if (until > now + BEAT_MS) until = now + BEAT_MS;
      struct timespec ts = {.tv_sec = until / 1000, .tv_nsec = (long)(until % 1000) * 1000000L};
      pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    op *batch = s->head;
    s->head = s->tail = NULL;
    s->queued = 0;
    s->urgent = false;
    bool stop = s->stopping;
    pthread_mutex_unlock(&s->mu);

    if (stop && s->failing) s->retry_at_ms = 0; /* one last attempt */
    bool had = batch != NULL;
    op *side = split_side(&batch);
    commit_round(s, batch);
    for (op *o = side; o; o = o->next) {
      if (o->kind == OP_REPLAY) do_replay(s, o);
      if (o->kind == OP_MAINTAIN && !s->failing) do_maintain(s, o->ts_ms);
    }
    free_ops(side);
    s->beat_ms = mono_ms();
    xqueue_wake(&s->events);
    if (stop && !had) break;
  }
  return NULL;
}
