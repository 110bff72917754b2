/* ic-bench: the benchmark's measuring tool.
 *
 *   ic-bench ports N
 *       print N free loopback TCP ports, one a line, below the ephemeral range
 *       (so the collectors' own outgoing connections cannot take them).
 *   ic-bench sub -p PORT -t TOPIC [-t TOPIC]... -o RECORDS -T TOPICS
 *       a QoS 1 subscriber that stamps every message's arrival, parses the
 *       poll time out of its payload (ours: "ts" in RFC 3339; the peer's mqtt
 *       plugin: "EPOCH.mmm:value") and appends one fixed-size record per
 *       message to RECORDS; on SIGTERM it writes the topic table to TOPICS.
 *       Prints "ready" once subscribed. It connects with MQTT 5 and a
 *       Receive Maximum of 65535, so the broker's own window
 *       (max_inflight_messages) never limits what it is sent.
 *   ic-bench analyze --kind ours|collectd --records R --topics T
 *                    --interval-ms I --from-ms A --to-ms B [--phases FILE]
 *       prints one JSON object with the readings in the window [A, B) (by poll
 *       time), poll lateness, poll-to-subscriber latency, and the historical
 *       (replayed) messages that arrived in the window; also every message
 *       (any topic) that arrived in the window, and from its start to the
 *       last historical arrival.
 *
 * Recording is kept to a hash lookup and an fwrite per message so that the
 * subscriber is never what limits a run; all statistics happen afterwards.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <mosquitto.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* One message as recorded. ts_us is the poll time the payload states;
 * 0 when the payload had none that parses. */
typedef struct {
  int64_t ts_us;
  int64_t arr_us;
  uint32_t topic;
  uint32_t flags; /* bit 0: historical */
} rec;

#define REC_HIST 1u

static int64_t wall_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static void die(const char *what) {
  fprintf(stderr, "ic-bench: %s: %s\n", what, strerror(errno));
  exit(1);
}

/* ------------------------------------------------------------------------ */
/* ports                                                                    */

static int cmd_ports(int argc, char **argv) {
  if (argc != 1) {
    fprintf(stderr, "usage: ic-bench ports N\n");
    return 2;
  }
  long n = strtol(argv[0], NULL, 10);
  if (n < 1 || n > 9000) {
    fprintf(stderr, "ic-bench: ports: N must be 1..9000\n");
    return 2;
  }
  /* Hold every port bound until all are found, so none is handed out twice;
   * start at a random place so runs side by side rarely collide. */
  int *fds = calloc((size_t)n, sizeof *fds);
  int *ports = calloc((size_t)n, sizeof *ports);
  if (!fds || !ports) die("calloc");
  srand((unsigned)(getpid() ^ time(NULL)));
  int base = 20000 + rand() % 2000, found = 0;
  for (int p = base; p < 32000 && found < n; p++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0) {
      fds[found] = fd;
      ports[found++] = p;
    } else {
      close(fd);
    }
  }
  if (found < n) {
    fprintf(stderr, "ic-bench: ports: only %d free ports below 32000\n", found);
    return 1;
  }
  for (int i = 0; i < found; i++) {
    printf("%d\n", ports[i]);
    close(fds[i]);
  }
  free(fds);
  free(ports);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* sub                                                                      */

#define TOPIC_CAP (1u << 17)
#define TOPIC_LEN 160

typedef struct {
  char (*name)[TOPIC_LEN];
  uint32_t *slot; /* hash slot -> topic index + 1; 0 empty */
  uint32_t n;
} topic_table;

static uint32_t fnv1a(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
  return h;
}

/* The topic's index, added on first sight; UINT32_MAX when the table is full
 * or the topic too long (the message is then still counted as topic 0xffff..). */
