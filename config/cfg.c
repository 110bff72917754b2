/* cfg: loading and validating the site configuration (see cfg.h and
 * docs/configuration.md).
 *
 * The whole file is validated before anything is returned, and the first
 * problem found is reported with its position, so a field engineer fixes
 * one line at a time. Nothing is silently truncated or defaulted past what
 * docs/configuration.md promises.
 */
#include "cfg.h"

#include <float.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sys/stat.h>
#include <arpa/inet.h>

#include "profile_load.h"
#include "uplink.h"
#include "ydoc.h"

/* The loader is fuzzed and a gateway serves at most a few thousand meters:
 * these bounds keep a hostile file from costing more than a valid large one. */
#define CFG_MAX_METERS 10000
#define CFG_MAX_BUSES 10000

#define MS_SECOND INT64_C(1000)
#define MS_MINUTE (60 * MS_SECOND)
#define MS_HOUR (60 * MS_MINUTE)
#define MS_DAY (24 * MS_HOUR)

static const char *const transport_names[] = {"rtu", "tcp", "rtu-over-tcp",
                                              "rtu-dtu", NULL};
static const char *const fault_names[] = {
    "none", "offline", "flaky", "slow", "crc", "exception", "garbage", "reset",
    NULL};

const char *cfg_transport_name(cfg_transport t) {
  if ((unsigned)t <= (unsigned)CFG_TRANSPORT_RTU_DTU)
    return transport_names[t];
  return "unknown";
}

const char *sim_fault_name(sim_fault f) {
  if ((unsigned)f < (unsigned)SIM_FAULT_COUNT_) return fault_names[f];
  return "unknown";
}

int sim_fault_parse(const char *name, sim_fault *out) {
  if (!name || !out) return -1;
  for (int i = 0; fault_names[i]; i++) {
    if (strcmp(name, fault_names[i]) == 0) {
      *out = (sim_fault)i;
      return 0;
    }
  }
  return -1;
}

const cfg_bus *cfg_meter_bus(const cfg *c, const cfg_meter *m) {
  if (!c || !m || m->bus >= c->nbuses) return NULL;
  return &c->buses[m->bus];
}

/* A bus's strings and kinds go to its transport unchanged. */
_Static_assert(sizeof ((cfg_bus *)0)->registration ==
                   sizeof ((transport_options *)0)->registration &&
                   sizeof ((cfg_bus *)0)->heartbeat ==
                       sizeof ((transport_options *)0)->heartbeat,
               "a DTU's packets fit its transport's");
_Static_assert(sizeof ((cfg_bus *)0)->id == sizeof ((transport_options *)0)->id,
               "a bus id fits its transport's");
_Static_assert(sizeof ((cfg_bus *)0)->device ==
                   sizeof ((transport_options *)0)->device,
               "a device fits its transport's");
_Static_assert(sizeof ((cfg_bus *)0)->host ==
                   sizeof ((transport_options *)0)->host,
               "a host fits its transport's");
_Static_assert((int)CFG_TRANSPORT_RTU == (int)TR_KIND_RTU &&
                   (int)CFG_TRANSPORT_TCP == (int)TR_KIND_TCP &&
                   (int)CFG_TRANSPORT_RTU_OVER_TCP ==
                       (int)TR_KIND_RTU_OVER_TCP &&
                   (int)CFG_TRANSPORT_RTU_DTU == (int)TR_KIND_RTU_DTU,
               "transport kinds match");

void cfg_bus_transport_options(const cfg_bus *b, transport_options *out) {
  memset(out, 0, sizeof *out);
  memcpy(out->id, b->id, sizeof out->id);
  /* An unknown kind goes through as it is, for transport_new to refuse. */
  out->kind = (tr_kind)b->transport;
  if (b->transport == CFG_TRANSPORT_RTU)
    memcpy(out->device, b->device, sizeof out->device);
  else
    memcpy(out->host, b->host, sizeof out->host);
  out->baud = b->baud;
  out->parity = b->parity;
  out->data_bits = b->data_bits;
  out->stop_bits = b->stop_bits;
  out->port = b->port;
  out->timeout_ms = b->timeout_ms;
  out->turnaround_ms = b->turnaround_ms;
  if (b->transport == CFG_TRANSPORT_RTU_DTU) {
    memcpy(out->registration, b->registration, b->reglen);
    out->reglen = b->reglen;
    memcpy(out->heartbeat, b->heartbeat, b->hblen);
    out->hblen = b->hblen;
    out->registration_every_packet = b->registration_every_packet;
  }
}

bool cfg_dtu_match(const cfg *c, size_t server, const uint8_t *buf, size_t len, size_t *bus) {
  bool more = false;
  size_t best = SIZE_MAX, best_len = 0;
  for (size_t b = 0; b < c->nbuses; b++) {
    const cfg_bus *cb = &c->buses[b];
    if (cb->transport != CFG_TRANSPORT_RTU_DTU || cb->server != server) continue;
    size_t n = len < cb->reglen ? len : cb->reglen;
    if (memcmp(buf, cb->registration, n) != 0) continue;
    if (len >= cb->reglen) {
      if (cb->reglen > best_len) best = b, best_len = cb->reglen;
    } else {
      more = true;
    }
  }
  *bus = best;
  return more;
}

size_t cfg_dtu_reg_max(const cfg *c, size_t server) {
  size_t m = 1;
  for (size_t b = 0; b < c->nbuses; b++)
    if (c->buses[b].transport == CFG_TRANSPORT_RTU_DTU && c->buses[b].server == server &&
        c->buses[b].reglen > m)
      m = c->buses[b].reglen;
  return m;
}

const char *cfg_bus_registration_text(const cfg_bus *b, char *buf, size_t cap) {
  bool text = b->reglen > 0;
  for (size_t i = 0; i < b->reglen; i++)
    if (b->registration[i] < 0x20 || b->registration[i] > 0x7E ||
        (i == 0 && b->reglen >= 4 && strncasecmp((const char *)b->registration, "hex:", 4) == 0))
      text = false;
  if (text) {
    snprintf(buf, cap, "%.*s", (int)b->reglen, (const char *)b->registration);
    return buf;
  }
  size_t o = (size_t)snprintf(buf, cap, "hex:");
  for (size_t i = 0; i < b->reglen && o + 3 <= cap; i++)
    o += (size_t)snprintf(buf + o, cap - o, "%02X", b->registration[i]);
  return buf;
}

int cfg_cidr_parse(const char *s, cfg_cidr *out) {
  char a[64];
  const char *slash = strchr(s, '/');
  size_t al = slash ? (size_t)(slash - s) : strlen(s);
  if (al == 0 || al >= sizeof a) return -1;
  memcpy(a, s, al);
  a[al] = '\0';
  memset(out, 0, sizeof *out);
  out->family = strchr(a, ':') ? AF_INET6 : AF_INET;
  if (inet_pton(out->family, a, out->addr) != 1) return -1;
  int max = out->family == AF_INET ? 32 : 128;
  out->prefix = max;
  if (slash) {
    const char *p = slash + 1;
    if (!*p || strlen(p) > 3) return -1;
    int v = 0;
    for (; *p; p++) {
      if (*p < '0' || *p > '9') return -1;
      v = v * 10 + (*p - '0');
    }
    if (v > max) return -1;
    out->prefix = v;
  }
  /* An IPv4 range written mapped into IPv6 (::ffff:10.0.0.0/104) is the
   * IPv4 range: peers are compared as IPv4 (cfg_cidr_contains). */
  static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
  if (out->family == AF_INET6 && out->prefix >= 96 && memcmp(out->addr, mapped, 12) == 0) {
    out->family = AF_INET;
    memmove(out->addr, out->addr + 12, 4);
    memset(out->addr + 4, 0, 12);
    out->prefix -= 96;
  }
  return 0;
}

bool cfg_cidr_contains(const cfg_cidr *c, int family, const uint8_t *addr) {
  static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
  if (family == AF_INET6 && c->family == AF_INET && memcmp(addr, mapped, 12) == 0) {
    family = AF_INET;
    addr += 12;
  }
  if (family != c->family) return false;
  int full = c->prefix / 8, rest = c->prefix % 8;
  if (memcmp(addr, c->addr, (size_t)full) != 0) return false;
  if (!rest) return true;
  uint8_t mask = (uint8_t)(0xFF << (8 - rest));
  return (addr[full] & mask) == (c->addr[full] & mask);
}

int cfg_meter_index(const cfg *c, const char *id) {
  if (!c || !id) return -1;
  if (!c->meter_order) {
    for (size_t i = 0; i < c->nmeters; i++)
      if (strcmp(c->meters[i].id, id) == 0) return (int)i;
    return -1;
  }
  /* Binary search: replayed readings are looked up by id, thousands a
   * second on a gateway with thousands of meters. */
  size_t lo = 0, hi = c->nmeters;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int d = strcmp(c->meters[c->meter_order[mid]].id, id);
    if (d == 0) return (int)c->meter_order[mid];
    if (d < 0) lo = mid + 1;
    else hi = mid;
  }
  return -1;
}

