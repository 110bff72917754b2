/* The fleet view's outbox on real SQLite files: numbered migrations over an
 * outbox made before they were numbered, and over none; the queue's order,
 * replacement and marks across a reopen. */
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
#include <uv.h>

#include "store/outbox.h"

/* The schema as outbox_open made it before migrations were numbered. */
#define OLD_SCHEMA                                        \
  "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;" \
  "CREATE TABLE IF NOT EXISTS outbox ("                   \
  "  id INTEGER PRIMARY KEY, period TEXT NOT NULL,"       \
  "  start_ms INTEGER NOT NULL, created_ms INTEGER NOT NULL," \
  "  body TEXT NOT NULL, pushed_ms INTEGER,"              \
  "  UNIQUE (period, start_ms));"

typedef struct {
  char dir[64];
  char path[128];
  uv_loop_t loop;
  int errors;
  int kept;
  int answered;
  int64_t id;
  char body[256];
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  snprintf(f->dir, sizeof f->dir, "/tmp/ic-outbox-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->path, sizeof f->path, "%s/fleet.db", f->dir);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  uv_loop_close(&f->loop);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
  if (system(cmd) != 0) return -1;
  free(f);
  return 0;
}

static void on_error(void *ctx, const char *what) {
  fixture *f = ctx;
  (void)what;
  f->errors++;
}

static void kept(void *ctx) {
  fixture *f = ctx;
  f->kept++;
}

static void next_cb(void *ctx, int64_t id, const char *body) {
  fixture *f = ctx;
  f->answered++;
  f->id = id;
  snprintf(f->body, sizeof f->body, "%s", body ? body : "");
}

static outbox *open_outbox(fixture *f) {
  outbox *o = NULL;
  char err[512] = "";
  int rc = outbox_open(&o, &f->loop, f->path, on_error, f, err, sizeof err);
  if (rc != 0) fail_msg("outbox_open: %s", err);
  return o;
}

/* The oldest report waiting: its id (0: none), its body in f->body. */
static int64_t next(fixture *f, outbox *o) {
  int before = f->answered;
  outbox_next(o, next_cb, f);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(f->answered, before + 1);
  return f->id;
}

static void add(fixture *f, outbox *o, const char *period, int64_t start,
                const char *body) {
  int before = f->kept;
  assert_int_equal(outbox_add(o, period, start, body, kept, f), 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(f->kept, before + 1);
}

static void mark(fixture *f, outbox *o, int64_t id) {
  outbox_mark(o, id);
  uv_run(&f->loop, UV_RUN_DEFAULT);
}

static sqlite3 *db_open(const char *path) {
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  return db;
}

static int64_t db_int(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  int64_t v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

static void db_exec(sqlite3 *db, const char *sql) {
  char *msg = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) fail_msg("%s: %s", sql, msg);
}

/* The schema's text as SQLite keeps it: tables and indexes, in order. */
static char *schema_of(const char *path) {
  sqlite3 *db = db_open(path);
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_prepare_v2(db,
                                      "SELECT group_concat(type || ' ' || name || ': ' || "
                                      "coalesce(sql, ''), char(10)) FROM "
                                      "(SELECT * FROM sqlite_master ORDER BY name)",
                                      -1, &st, NULL),
                   SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  char *s = strdup((const char *)sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  sqlite3_close(db);
  return s;
}

/* An outbox made by the old CREATE TABLE IF NOT EXISTS code, with a report
 * accepted and one waiting. */
static void make_old_outbox(const char *path) {
  sqlite3 *db = db_open(path);
  db_exec(db, OLD_SCHEMA);
  db_exec(db,
          "INSERT INTO outbox (period, start_ms, created_ms, body, pushed_ms) "
          "VALUES ('day', 1000, 1001, '{\"n\":1}', 1002);"
          "INSERT INTO outbox (period, start_ms, created_ms, body) "
          "VALUES ('day', 2000, 2001, '{\"n\":2}');");
  sqlite3_close(db);
}

static void test_old_outbox_opens_unchanged(void **state) {
  fixture *f = *state;
  make_old_outbox(f->path);
  char *before = schema_of(f->path);
  sqlite3 *db = db_open(f->path);
  assert_int_equal(db_int(db, "PRAGMA user_version"), 0);
  sqlite3_close(db);

  outbox *o = open_outbox(f);
  /* The waiting report is still there, the accepted one is not offered. */
  int64_t id = next(f, o);
  assert_true(id > 0);
  assert_string_equal(f->body, "{\"n\":2}");
  /* A new one queues behind it; the same window replaces an unsent one. */
  add(f, o, "day", 3000, "{\"n\":3}");
  add(f, o, "day", 2000, "{\"n\":22}");
  assert_int_equal(next(f, o), id);
  assert_string_equal(f->body, "{\"n\":22}");
  mark(f, o, id);
  assert_true(next(f, o) > id);
  assert_string_equal(f->body, "{\"n\":3}");
  outbox_free(o);
  assert_int_equal(f->errors, 0);

  /* Numbered now, with the very same tables and indexes. */
  char *after = schema_of(f->path);
  assert_string_equal(before, after);
  db = db_open(f->path);
  assert_int_equal(db_int(db, "PRAGMA user_version"), outbox_schema_version());
  assert_int_equal(outbox_schema_version(), 1);
  assert_int_equal(db_int(db, "SELECT count(*) FROM outbox"), 3);
  assert_int_equal(db_int(db, "SELECT count(*) FROM outbox WHERE pushed_ms IS NULL"), 1);
  sqlite3_close(db);
  free(before);
  free(after);
}

static void test_new_outbox(void **state) {
  fixture *f = *state;
  outbox *o = open_outbox(f);
  assert_int_equal(next(f, o), 0);
  add(f, o, "week", 5000, "{\"w\":1}");
  add(f, o, "day", 6000, "{\"d\":1}");
  int64_t id = next(f, o);
  assert_true(id > 0);
  assert_string_equal(f->body, "{\"w\":1}");
  mark(f, o, id);
  /* An accepted report is not replaced by a later one of its window. */
  add(f, o, "week", 5000, "{\"w\":2}");
  outbox_free(o);

  /* Reopened: the same queue, the version unchanged. */
  o = open_outbox(f);
  int64_t id2 = next(f, o);
  assert_true(id2 > id);
  assert_string_equal(f->body, "{\"d\":1}");
  mark(f, o, id2);
  assert_int_equal(next(f, o), 0);
  outbox_free(o);
  assert_int_equal(f->errors, 0);

  sqlite3 *db = db_open(f->path);
  assert_int_equal(db_int(db, "PRAGMA user_version"), outbox_schema_version());
  assert_int_equal(db_int(db, "SELECT count(*) FROM outbox WHERE body = '{\"w\":1}'"), 1);
  sqlite3_close(db);

  /* The same tables and indexes as an outbox made the old way. */
  char old_path[160];
  snprintf(old_path, sizeof old_path, "%s/old.db", f->dir);
  sqlite3 *odb = db_open(old_path);
  db_exec(odb, OLD_SCHEMA);
  sqlite3_close(odb);
  char *fresh = schema_of(f->path), *old = schema_of(old_path);
  assert_string_equal(fresh, old);
  free(fresh);
  free(old);
}

static void test_refuses_newer_schema(void **state) {
  fixture *f = *state;
  sqlite3 *db = db_open(f->path);
  db_exec(db, OLD_SCHEMA);
  char sql[64];
  snprintf(sql, sizeof sql, "PRAGMA user_version = %d", outbox_schema_version() + 1);
  db_exec(db, sql);
  sqlite3_close(db);
  outbox *o = NULL;
  char err[512] = "";
  assert_int_not_equal(outbox_open(&o, &f->loop, f->path, on_error, f, err, sizeof err),
                       0);
  assert_non_null(strstr(err, "newer than this build"));
  assert_null(o);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_old_outbox_opens_unchanged, setup, teardown),
      cmocka_unit_test_setup_teardown(test_new_outbox, setup, teardown),
      cmocka_unit_test_setup_teardown(test_refuses_newer_schema, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
