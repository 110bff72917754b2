/* The store on a real SQLite file: sequence numbers, group commits, delivery
 * marks, replay order, restarts and the bookkeeping tables. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "store/store.h"

#include "store_fixture.h"

static store_reading *reading(const char *meter, int64_t ts, const char *fields) {
  store_reading *r = calloc(1, sizeof *r);
  r->meter = meter;
  r->ts_ms = ts;
  r->fields = strdup(fields);
  return r;
}

/* Gather committed readings until N have arrived. */
static store_reading **collect(store *s, size_t n) {
  store_reading **out = calloc(n, sizeof *out);
  size_t got = 0;
  store_event *keep = NULL;
  while (got < n) {
    store_event *ev = next_event(s);
    assert_non_null(ev);
    for (store_event *e = ev; e; e = e->next) {
      assert_int_equal(e->kind, STORE_EV_COMMITTED);
      for (store_reading *r = e->readings; r; r = r->next) out[got++] = r;
    }
    /* Keep the events alive while the test looks at their readings. */
    store_event *last = ev;
    while (last->next) last = last->next;
    last->next = keep;
    keep = ev;
  }
  out = realloc(out, (n + 1) * sizeof *out);
  out[n] = (store_reading *)keep; /* smuggle the events out for freeing */
  return out;
}

static void release(store_reading **rs, size_t n) {
  store_event_free((store_event *)rs[n]);
  free(rs);
}

static long long query_int(const char *path, const char *sql) {
  sqlite3 *db;
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  long long v = -1;
  if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

static void test_sequences_and_restart(void **state) {
  fixture *f = *state;
  store *s = open_store(f);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(store_add_reading(s, reading("A", 1000 + i, "{\"x\":1}")), 0);
    assert_int_equal(store_add_reading(s, reading("B", 1000 + i, "{\"x\":2}")), 0);
  }
  store_reading **rs = collect(s, 10);
  int64_t last_id = 0, next_a = 1, next_b = 1;
  for (int i = 0; i < 10; i++) {
    assert_true(rs[i]->id > last_id); /* commit order is row order */
    last_id = rs[i]->id;
    if (strcmp(rs[i]->meter, "A") == 0)
      assert_int_equal(rs[i]->seq, next_a++);
    else
      assert_int_equal(rs[i]->seq, next_b++);
  }
  release(rs, 10);
  store_close(s, NULL);

  /* The schema is at the current version, WAL is on. */
  assert_int_equal(query_int(f->path, "PRAGMA user_version"), store_schema_version());
  assert_int_equal(query_int(f->path, "SELECT count(*) FROM readings WHERE delivered = 0"), 10);

  /* After a restart the sequence goes on; nothing is reused. */
  s = open_store(f);
  store_add_reading(s, reading("A", 2000, "{}"));
  rs = collect(s, 1);
  assert_int_equal(rs[0]->seq, 6);
  release(rs, 1);
  store_stats st;
  store_get_stats(s, &st);
  assert_int_equal(st.undelivered, 11);
  assert_true(st.max_id >= 11);
  store_close(s, NULL);
  assert_int_equal(query_int(f->path, "SELECT last_seq FROM meters WHERE id = 'A'"), 6);
}

/* Reservations: a block at a time, moved by the reading that needs it. A
 * broker reservation above the database's renumbers the readings taken
 * since the open, and later ones follow; one at or below changes nothing. */
