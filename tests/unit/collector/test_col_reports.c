/* The `reports` rows through store/reports.h, on a second connection to a
 * gateway database the store made (as the reporter does), while the store
 * is open: keep, replace, resume point, the oldest unaccepted, marks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "store/reports.h"
#include "store/store.h"

static void test_report_rows(void **state) {
  (void)state;
  char dir[64], path[128];
  snprintf(dir, sizeof dir, "/tmp/ic-reports-XXXXXX");
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/readings.db", dir);

  store_options so = {.path = path, .synchronous_full = true};
  char err[512];
  store *s = NULL;
  assert_int_equal(store_open(&s, &so, err, sizeof err), 0);

  sqlite3 *db;
  assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
  sqlite3_busy_timeout(db, 10000);

  int64_t end = -1, id = 0, id2 = 0, id3 = 0;
  char *body = NULL;
  assert_int_equal(store_reports_last_end(db, "day", &end), SQLITE_DONE);
  assert_int_equal(store_reports_next_unpushed(db, &id, &body), SQLITE_DONE);
  assert_null(body);

  assert_int_equal(store_reports_put(db, "day", 0, 100, 150, "{\"a\":1}", &id), SQLITE_OK);
  assert_true(id > 0);
  assert_int_equal(store_reports_put(db, "day", 100, 200, 250, "{\"a\":2}", &id2),
                   SQLITE_OK);
  assert_int_equal(store_reports_put(db, "week", 0, 700, 750, "{\"w\":1}", &id3),
                   SQLITE_OK);
  assert_int_equal(store_reports_last_end(db, "day", &end), SQLITE_ROW);
  assert_int_equal(end, 200);
  assert_int_equal(store_reports_last_end(db, "week", &end), SQLITE_ROW);
  assert_int_equal(end, 700);

  int64_t got = 0;
  assert_int_equal(store_reports_next_unpushed(db, &got, &body), SQLITE_ROW);
  assert_int_equal(got, id);
  assert_string_equal(body, "{\"a\":1}");
  free(body);
  body = NULL;
  assert_int_equal(store_reports_mark_pushed(db, id, 300), SQLITE_OK);
  assert_int_equal(store_reports_next_unpushed(db, &got, &body), SQLITE_ROW);
  assert_int_equal(got, id2);
  free(body);
  body = NULL;

  /* A report of the same window replaces the old row, and goes out again. */
  int64_t id4 = 0;
  assert_int_equal(store_reports_put(db, "day", 0, 100, 400, "{\"a\":11}", &id4),
                   SQLITE_OK);
  assert_true(id4 > id3);
  assert_int_equal(store_reports_next_unpushed(db, &got, &body), SQLITE_ROW);
  assert_int_equal(got, id2);
  free(body);
  body = NULL;
  assert_int_equal(store_reports_mark_pushed(db, id2, 500), SQLITE_OK);
  assert_int_equal(store_reports_mark_pushed(db, id3, 500), SQLITE_OK);
  assert_int_equal(store_reports_next_unpushed(db, &got, &body), SQLITE_ROW);
  assert_int_equal(got, id4);
  assert_string_equal(body, "{\"a\":11}");
  free(body);
  body = NULL;
  assert_int_equal(store_reports_mark_pushed(db, id4, 600), SQLITE_OK);
  assert_int_equal(store_reports_next_unpushed(db, &got, &body), SQLITE_DONE);

  sqlite3_close(db);
  store_close(s, NULL);

  /* Without the store's schema there is no table: an error, not "none". */
  char bare[160];
  snprintf(bare, sizeof bare, "%s/bare.db", dir);
  assert_int_equal(sqlite3_open(bare, &db), SQLITE_OK);
  assert_int_not_equal(store_reports_next_unpushed(db, &got, &body), SQLITE_DONE);
  assert_int_not_equal(store_reports_last_end(db, "day", &end), SQLITE_ROW);
  assert_int_not_equal(store_reports_put(db, "day", 0, 1, 2, "{}", &got), SQLITE_OK);
  sqlite3_close(db);

  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_report_rows),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