static uint32_t topic_id(topic_table *t, const char *topic) {
  if (strlen(topic) >= TOPIC_LEN) return UINT32_MAX;
  uint32_t h = fnv1a(topic) & (TOPIC_CAP - 1);
  for (uint32_t i = 0; i < TOPIC_CAP; i++) {
    uint32_t s = (h + i) & (TOPIC_CAP - 1);
    if (t->slot[s] == 0) {
      if (t->n >= TOPIC_CAP / 2) return UINT32_MAX;
      strcpy(t->name[t->n], topic);
      t->slot[s] = ++t->n;
      return t->n - 1;
    }
    if (strcmp(t->name[t->slot[s] - 1], topic) == 0) return t->slot[s] - 1;
  }
  return UINT32_MAX;
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" after "ts":" in our payloads. */
static int64_t parse_ours_ts(const char *p, size_t len) {
  const char *k = memmem(p, len, "\"ts\":\"", 6);
  if (!k || (size_t)(k - p) + 6 + 24 > len) return 0;
  k += 6;
  struct tm tm = {0};
  int ms = 0;
  if (sscanf(k, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
             &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7)
    return 0;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return ((int64_t)timegm(&tm) * 1000 + ms) * 1000;
}

/* collectd's mqtt plugin: "EPOCH.fff:value". */
static int64_t parse_collectd_ts(const char *p, size_t len) {
  char buf[64];
  size_t n = len < sizeof buf - 1 ? len : sizeof buf - 1;
  memcpy(buf, p, n);
  buf[n] = '\0';
  char *colon = strchr(buf, ':');
  if (!colon) return 0;
  *colon = '\0';
  char *end;
  double t = strtod(buf, &end);
  if (end == buf || t <= 0) return 0;
  return (int64_t)(t * 1e6 + 0.5);
}

typedef struct {
  FILE *out;
  topic_table topics;
  char **subs;
  int nsubs;
  uint64_t count;
  bool ready;
} sub_ctx;

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) {
  (void)sig;
  stop_flag = 1;
}

static void on_connect(struct mosquitto *m, void *ud, int rc) {
  sub_ctx *c = ud;
  if (rc != 0) {
    fprintf(stderr, "ic-bench sub: connect refused: %s\n", mosquitto_connack_string(rc));
    return;
  }
  for (int i = 0; i < c->nsubs; i++) {
    int e = mosquitto_subscribe(m, NULL, c->subs[i], 1);
    if (e != MOSQ_ERR_SUCCESS)
      fprintf(stderr, "ic-bench sub: subscribe %s: %s\n", c->subs[i], mosquitto_strerror(e));
  }
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int n, const int *qos) {
  (void)m, (void)mid, (void)n, (void)qos;
  sub_ctx *c = ud;
  if (!c->ready) {
    c->ready = true;
    printf("ready\n");
    fflush(stdout);
  }
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg) {
  (void)m;
  sub_ctx *c = ud;
  rec r = {.arr_us = wall_us()};
  const char *p = msg->payload;
  size_t len = msg->payloadlen > 0 ? (size_t)msg->payloadlen : 0;
  if (len && p[0] == '{') {
    r.ts_us = parse_ours_ts(p, len);
    if (memmem(p, len, "\"historical\":true", 17)) r.flags |= REC_HIST;
  } else if (len) {
    r.ts_us = parse_collectd_ts(p, len);
  }
  r.topic = topic_id(&c->topics, msg->topic);
  if (fwrite(&r, sizeof r, 1, c->out) != 1) {
    fprintf(stderr, "ic-bench sub: write: %s\n", strerror(errno));
    stop_flag = 1;
  }
  /* One line at the first message, so a run can wait for data flowing
   * (the records themselves sit in a large buffer). */
  if (c->count++ == 0) {
    printf("first\n");
    fflush(stdout);
  }
}

static int cmd_sub(int argc, char **argv) {
  const char *host = "127.0.0.1", *out = NULL, *topics_out = NULL, *id = NULL;
  int port = 1883;
  sub_ctx c = {0};
  c.subs = calloc((size_t)argc + 1, sizeof *c.subs);
  if (!c.subs) die("calloc");
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) break;
    if (!strcmp(a, "-h")) host = v;
    else if (!strcmp(a, "-p")) port = atoi(v);
    else if (!strcmp(a, "-t")) c.subs[c.nsubs++] = (char *)v;
    else if (!strcmp(a, "-o")) out = v;
    else if (!strcmp(a, "-T")) topics_out = v;
    else if (!strcmp(a, "-i")) id = v;
    else {
      fprintf(stderr, "ic-bench sub: unknown option %s\n", a);
      return 2;
    }
    i++;
  }
  if (!out || !topics_out || c.nsubs == 0) {
    fprintf(stderr, "usage: ic-bench sub [-h HOST] -p PORT -t TOPIC... -o RECORDS -T TOPICS\n");
    return 2;
  }
  c.topics.name = calloc(TOPIC_CAP / 2, sizeof *c.topics.name);
  c.topics.slot = calloc(TOPIC_CAP, sizeof *c.topics.slot);
  if (!c.topics.name || !c.topics.slot) die("calloc");
  c.out = fopen(out, "wb");
  if (!c.out) die(out);
  static char obuf[1 << 20];
  setvbuf(c.out, obuf, _IOFBF, sizeof obuf);

  struct sigaction sa = {.sa_handler = on_signal};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  mosquitto_lib_init();
  struct mosquitto *m = mosquitto_new(id, true, &c);
  if (!m) die("mosquitto_new");
  /* MQTT 5 with a Receive Maximum of 65535: the broker then sends to the
   * subscriber without a window of its own (a 3.1.1 client would get the
   * broker's max_inflight_messages, 20 by default, the very setting the
   * windows phase varies for the publisher). */
  mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
  mosquitto_int_option(m, MOSQ_OPT_RECEIVE_MAXIMUM, 65535);
  mosquitto_connect_callback_set(m, on_connect);
  mosquitto_subscribe_callback_set(m, on_subscribe);
  mosquitto_message_callback_set(m, on_message);
  /* Reconnects are left to libmosquitto: the outage phase starts this
   * subscriber before the broker it counts on is up. */
  mosquitto_reconnect_delay_set(m, 1, 1, false);
  int rc = mosquitto_connect(m, host, port, 30);
  while (rc != MOSQ_ERR_SUCCESS && !stop_flag) {
    usleep(100000);
    rc = mosquitto_connect(m, host, port, 30);
  }
  while (!stop_flag) {
    rc = mosquitto_loop(m, 100, 1);
    if (rc != MOSQ_ERR_SUCCESS && !stop_flag) {
      usleep(100000);
      mosquitto_reconnect(m);
    }
  }
  mosquitto_disconnect(m);
  mosquitto_destroy(m);
  mosquitto_lib_cleanup();
  if (fclose(c.out) != 0) die(out);

  FILE *t = fopen(topics_out, "w");
  if (!t) die(topics_out);
  for (uint32_t i = 0; i < c.topics.n; i++) fprintf(t, "%u %s\n", i, c.topics.name[i]);
  if (fclose(t) != 0) die(topics_out);
  fprintf(stderr, "ic-bench sub: %" PRIu64 " messages, %u topics\n", c.count, c.topics.n);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* analyze                                                                  */