static int by_meter_id(const void *a, const void *b, void *meters) {
  const cfg_meter *m = meters;
  return strcmp(m[*(const uint32_t *)a].id, m[*(const uint32_t *)b].id);
}

/* Build the sorted index cfg_meter_index searches. */
static int index_meters(cfg *c) {
  c->meter_order = malloc((c->nmeters ? c->nmeters : 1) * sizeof *c->meter_order);
  if (!c->meter_order) return -1;
  for (size_t i = 0; i < c->nmeters; i++) c->meter_order[i] = (uint32_t)i;
  qsort_r(c->meter_order, c->nmeters, sizeof *c->meter_order, by_meter_id, c->meters);
  return 0;
}

void cfg_free(cfg *c) {
  if (!c) return;
  for (size_t i = 0; i < c->nprofiles; i++) profile_free(c->profiles[i]);
  free(c->profiles);
  free(c->buses);
  for (size_t i = 0; c->meters && i < c->nmeters_alloc; i++) {
    free(c->meters[i].sim.fixed);
    free(c->meters[i].name);
    free(c->meters[i].profile_ref);
  }
  free(c->meters);
  free(c->meter_order);
  free(c->dtu_servers);
  cfg_uplink_free(&c->uplink);
  free(c);
}

/* ---- helpers ---- */

/* A small open-addressing table from a string (or, with s == NULL, an
 * integer) to an index, so duplicate checks stay linear for 10,000 meters. */
typedef struct {
  const char *s;
  uint64_t k;
  size_t v;
  bool used;
} hent;

typedef struct {
  size_t cap; /* a power of two, at least twice the entries ever inserted */
  hent *e;
} htab;

static int ht_init(htab *t, size_t n) {
  size_t cap = 16;
  while (cap < 2 * n) cap <<= 1;
  t->e = calloc(cap, sizeof *t->e);
  t->cap = t->e ? cap : 0;
  return t->e ? 0 : -1;
}

static void ht_free(htab *t) {
  free(t->e);
  t->e = NULL;
  t->cap = 0;
}

static uint64_t fnv1a(const char *s) {
  uint64_t h = UINT64_C(14695981039346656037);
  for (; *s; s++) {
    h ^= (unsigned char)*s;
    h *= UINT64_C(1099511628211);
  }
  return h;
}

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= UINT64_C(0xff51afd7ed558ccd);
  x ^= x >> 33;
  return x;
}

/* The entry holding S (or K), or the free slot where it would go. */
static hent *ht_slot(htab *t, const char *s, uint64_t k) {
  size_t i = (size_t)(s ? fnv1a(s) : mix64(k)) & (t->cap - 1);
  while (t->e[i].used) {
    const hent *e = &t->e[i];
    if (s ? (e->s && strcmp(e->s, s) == 0) : (!e->s && e->k == k))
      return &t->e[i];
    i = (i + 1) & (t->cap - 1);
  }
  return &t->e[i];
}

static void ht_put(hent *slot, const char *s, uint64_t k, size_t v) {
  slot->s = s;
  slot->k = k;
  slot->v = v;
  slot->used = true;
}

typedef struct {
  char s[200];
} shown;

/* A value for a message: in quotes Q, control characters (and Q) replaced,
 * cut at 60 bytes on a character boundary. */
static const char *show_q(const char *v, shown *b, char q) {
  size_t o = 0, i = 0;
  b->s[o++] = q;
  for (; v[i] && i < 60; i++) {
    unsigned char ch = (unsigned char)v[i];
    b->s[o++] = (ch < 0x20 || ch == 0x7F || ch == (unsigned char)q) ? '?'
                                                                   : (char)ch;
  }
  if (v[i]) {
    while (o > 1 && ((unsigned char)b->s[o - 1] & 0xC0) == 0x80) o--;
    if (o > 1 && (unsigned char)b->s[o - 1] >= 0xC0) o--;
    memcpy(b->s + o, "...", 3);
    o += 3;
  }
  b->s[o++] = q;
  b->s[o] = '\0';
  return b->s;
}

static const char *show(const char *v, shown *b) { return show_q(v, b, '"'); }

typedef struct {
  const ydoc *d;
  cfg *c;
  const char *profile_dir;
  char *err;
  size_t errlen;
} ctx;

#define ERR(x, node, ...) ydoc_errf((x)->d, (node), (x)->err, (x)->errlen, __VA_ARGS__)

/* The key node of KEY in map M (for errors about the key itself). */
static const ydoc_node *key_node(const ydoc_node *m, const char *key) {
  if (!m || m->kind != YDOC_MAP) return NULL;
  for (size_t i = 0; i < m->n; i++)
    if (strcmp(m->keys[i]->value, key) == 0) return m->keys[i];
  return NULL;
}

/* The value of an optional section, or NULL when it is absent or written
 * empty ("online:" with every key commented out means the defaults). */
static const ydoc_node *opt_section(const ydoc_node *m, const char *key) {
  const ydoc_node *v = ydoc_get(m, key);
  if (v && v->kind == YDOC_SCALAR && !v->quoted &&
      (v->value[0] == '\0' || strcmp(v->value, "~") == 0 ||
       strcmp(v->value, "null") == 0 || strcmp(v->value, "Null") == 0 ||
       strcmp(v->value, "NULL") == 0))
    return NULL;
  return v;
}

/* KEY must be present in map M; WHERE completes the message ("in bus"). */
static const ydoc_node *need(ctx *x, const ydoc_node *m, const char *key,
                             const char *where) {
  const ydoc_node *v = ydoc_get(m, key);
  if (!v) ERR(x, m, "missing required key \"%s\" %s", key, where);
  return v;
}

static int copy_text(ctx *x, const ydoc_node *n, const char *s, char *dst,
                     size_t dstlen, const char *what) {
  size_t len = strlen(s);
  if (len >= dstlen)
    return ERR(x, n, "%s is too long (%zu bytes, at most %zu)", what, len,
               dstlen - 1);
  memcpy(dst, s, len + 1);
  return 0;
}

/* Like copy_text, into a copy of its own (*DST, freed by cfg_free). */
static int dup_text(ctx *x, const ydoc_node *n, const char *s, char **dst,
                    size_t maxlen, const char *what) {
  size_t len = strlen(s);
  if (len >= maxlen)
    return ERR(x, n, "%s is too long (%zu bytes, at most %zu)", what, len,
               maxlen - 1);
  free(*dst);
  if (!(*dst = strdup(s))) return ERR(x, n, "out of memory");
  return 0;
}

static int opt_text(ctx *x, const ydoc_node *m, const char *key, char *dst,
                    size_t dstlen) {
  const ydoc_node *v = ydoc_get(m, key);
  const char *s;
  if (!v) return 0;
  if (ydoc_str(x->d, v, &s, x->err, x->errlen)) return -1;
  return copy_text(x, v, s, dst, dstlen, key);
}

static int opt_int(ctx *x, const ydoc_node *m, const char *key, int64_t min,
                   int64_t max, int *out) {
  const ydoc_node *v = ydoc_get(m, key);
  int64_t t;
  if (!v) return 0;
  if (ydoc_int(x->d, v, min, max, &t, x->err, x->errlen)) return -1;
  *out = (int)t;
  return 0;
}

static int opt_double(ctx *x, const ydoc_node *m, const char *key, double min,
                      double max, double *out) {
  const ydoc_node *v = ydoc_get(m, key);
  if (!v) return 0;
  return ydoc_double(x->d, v, min, max, out, x->err, x->errlen);
}

static int opt_dur(ctx *x, const ydoc_node *m, const char *key, int64_t min,
                   int64_t max, int64_t *out) {
  const ydoc_node *v = ydoc_get(m, key);
  if (!v) return 0;
  return ydoc_duration_ms(x->d, v, min, max, out, x->err, x->errlen);
}

static int opt_bool(ctx *x, const ydoc_node *m, const char *key, bool *out) {
  const ydoc_node *v = ydoc_get(m, key);
  if (!v) return 0;
  return ydoc_bool(x->d, v, out, x->err, x->errlen);
}

/* Resolve P against the config file's folder into DST. */
static int resolve(ctx *x, const ydoc_node *n, const char *p, char *dst,
                   size_t dstlen) {
  int w;
  if (p[0] == '/') {
    w = snprintf(dst, dstlen, "%s", p);
  } else {
    while (p[0] == '.' && p[1] == '/') {
      p += 2;
      while (*p == '/') p++;
    }
    const char *dir = x->c->dir;
    size_t dl = strlen(dir);
    const char *sep = (dl > 0 && dir[dl - 1] == '/') ? "" : "/";
    if (p[0] == '\0' || strcmp(p, ".") == 0)
      w = snprintf(dst, dstlen, "%s", dir);
    else
      w = snprintf(dst, dstlen, "%s%s%s", dir, sep, p);
  }
  if (w < 0 || (size_t)w >= dstlen) {
    dst[0] = '\0';
    return ERR(x, n, "path is too long (at most %zu bytes once resolved "
                     "against the config file's folder)",
               dstlen - 1);
  }
  return 0;
}

