/* migrate: numbered schema migrations for the SQLite databases of store/.
 *
 * Each database's schema is a list of migrations, applied in order, each once
 * and in its own transaction; PRAGMA user_version records how many have run.
 * A database with a higher number than the list is from a newer build and is
 * refused rather than guessed at. Nothing here logs: errors are returned.
 */
#ifndef IC_MIGRATE_H
#define IC_MIGRATE_H

#include <stddef.h>
#include <sqlite3.h>

/* The database's PRAGMA user_version in *OUT; 0 on success, -1 on error. */
int store_user_version(sqlite3 *db, int *out);

/* Apply MIGRATIONS[v..N-1], v being the database's user_version. 0 on
 * success; -1 with ERR set otherwise (a failed migration is rolled back). */
/* Run SQL on DB: 0, or -1 with SQLite's words in ERR. */
int store_exec(sqlite3 *db, const char *sql, char *err, size_t errlen);

int store_migrate(sqlite3 *db, const char *const *migrations, int n, char *err,
                  size_t errlen);

#endif
