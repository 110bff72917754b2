#include "store/migrate.h"

#include <stdio.h>

int store_exec(sqlite3 *db, const char *sql, char *err, size_t errlen) {
  char *msg = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
    snprintf(err, errlen, "%s", msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return -1;
  }
  return 0;
}

int store_user_version(sqlite3 *db, int *out) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
    return -1;
  int rc = sqlite3_step(st);
  *out = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
  sqlite3_finalize(st);
  return rc == SQLITE_ROW ? 0 : -1;
}

int store_migrate(sqlite3 *db, const char *const *migrations, int n, char *err,
                  size_t errlen) {
  int v;
  if (store_user_version(db, &v) != 0) {
    snprintf(err, errlen, "cannot read the schema version: %s", sqlite3_errmsg(db));
    return -1;
  }
  if (v > n) {
    snprintf(err, errlen,
             "the database has schema version %d, newer than this build (%d)", v, n);
    return -1;
  }
  for (int i = v; i < n; i++) {
    char sql[64];
    if (store_exec(db, "BEGIN IMMEDIATE", err, errlen) != 0) return -1;
    if (store_exec(db, migrations[i], err, errlen) != 0) {
      char e2[64]; /* ERR keeps the first failure; a failed ROLLBACK adds nothing */
      (void)store_exec(db, "ROLLBACK", e2, sizeof e2);
      return -1;
    }
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", i + 1);
    if (store_exec(db, sql, err, errlen) != 0 || store_exec(db, "COMMIT", err, errlen) != 0) {
      char e2[64]; /* as above */
      (void)store_exec(db, "ROLLBACK", e2, sizeof e2);
      return -1;
    }
  }
  return 0;
}
