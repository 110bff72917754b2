/* reporter: builds online-rate reports off the loop thread.
 *
 * One thread with its own database connection (SQLite allows one writer at a
 * time; the store's writer and this one take turns through the busy
 * timeout). The loop asks for a period's closed windows; the thread builds
 * each report in order, keeps it in the `reports` table through store/'s
 * functions on this connection (store/reports.h; store/ owns the schema), so
 * a restart knows what was already reported, and hands the JSON back through
 * the notify hook.
 * Windows that closed while the gateway was down are built at start-up, in
 * order, from the last one reported (at most REPORTER_CATCHUP_MAX per period).
 */
#ifndef IC_REPORTER_H
#define IC_REPORTER_H

#include <stdint.h>

#include "cfg.h"
#include "reports/rate.h"

#define REPORTER_CATCHUP_MAX 1000

typedef struct reporter reporter;

typedef enum {
  REPORTER_BUILT = 0, /* a report was built (or failed: error) */
  REPORTER_TO_PUSH,   /* the oldest report not yet accepted: id and body */
  REPORTER_NOTHING_TO_PUSH,
} reporter_kind;

typedef struct reporter_result {
  struct reporter_result *next;
  reporter_kind kind;
  int64_t id;      /* REPORTER_BUILT, REPORTER_TO_PUSH: the report's row */
  int period;      /* index in the config's report periods */
  int64_t start_ms, end_ms;
  char *body;      /* the report as JSON text, owned */
  char error[256]; /* set instead of body when building failed */
} reporter_result;

void reporter_result_free(reporter_result *r);

/* RUN_START_MS: when this gateway run started (as given to
 * store_run_start), so reports know which open run is the live one. */
int reporter_start(reporter **out, const cfg *c, const rate_period *periods,
                   size_t nperiods, int64_t run_start_ms, void (*notify)(void *),
                   void *ctx, char *err, size_t errlen);

/* Build every closed window of PERIOD not reported yet, up to UPTO_MS (the
 * end of the last closed window), oldest first. */
int reporter_request(reporter *r, int period, int64_t upto_ms);

/* Find the oldest report the bureau has not accepted yet (a TO_PUSH or a
 * NOTHING_TO_PUSH result follows). */
int reporter_next_push(reporter *r);

/* Record that the bureau accepted report ID. */
int reporter_mark_pushed(reporter *r, int64_t id);

reporter_result *reporter_take(reporter *r);

/* Build the next reports with C (a reload's configuration, with the same
 * periods and database). Waits for a report being built to end; after it,
 * the reporter no longer reads the configuration it had. */
void reporter_set_config(reporter *r, const cfg *c);

/* Stop after the job in progress; NULL is a no-op. */
void reporter_free(reporter *r);

#endif