/* An optional path; an empty value means "none". */
static int opt_path(ctx *x, const ydoc_node *m, const char *key, char *dst,
                    size_t dstlen) {
  const ydoc_node *v = ydoc_get(m, key);
  const char *s;
  if (!v) return 0;
  if (ydoc_str(x->d, v, &s, x->err, x->errlen)) return -1;
  if (s[0] == '\0') {
    dst[0] = '\0';
    return 0;
  }
  return resolve(x, v, s, dst, dstlen);
}

const char *cfg_file_kind(unsigned mode) {
  if (S_ISREG(mode)) return NULL;
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

/* A secret file (password_file, token_file) that exists must be a regular
 * file: a directory or /dev/zero would be read as an empty or endless
 * secret, and a FIFO without a writer would hold the daemon before it
 * starts. One that does not exist yet is the daemon's to report at start. */
static int secret_path(ctx *x, const ydoc_node *m, const char *key, char *dst,
                       size_t dstlen) {
  if (opt_path(x, m, key, dst, dstlen)) return -1;
  struct stat st;
  if (!dst[0] || stat(dst, &st) != 0 || S_ISREG(st.st_mode)) return 0;
  const char *kind = cfg_file_kind(st.st_mode);
  return ERR(x, ydoc_get(m, key), "%s %s is %s: expected a regular file holding the "
                                  "secret on its first line",
             key, dst, kind);
}

static int req_path(ctx *x, const ydoc_node *m, const char *key,
                    const char *where, char *dst, size_t dstlen) {
  const ydoc_node *v = need(x, m, key, where);
  const char *s;
  if (!v) return -1;
  if (ydoc_str(x->d, v, &s, x->err, x->errlen)) return -1;
  if (s[0] == '\0') return ERR(x, v, "expected a path, got an empty value");
  return resolve(x, v, s, dst, dstlen);
}

static int req_id(ctx *x, const ydoc_node *m, const char *key,
                  const char *where, char *dst, size_t dstlen,
                  const ydoc_node **node) {
  const ydoc_node *v = need(x, m, key, where);
  const char *s;
  if (!v) return -1;
  if (ydoc_id(x->d, v, dstlen, &s, x->err, x->errlen)) return -1;
  memcpy(dst, s, strlen(s) + 1);
  if (node) *node = v;
  return 0;
}

static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }
static bool is_alnum(char ch) {
  return is_digit(ch) || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

/* A host name, an IPv4 address or an IPv6 literal (without brackets). */
static bool valid_host(const char *h) {
  if (!h[0]) return false;
  bool colon = strchr(h, ':') != NULL;
  for (const char *p = h; *p; p++) {
    char ch = *p;
    if (colon) {
      if (!(is_digit(ch) || (ch >= 'a' && ch <= 'f') ||
            (ch >= 'A' && ch <= 'F') || ch == ':' || ch == '.'))
        return false;
    } else if (!(is_alnum(ch) || ch == '-' || ch == '.' || ch == '_')) {
      return false;
    }
  }
  return true;
}

/* ---- sections ---- */

static const char *const root_keys[] = {"site",   "mqtt",   "storage", "buses",
                                        "meters", "online", "sim",     "reports",
                                        "metrics", "dtu_servers", "uplink", NULL};
static const char *const dtu_server_keys[] = {
    "id", "listen", "idle_timeout", "register_timeout", "max_pending",
    "takeover_hold", "allow", NULL};
static const char *const reports_keys[] = {"periods",  "push_url",     "ca_file",
                                           "token_file", "push_timeout", NULL};
static const char *const site_keys[] = {"id", "name", "timezone", NULL};
static const char *const mqtt_keys[] = {
    "url",       "client_id",    "topic_prefix", "version",
    "username",  "password_file", "password_env", "keepalive",
    "ca_file",   "cert_file",    "key_file",     NULL};
static const char *const storage_keys[] = {"path", "max_size", "retention",
                                           "maintenance_interval", "hold_max",
                                           "commit_interval", NULL};
static const char *const bus_keys[] = {
    "id",         "transport", "device",        "baud",
    "parity",     "data_bits", "stop_bits",     "host",
    "port",       "timeout",   "turnaround",    "max_gap",
    "max_registers", "sim_wire_time", "server",    "registration",
    "registration_every_packet", "heartbeat", "sim_heartbeat_interval", NULL};
static const char *const meter_keys[] = {"id",      "name",     "bus", "unit",
                                         "profile", "interval", "sim", NULL};
static const char *const sim_keys[] = {
    "mean_flow_m3h", "pipe_diameter_m", "initial_total_m3", "noise",
    "seed",          "fault",           "flaky_ratio",      "crc_ratio",
    "slow_delay",    "exception_code",  "fixed",            NULL};
static const char *const online_keys[] = {"baseline",         "offline_after",
                                          "min_readings",     "min_completeness",
                                          "backoff_max",      NULL};
static const char *const simtop_keys[] = {"control", NULL};
static const char *const metrics_keys[] = {"listen", NULL};

static void set_defaults(cfg *c) {
  snprintf(c->site.timezone, sizeof c->site.timezone, "Asia/Shanghai");
  snprintf(c->mqtt.topic_prefix, sizeof c->mqtt.topic_prefix, "water");
  c->mqtt.version = 0; /* auto */
  c->mqtt.keepalive_ms = 30 * MS_SECOND;
  c->online.baseline = CFG_DEFAULT_BASELINE;
  c->online.offline_after = 3;
  c->online.min_readings = 1;
  c->online.min_completeness = 0;
  c->online.backoff_max_ms = 5 * MS_MINUTE;
  c->reports.push_timeout_ms = 30 * MS_SECOND;
  c->storage.max_size = INT64_C(512) * 1024 * 1024;
  c->storage.retention_ms = 400 * MS_DAY;
  c->storage.maintenance_ms = MS_MINUTE;
  c->storage.hold_max = 20000;
  c->storage.commit_ms = 50;
  c->reports.nperiods = 2;
  snprintf(c->reports.periods[0], sizeof c->reports.periods[0], "hourly");
  snprintf(c->reports.periods[1], sizeof c->reports.periods[1], "daily");
}

static int parse_site(ctx *x, const ydoc_node *root) {
  const ydoc_node *m = need(x, root, "site", "at the top level");
  if (!m) return -1;
  if (ydoc_check_map(x->d, m, "site", site_keys, x->err, x->errlen)) return -1;
  cfg *c = x->c;
  const ydoc_node *sid;
  if (req_id(x, m, "id", "in site", c->site.id, sizeof c->site.id, &sid))
    return -1;
  /* {prefix}/fleet/... is the fleet view's. */
  if (strcmp(c->site.id, "fleet") == 0)
    return ERR(x, sid, "site id \"fleet\" is reserved (the fleet view publishes "
                       "under {prefix}/fleet/)");
  memcpy(c->site.name, c->site.id, sizeof c->site.id);
  if (opt_text(x, m, "name", c->site.name, sizeof c->site.name)) return -1;
  const ydoc_node *tz = ydoc_get(m, "timezone");
  if (tz) {
    const char *s;
    if (ydoc_str(x->d, tz, &s, x->err, x->errlen)) return -1;
    bool ok = s[0] != '\0' && s[0] != '/' && !strstr(s, "..");
    for (const char *p = s; ok && *p; p++)
      ok = is_alnum(*p) || strchr("/_+-", *p);
    shown sh;
    if (!ok)
      return ERR(x, tz, "expected a time zone name such as Asia/Shanghai or "
                        "UTC, got %s",
                 show(s, &sh));
    if (copy_text(x, tz, s, c->site.timezone, sizeof c->site.timezone,
                  "timezone"))
      return -1;
  }
  return 0;
}

/* mqtt://host[:port] or mqtts://host[:port], stored with the port spelled
 * out (1883 and 8883 by default) so the publisher need not guess. */
static int parse_mqtt_url(ctx *x, const ydoc_node *v) {
  const char *u;
  shown sh;
  if (ydoc_str(x->d, v, &u, x->err, x->errlen)) return -1;
  bool tls;
  const char *p;
  if (strncmp(u, "mqtt://", 7) == 0) {
    tls = false;
    p = u + 7;
  } else if (strncmp(u, "mqtts://", 8) == 0) {
    tls = true;
    p = u + 8;
  } else {
    return ERR(x, v,
               "expected an mqtt:// or mqtts:// url such as "
               "mqtt://127.0.0.1:1883, got %s",
               show(u, &sh));
  }
  if (strchr(p, '@'))
    return ERR(x, v, "the url must not hold credentials: use username and "
                     "password_file or password_env");
  char host[CFG_HOST_MAX];
  size_t hl;
  bool v6 = false;
  if (*p == '[') {
    const char *close = strchr(p, ']');
    if (!close) return ERR(x, v, "unterminated [ in url %s", show(u, &sh));
    hl = (size_t)(close - p - 1);
    if (hl >= sizeof host) return ERR(x, v, "host in url is too long");
    memcpy(host, p + 1, hl);
    host[hl] = '\0';
    p = close + 1;
    v6 = true;
    if (!strchr(host, ':') || !valid_host(host))
      return ERR(x, v, "expected an IPv6 address between [ and ] in url %s",
                 show(u, &sh));
  } else {
    hl = strcspn(p, ":/");
    if (hl >= sizeof host) return ERR(x, v, "host in url is too long");
    memcpy(host, p, hl);
    host[hl] = '\0';
    p += hl;
    if (hl > 0 && !valid_host(host))
      return ERR(x, v, "expected a host name or IP address in url %s",
                 show(u, &sh));
  }
  if (host[0] == '\0')
    return ERR(x, v, "expected a host in url %s (mqtt://HOST:PORT)",
               show(u, &sh));
  long port = tls ? 8883 : 1883;
  if (*p == ':') {
    p++;
    long pv = 0;
    size_t nd = 0;
    while (is_digit(*p) && nd < 6) pv = pv * 10 + (*p++ - '0'), nd++;
    if (nd == 0 || is_digit(*p) || pv < 1 || pv > 65535)
      return ERR(x, v, "expected a port between 1 and 65535 in url %s",
                 show(u, &sh));
    port = pv;
  }
  if (!(p[0] == '\0' || (p[0] == '/' && p[1] == '\0')))
    return ERR(x, v, "unexpected %s in url: expected mqtt://HOST:PORT",
               show(p, &sh));
  int w = snprintf(x->c->mqtt.url, sizeof x->c->mqtt.url, "%s://%s%s%s:%ld",
                   tls ? "mqtts" : "mqtt", v6 ? "[" : "", host, v6 ? "]" : "",
                   port);
  if (w < 0 || (size_t)w >= sizeof x->c->mqtt.url)
    return ERR(x, v, "url is too long");
  return 0;
}

/* A topic prefix: levels of [A-Za-z0-9_.-] separated by '/', so it can
 * never hold a wildcard or an empty level. */
static bool valid_topic_prefix(const char *s) {
  if (!s[0] || s[0] == '/') return false;
  char prev = '/';
  for (const char *p = s; *p; p++) {
    if (*p == '/') {
      if (prev == '/') return false;
    } else if (!(is_alnum(*p) || strchr("_.-", *p))) {
      return false;
    }
    prev = *p;
  }
  return prev != '/';
}

static bool valid_env_name(const char *s) {
  if (!s[0] || is_digit(s[0])) return false;
  for (const char *p = s; *p; p++)
    if (!(is_alnum(*p) || *p == '_')) return false;
  return true;
}

static int parse_mqtt(ctx *x, const ydoc_node *root) {
  const ydoc_node *m = need(x, root, "mqtt", "at the top level");
  if (!m) return -1;
  if (ydoc_check_map(x->d, m, "mqtt", mqtt_keys, x->err, x->errlen)) return -1;
  cfg *c = x->c;
  const ydoc_node *v = need(x, m, "url", "in mqtt");
  if (!v || parse_mqtt_url(x, v)) return -1;
  bool tls = strncmp(c->mqtt.url, "mqtts://", 8) == 0;

  snprintf(c->mqtt.client_id, sizeof c->mqtt.client_id, "%s-gw", c->site.id);
  if ((v = ydoc_get(m, "client_id")) != NULL) {
    const char *s;
    if (ydoc_id(x->d, v, sizeof c->mqtt.client_id, &s, x->err, x->errlen))
      return -1;
    memcpy(c->mqtt.client_id, s, strlen(s) + 1);
  }
  if ((v = ydoc_get(m, "topic_prefix")) != NULL) {
    const char *s;
    shown sh;
    if (ydoc_str(x->d, v, &s, x->err, x->errlen)) return -1;
    if (!valid_topic_prefix(s))
      return ERR(x, v,
                 "expected a topic prefix such as water or org/water "
                 "(letters, digits, '_', '.', '-' and '/' between levels), "
                 "got %s",
                 show(s, &sh));
    if (copy_text(x, v, s, c->mqtt.topic_prefix, sizeof c->mqtt.topic_prefix,
                  "topic_prefix"))
      return -1;
  }
  if ((v = ydoc_get(m, "version")) != NULL) {
    /* 3.1.1 is protocol level 4, which is what the client library takes. */
    static const char *const versions[] = {"5", "3.1.1", "4", "auto", NULL};
    int i;
    if (ydoc_enum(x->d, v, versions, &i, x->err, x->errlen)) return -1;
    c->mqtt.version = i == 0 ? 5 : i == 3 ? 0 : 4;
  }
  if (opt_text(x, m, "username", c->mqtt.username, sizeof c->mqtt.username))
    return -1;
  if (secret_path(x, m, "password_file", c->mqtt.password_file,
                  sizeof c->mqtt.password_file))
    return -1;
  if ((v = ydoc_get(m, "password_env")) != NULL) {
    const char *s;
    shown sh;
    if (ydoc_str(x->d, v, &s, x->err, x->errlen)) return -1;
    if (s[0] && !valid_env_name(s))
      return ERR(x, v,
                 "expected an environment variable name (letters, digits "
                 "and '_'), got %s",
                 show(s, &sh));
    if (copy_text(x, v, s, c->mqtt.password_env, sizeof c->mqtt.password_env,
                  "password_env"))
      return -1;
    if (s[0] && c->mqtt.password_file[0])
      return ERR(x, v, "give password_file or password_env, not both");
  }
  /* The protocol carries the keep-alive in whole seconds (at most 65535). */
  if ((v = ydoc_get(m, "keepalive")) != NULL) {
    if (ydoc_duration_ms(x->d, v, MS_SECOND, 18 * MS_HOUR,
                         &c->mqtt.keepalive_ms, x->err, x->errlen))
      return -1;
    if (c->mqtt.keepalive_ms % MS_SECOND)
      return ERR(x, v, "keepalive must be a whole number of seconds");
  }
  static const char *const tls_keys[] = {"ca_file", "cert_file", "key_file"};
  char *tls_dst[] = {c->mqtt.ca_file, c->mqtt.cert_file, c->mqtt.key_file};
  for (size_t i = 0; i < 3; i++) {
    if (opt_path(x, m, tls_keys[i], tls_dst[i], CFG_PATH_MAX)) return -1;
    if (tls_dst[i][0] && !tls)
      return ERR(x, ydoc_get(m, tls_keys[i]),
                 "%s needs an mqtts:// url (the url is mqtt://, without TLS)",
                 tls_keys[i]);
  }
  return 0;
}

/* A size such as 512MiB, 64MB, 100kB or 1048576 (bytes): digits, then a
 * unit. A number too large for 64 bits is an error, not the largest one. */
#define CFG_MAX_SIZE (16LL << 40)

static int parse_size(const char *s, int64_t *out) {
  const char *end = s;
  int64_t v = 0;
  while (*end >= '0' && *end <= '9') {
    if (v > (INT64_MAX - (*end - '0')) / 10) return -1;
    v = v * 10 + (*end - '0');
    end++;
  }
  if (end == s) return -1;
  struct {
    const char *unit;
    int64_t mult;
  } units[] = {{"", 1},       {"B", 1},          {"kB", 1000},       {"KB", 1000},
               {"KiB", 1024}, {"MB", 1000000},   {"MiB", 1048576},   {"GB", 1000000000},
               {"GiB", 1073741824}};
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (strcmp(end, units[i].unit) == 0) {
      if (v > INT64_MAX / units[i].mult) return -1;
      *out = (int64_t)v * units[i].mult;
      return 0;
    }
  }
  return -1;
}