static void test_seq_reservation_and_check(void **state) {
  fixture *f = *state;
  store *s = open_store(f);
  store_reading *r = reading("A", 1000, "{}");
  r->seq_block = 10;
  store_add_reading(s, r);
  store_reading **rs = collect(s, 1);
  assert_int_equal(rs[0]->seq, 1);
  assert_int_equal(rs[0]->seq_reserved, 10);
  release(rs, 1);
  store_close(s, NULL);
  assert_int_equal(query_int(f->path, "SELECT seq_reserved FROM meters WHERE id = 'A'"), 10);

  /* Reopened (as from an older copy): two readings, then the broker says
   * 500 for A, and 10 (the database's own) for B. */
  s = open_store(f);
  for (int i = 0; i < 2; i++) store_add_reading(s, reading("A", 2000 + i, "{}"));
  rs = collect(s, 2);
  assert_int_equal(rs[1]->seq, 3);
  release(rs, 2);
  store_seq_item *items = calloc(2, sizeof *items);
  snprintf(items[0].meter, sizeof items[0].meter, "A");
  items[0].meter_index = 0;
  items[0].broker_reserved = 500;
  snprintf(items[1].meter, sizeof items[1].meter, "B");
  items[1].meter_index = 1;
  items[1].broker_reserved = 0;
  assert_int_equal(store_seq_check(s, items, 2), 0);
  store_event *ev = next_event(s);
  assert_non_null(ev);
  assert_int_equal(ev->kind, STORE_EV_SEQ_CHECKED);
  assert_int_equal(ev->n, 2);
  assert_int_equal(ev->items[0].db_reserved, 10);
  assert_int_equal(ev->items[0].renumbered, 2);
  assert_int_equal(ev->items[0].first_seq, 501);
  assert_int_equal(ev->items[0].last_seq, 502);
  assert_true(ev->items[0].reserved >= 502);
  assert_int_equal(ev->items[1].renumbered, 0);
  store_event_free(ev);
  store_add_reading(s, reading("A", 3000, "{}"));
  rs = collect(s, 1);
  assert_int_equal(rs[0]->seq, 503);
  release(rs, 1);
  store_close(s, NULL);
  /* The reading from before the reopen keeps its number. */
  assert_int_equal(query_int(f->path, "SELECT seq FROM readings WHERE ts_ms = 1000"), 1);
  assert_int_equal(query_int(f->path, "SELECT seq FROM readings WHERE ts_ms = 2000"), 501);

  /* A broker at or below the database's reservation changes nothing. */
  s = open_store(f);
  store_add_reading(s, reading("A", 4000, "{}"));
  rs = collect(s, 1);
  assert_int_equal(rs[0]->seq, 504);
  release(rs, 1);
  items = calloc(1, sizeof *items);
  snprintf(items[0].meter, sizeof items[0].meter, "A");
  items[0].broker_reserved = 503;
  store_seq_check(s, items, 1);
  ev = next_event(s);
  assert_non_null(ev);
  assert_int_equal(ev->items[0].renumbered, 0);
  assert_int_equal(ev->items[0].last_seq, 504);
  store_event_free(ev);
  store_close(s, NULL);
}

/* Durability: what the writer's connection does, read back from it. */
static void test_synchronous_read_back(void **state) {
  fixture *f = *state;
  store *s = open_store(f); /* synchronous_full, as the daemon opens it */
  assert_int_equal(store_synchronous(s), 2);
  store_close(s, NULL);
  store_options o = {.path = f->path, .synchronous_full = false};
  char err[256];
  assert_int_equal(store_open(&s, &o, err, sizeof err), 0);
  assert_int_equal(store_synchronous(s), 1);
  store_close(s, NULL);
}

/* The size bound gives pages back only with incremental auto-vacuum: on in
 * a new database, and turned on once in one made without it. */
static void test_auto_vacuum(void **state) {
  fixture *f = *state;
  store *s = open_store(f);
  assert_null(store_open_note(s));
  store_close(s, NULL);
  assert_int_equal(query_int(f->path, "PRAGMA auto_vacuum"), 2);
  sqlite3 *db;
  assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, "PRAGMA auto_vacuum = NONE; VACUUM;", NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(db);
  assert_int_equal(query_int(f->path, "PRAGMA auto_vacuum"), 0);
  s = open_store(f);
  assert_non_null(store_open_note(s));
  assert_non_null(strstr(store_open_note(s), "incremental auto-vacuum turned on"));
  store_close(s, NULL);
  assert_int_equal(query_int(f->path, "PRAGMA auto_vacuum"), 2);
}

