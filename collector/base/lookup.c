#include "base/lookup.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "transport/tr_net.h"

struct lookup {
  uv_async_t *wake;
  bool abandoned, done; /* under mu */
  int rc;
  struct addrinfo *res;
  int port;
  char host[];
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void *lookup_main(void *arg) {
  lookup *l = arg;
  struct addrinfo *res = NULL;
  int rc = tr_net_resolve(l->host, l->port, false, &res);
  pthread_mutex_lock(&mu);
  if (l->abandoned) {
    pthread_mutex_unlock(&mu);
    if (res) freeaddrinfo(res);
    free(l);
    return NULL;
  }
  l->rc = rc;
  l->res = res;
  l->done = true;
  uv_async_send(l->wake);
  pthread_mutex_unlock(&mu);
  return NULL;
}

lookup *lookup_start(const char *host, int port, uv_async_t *wake, int *err) {
  size_t hl = strlen(host);
  lookup *l = calloc(1, sizeof *l + hl + 1);
  if (!l) {
    *err = ENOMEM;
    return NULL;
  }
  memcpy(l->host, host, hl + 1);
  l->port = port;
  l->wake = wake;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  /* getaddrinfo needs little stack. */
  pthread_attr_setstacksize(&attr, 256 * 1024);
  pthread_t t;
  int rc = pthread_create(&t, &attr, lookup_main, l);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    free(l);
    *err = rc;
    return NULL;
  }
  return l;
}

bool lookup_take(lookup *l, int *rc, struct addrinfo **res) {
  pthread_mutex_lock(&mu);
  bool done = l->done;
  pthread_mutex_unlock(&mu);
  if (!done) return false;
  *rc = l->rc;
  *res = l->res;
  free(l);
  return true;
}

void lookup_abandon(lookup *l) {
  if (!l) return;
  pthread_mutex_lock(&mu);
  bool done = l->done;
  l->abandoned = true;
  pthread_mutex_unlock(&mu);
  if (done) { /* its thread is gone already */
    if (l->res) freeaddrinfo(l->res);
    free(l);
  }
}
