/* uplink: the `uplink:` section of the site configuration. See uplink.h and
 * docs/configuration.md, `uplink`. */
#include "uplink.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "proto/szy206.h"

typedef struct {
  const ydoc *d;
  cfg *c;
  char *err;
  size_t errlen;
} ctx;

#define ERR(x, node, ...) ydoc_errf((x)->d, (node), (x)->err, (x)->errlen, __VA_ARGS__)

static const char *const uplink_keys[] = {"protocol",        "host",          "port",
                                          "report_interval", "heartbeat",     "confirm_timeout",
                                          "delay_minutes",   "stations",      NULL};
static const char *const station_keys[] = {"admin", "station", "raw_address", "meters", NULL};
static const char *const protocol_names[] = {"szy206", "sl427", NULL};

int cfg_uplink_tp_len(cfg_uplink_protocol p) { return p == CFG_UPLINK_SL427 ? 7 : 5; }

void cfg_uplink_free(cfg_uplink *u) {
  if (!u) return;
  free(u->stations);
  u->stations = NULL;
  u->nstations = 0;
}

/* A host name, an IPv4 address or an IPv6 literal (without brackets). */
static bool valid_host(const char *h) {
  if (!h[0]) return false;
  bool colon = strchr(h, ':') != NULL;
  for (const char *p = h; *p; p++) {
    char ch = *p;
    bool digit = ch >= '0' && ch <= '9', hex = (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
    bool alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
    if (colon ? !(digit || hex || ch == ':' || ch == '.')
              : !(digit || alpha || ch == '-' || ch == '.' || ch == '_'))
      return false;
  }
  return true;
}

static const ydoc_node *need(ctx *x, const ydoc_node *m, const char *key, const char *where) {
  const ydoc_node *v = ydoc_get(m, key);
  if (!v) ERR(x, m, "missing required key \"%s\" %s", key, where);
  return v;
}

static int opt_dur(ctx *x, const ydoc_node *m, const char *key, int64_t min, int64_t max,
                   int64_t *out) {
  const ydoc_node *v = ydoc_get(m, key);
  if (!v) return 0;
  return ydoc_duration_ms(x->d, v, min, max, out, x->err, x->errlen);
}

static int hexval(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* The station's address: admin + station, or raw_address. */
static int station_address(ctx *x, const ydoc_node *m, cfg_uplink_station *st) {
  const ydoc_node *admin = ydoc_get(m, "admin"), *num = ydoc_get(m, "station");
  const ydoc_node *raw = ydoc_get(m, "raw_address");
  if (raw && (admin || num))
    return ERR(x, raw, "give either raw_address or admin and station, not both");
  if (raw) {
    const char *s;
    if (ydoc_str(x->d, raw, &s, x->err, x->errlen)) return -1;
    bool ok = strlen(s) == 10;
    for (int i = 0; ok && i < 10; i++) ok = hexval(s[i]) >= 0;
    if (!ok)
      return ERR(x, raw, "expected ten hexadecimal digits (the five address bytes as "
                         "sent, such as \"5303810D00\")");
    for (int i = 0; i < 5; i++)
      st->address[i] = (uint8_t)(hexval(s[2 * i]) << 4 | hexval(s[2 * i + 1]));
    return 0;
  }
  if (!admin) return ERR(x, m, "missing required key \"admin\" in station (or raw_address)");
  if (!num) return ERR(x, m, "missing required key \"station\" in station (or raw_address)");
  const char *a;
  if (ydoc_str(x->d, admin, &a, x->err, x->errlen)) return -1;
  bool digits = strlen(a) == 6;
  for (int i = 0; digits && i < 6; i++) digits = a[i] >= '0' && a[i] <= '9';
  if (!digits)
    return ERR(x, admin, "expected the six-digit administrative division code, such as "
                         "\"530381\" (quote it to keep leading zeros)");
  int64_t n;
  if (ydoc_int(x->d, num, 1, 60000, &n, x->err, x->errlen)) return -1;
  memcpy(st->admin, a, 7);
  st->station = (unsigned)n;
  szy_addr_make(st->address, a, (unsigned)n);
  return 0;
}

/* The station's meters: ids that exist, each in at most one station
 * (OWNER[meter] is the station index + 1 that lists it). */
static int station_meters(ctx *x, const ydoc_node *m, cfg_uplink_station *st, size_t si,
                          size_t *owner) {
  const ydoc_node *ms = need(x, m, "meters", "in station");
  if (!ms) return -1;
  if (ydoc_check_seq(x->d, ms, "meters of a station", x->err, x->errlen)) return -1;
  if (ms->n == 0) return ERR(x, ms, "a station reports at least one meter");
  if (ms->n > CFG_UPLINK_STATION_METERS_MAX)
    return ERR(x, ms, "a station reports at most %d meters (one frame), got %zu",
               CFG_UPLINK_STATION_METERS_MAX, ms->n);
  for (size_t i = 0; i < ms->n; i++) {
    const char *id;
    if (ydoc_str(x->d, ms->items[i], &id, x->err, x->errlen)) return -1;
    int k = cfg_meter_index(x->c, id);
    if (k < 0) return ERR(x, ms->items[i], "no meter \"%s\" in meters", id);
    if (owner[k] == si + 1)
      return ERR(x, ms->items[i], "meter \"%s\" is listed twice in this station", id);
    if (owner[k]) {
      const cfg_uplink_station *o = &x->c->uplink.stations[owner[k] - 1];
      return ERR(x, ms->items[i], "meter \"%s\" is already reported by the station at line %d",
                 id, o->line);
    }
    owner[k] = si + 1;
    st->meters[st->nmeters++] = (uint32_t)k;
  }
  return 0;
}

static int parse_station(ctx *x, const ydoc_node *m, size_t si, size_t *owner) {
  cfg_uplink *u = &x->c->uplink;
  cfg_uplink_station *st = &u->stations[si];
  if (ydoc_check_map(x->d, m, "station", station_keys, x->err, x->errlen)) return -1;
  st->line = m->line;
  st->col = m->col;
  if (station_address(x, m, st) || station_meters(x, m, st, si, owner)) return -1;
  for (size_t j = 0; j < si; j++)
    if (memcmp(u->stations[j].address, st->address, 5) == 0)
      return ERR(x, m, "the same address as the station at line %d", u->stations[j].line);
  return 0;
}

static int parse_stations(ctx *x, const ydoc_node *u) {
  const ydoc_node *s = need(x, u, "stations", "in uplink");
  if (!s) return -1;
  if (ydoc_check_seq(x->d, s, "uplink.stations", x->err, x->errlen)) return -1;
  if (s->n == 0) return ERR(x, s, "uplink.stations needs at least one station");
  if (s->n > CFG_UPLINK_STATIONS_MAX)
    return ERR(x, s, "too many stations: %zu (at most %d)", s->n, CFG_UPLINK_STATIONS_MAX);
  cfg_uplink *up = &x->c->uplink;
  up->stations = calloc(s->n, sizeof *up->stations);
  size_t *owner = calloc(x->c->nmeters ? x->c->nmeters : 1, sizeof *owner);
  int rc = -1;
  if (!up->stations || !owner) {
    ERR(x, s, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < s->n; i++) {
    if (parse_station(x, s->items[i], i, owner)) goto out;
    up->nstations = i + 1;
  }
  rc = 0;
out:
  free(owner);
  return rc;
}

static int parse_endpoint(ctx *x, const ydoc_node *m) {
  cfg_uplink *u = &x->c->uplink;
  const ydoc_node *h = need(x, m, "host", "in uplink"), *p;
  const char *s;
  int64_t port;
  if (!h || ydoc_str(x->d, h, &s, x->err, x->errlen)) return -1;
  /* An IPv6 address in brackets, as written in a URL or host:port. */
  size_t n = strlen(s);
  char bare[sizeof u->host];
  if (n > 2 && s[0] == '[' && s[n - 1] == ']' && n - 2 < sizeof bare) {
    memcpy(bare, s + 1, n - 2);
    bare[n - 2] = '\0';
    if (strchr(bare, ':')) s = bare, n -= 2;
  }
  if (!valid_host(s) || n >= sizeof u->host)
    return ERR(x, h, "expected a host name or an IP address for the centre");
  memcpy(u->host, s, n + 1);
  if (!(p = need(x, m, "port", "in uplink"))) return -1;
  if (ydoc_int(x->d, p, 1, 65535, &port, x->err, x->errlen)) return -1;
  u->port = (int)port;
  return 0;
}

int cfg_uplink_parse(const ydoc *d, const ydoc_node *root, cfg *c, char *err,
                     size_t errlen) {
  ctx x = {d, c, err, errlen};
  cfg_uplink *u = &c->uplink;
  memset(u, 0, sizeof *u);
  u->report_interval_ms = 5 * 60000;
  u->heartbeat_ms = 60000;
  u->confirm_timeout_ms = 10000;
  u->delay_minutes = 10;
  const ydoc_node *m = ydoc_get(root, "uplink");
  if (!m) return 0;
  if (ydoc_check_map(d, m, "uplink", uplink_keys, err, errlen)) return -1;
  const ydoc_node *v = ydoc_get(m, "protocol");
  int proto = 0;
  if (v && ydoc_enum(d, v, protocol_names, &proto, err, errlen)) return -1;
  u->protocol = (cfg_uplink_protocol)proto;
  int64_t delay = u->delay_minutes;
  if (parse_endpoint(&x, m) ||
      opt_dur(&x, m, "report_interval", 10000, 86400000, &u->report_interval_ms) ||
      opt_dur(&x, m, "heartbeat", 1000, 86400000, &u->heartbeat_ms) ||
      opt_dur(&x, m, "confirm_timeout", 100, 600000, &u->confirm_timeout_ms))
    return -1;
  if ((v = ydoc_get(m, "delay_minutes")) &&
      ydoc_int(d, v, 0, 255, &delay, err, errlen))
    return -1;
  u->delay_minutes = (int)delay;
  if (parse_stations(&x, m)) return -1;
  u->enabled = true;
  return 0;
}