static void test_delivery_and_replay(void **state) {
  fixture *f = *state;
  store *s = open_store(f);
  for (int i = 0; i < 6; i++) store_add_reading(s, reading("M", 100 + i, "{\"v\":1}"));
  store_reading **rs = collect(s, 6);
  int64_t ids[6];
  for (int i = 0; i < 6; i++) ids[i] = rs[i]->id;
  release(rs, 6);
  /* Rows 2 and 4 (1-based) were acknowledged. */
  store_mark_delivered(s, ids[1]);
  store_mark_delivered(s, ids[3]);
  store_mark_delivered(s, ids[3]); /* twice is harmless */
  store_request_replay(s, 0, ids[5], 3);
  store_event *ev = next_event(s);
  assert_non_null(ev);
  assert_int_equal(ev->kind, STORE_EV_REPLAY);
  assert_int_equal(ev->n, 3);
  store_reading *r = ev->readings;
  assert_int_equal(r->id, ids[0]);
  assert_true(r->historical);
  assert_string_equal(r->meter, "M");
  assert_string_equal(r->fields, "{\"v\":1}");
  assert_int_equal(r->next->id, ids[2]);
  assert_int_equal(r->next->next->id, ids[4]);
  assert_false(ev->replay_done);
  int64_t cursor = ev->replay_last_id;
  store_event_free(ev);
  /* The rest, bounded above: the last row is beyond UPTO. */
  store_request_replay(s, cursor, ids[4], 3);
  ev = next_event(s);
  assert_int_equal(ev->n, 0);
  assert_true(ev->replay_done);
  store_event_free(ev);
  store_stats st;
  store_get_stats(s, &st);
  assert_int_equal(st.undelivered, 4);
  store_close(s, NULL);
  assert_int_equal(query_int(f->path, "SELECT count(*) FROM readings WHERE delivered = 1"), 2);
}

/* Retention removes delivered readings only, and judges a reading taken
 * before a wall-clock step by its corrected time: a clock stepped forward by
 * 500 days makes neither an undelivered reading nor a fresh one go. */
static void test_retention_keeps_undelivered_and_stepped(void **state) {
  fixture *f = *state;
  const int64_t day = 86400000, now = 1796000000000LL, old = now - 500 * day;
  store_options o = {.path = f->path, .synchronous_full = true, .notify = notify,
                     .retention_ms = day};
  char err[512];
  store *s = NULL;
  assert_int_equal(store_open(&s, &o, err, sizeof err), 0);
  store_add_reading(s, reading("M", old, "{\"v\":1}"));     /* A: delivered, old */
  store_add_reading(s, reading("M", old + 1, "{\"v\":2}")); /* B: undelivered, old */
  store_add_reading(s, reading("M", old + 2, "{\"v\":3}")); /* C: before a step */
  store_reading **rs = collect(s, 3);
  int64_t a = rs[0]->id, b = rs[1]->id, c = rs[2]->id;
  release(rs, 3);
  store_mark_delivered(s, a);
  store_mark_delivered(s, c);
  /* C was taken a moment before NTP stepped the clock 500 days forward. */
  store_clock_step(s, b, now - old);
  store_maintain(s, now + 1000);
  for (;;) {
    store_event *ev = next_event(s);
    assert_non_null(ev);
    bool done = false;
    for (store_event *e = ev; e; e = e->next)
      if (e->kind == STORE_EV_MAINTAINED) {
        assert_int_equal(e->aged, 1);
        done = true;
      }
    store_event_free(ev);
    if (done) break;
  }
  store_close(s, NULL);
  char q[128];
  snprintf(q, sizeof q, "SELECT count(*) FROM readings WHERE id = %lld", (long long)a);
  assert_int_equal(query_int(f->path, q), 0);
  snprintf(q, sizeof q, "SELECT count(*) FROM readings WHERE id = %lld", (long long)b);
  assert_int_equal(query_int(f->path, q), 1);
  snprintf(q, sizeof q, "SELECT count(*) FROM readings WHERE id = %lld", (long long)c);
  assert_int_equal(query_int(f->path, q), 1);
}