typedef struct {
  double *v;
  size_t n, cap;
} dvec;

static void dpush(dvec *d, double x) {
  if (d->n == d->cap) {
    d->cap = d->cap ? d->cap * 2 : 1024;
    d->v = realloc(d->v, d->cap * sizeof *d->v);
    if (!d->v) die("realloc");
  }
  d->v[d->n++] = x;
}

static int dcmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted vector. */
static double pct(const dvec *d, double p) {
  if (d->n == 0) return -1;
  size_t k = (size_t)(p / 100.0 * (double)d->n + 0.999999);
  if (k < 1) k = 1;
  if (k > d->n) k = d->n;
  return d->v[k - 1];
}

typedef struct {
  char meter[64];
  bool is_reading; /* ours: every topic; collectd: the first value of a poll */
  bool is_value;
  int meter_ix;
  int64_t phase_ms;
} topic_info;

typedef struct {
  int meter;
  int64_t ts_us;
} poll_ts;

static int pcmp(const void *a, const void *b) {
  const poll_ts *x = a, *y = b;
  if (x->meter != y->meter) return x->meter < y->meter ? -1 : 1;
  return x->ts_us < y->ts_us ? -1 : x->ts_us > y->ts_us;
}

static int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static void json_stats(const char *name, dvec *d, bool last) {
  qsort(d->v, d->n, sizeof *d->v, dcmp);
  printf("  \"%s\": {\"n\": %zu, \"p50\": %.3f, \"p99\": %.3f, \"max\": %.3f}%s\n", name, d->n,
         pct(d, 50), pct(d, 99), d->n ? d->v[d->n - 1] : -1.0, last ? "" : ",");
}

