/* ic-pahopeer: the bare paho publisher the windows phase compares the
 * collector with: what a QoS 1 publisher that keeps the broker's window full
 * gets on a link, and the PUBLISH -> PUBACK round trip on it.
 *
 *   ic-pahopeer -p PORT [-h HOST] [-t TOPIC] [-n N] [-s BYTES] [-i ID]
 *               [--window W]
 *
 * Connects with MQTT 5 (clean start), reads Receive Maximum from the CONNACK
 * (65535 when absent) and keeps exactly that many QoS 1 messages
 * unacknowledged: the first W go out when the connection is made, and each
 * acknowledgement (paho's onSuccess5, from its own thread) hands paho the
 * next. --window W keeps W outstanding instead (at most Receive Maximum);
 * --window 1 times the bare round trip of one message. N messages (default
 * 100,000) of BYTES bytes (default 150, a reading's size) to TOPIC (default
 * bench/peer). Round trip of a message = its onSuccess5 time minus the time
 * it was handed to MQTTAsync_sendMessage (CLOCK_MONOTONIC). Prints one JSON
 * object:
 *
 *   {"receive_maximum", "window", "messages", "bytes", "seconds",
 *    "msgs_per_s", "rtt_ms": {"p50", "p99", "max", "mean"}}
 *
 * The rate runs from the first send to the last acknowledgement. Exit 1 on a
 * failed connect, a failed send or a stall of 30 s without an
 * acknowledgement.
 */
#define _GNU_SOURCE
#include <MQTTAsync.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static MQTTAsync client;
static const char *topic = "bench/peer";
static char *payload;
static int payload_len = 150;
static long total = 100000;
static long want_window;        /* 0: the broker's Receive Maximum */
static long receive_maximum = -1;
static long window_used;
static int64_t *t_send, *t_ack;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static long next_ix;            /* the next message to send */
static long acked;
static bool failed, connected_done;
static atomic_llong last_progress_ns;

static int64_t mono_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void fail(const char *what, int rc) {
  fprintf(stderr, "ic-pahopeer: %s: %d %s\n", what, rc, MQTTAsync_strerror(rc));
  pthread_mutex_lock(&mu);
  failed = true;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
}

static void on_acked(void *ctx, MQTTAsync_successData5 *r);
static void on_send_failed(void *ctx, MQTTAsync_failureData5 *r);

/* Hand message IX to paho. */
static void send_one(long ix) {
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  ro.onSuccess5 = on_acked;
  ro.onFailure5 = on_send_failed;
  ro.context = (void *)(intptr_t)ix;
  MQTTAsync_message m = MQTTAsync_message_initializer;
  m.payload = payload;
  m.payloadlen = payload_len;
  m.qos = 1;
  m.retained = 0;
  t_send[ix] = mono_ns();
  int rc = MQTTAsync_sendMessage(client, topic, &m, &ro);
  if (rc != MQTTASYNC_SUCCESS) fail("send", rc);
}

static void on_acked(void *ctx, MQTTAsync_successData5 *r) {
  (void)r;
  long ix = (long)(intptr_t)ctx;
  int64_t now = mono_ns();
  t_ack[ix] = now;
  atomic_store(&last_progress_ns, now);
  long next = -1;
  pthread_mutex_lock(&mu);
  acked++;
  if (next_ix < total) next = next_ix++;
  if (acked == total) pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  if (next >= 0) send_one(next);
}

static void on_send_failed(void *ctx, MQTTAsync_failureData5 *r) {
  fprintf(stderr, "ic-pahopeer: message %ld failed: %s (reason %d)\n", (long)(intptr_t)ctx,
          r && r->message ? r->message : "", r ? (int)r->reasonCode : 0);
  fail("publish", r ? r->code : -1);
}

static void on_connected(void *ctx, MQTTAsync_successData5 *r) {
  (void)ctx;
  long rm = 65535;
  if (r && MQTTProperties_hasProperty(&r->properties, MQTTPROPERTY_CODE_RECEIVE_MAXIMUM))
    rm = MQTTProperties_getNumericValue(&r->properties, MQTTPROPERTY_CODE_RECEIVE_MAXIMUM);
  long w = want_window > 0 && want_window < rm ? want_window : rm;
  if (w > total) w = total;
  pthread_mutex_lock(&mu);
  receive_maximum = rm;
  window_used = w;
  next_ix = w;
  connected_done = true;
  pthread_mutex_unlock(&mu);
  atomic_store(&last_progress_ns, mono_ns());
  for (long i = 0; i < w; i++) send_one(i);
}

static void on_connect_failed(void *ctx, MQTTAsync_failureData5 *r) {
  (void)ctx;
  fprintf(stderr, "ic-pahopeer: connect failed: %s (reason %d)\n",
          r && r->message ? r->message : "", r ? (int)r->reasonCode : 0);
  fail("connect", r ? r->code : -1);
}