static int parse_storage(ctx *x, const ydoc_node *root) {
  const ydoc_node *m = need(x, root, "storage", "at the top level");
  if (!m) return -1;
  if (ydoc_check_map(x->d, m, "storage", storage_keys, x->err, x->errlen))
    return -1;
  if (req_path(x, m, "path", "in storage", x->c->storage.path,
               sizeof x->c->storage.path))
    return -1;
  const ydoc_node *v = ydoc_get(m, "max_size");
  if (v) {
    const char *s;
    if (ydoc_str(x->d, v, &s, x->err, x->errlen)) return -1;
    int64_t size;
    if (parse_size(s, &size) != 0 || size < 64 * 1024 || size > CFG_MAX_SIZE) {
      ERR(x, v, "expected a size from 64KiB to 16TiB such as 512MiB, 64MB or 100kB, got "
                "\"%s\"",
          s);
      return -1;
    }
    x->c->storage.max_size = size;
  }
  return opt_dur(x, m, "retention", MS_HOUR, 100 * 366 * MS_DAY,
                 &x->c->storage.retention_ms) ||
         opt_dur(x, m, "maintenance_interval", MS_SECOND, MS_DAY,
                 &x->c->storage.maintenance_ms) ||
         opt_int(x, m, "hold_max", 100, 10000000, &x->c->storage.hold_max) ||
         opt_dur(x, m, "commit_interval", 0, 10 * MS_SECOND, &x->c->storage.commit_ms);
}

/* The standard rates termios (and so libmodbus) can set. */
static bool standard_baud(int64_t b) {
  static const int64_t rates[] = {1200,  2400,   4800,   9600,   19200, 38400,
                                  57600, 115200, 230400, 460800, 921600};
  for (size_t i = 0; i < sizeof rates / sizeof rates[0]; i++)
    if (rates[i] == b) return true;
  return false;
}

