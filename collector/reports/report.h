/* report: online-rate reports for the bureau, from the database.
 *
 * Loads each configured meter's history for a window (readings, state
 * changes, gateway runs) with its own read-only connection, computes the
 * figures with the rate module and writes the report as JSON (cJSON) or CSV
 * rows. The keys are the bureau's contract: see docs/online-rate.md.
 */
#ifndef IC_REPORT_H
#define IC_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "cfg.h"
#include "reports/rate.h"

/* Open the site's database read-only. NULL with err on failure. */
sqlite3 *report_open_db(const char *path, char *err, size_t errlen);

/* The report of config C for window [start_ms, end_ms) of PERIOD. NOW_MS is
 * the generation time; the running gateway's own run (the one that started
 * at LIVE_RUN_MS; 0 when none runs) is taken to last until NOW_MS, while a
 * run that ended without a stop lasts until its last heartbeat. Returns a
 * cJSON object, or NULL with err. */
cJSON *report_build(const cfg *c, sqlite3 *db, const rate_period *period,
                    int64_t start_ms, int64_t end_ms, int64_t now_ms,
                    int64_t live_run_ms, char *err, size_t errlen);

/* The CSV header and rows of one report (one row for the site, one per
 * meter). */
void report_csv_header(FILE *f);
void report_csv_rows(FILE *f, const cJSON *report);

#endif
