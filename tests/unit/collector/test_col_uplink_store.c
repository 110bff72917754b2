/* The store's table of reports for the bureau's centre (the uplink), on a
 * real SQLite file: stored before they are handed back, kept across a
 * restart oldest first, removed on confirmation, bounded. */
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

static store_uplink *report(int64_t slot, uint8_t tag) {
  store_uplink *u = calloc(1, sizeof *u);
  u->slot_ms = slot;
  u->len = 13;
  for (size_t i = 0; i < u->len; i++) u->frame[i] = (uint8_t)(tag + i);
  return u;
}

/* The next STORE_EV_UPLINK event, skipping none: the test queues nothing
 * else. */
static store_event *uplink_event(store *s) {
  static store_event *pending;
  if (!pending) pending = next_event(s);
  assert_non_null(pending);
  store_event *e = pending;
  pending = e->next;
  e->next = NULL;
  assert_int_equal(e->kind, STORE_EV_UPLINK);
  return e;
}

static void test_kept_until_confirmed(void **state) {
  fixture *f = *state;
  store *s = open_store(f);
  int64_t ids[3];
  for (int i = 0; i < 3; i++) {
    assert_int_equal(store_uplink_add(s, report(1000 * (i + 1), (uint8_t)(0x10 * i))), 0);
  }
  for (int i = 0; i < 3; i++) {
    store_event *e = uplink_event(s);
    assert_false(e->uplink_loaded);
    assert_int_equal(e->n, 1);
    assert_true(e->uplinks->id > 0);
    assert_int_equal(e->uplinks->slot_ms, 1000 * (i + 1));
    ids[i] = e->uplinks->id;
    store_event_free(e);
  }
  /* Handed back only once committed: the rows are in the file. */
  assert_int_equal(query_int(f->path, "SELECT count(*) FROM uplink_reports"), 3);
  assert_int_equal(store_uplink_done(s, ids[1]), 0);
  assert_int_equal(store_uplink_load(s), 0);
  store_event *e = uplink_event(s);
  assert_true(e->uplink_loaded);
  assert_int_equal(e->n, 2);
  assert_int_equal(e->uplinks->id, ids[0]);
  assert_int_equal(e->uplinks->next->id, ids[2]);
  store_event_free(e);
  store_close(s, NULL);

  /* After a restart: the kept ones, oldest first, byte for byte. */
  s = open_store(f);
  assert_int_equal(store_uplink_load(s), 0);
  e = uplink_event(s);
  assert_int_equal(e->n, 2);
  store_uplink *u = e->uplinks;
  assert_int_equal(u->id, ids[0]);
  assert_int_equal(u->slot_ms, 1000);
  assert_int_equal(u->len, 13);
  store_uplink *want = report(1000, 0x00);
  assert_memory_equal(u->frame, want->frame, 13);
  free(want);
  assert_int_equal(u->next->id, ids[2]);
  assert_int_equal(u->next->slot_ms, 3000);
  store_event_free(e);
  store_close(s, NULL);
}

/* Past STORE_UPLINK_MAX, the oldest go, counted. */
static void test_bounded(void **state) {
  fixture *f = *state;
  store *s = open_store(f);
  int64_t dropped = 0, n = STORE_UPLINK_MAX + 5;
  for (int64_t i = 0; i < n; i++) assert_int_equal(store_uplink_add(s, report(i, 1)), 0);
  for (int64_t i = 0; i < n; i++) {
    store_event *e = uplink_event(s);
    dropped += e->uplink_dropped;
    store_event_free(e);
  }
  assert_int_equal(dropped, 5);
  store_stats st;
  store_get_stats(s, &st);
  assert_int_equal(st.uplink_dropped, 5);
  assert_int_equal(query_int(f->path, "SELECT count(*) FROM uplink_reports"), STORE_UPLINK_MAX);
  assert_int_equal(query_int(f->path, "SELECT min(slot_ms) FROM uplink_reports"), 5);
  store_close(s, NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_kept_until_confirmed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bounded, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
