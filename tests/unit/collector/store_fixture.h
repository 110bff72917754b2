/* What the store's unit tests share: a database in a folder of its own
 * (setup, teardown), the store opened on it with a notify hook, and a wait
 * for the writer's next event. Included by each test file (static). */
#ifndef IC_TEST_STORE_FIXTURE_H
#define IC_TEST_STORE_FIXTURE_H

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "store/store.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int notified;

static void notify(void *ctx) {
  (void)ctx;
  pthread_mutex_lock(&mu);
  notified++;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
}

/* Wait (up to 5 s) for the next event from the writer. */
static store_event *next_event(store *s) {
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += 5;
  for (;;) {
    store_event *ev = store_take_events(s);
    if (ev) return ev;
    pthread_mutex_lock(&mu);
    int seen = notified;
    int rc = 0;
    while (notified == seen && rc == 0) rc = pthread_cond_timedwait(&cv, &mu, &dl);
    pthread_mutex_unlock(&mu);
    if (rc != 0) return store_take_events(s);
  }
}

typedef struct {
  char dir[64];
  char path[128];
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  snprintf(f->dir, sizeof f->dir, "/tmp/ic-store-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->path, sizeof f->path, "%s/readings.db", f->dir);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
  if (system(cmd) != 0) return -1;
  free(f);
  return 0;
}

static store *open_store(fixture *f) {
  store_options o = {.path = f->path, .synchronous_full = true, .notify = notify};
  char err[512];
  store *s = NULL;
  assert_int_equal(store_open(&s, &o, err, sizeof err), 0);
  return s;
}

#endif