/* Keys that only make sense for some transports. */
static int check_applies(ctx *x, const ydoc_node *m, cfg_transport t) {
  static const struct {
    const char *key;
    bool rtu, tcp, rot, dtu;
  } rules[] = {
      {"device", true, false, false, false},
      {"baud", true, false, true, true},
      {"parity", true, false, true, true},
      {"data_bits", true, false, true, true},
      {"stop_bits", true, false, true, true},
      {"sim_wire_time", true, false, true, true},
      {"host", false, true, true, false},
      {"port", false, true, true, false},
      {"server", false, false, false, true},
      {"registration", false, false, false, true},
      {"registration_every_packet", false, false, false, true},
      {"heartbeat", false, false, false, true},
      {"sim_heartbeat_interval", false, false, false, true},
  };
  for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
    const ydoc_node *k = key_node(m, rules[i].key);
    if (!k) continue;
    bool ok = t == CFG_TRANSPORT_RTU   ? rules[i].rtu
              : t == CFG_TRANSPORT_TCP ? rules[i].tcp
              : t == CFG_TRANSPORT_RTU_OVER_TCP ? rules[i].rot
                                                : rules[i].dtu;
    if (!ok)
      return ERR(x, k, "key \"%s\" does not apply to %s %s bus", rules[i].key,
                 t == CFG_TRANSPORT_TCP ? "a" : "an", cfg_transport_name(t));
  }
  return 0;
}

/* Two serial buses on one port through different paths (/dev/ttyUSB0 and a
 * /dev/serial/by-id/ link to it) would interleave their frames on one line:
 * compare the devices as the system resolves them, where they exist (a
 * device that is not plugged in is compared by its path alone, above). */
static int same_port(ctx *x, const ydoc_node *s) {
  const cfg *c = x->c;
  char **real = calloc(c->nbuses ? c->nbuses : 1, sizeof *real);
  if (!real) return ERR(x, s, "out of memory");
  int rc = 0;
  for (size_t i = 0; i < c->nbuses && rc == 0; i++) {
    if (c->buses[i].transport != CFG_TRANSPORT_RTU) continue;
    real[i] = realpath(c->buses[i].device, NULL);
    if (!real[i]) continue;
    for (size_t j = 0; j < i; j++)
      if (real[j] && strcmp(real[i], real[j]) == 0) {
        rc = ERR(x, ydoc_get(s->items[i], "device"),
                 "device %s is %s, the serial port of bus \"%s\" (%s): two buses "
                 "cannot share a line",
                 c->buses[i].device, real[i], c->buses[j].id, c->buses[j].device);
        break;
      }
  }
  for (size_t i = 0; i < c->nbuses; i++) free(real[i]);
  free(real);
  return rc;
}

/* A packet as configured (text, or "hex:..."), into DST. */
static int dtu_packet(ctx *x, const ydoc_node *v, uint8_t *dst, uint8_t *len) {
  const char *s;
  shown sh;
  if (ydoc_str(x->d, v, &s, x->err, x->errlen)) return -1;
  int n = dtu_packet_parse(s, dst, DTU_PKT_MAX);
  if (n < 0)
    return ERR(x, v, "expected 1..%d bytes as text or as \"hex:\" and pairs of hex "
                     "digits (such as \"hex:7B01\"), got %s",
               DTU_PKT_MAX, show(s, &sh));
  *len = (uint8_t)n;
  return 0;
}

/* An rtu-dtu bus: its server (one of dtu_servers, parsed before the buses),
 * registration (unique on its server) and heartbeat. */
static int parse_dtu_bus(ctx *x, const ydoc_node *m, cfg_bus *b) {
  const char *where = "in bus (an rtu-dtu bus needs server and registration)";
  const ydoc_node *v = need(x, m, "server", where);
  const char *s;
  shown sh;
  if (!v || ydoc_str(x->d, v, &s, x->err, x->errlen)) return -1;
  cfg *c = x->c;
  size_t i = 0;
  while (i < c->ndtu_servers && strcmp(c->dtu_servers[i].id, s) != 0) i++;
  if (i == c->ndtu_servers)
    return ERR(x, v, "unknown DTU server %s (dtu_servers lists %zu)", show(s, &sh),
               c->ndtu_servers);
  b->server = i;
  if (!(v = need(x, m, "registration", where)) ||
      dtu_packet(x, v, b->registration, &b->reglen))
    return -1;
  for (size_t j = 0; j < c->nbuses; j++) {
    const cfg_bus *o = &c->buses[j];
    if (o->transport == CFG_TRANSPORT_RTU_DTU && o->server == b->server &&
        o->reglen == b->reglen && memcmp(o->registration, b->registration, b->reglen) == 0)
      return ERR(x, v, "bus \"%s\" has the same registration on server \"%s\": a "
                       "registration names one bus",
                 o->id, c->dtu_servers[i].id);
  }
  if ((v = ydoc_get(m, "heartbeat")) != NULL && dtu_packet(x, v, b->heartbeat, &b->hblen))
    return -1;
  b->sim_heartbeat_ms = 10 * MS_SECOND;
  return opt_bool(x, m, "registration_every_packet", &b->registration_every_packet) ||
         opt_dur(x, m, "sim_heartbeat_interval", 10, MS_HOUR, &b->sim_heartbeat_ms);
}

static int parse_bus(ctx *x, const ydoc_node *m, cfg_bus *b, htab *ids,
                     htab *devices, size_t index) {
  if (ydoc_check_map(x->d, m, "bus", bus_keys, x->err, x->errlen)) return -1;
  b->line = m->line;
  b->col = m->col;
  const ydoc_node *idn;
  if (req_id(x, m, "id", "in bus", b->id, sizeof b->id, &idn)) return -1;
  hent *slot = ht_slot(ids, b->id, 0);
  if (slot->used)
    return ERR(x, idn, "duplicate bus id \"%s\" (first defined at line %d)",
               b->id, x->c->buses[slot->v].line);
  ht_put(slot, b->id, 0, index);

  const ydoc_node *v = need(x, m, "transport", "in bus");
  int t;
  if (!v || ydoc_enum(x->d, v, transport_names, &t, x->err, x->errlen))
    return -1;
  b->transport = (cfg_transport)t;
  if (check_applies(x, m, b->transport)) return -1;

  b->baud = 9600;
  b->parity = 'N';
  b->data_bits = 8;
  b->stop_bits = 1;
  b->timeout_ms = MS_SECOND;
  b->turnaround_ms = 0;
  b->max_gap = -1;
  b->max_registers = 0;
  b->sim_wire_time = false;

  if (b->transport == CFG_TRANSPORT_RTU) {
    if (req_path(x, m, "device", "in bus (an rtu bus needs its serial device)",
                 b->device, sizeof b->device))
      return -1;
    hent *ds = ht_slot(devices, b->device, 0);
    if (ds->used)
      return ERR(x, ydoc_get(m, "device"),
                 "device %s is already used by bus \"%s\"",
                 b->device, x->c->buses[ds->v].id);
    ht_put(ds, b->device, 0, index);
  } else if (b->transport == CFG_TRANSPORT_RTU_DTU) {
    if (parse_dtu_bus(x, m, b)) return -1;
  } else {
    const char *where = b->transport == CFG_TRANSPORT_TCP
                            ? "in bus (a tcp bus needs host and port)"
                            : "in bus (an rtu-over-tcp bus needs host and port)";
    v = need(x, m, "host", where);
    if (!v) return -1;
    const char *s;
    shown sh;
    if (ydoc_str(x->d, v, &s, x->err, x->errlen)) return -1;
    if (!valid_host(s))
      return ERR(x, v, "expected a host name or IP address, got %s",
                 show(s, &sh));
    if (copy_text(x, v, s, b->host, sizeof b->host, "host")) return -1;
    if (!need(x, m, "port", where) ||
        opt_int(x, m, "port", 1, 65535, &b->port))
      return -1;
  }
  if ((v = ydoc_get(m, "baud")) != NULL) {
    int64_t baud;
    if (ydoc_int(x->d, v, 1200, 921600, &baud, x->err, x->errlen)) return -1;
    if (!standard_baud(baud))
      return ERR(x, v,
                 "expected a standard baud rate (1200, 2400, 4800, 9600, "
                 "19200, 38400, 57600, 115200, 230400, 460800 or 921600), "
                 "got \"%" PRId64 "\"",
                 baud);
    b->baud = (int)baud;
  }
  if ((v = ydoc_get(m, "parity")) != NULL) {
    static const char *const parities[] = {"none", "even", "odd", NULL};
    int i;
    if (ydoc_enum(x->d, v, parities, &i, x->err, x->errlen)) return -1;
    b->parity = "NEO"[i];
  }
  if ((v = ydoc_get(m, "data_bits")) != NULL) {
    static const char *const bits[] = {"7", "8", NULL};
    int i;
    if (ydoc_enum(x->d, v, bits, &i, x->err, x->errlen)) return -1;
    b->data_bits = 7 + i;
  }
  if ((v = ydoc_get(m, "stop_bits")) != NULL) {
    static const char *const bits[] = {"1", "2", NULL};
    int i;
    if (ydoc_enum(x->d, v, bits, &i, x->err, x->errlen)) return -1;
    b->stop_bits = 1 + i;
  }
  if (opt_dur(x, m, "timeout", 10, 60 * MS_SECOND, &b->timeout_ms) ||
      opt_dur(x, m, "turnaround", 0, 10 * MS_SECOND, &b->turnaround_ms) ||
      opt_int(x, m, "max_gap", 0, 125, &b->max_gap) ||
      opt_int(x, m, "max_registers", 1, 125, &b->max_registers) ||
      opt_bool(x, m, "sim_wire_time", &b->sim_wire_time))
    return -1;
  return 0;
}

