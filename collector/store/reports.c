/* The `reports` rows, read and written on the reporter's connection.
 *
 * Why functions on the caller's connection rather than operations queued to
 * the store's writer thread: the reporter thread owns a connection of its
 * own to the gateway database (it reads every meter's readings of a window
 * to build a report, which must not hold up the writer's group commits), and
 * the rows it keeps are its own bookkeeping, read back by no one else but
 * retention. Queuing them to the writer would put a thread hop and the
 * writer's commit interval between building a report and handing it back,
 * and make the reporter wait on the readings' queue (bounded, with its own
 * back-off when the disk is in trouble). So these functions run on whichever
 * thread calls them, on the connection it passes, which stays the reporter
 * thread's alone; the two connections take turns on the file through the
 * busy timeout, as before. What store/ owns is the schema: the table is made
 * and changed only by the numbered migrations in store.c, and no SQL text
 * about it lives outside store/.
 */
#include "store/reports.h"

#include <stdlib.h>
#include <string.h>

int store_reports_last_end(sqlite3 *db, const char *period, int64_t *end_ms) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, "SELECT max(end_ms) FROM reports WHERE period = ?1",
                              -1, &st, NULL);
  if (rc != SQLITE_OK) return rc;
  sqlite3_bind_text(st, 1, period, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    if (sqlite3_column_type(st, 0) == SQLITE_NULL)
      rc = SQLITE_DONE;
    else
      *end_ms = sqlite3_column_int64(st, 0);
  }
  sqlite3_finalize(st);
  return rc;
}

int store_reports_put(sqlite3 *db, const char *period, int64_t start_ms, int64_t end_ms,
                      int64_t created_ms, const char *body, int64_t *id) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db,
                              "INSERT OR REPLACE INTO reports (period, start_ms, end_ms, "
                              "created_ms, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                              -1, &st, NULL);
  if (rc != SQLITE_OK) return rc;
  sqlite3_bind_text(st, 1, period, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, start_ms);
  sqlite3_bind_int64(st, 3, end_ms);
  sqlite3_bind_int64(st, 4, created_ms);
  sqlite3_bind_text(st, 5, body, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  *id = sqlite3_last_insert_rowid(db);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int store_reports_next_unpushed(sqlite3 *db, int64_t *id, char **body) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db,
                              "SELECT id, body FROM reports WHERE pushed_ms IS NULL "
                              "ORDER BY id LIMIT 1",
                              -1, &st, NULL);
  if (rc != SQLITE_OK) return rc;
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *id = sqlite3_column_int64(st, 0);
    const char *text = (const char *)sqlite3_column_text(st, 1);
    *body = text ? strdup(text) : NULL;
  }
  sqlite3_finalize(st);
  return rc;
}

int store_reports_mark_pushed(sqlite3 *db, int64_t id, int64_t pushed_ms) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, "UPDATE reports SET pushed_ms = ?2 WHERE id = ?1", -1,
                              &st, NULL);
  if (rc != SQLITE_OK) return rc;
  sqlite3_bind_int64(st, 1, id);
  sqlite3_bind_int64(st, 2, pushed_ms);
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}