static void test_bookkeeping_tables(void **state) {
  fixture *f = *state;
  store *s = open_store(f);
  store_run_start(s, 3600000);
  store_add_state(s, "M", 3600500, false, "timeout", "no answer");
  store_count_poll(s, "M", 3600100, STORE_POLL_OK);
  store_count_poll(s, "M", 3600200, store_poll_failed(TR_ETIMEOUT));
  store_count_poll(s, "M", 3600300, store_poll_failed(TR_ETIMEOUT));
  store_count_poll(s, "M", 3600400, STORE_POLL_SKIPPED);
  assert_int_equal(store_count_poll(s, "M", 3600400, STORE_POLL_KINDS), -1);
  store_meter_configured(s, "M", 3600000);
  store_meter_configured(s, "M", 9999999); /* the first time stays */
  store_run_alive(s, 3660000);
  store_run_stop(s, 3700000);
  store_close(s, NULL);
  assert_int_equal(query_int(f->path, "SELECT polls FROM poll_stats WHERE meter='M' AND hour_ms=3600000"), 3);
  assert_int_equal(query_int(f->path, "SELECT timeout FROM poll_stats WHERE meter='M'"), 2);
  assert_int_equal(query_int(f->path, "SELECT ok FROM poll_stats WHERE meter='M'"), 1);
  assert_int_equal(query_int(f->path, "SELECT skipped FROM poll_stats WHERE meter='M'"), 1);
  assert_int_equal(query_int(f->path, "SELECT online FROM state_changes WHERE meter='M'"), 0);
  assert_int_equal(query_int(f->path, "SELECT stop_ms FROM gateway_runs"), 3700000);
  assert_int_equal(query_int(f->path, "SELECT start_ms FROM gateway_runs"), 3600000);
  assert_int_equal(query_int(f->path, "SELECT configured_since_ms FROM meters WHERE id = 'M'"), 3600000);
}

static void test_refuses_newer_schema(void **state) {
  fixture *f = *state;
  store_close(open_store(f), NULL);
  sqlite3 *db;
  assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
  store_options o = {.path = f->path};
  char err[512];
  store *s = NULL;
  assert_int_equal(store_open(&s, &o, err, sizeof err), -1);
  assert_non_null(strstr(err, "newer"));
}

static void test_unwritable_path(void **state) {
  (void)state;
  store_options o = {.path = "/proc/no/such/dir/readings.db"};
  char err[512];
  store *s = NULL;
  assert_int_equal(store_open(&s, &o, err, sizeof err), -1);
  assert_non_null(strstr(err, "/proc/no/such/dir/readings.db"));
}

static void test_full_queue_drops_and_counts(void **state) {
  fixture *f = *state;
  store_options o = {.path = f->path, .queue_max = 1};
  char err[512];
  store *s = NULL;
  assert_int_equal(store_open(&s, &o, err, sizeof err), 0);
  int refused = 0;
  for (int i = 0; i < 2000; i++)
    if (store_add_reading(s, reading("Q", i, "{}")) != 0) refused++;
  store_stats st;
  store_get_stats(s, &st);
  store_close(s, NULL);
  /* Every refusal is counted; everything accepted was committed. */
  assert_int_equal(st.dropped, (uint64_t)refused);
  long long rows = query_int(f->path, "SELECT count(*) FROM readings");
  assert_int_equal(rows + refused, 2000);
  assert_true(refused > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_sequences_and_restart, setup, teardown),
      cmocka_unit_test_setup_teardown(test_seq_reservation_and_check, setup, teardown),
      cmocka_unit_test_setup_teardown(test_synchronous_read_back, setup, teardown),
      cmocka_unit_test_setup_teardown(test_auto_vacuum, setup, teardown),
      cmocka_unit_test_setup_teardown(test_delivery_and_replay, setup, teardown),
      cmocka_unit_test_setup_teardown(test_retention_keeps_undelivered_and_stepped, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_bookkeeping_tables, setup, teardown),
      cmocka_unit_test_setup_teardown(test_refuses_newer_schema, setup, teardown),
      cmocka_unit_test(test_unwritable_path),
      cmocka_unit_test_setup_teardown(test_full_queue_drops_and_counts, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