static int parse_buses(ctx *x, const ydoc_node *root) {
  const ydoc_node *s = need(x, root, "buses", "at the top level");
  if (!s) return -1;
  if (ydoc_check_seq(x->d, s, "buses", x->err, x->errlen)) return -1;
  if (s->n == 0) return ERR(x, s, "no buses configured");
  if (s->n > CFG_MAX_BUSES)
    return ERR(x, s, "too many buses: %zu (at most %d)", s->n, CFG_MAX_BUSES);
  cfg *c = x->c;
  c->buses = calloc(s->n, sizeof *c->buses);
  if (!c->buses) return ERR(x, s, "out of memory");
  htab ids = {0}, devices = {0};
  int rc = -1;
  if (ht_init(&ids, s->n) || ht_init(&devices, s->n)) {
    ERR(x, s, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < s->n; i++) {
    if (parse_bus(x, s->items[i], &c->buses[i], &ids, &devices, i)) goto out;
    c->nbuses = i + 1;
  }
  if (same_port(x, s)) goto out;
  rc = 0;
out:
  ht_free(&ids);
  ht_free(&devices);
  return rc;
}

/* The profile for REF, loaded once per distinct reference. */
static int meter_profile(ctx *x, const ydoc_node *v, cfg_meter *mt,
                         htab *profiles) {
  cfg *c = x->c;
  const char *ref;
  shown sh;
  if (ydoc_str(x->d, v, &ref, x->err, x->errlen)) return -1;
  if (ref[0] == '\0')
    return ERR(x, v, "expected a profile name (such as tuf2000m) or a path to "
                     "a profile file, got an empty value");
  if (dup_text(x, v, ref, &mt->profile_ref, CFG_REF_MAX, "profile")) return -1;
  hent *slot = ht_slot(profiles, mt->profile_ref, 0);
  if (slot->used) {
    mt->profile = c->profiles[slot->v];
    return 0;
  }
  char perr[CFG_ERR_MAX];
  perr[0] = '\0';
  mb_profile *p =
      profile_load(mt->profile_ref, c->dir, x->profile_dir, perr, sizeof perr);
  if (!p)
    return ERR(x, v, "profile %s: %s", show_q(mt->profile_ref, &sh, '\''),
               perr[0] ? perr : "cannot be loaded");
  c->profiles[c->nprofiles] = p;
  ht_put(slot, mt->profile_ref, 0, c->nprofiles);
  c->nprofiles++;
  mt->profile = p;
  return 0;
}

static int parse_fixed(ctx *x, const ydoc_node *f, cfg_meter *mt) {
  shown sh;
  if (!f || f->kind != YDOC_MAP) {
    static const char *const none[] = {NULL};
    return ydoc_check_map(x->d, f, "sim.fixed", none, x->err, x->errlen);
  }
  if (f->n > CFG_FIXED_MAX)
    return ERR(x, f, "too many fixed fields: %zu (at most %d)", f->n,
               CFG_FIXED_MAX);
  const mb_profile *p = mt->profile;
  if (f->n && !(mt->sim.fixed = calloc(f->n, sizeof *mt->sim.fixed)))
    return ERR(x, f, "out of memory");
  for (size_t i = 0; i < f->n; i++) {
    const ydoc_node *k = f->keys[i];
    if (profile_field_index(p, k->value) < 0) {
      char list[400];
      size_t o = 0;
      list[0] = '\0';
      for (size_t j = 0; j < p->nfields; j++) {
        int w = snprintf(list + o, sizeof list - o, "%s%s", j ? ", " : "",
                         p->fields[j].name);
        if (w < 0 || (size_t)w >= sizeof list - o) {
          memcpy(list + sizeof list - 4, "...", 4);
          break;
        }
        o += (size_t)w;
      }
      return ERR(x, k, "unknown field %s in sim.fixed (profile %s has: %s)",
                 show(k->value, &sh), p->name, list);
    }
    cfg_fixed *fx = &mt->sim.fixed[i];
    if (copy_text(x, k, k->value, fx->field, sizeof fx->field, "field name"))
      return -1;
    if (ydoc_double(x->d, f->items[i], -1e15, 1e15, &fx->value, x->err,
                    x->errlen))
      return -1;
    mt->sim.nfixed = i + 1;
  }
  return 0;
}

static int parse_sim(ctx *x, const ydoc_node *m, cfg_meter *mt) {
  cfg_sim *s = &mt->sim;
  s->mean_flow_m3h = 100;
  s->pipe_diameter_m = 0.5;
  s->initial_total_m3 = 0;
  s->noise = 0.02;
  s->seed = fnv1a(mt->id);
  s->fault = SIM_FAULT_NONE;
  s->flaky_ratio = 0.5;
  s->crc_ratio = 1.0;
  s->slow_delay_ms = 2 * MS_SECOND;
  s->exception_code = 4;
  if (!m) return 0;
  if (ydoc_check_map(x->d, m, "sim", sim_keys, x->err, x->errlen)) return -1;
  const ydoc_node *v;
  if (opt_double(x, m, "mean_flow_m3h", -1e6, 1e6, &s->mean_flow_m3h) ||
      opt_double(x, m, "pipe_diameter_m", 0.001, 20, &s->pipe_diameter_m) ||
      opt_double(x, m, "initial_total_m3", 0, 1e12, &s->initial_total_m3) ||
      opt_double(x, m, "noise", 0, 1, &s->noise) ||
      opt_double(x, m, "flaky_ratio", 0, 1, &s->flaky_ratio) ||
      opt_double(x, m, "crc_ratio", 0, 1, &s->crc_ratio) ||
      opt_dur(x, m, "slow_delay", 0, 10 * MS_MINUTE, &s->slow_delay_ms) ||
      opt_int(x, m, "exception_code", 1, 255, &s->exception_code))
    return -1;
  if ((v = ydoc_get(m, "seed")) != NULL) {
    int64_t seed;
    if (ydoc_int(x->d, v, 0, INT64_MAX, &seed, x->err, x->errlen)) return -1;
    s->seed = (uint64_t)seed;
  }
  if ((v = ydoc_get(m, "fault")) != NULL) {
    int i;
    if (ydoc_enum(x->d, v, fault_names, &i, x->err, x->errlen)) return -1;
    s->fault = (sim_fault)i;
  }
  if ((v = opt_section(m, "fixed")) != NULL && parse_fixed(x, v, mt)) return -1;
  return 0;
}

typedef struct {
  htab ids, units, profiles;
} meter_tabs;

static int parse_meter(ctx *x, const ydoc_node *m, cfg_meter *mt, size_t index,
                       htab *bus_ids, meter_tabs *t) {
  cfg *c = x->c;
  shown sh;
  if (ydoc_check_map(x->d, m, "meter", meter_keys, x->err, x->errlen))
    return -1;
  mt->line = m->line;
  mt->col = m->col;
  const ydoc_node *idn;
  if (req_id(x, m, "id", "in meter", mt->id, sizeof mt->id, &idn)) return -1;
  hent *slot = ht_slot(&t->ids, mt->id, 0);
  if (slot->used)
    return ERR(x, idn, "duplicate meter id \"%s\" (first defined at line %d)",
               mt->id, c->meters[slot->v].line);
  /* The site's own topics sit at the meters' level: {prefix}/{site}/gateway/
   * state, .../report/{period} (which the fleet view subscribes to as
   * +/report/+) and .../online-rate. A meter of one of those names would
   * share or shadow them. */
  static const char *const reserved[] = {"gateway", "report", "online-rate"};
  for (size_t k = 0; k < sizeof reserved / sizeof reserved[0]; k++)
    if (strcmp(mt->id, reserved[k]) == 0)
      return ERR(x, idn, "meter id \"%s\" is reserved (it names the site's own MQTT "
                         "topics: gateway, report, online-rate)", mt->id);
  ht_put(slot, mt->id, 0, index);
  const ydoc_node *nv = ydoc_get(m, "name");
  const char *name = mt->id;
  if (nv && ydoc_str(x->d, nv, &name, x->err, x->errlen)) return -1;
  if (dup_text(x, nv ? nv : idn, name, &mt->name, CFG_NAME_MAX, "name")) return -1;

  const ydoc_node *v = need(x, m, "bus", "in meter");
  const char *bus;
  if (!v || ydoc_str(x->d, v, &bus, x->err, x->errlen)) return -1;
  hent *bs = ht_slot(bus_ids, bus, 0);
  if (!bs->used) {
    char list[300];
    size_t o = 0;
    list[0] = '\0';
    for (size_t j = 0; j < c->nbuses && j < 8; j++) {
      int w = snprintf(list + o, sizeof list - o, "%s%s", j ? ", " : "",
                       c->buses[j].id);
      if (w < 0 || (size_t)w >= sizeof list - o) break;
      o += (size_t)w;
    }
    return ERR(x, v, "unknown bus %s (buses: %s%s)", show(bus, &sh), list,
               c->nbuses > 8 ? ", ..." : "");
  }
  mt->bus = bs->v;

  v = need(x, m, "unit", "in meter");
  if (!v) return -1;
  int64_t unit;
  if (ydoc_int(x->d, v, 1, 247, &unit, x->err, x->errlen)) return -1;
  mt->unit = (int)unit;
  hent *us = ht_slot(&t->units, NULL, ((uint64_t)mt->bus << 8) | (uint64_t)unit);
  if (us->used)
    return ERR(x, v, "unit %d on bus \"%s\" is already used by meter \"%s\" "
                     "(line %d)",
               mt->unit, c->buses[mt->bus].id, c->meters[us->v].id,
               c->meters[us->v].line);
  ht_put(us, NULL, ((uint64_t)mt->bus << 8) | (uint64_t)unit, index);

  v = need(x, m, "profile", "in meter");
  if (!v || meter_profile(x, v, mt, &t->profiles)) return -1;

  mt->interval_ms = MS_MINUTE;
  if (opt_dur(x, m, "interval", 100, MS_DAY, &mt->interval_ms)) return -1;
  return parse_sim(x, opt_section(m, "sim"), mt);
}

static int parse_meters(ctx *x, const ydoc_node *root) {
  cfg *c = x->c;
  const ydoc_node *s = ydoc_get(root, "meters");
  if (!s) return ERR(x, root, "no meters configured");
  if (ydoc_check_seq(x->d, s, "meters", x->err, x->errlen)) return -1;
  if (s->n == 0) return ERR(x, s, "no meters configured");
  if (s->n > CFG_MAX_METERS)
    return ERR(x, s, "too many meters: %zu (at most %d)", s->n,
               CFG_MAX_METERS);
  c->meters = calloc(s->n, sizeof *c->meters);
  c->nmeters_alloc = c->meters ? s->n : 0;
  c->profiles = calloc(s->n, sizeof *c->profiles);
  if (!c->meters || !c->profiles) return ERR(x, s, "out of memory");
  htab bus_ids = {0};
  meter_tabs t = {{0}, {0}, {0}};
  int rc = -1;
  if (ht_init(&bus_ids, c->nbuses) || ht_init(&t.ids, s->n) ||
      ht_init(&t.units, s->n) || ht_init(&t.profiles, s->n)) {
    ERR(x, s, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < c->nbuses; i++)
    ht_put(ht_slot(&bus_ids, c->buses[i].id, 0), c->buses[i].id, 0, i);
  for (size_t i = 0; i < s->n; i++) {
    if (parse_meter(x, s->items[i], &c->meters[i], i, &bus_ids, &t)) goto out;
    c->nmeters = i + 1;
  }
  if (index_meters(c)) {
    ERR(x, s, "out of memory");
    goto out;
  }
  rc = 0;
out:
  ht_free(&bus_ids);
  ht_free(&t.ids);
  ht_free(&t.units);
  ht_free(&t.profiles);
  return rc;
}

static int parse_online(ctx *x, const ydoc_node *root) {
  const ydoc_node *m = opt_section(root, "online");
  cfg *c = x->c;
  if (!m) return 0;
  if (ydoc_check_map(x->d, m, "online", online_keys, x->err, x->errlen))
    return -1;
  if (opt_double(x, m, "baseline", 0, 1, &c->online.baseline) ||
      opt_int(x, m, "offline_after", 1, 100, &c->online.offline_after) ||
      opt_int(x, m, "min_readings", 1, 1000000, &c->online.min_readings) ||
      opt_double(x, m, "min_completeness", 0, 1,
                 &c->online.min_completeness) ||
      opt_dur(x, m, "backoff_max", MS_SECOND, MS_DAY,
              &c->online.backoff_max_ms))
    return -1;
  return 0;
}

static int parse_simtop(ctx *x, const ydoc_node *root) {
  const ydoc_node *m = opt_section(root, "sim");
  if (!m) return 0;
  if (ydoc_check_map(x->d, m, "sim", simtop_keys, x->err, x->errlen))
    return -1;
  return opt_path(x, m, "control", x->c->sim.control,
                  sizeof x->c->sim.control);
}

/* ADDRESS:PORT, the address an IPv4 literal or an IPv6 one in brackets
 * ([::1]:9464); no names, so that starting never waits on DNS. */
static int parse_listen(ctx *x, const ydoc_node *v, char *host_out, size_t cap,
                        int *port_out, const char *example) {
  shown sh;
  if (v->kind != YDOC_SCALAR)
    return ERR(x, v, "expected ADDRESS:PORT such as %s", example);
  const char *s = v->value;
  char host[64];
  const char *port;
  size_t hl;
  bool v6 = s[0] == '[';
  if (v6) {
    const char *e = strchr(s, ']');
    if (!e || e[1] != ':') goto bad;
    hl = (size_t)(e - s - 1);
    if (hl == 0 || hl >= sizeof host || hl >= cap) goto bad;
    memcpy(host, s + 1, hl);
    port = e + 2;
  } else {
    const char *e = strrchr(s, ':');
    if (!e) goto bad;
    hl = (size_t)(e - s);
    if (hl == 0 || hl >= sizeof host || hl >= cap) goto bad;
    memcpy(host, s, hl);
    port = e + 1;
  }
  host[hl] = '\0';
  unsigned char addr[16];
  if (inet_pton(v6 ? AF_INET6 : AF_INET, host, addr) != 1) goto bad;
  int64_t p = 0;
  if (!port[0] || strlen(port) > 5) goto bad;
  for (const char *q = port; *q; q++) {
    if (!is_digit(*q)) goto bad;
    p = p * 10 + (*q - '0');
  }
  if (p < 1 || p > 65535) goto bad;
  memcpy(host_out, host, hl + 1);
  *port_out = (int)p;
  return 0;
bad:
  return ERR(x, v, "expected ADDRESS:PORT with an IPv4 address or an IPv6 one in "
                   "brackets and a port 1..65535, such as %s or [::1]:%s, "
                   "got %s", example, strrchr(example, ':') + 1, show(s, &sh));
}

/* metrics.listen (empty: off). */
static int parse_metrics(ctx *x, const ydoc_node *root) {
  const ydoc_node *m = opt_section(root, "metrics");
  if (!m) return 0;
  if (ydoc_check_map(x->d, m, "metrics", metrics_keys, x->err, x->errlen))
    return -1;
  const ydoc_node *v = ydoc_get(m, "listen");
  if (!v) return 0;
  if (v->kind == YDOC_SCALAR && !v->value[0]) return 0; /* written empty: off */
  return parse_listen(x, v, x->c->metrics.host, sizeof x->c->metrics.host,
                      &x->c->metrics.port, "127.0.0.1:9464");
}

/* Would listening on A and on B, at one port, clash? The same address does,
 * and so does a wildcard with what it covers: "::" (both families, as the
 * servers listen) everything, "0.0.0.0" every IPv4 address. */
static bool listen_clash(const char *a, const char *b) {
  if (strcmp(a, b) == 0 || strcmp(a, "::") == 0 || strcmp(b, "::") == 0) return true;
  if (strcmp(a, "0.0.0.0") == 0 && !strchr(b, ':')) return true;
  return strcmp(b, "0.0.0.0") == 0 && !strchr(a, ':');
}

static int parse_dtu_server(ctx *x, const ydoc_node *m, cfg_dtu_server *sv) {
  if (ydoc_check_map(x->d, m, "DTU server", dtu_server_keys, x->err, x->errlen))
    return -1;
  sv->line = m->line;
  sv->col = m->col;
  const ydoc_node *idn, *v;
  if (req_id(x, m, "id", "in DTU server", sv->id, sizeof sv->id, &idn)) return -1;
  for (size_t i = 0; i < x->c->ndtu_servers; i++)
    if (strcmp(x->c->dtu_servers[i].id, sv->id) == 0)
      return ERR(x, idn, "duplicate DTU server id \"%s\"", sv->id);
  if (!(v = need(x, m, "listen", "in DTU server")) ||
      parse_listen(x, v, sv->host, sizeof sv->host, &sv->port, "0.0.0.0:9000"))
    return -1;
  for (size_t i = 0; i < x->c->ndtu_servers; i++)
    if (x->c->dtu_servers[i].port == sv->port &&
        listen_clash(x->c->dtu_servers[i].host, sv->host))
      return ERR(x, v, "DTU server \"%s\" listens on the same address%s",
                 x->c->dtu_servers[i].id,
                 strcmp(x->c->dtu_servers[i].host, sv->host) == 0
                     ? ""
                     : " (one of the two takes every address of the port)");
  sv->idle_timeout_ms = 5 * MS_MINUTE;
  sv->register_timeout_ms = 5 * MS_SECOND;
  sv->max_pending = 256;
  sv->takeover_hold_ms = 30 * MS_SECOND;
  if (opt_dur(x, m, "idle_timeout", MS_SECOND, MS_DAY, &sv->idle_timeout_ms) ||
      opt_dur(x, m, "register_timeout", 100, MS_MINUTE, &sv->register_timeout_ms) ||
      opt_int(x, m, "max_pending", 1, 100000, &sv->max_pending) ||
      opt_dur(x, m, "takeover_hold", 0, MS_DAY, &sv->takeover_hold_ms))
    return -1;
  const ydoc_node *a = ydoc_get(m, "allow");
  if (!a) return 0;
  if (ydoc_check_seq(x->d, a, "allow", x->err, x->errlen)) return -1;
  if (a->n > CFG_ALLOW_MAX)
    return ERR(x, a, "at most %d address ranges", CFG_ALLOW_MAX);
  if (a->n == 0)
    return ERR(x, a, "allow lists no address range (leave it out to allow any)");
  for (size_t i = 0; i < a->n; i++) {
    const char *s;
    shown sh;
    if (ydoc_str(x->d, a->items[i], &s, x->err, x->errlen)) return -1;
    if (cfg_cidr_parse(s, &sv->allow[i]) != 0)
      return ERR(x, a->items[i], "expected an address range such as 10.64.0.0/16 or "
                                 "2001:db8::/32, got %s", show(s, &sh));
    sv->nallow = i + 1;
  }
  return 0;
}

static int parse_dtu_servers(ctx *x, const ydoc_node *root) {
  const ydoc_node *s = opt_section(root, "dtu_servers");
  if (!s) return 0;
  if (ydoc_check_seq(x->d, s, "dtu_servers", x->err, x->errlen)) return -1;
  if (s->n > 64) return ERR(x, s, "too many DTU servers: %zu (at most 64)", s->n);
  if (!(x->c->dtu_servers = calloc(s->n ? s->n : 1, sizeof *x->c->dtu_servers)))
    return ERR(x, s, "out of memory");
  for (size_t i = 0; i < s->n; i++) {
    if (parse_dtu_server(x, s->items[i], &x->c->dtu_servers[i])) return -1;
    x->c->ndtu_servers = i + 1;
  }
  return 0;
}

int64_t cfg_meter_phase_ms(const cfg *c, size_t i) {
  const cfg_meter *m = &c->meters[i];
  size_t k = 0, n = 0;
  for (size_t j = 0; j < c->nmeters; j++) {
    if (c->meters[j].bus != m->bus) continue;
    if (j < i) k++;
    n++;
  }
  int64_t spread = n ? m->interval_ms / (int64_t)n : 0;
  if (spread > 100) spread = 100;
  /* Network buses share the collector's pool of bus threads: past a
   * hundred of them they fall in groups of a hundred or more by their rank
   * (at most ten groups), min(interval / 10, 10 ms) apart, so that a
   * thousand single-meter endpoints are not all due in the same millisecond,
   * while each group's polls still start together (one wake-up of the loop
   * and of the bus threads for many polls). */
  int64_t offset = 0;
  if (c->buses[m->bus].transport != CFG_TRANSPORT_RTU) {
    size_t rank = 0, nb = 0;
    for (size_t j = 0; j < c->nbuses; j++) {
      if (c->buses[j].transport == CFG_TRANSPORT_RTU) continue;
      if (j < m->bus) rank++;
      nb++;
    }
    size_t groups = nb / 100;
    if (groups > 10) groups = 10;
    int64_t step = m->interval_ms / 10;
    if (step > 10) step = 10;
    if (groups > 1) offset = (int64_t)(rank % groups) * step;
  }
  return (offset + (int64_t)k * spread) % m->interval_ms;
}

bool cfg_period_valid(const char *s) {
  static const char *const named[] = {"hourly", "daily", "monthly", "hour",
                                      "day",    "month", NULL};
  if (strlen(s) >= CFG_PERIOD_NAME_MAX) return false;
  for (size_t k = 0; named[k]; k++)
    if (strcmp(s, named[k]) == 0) return true;
  int64_t ms;
  return ydoc_parse_duration(s, &ms) == 0 && ms >= MS_SECOND;
}

static int parse_reports(ctx *x, const ydoc_node *root) {
  const ydoc_node *m = opt_section(root, "reports");
  if (!m) return 0;
  if (ydoc_check_map(x->d, m, "reports", reports_keys, x->err, x->errlen))
    return -1;
  const ydoc_node *u = ydoc_get(m, "push_url");
  if (u) {
    const char *s;
    if (ydoc_str(x->d, u, &s, x->err, x->errlen)) return -1;
    if (s[0] && strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0) {
      ERR(x, u, "expected an http:// or https:// url, got \"%s\"", s);
      return -1;
    }
    if (copy_text(x, u, s, x->c->reports.push_url, sizeof x->c->reports.push_url,
                  "push_url"))
      return -1;
  }
  if (opt_path(x, m, "ca_file", x->c->reports.ca_file, sizeof x->c->reports.ca_file) ||
      secret_path(x, m, "token_file", x->c->reports.token_file,
                  sizeof x->c->reports.token_file) ||
      opt_dur(x, m, "push_timeout", MS_SECOND, 10 * MS_MINUTE,
              &x->c->reports.push_timeout_ms))
    return -1;
  const ydoc_node *p = ydoc_get(m, "periods");
  if (!p) return 0;
  if (ydoc_check_seq(x->d, p, "reports.periods", x->err, x->errlen)) return -1;
  if (p->n == 0) {
    ERR(x, p, "reports.periods needs at least one period");
    return -1;
  }
  if (p->n > CFG_PERIODS_MAX) {
    ERR(x, p, "at most %d report periods", CFG_PERIODS_MAX);
    return -1;
  }
  x->c->reports.nperiods = 0;
  for (size_t i = 0; i < p->n; i++) {
    const char *s;
    if (ydoc_str(x->d, p->items[i], &s, x->err, x->errlen)) return -1;
    if (!cfg_period_valid(s)) {
      ERR(x, p->items[i],
          "expected a report period: hourly, daily, monthly or a duration of "
          "at least 1s such as 15m, got \"%s\"", s);
      return -1;
    }
    for (size_t j = 0; j < x->c->reports.nperiods; j++) {
      if (strcmp(x->c->reports.periods[j], s) == 0) {
        ERR(x, p->items[i], "report period \"%s\" listed twice", s);
        return -1;
      }
    }
    snprintf(x->c->reports.periods[x->c->reports.nperiods++],
             sizeof x->c->reports.periods[0], "%s", s);
  }
  return 0;
}

/* The config file's folder, made absolute so that resolved paths survive a
 * later chdir (systemd services start in /). */
static void set_dir(cfg *c) {
  char tmp[CFG_PATH_MAX];
  memcpy(tmp, c->path, sizeof tmp);
  char *slash = strrchr(tmp, '/');
  if (!slash)
    snprintf(tmp, sizeof tmp, ".");
  else if (slash == tmp)
    tmp[1] = '\0';
  else
    *slash = '\0';
  char *abs = realpath(tmp, NULL);
  if (abs && strlen(abs) < sizeof c->dir)
    memcpy(c->dir, abs, strlen(abs) + 1);
  else
    memcpy(c->dir, tmp, sizeof c->dir);
  free(abs);
}

int cfg_load(const char *path, const char *profile_dir, cfg **out, char *err,
             size_t errlen) {
  if (out) *out = NULL;
  if (!path || !out) {
    if (err && errlen) snprintf(err, errlen, "%s:1:1: no config given",
                                path ? path : "<null>");
    return -1;
  }
  cfg *c = calloc(1, sizeof *c);
  ydoc *d = NULL;
  if (!c) {
    if (err && errlen) snprintf(err, errlen, "%s:1:1: out of memory", path);
    return -1;
  }
  d = ydoc_load_file(path, err, errlen);
  if (!d) goto fail;
  ctx x = {.d = d, .c = c, .profile_dir = profile_dir, .err = err,
           .errlen = errlen};
  if (strlen(path) >= sizeof c->path) {
    ERR(&x, NULL, "the config file's path is too long");
    goto fail;
  }
  memcpy(c->path, path, strlen(path) + 1);
  set_dir(c);
  set_defaults(c);

  const ydoc_node *root = ydoc_root(d);
  if (!root) {
    ERR(&x, NULL, "the file is empty (expected a map with site, mqtt, "
                  "storage, buses and meters)");
    goto fail;
  }
  if (ydoc_check_map(d, root, "the top level", root_keys, err, errlen) ||
      parse_site(&x, root) || parse_mqtt(&x, root) ||
      parse_storage(&x, root) || parse_dtu_servers(&x, root) || parse_buses(&x, root) ||
      parse_meters(&x, root) || parse_online(&x, root) ||
      parse_simtop(&x, root) || parse_reports(&x, root) ||
      parse_metrics(&x, root) || cfg_uplink_parse(d, root, c, err, errlen))
    goto fail;
  ydoc_free(d);
  *out = c;
  return 0;

fail:
  ydoc_free(d);
  cfg_free(c);
  return -1;
}
