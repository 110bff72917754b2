/* reports: the rows of the gateway database's `reports` table, for the
 * reporter (collector/reports/reporter.c). See reports.c for why these take
 * the reporter's own connection. The table itself is made and changed by the
 * store's migrations (store.c); retention removes old rows in the store's
 * maintenance. Nothing here logs: errors come back as SQLite result codes,
 * sqlite3_errmsg(DB) telling more.
 */
#ifndef IC_STORE_REPORTS_H
#define IC_STORE_REPORTS_H

#include <sqlite3.h>
#include <stdint.h>

/* The end of the last window of PERIOD reported, in *END_MS. SQLITE_ROW when
 * there is one, SQLITE_DONE when none, or the error's code. */
int store_reports_last_end(sqlite3 *db, const char *period, int64_t *end_ms);

/* Keep the report BODY of PERIOD's window [START_MS, END_MS), made at
 * CREATED_MS, replacing one of the same window; its row id in *ID. SQLITE_OK
 * or the error's code. */
int store_reports_put(sqlite3 *db, const char *period, int64_t start_ms, int64_t end_ms,
                      int64_t created_ms, const char *body, int64_t *id);

/* The oldest report the bureau has not accepted: SQLITE_ROW with *ID and
 * *BODY (malloc'd, the caller's; NULL when out of memory), SQLITE_DONE when
 * none waits, or the error's code when the table cannot be read. */
int store_reports_next_unpushed(sqlite3 *db, int64_t *id, char **body);

/* Report ID was accepted at PUSHED_MS. SQLITE_OK or the error's code. */
int store_reports_mark_pushed(sqlite3 *db, int64_t id, int64_t pushed_ms);

#endif