static void on_lost(void *ctx, char *cause) {
  (void)ctx;
  fprintf(stderr, "ic-pahopeer: connection lost: %s\n", cause ? cause : "");
  fail("connection", -1);
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(const double *v, long n, double p) {
  if (n <= 0) return 0;
  long i = (long)(p * (double)(n - 1) + 0.5);
  return v[i];
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1", *id = "bench-peer";
  int port = 1883;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) {
      fprintf(stderr, "ic-pahopeer: %s needs a value\n", a);
      return 2;
    }
    if (!strcmp(a, "-h")) host = v;
    else if (!strcmp(a, "-p")) port = atoi(v);
    else if (!strcmp(a, "-t")) topic = v;
    else if (!strcmp(a, "-n")) total = atol(v);
    else if (!strcmp(a, "-s")) payload_len = atoi(v);
    else if (!strcmp(a, "-i")) id = v;
    else if (!strcmp(a, "--window")) want_window = atol(v);
    else {
      fprintf(stderr, "usage: ic-pahopeer -p PORT [-h HOST] [-t TOPIC] [-n N] [-s BYTES] "
                      "[-i ID] [--window W]\n");
      return 2;
    }
    i++;
  }
  if (total <= 0 || payload_len <= 0 || want_window < 0) {
    fprintf(stderr, "ic-pahopeer: N, BYTES and W must be positive\n");
    return 2;
  }
  /* A payload shaped like a reading, padded to the size asked for. */
  payload = malloc((size_t)payload_len + 1);
  t_send = calloc((size_t)total, sizeof *t_send);
  t_ack = calloc((size_t)total, sizeof *t_ack);
  if (!payload || !t_send || !t_ack) return 1;
  snprintf(payload, (size_t)payload_len + 1,
           "{\"meter\":\"PEER\",\"seq\":1,\"ts\":0,\"fields\":{\"flow_m3h\":123.25,"
           "\"total_m3\":1042},\"quality\":\"good\",\"pad\":\"%0*d\"}",
           payload_len > 120 ? payload_len - 120 : 0, 0);
  size_t have = strlen(payload);
  if (have < (size_t)payload_len) memset(payload + have, ' ', (size_t)payload_len - have);

  char uri[300];
  snprintf(uri, sizeof uri, "tcp://%s:%d", host, port);
  MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
  co.MQTTVersion = MQTTVERSION_5;
  int rc = MQTTAsync_createWithOptions(&client, uri, id, MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
  if (rc != MQTTASYNC_SUCCESS) {
    fprintf(stderr, "ic-pahopeer: create: %s\n", MQTTAsync_strerror(rc));
    return 1;
  }
  MQTTAsync_setCallbacks(client, NULL, on_lost, NULL, NULL);
  MQTTAsync_connectOptions conn = MQTTAsync_connectOptions_initializer5;
  conn.cleanstart = 1;
  conn.keepAliveInterval = 30;
  /* paho's own cap: never below the window asked of it. */
  conn.maxInflight = 65535;
  conn.onSuccess5 = on_connected;
  conn.onFailure5 = on_connect_failed;
  conn.context = NULL;
  rc = MQTTAsync_connect(client, &conn);
  if (rc != MQTTASYNC_SUCCESS) {
    fprintf(stderr, "ic-pahopeer: connect: %s\n", MQTTAsync_strerror(rc));
    return 1;
  }

  int status = 0;
  pthread_mutex_lock(&mu);
  atomic_store(&last_progress_ns, mono_ns());
  while (!failed && acked < total) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 1;
    pthread_cond_timedwait(&cv, &mu, &dl);
    if (mono_ns() - atomic_load(&last_progress_ns) > 30 * 1000000000LL) {
      fprintf(stderr, "ic-pahopeer: no acknowledgement for 30 s (%ld of %ld acknowledged%s)\n",
              acked, total, connected_done ? "" : ", never connected");
      failed = true;
    }
  }
  long done = acked;
  status = failed ? 1 : 0;
  pthread_mutex_unlock(&mu);

  MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer5;
  d.timeout = 1000;
  MQTTAsync_disconnect(client, &d);
  usleep(100000);
  MQTTAsync_destroy(&client);
  if (status) return status;

  double *rtt = malloc((size_t)done * sizeof *rtt);
  if (!rtt) return 1;
  int64_t first = INT64_MAX, last = 0;
  double sum = 0;
  long n = 0;
  for (long i = 0; i < total; i++) {
    if (!t_ack[i]) continue;
    if (t_send[i] < first) first = t_send[i];
    if (t_ack[i] > last) last = t_ack[i];
    rtt[n] = (double)(t_ack[i] - t_send[i]) / 1e6;
    sum += rtt[n++];
  }
  qsort(rtt, (size_t)n, sizeof *rtt, cmp_d);
  double secs = (double)(last - first) / 1e9;
  printf("{\"receive_maximum\": %ld, \"window\": %ld, \"messages\": %ld, \"bytes\": %d, "
         "\"seconds\": %.3f, \"msgs_per_s\": %.1f, "
         "\"rtt_ms\": {\"p50\": %.3f, \"p99\": %.3f, \"max\": %.3f, \"mean\": %.3f}}\n",
         receive_maximum, window_used, n, payload_len, secs, secs > 0 ? (double)n / secs : 0,
         pct(rtt, n, 0.50), pct(rtt, n, 0.99), n ? rtt[n - 1] : 0, n ? sum / (double)n : 0);
  free(rtt);
  return 0;
}
