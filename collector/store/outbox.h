/* outbox: a durable queue of reports waiting for the bureau, in SQLite.
 *
 * For the fleet view, which keeps no other database. Every operation runs on
 * libuv's thread pool, one at a time and in the order asked, so the loop
 * never waits on the disk; results come back on the loop thread.
 *
 * The database is this module's alone: its schema is versioned by numbered
 * migrations applied at open (PRAGMA user_version, as the gateway's store),
 * and one from a newer build is refused. Nothing here logs: errors are
 * returned, or handed to the caller's error hook.
 */
#ifndef IC_OUTBOX_H
#define IC_OUTBOX_H

#include <stdint.h>
#include <uv.h>

typedef struct outbox outbox;

/* The number of migrations this build knows (the user_version it leaves). */
int outbox_schema_version(void);

/* Open (creating) the database at PATH. Synchronous: call at start-up.
 * ON_ERROR, when not NULL, is called on the loop thread with what went wrong
 * when a later operation fails (an SQLite message, or "cannot queue work"). */
int outbox_open(outbox **out, uv_loop_t *loop, const char *path,
                void (*on_error)(void *ctx, const char *what), void *error_ctx,
                char *err, size_t errlen);

/* Keep BODY (copied), the report of PERIOD's window starting at START_MS. A
 * report of the same window replaces an unsent one. DONE, when not NULL, is
 * called on the loop thread once it is durable. -1 when out of memory (the
 * report is not kept, DONE is not called). */
int outbox_add(outbox *o, const char *period, int64_t start_ms, const char *body,
               void (*done)(void *ctx), void *ctx);

/* The oldest report not yet accepted: CB(ctx, id, body), or CB(ctx, 0, NULL)
 * when none waits. BODY is valid during the call only. */
void outbox_next(outbox *o, void (*cb)(void *ctx, int64_t id, const char *body),
                 void *ctx);

/* Report ID was accepted. */
void outbox_mark(outbox *o, int64_t id);

/* Free after the loop has finished every operation; NULL is a no-op. */
void outbox_free(outbox *o);

#endif