static int cmd_analyze(int argc, char **argv) {
  const char *kind = NULL, *records = NULL, *topics = NULL, *phases = NULL;
  int64_t interval = 0, from = 0, to = 0;
  for (int i = 0; i + 1 < argc; i += 2) {
    const char *a = argv[i], *v = argv[i + 1];
    if (!strcmp(a, "--kind")) kind = v;
    else if (!strcmp(a, "--records")) records = v;
    else if (!strcmp(a, "--topics")) topics = v;
    else if (!strcmp(a, "--phases")) phases = v;
    else if (!strcmp(a, "--interval-ms")) interval = strtoll(v, NULL, 10);
    else if (!strcmp(a, "--from-ms")) from = strtoll(v, NULL, 10);
    else if (!strcmp(a, "--to-ms")) to = strtoll(v, NULL, 10);
    else {
      fprintf(stderr, "ic-bench analyze: unknown option %s\n", a);
      return 2;
    }
  }
  if (!kind || !records || !topics || interval <= 0 || to <= from) {
    fprintf(stderr, "usage: ic-bench analyze --kind ours|collectd --records R --topics T "
                    "--interval-ms I --from-ms A --to-ms B [--phases FILE]\n");
    return 2;
  }
  bool ours = !strcmp(kind, "ours");

  /* Topics: meter name from the topic's level (ours: PREFIX/SITE/METER/reading;
   * collectd: PREFIX/HOST/modbus-INST/gauge-VALUE). */
  FILE *tf = fopen(topics, "r");
  if (!tf) die(topics);
  size_t ntop = 0, captop = 1024;
  topic_info *ti = calloc(captop, sizeof *ti);
  char line[512];
  char (*meters)[64] = calloc(TOPIC_CAP, sizeof *meters);
  int nmeters = 0;
  if (!ti || !meters) die("calloc");
  while (fgets(line, sizeof line, tf)) {
    unsigned id;
    char topic[400];
    if (sscanf(line, "%u %399s", &id, topic) != 2) continue;
    if (id >= captop) {
      size_t nc = captop;
      while (nc <= id) nc *= 2;
      ti = realloc(ti, nc * sizeof *ti);
      if (!ti) die("realloc");
      memset(ti + captop, 0, (nc - captop) * sizeof *ti);
      captop = nc;
    }
    if (id + 1 > ntop) ntop = id + 1;
    char *lv[8] = {0};
    int nl = 0;
    for (char *s = strtok(topic, "/"); s && nl < 8; s = strtok(NULL, "/")) lv[nl++] = s;
    topic_info *t = &ti[id];
    const char *meter = ours ? (nl >= 4 ? lv[2] : NULL) : (nl >= 2 ? lv[1] : NULL);
    if (!meter) continue;
    snprintf(t->meter, sizeof t->meter, "%s", meter);
    t->is_value = ours ? (nl >= 4 && !strcmp(lv[3], "reading")) : true;
    if (ours) {
      t->is_reading = t->is_value;
    } else {
      size_t ll = strlen(lv[nl - 1]);
      t->is_reading = ll >= 5 && !strcmp(lv[nl - 1] + ll - 5, "-flow");
    }
    int mi = -1;
    for (int k = nmeters - 1; k >= 0 && k >= nmeters - 4; k--)
      if (!strcmp(meters[k], t->meter)) mi = k;
    if (mi < 0)
      for (int k = 0; k < nmeters; k++)
        if (!strcmp(meters[k], t->meter)) {
          mi = k;
          break;
        }
    if (mi < 0) {
      mi = nmeters++;
      memcpy(meters[mi], t->meter, sizeof meters[mi]);
    }
    t->meter_ix = mi;
  }
  fclose(tf);

  /* Our schedule's phase per meter (see cfg_meter_phase_ms): "METER PHASE_MS". */
  int64_t *phase = calloc((size_t)nmeters + 1, sizeof *phase);
  if (!phase) die("calloc");
  if (phases) {
    FILE *pf = fopen(phases, "r");
    if (!pf) die(phases);
    char mname[64];
    long long ph;
    while (fscanf(pf, "%63s %lld", mname, &ph) == 2)
      for (int k = 0; k < nmeters; k++)
        if (!strcmp(meters[k], mname)) phase[k] = ph;
    fclose(pf);
  }

  FILE *rf = fopen(records, "rb");
  if (!rf) die(records);
  int64_t f_us = from * 1000, t_us = to * 1000;
  dvec latency = {0}, lateness = {0}, hist_latency = {0};
  uint64_t readings = 0, values = 0, hist_arrived = 0, hist_total = 0, live_total = 0;
  uint64_t unparsed = 0, seconds_peak = 0;
  /* Every message by arrival, whatever its topic (readings live and
   * historical, states, reports), for the windows phase: what went through
   * the broker's window. */
  uint64_t arrived = 0;
  int64_t *arr = NULL;
  size_t narr = 0, caparr = 0;
  int64_t hist_first = 0, hist_last = 0;
  poll_ts *polls = NULL;
  size_t npolls = 0, cappolls = 0;
  uint64_t *hist_per_s = calloc((size_t)((to - from) / 1000 + 2), sizeof *hist_per_s);
  if (!hist_per_s) die("calloc");
  rec r;
  while (fread(&r, sizeof r, 1, rf) == 1) {
    if (r.arr_us >= f_us && r.arr_us < t_us) {
      arrived++;
      if (narr == caparr) {
        caparr = caparr ? caparr * 2 : 65536;
        arr = realloc(arr, caparr * sizeof *arr);
        if (!arr) die("realloc");
      }
      arr[narr++] = r.arr_us;
    }
    if (r.topic == UINT32_MAX || r.topic >= ntop || !ti[r.topic].meter[0]) continue;
    topic_info *t = &ti[r.topic];
    if (!t->is_value) continue;
    if (r.ts_us == 0) {
      unparsed++;
      continue;
    }
    if (r.flags & REC_HIST) {
      hist_total++;
      if (r.arr_us >= f_us && r.arr_us < t_us) {
        hist_arrived++;
        hist_per_s[(r.arr_us - f_us) / 1000000]++;
        if (!hist_first) hist_first = r.arr_us;
        hist_last = r.arr_us;
        dpush(&hist_latency, (double)(r.arr_us - r.ts_us) / 1000.0);
      }
      continue;
    }
    live_total++;
    if (r.ts_us < f_us || r.ts_us >= t_us) continue;
    values++;
    dpush(&latency, (double)(r.arr_us - r.ts_us) / 1000.0);
    if (!t->is_reading) continue;
    readings++;
    if (ours) {
      int64_t ts_ms = r.ts_us / 1000, ph = phase[t->meter_ix];
      int64_t slot = floor_div(ts_ms - ph, interval) * interval + ph;
      dpush(&lateness, (double)(r.ts_us - slot * 1000) / 1000.0);
    } else {
      if (npolls == cappolls) {
        cappolls = cappolls ? cappolls * 2 : 4096;
        polls = realloc(polls, cappolls * sizeof *polls);
        if (!polls) die("realloc");
      }
      polls[npolls++] = (poll_ts){t->meter_ix, r.ts_us};
    }
  }
  fclose(rf);
  for (int64_t s = 0; s <= (to - from) / 1000; s++)
    if (hist_per_s[s] > seconds_peak) seconds_peak = hist_per_s[s];

  /* The peer schedules each host on its own grid (start + k x interval, not
   * aligned to the wall clock): the grid's origin is taken as the earliest
   * poll of the host after subtracting whole intervals, so lateness is each
   * poll's distance behind the best it ever did. */
  if (!ours && npolls) {
    qsort(polls, npolls, sizeof *polls, pcmp);
    int64_t iv = interval * 1000;
    for (size_t a = 0; a < npolls;) {
      size_t b = a;
      while (b < npolls && polls[b].meter == polls[a].meter) b++;
      int64_t t0 = polls[a].ts_us, origin = INT64_MAX;
      for (size_t k = a; k < b; k++) {
        int64_t idx = (polls[k].ts_us - t0 + iv / 2) / iv;
        int64_t o = polls[k].ts_us - idx * iv;
        if (o < origin) origin = o;
      }
      for (size_t k = a; k < b; k++) {
        int64_t idx = (polls[k].ts_us - origin + iv / 2) / iv;
        int64_t l = polls[k].ts_us - (origin + idx * iv);
        if (l < 0) l += iv; /* rounding put it on the next grid point */
        dpush(&lateness, (double)l / 1000.0);
      }
      a = b;
    }
  }

  /* Messages that arrived from the window's start to the last historical
   * one in it (while the replay lasted). */
  uint64_t to_hist_last = 0;
  for (size_t k = 0; k < narr; k++)
    if (hist_last && arr[k] <= hist_last) to_hist_last++;
  free(arr);
  double window_s = (double)(to - from) / 1000.0;
  printf("{\n");
  printf("  \"window_s\": %.3f,\n", window_s);
  printf("  \"meters_seen\": %d,\n", nmeters);
  printf("  \"readings\": %" PRIu64 ",\n", readings);
  printf("  \"values\": %" PRIu64 ",\n", values);
  printf("  \"readings_per_s\": %.3f,\n", (double)readings / window_s);
  printf("  \"unparsed\": %" PRIu64 ",\n", unparsed);
  printf("  \"live_total\": %" PRIu64 ",\n", live_total);
  printf("  \"historical_total\": %" PRIu64 ",\n", hist_total);
  printf("  \"historical_in_window\": %" PRIu64 ",\n", hist_arrived);
  printf("  \"historical_per_s\": %.3f,\n", (double)hist_arrived / window_s);
  printf("  \"historical_peak_per_s\": %" PRIu64 ",\n", seconds_peak);
  printf("  \"historical_first_ms\": %" PRId64 ",\n", hist_first / 1000);
  printf("  \"historical_last_ms\": %" PRId64 ",\n", hist_last / 1000);
  printf("  \"arrived_in_window\": %" PRIu64 ",\n", arrived);
  printf("  \"arrived_to_historical_last\": %" PRIu64 ",\n", to_hist_last);
  json_stats("historical_latency_ms", &hist_latency, false);
  json_stats("lateness_ms", &lateness, false);
  json_stats("latency_ms", &latency, true);
  printf("}\n");
  free(polls);
  free(phase);
  free(meters);
  free(ti);
  free(hist_per_s);
  free(latency.v);
  free(lateness.v);
  free(hist_latency.v);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "ports")) return cmd_ports(argc - 2, argv + 2);
  if (argc >= 2 && !strcmp(argv[1], "sub")) return cmd_sub(argc - 2, argv + 2);
  if (argc >= 2 && !strcmp(argv[1], "analyze")) return cmd_analyze(argc - 2, argv + 2);
  fprintf(stderr, "usage: ic-bench ports|sub|analyze ...\n");
  return 2;
}
