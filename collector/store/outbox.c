#include "store/outbox.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "store/dblock.h"
#include "store/migrate.h"

/* The outbox database's schema, by numbered migrations as the gateway's
 * (store.c): each runs once, in order; user_version records how many have
 * run. 1 is the schema outboxes had before they were numbered, word for
 * word, and IF NOT EXISTS: an outbox made then (user_version 0, the table
 * there) takes it as a no-op and opens unchanged. */
static const char *const migrations[] = {
    /* 1: reports waiting for the bureau, one per period and window */
    "CREATE TABLE IF NOT EXISTS outbox ("
    "  id INTEGER PRIMARY KEY, period TEXT NOT NULL,"
    "  start_ms INTEGER NOT NULL, created_ms INTEGER NOT NULL,"
    "  body TEXT NOT NULL, pushed_ms INTEGER,"
    "  UNIQUE (period, start_ms));",
};

#define NMIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))

int outbox_schema_version(void) { return NMIGRATIONS; }

typedef enum { OB_ADD, OB_NEXT, OB_MARK } ob_kind;

typedef struct ob_op {
  uv_work_t work;
  struct ob_op *next;
  struct outbox *o;
  ob_kind kind;
  char period[32];
  int64_t start_ms;
  char *body;
  int64_t id;
  int rc;
  void (*done)(void *ctx);
  void (*next_cb)(void *ctx, int64_t id, const char *body);
  void *ctx;
} ob_op;

struct outbox {
  uv_loop_t *loop;
  void (*on_error)(void *ctx, const char *what);
  void *error_ctx;
  sqlite3 *db;
  int lock_fd; /* dblock: one fleet view per outbox */
  ob_op *head, *tail; /* waiting to run */
  bool running;
};

static void fail(outbox *o, const char *what) {
  if (o->on_error) o->on_error(o->error_ctx, what);
}

int outbox_open(outbox **out, uv_loop_t *loop, const char *path,
                void (*on_error)(void *ctx, const char *what), void *error_ctx,
                char *err, size_t errlen) {
  outbox *o = calloc(1, sizeof *o);
  if (!o) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  o->loop = loop;
  o->on_error = on_error;
  o->error_ctx = error_ctx;
  /* One fleet view per outbox, as one daemon per database. */
  o->lock_fd = dblock_acquire(path, err, errlen);
  if (o->lock_fd < 0) {
    free(o);
    return -1;
  }
  if (sqlite3_open_v2(path, &o->db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      NULL) != SQLITE_OK ||
      sqlite3_exec(o->db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;", NULL,
                   NULL, NULL) != SQLITE_OK) {
    snprintf(err, errlen, "cannot open the outbox %s: %s", path,
             o->db ? sqlite3_errmsg(o->db) : "out of memory");
    outbox_free(o);
    return -1;
  }
  char e[256];
  if (store_migrate(o->db, migrations, NMIGRATIONS, e, sizeof e) != 0) {
    snprintf(err, errlen, "cannot open the outbox %s: %s", path, e);
    outbox_free(o);
    return -1;
  }
  sqlite3_busy_timeout(o->db, 5000);
  *out = o;
  return 0;
}

static void run_next(outbox *o);

/* Thread pool. */
static void work(uv_work_t *w) {
  ob_op *op = w->data;
  sqlite3 *db = op->o->db;
  sqlite3_stmt *st = NULL;
  switch (op->kind) {
    case OB_ADD:
      op->rc = sqlite3_prepare_v2(db,
                                  "INSERT INTO outbox (period, start_ms, created_ms, body) "
                                  "VALUES (?1, ?2, ?3, ?4) ON CONFLICT(period, start_ms) "
                                  "DO UPDATE SET body = excluded.body WHERE pushed_ms IS NULL",
                                  -1, &st, NULL);
      if (op->rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, op->period, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, op->start_ms);
        sqlite3_bind_int64(st, 3, clock_wall_ms());
        sqlite3_bind_text(st, 4, op->body, -1, SQLITE_STATIC);
        op->rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
      }
      break;
    case OB_NEXT:
      op->rc = sqlite3_prepare_v2(db,
                                  "SELECT id, body FROM outbox WHERE pushed_ms IS NULL "
                                  "ORDER BY id LIMIT 1", -1, &st, NULL);
      if (op->rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        op->id = sqlite3_column_int64(st, 0);
        op->body = strdup((const char *)sqlite3_column_text(st, 1));
      }
      break;
    case OB_MARK:
      op->rc = sqlite3_prepare_v2(db, "UPDATE outbox SET pushed_ms = ?2 WHERE id = ?1",
                                  -1, &st, NULL);
      if (op->rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, op->id);
        sqlite3_bind_int64(st, 2, clock_wall_ms());
        op->rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
      }
      break;
  }
  sqlite3_finalize(st);
}

/* Loop thread. */
static void after(uv_work_t *w, int status) {
  ob_op *op = w->data;
  outbox *o = op->o;
  (void)status;
  if (op->rc != SQLITE_OK) fail(o, sqlite3_errstr(op->rc));
  if (op->kind == OB_ADD && op->done) op->done(op->ctx);
  if (op->kind == OB_NEXT && op->next_cb)
    op->next_cb(op->ctx, op->body ? op->id : 0, op->body);
  free(op->body);
  free(op);
  o->running = false;
  run_next(o);
}

static void run_next(outbox *o) {
  if (o->running || !o->head) return;
  ob_op *op = o->head;
  o->head = op->next;
  if (!o->head) o->tail = NULL;
  op->work.data = op;
  if (uv_queue_work(o->loop, &op->work, work, after) == 0) {
    o->running = true;
  } else {
    fail(o, "cannot queue work");
    free(op->body);
    free(op);
  }
}

static void enqueue(outbox *o, ob_op *op) {
  op->o = o;
  if (o->tail)
    o->tail->next = op;
  else
    o->head = op;
  o->tail = op;
  run_next(o);
}

int outbox_add(outbox *o, const char *period, int64_t start_ms, const char *body,
               void (*done)(void *ctx), void *ctx) {
  ob_op *op = calloc(1, sizeof *op);
  if (!op || !(op->body = strdup(body))) {
    free(op);
    return -1;
  }
  op->kind = OB_ADD;
  snprintf(op->period, sizeof op->period, "%s", period);
  op->start_ms = start_ms;
  op->done = done;
  op->ctx = ctx;
  enqueue(o, op);
  return 0;
}

void outbox_next(outbox *o, void (*cb)(void *ctx, int64_t id, const char *body),
                 void *ctx) {
  ob_op *op = calloc(1, sizeof *op);
  if (!op) {
    cb(ctx, 0, NULL);
    return;
  }
  op->kind = OB_NEXT;
  op->next_cb = cb;
  op->ctx = ctx;
  enqueue(o, op);
}

void outbox_mark(outbox *o, int64_t id) {
  ob_op *op = calloc(1, sizeof *op);
  if (!op) return;
  op->kind = OB_MARK;
  op->id = id;
  enqueue(o, op);
}

void outbox_free(outbox *o) {
  if (!o) return;
  while (o->head) {
    ob_op *op = o->head;
    o->head = op->next;
    free(op->body);
    free(op);
  }
  sqlite3_close(o->db);
  dblock_release(o->lock_fd);
  free(o);
}
