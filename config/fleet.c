#include "fleet.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ydoc.h"

static const char *const root_keys[] = {"fleet",   "mqtt",     "online", "report_grace",
                                        "reports", "register", "storage", NULL};
static const char *const storage_keys[] = {"path", NULL};
static const char *const fleet_keys[] = {"id", "name", "timezone", NULL};
static const char *const reports_keys[] = {"periods",    "push_url",     "ca_file",
                                           "token_file", "push_timeout", NULL};
static const char *const mqtt_keys[] = {"url", "client_id", "topic_prefix", "version",
                                        NULL};
static const char *const online_keys[] = {"baseline", NULL};
static const char *const member_keys[] = {"site", "meter", "name", "county", NULL};

#define MAX_MEMBERS 20000

static int text(const ydoc *d, const ydoc_node *m, const char *key, bool required,
                char *dst, size_t len, bool id, char *err, size_t errlen) {
  const ydoc_node *v = ydoc_get(m, key);
  if (!v) {
    if (!required) return 0;
    return ydoc_errf(d, m, err, errlen, "missing required key \"%s\"", key);
  }
  const char *s;
  if (id ? ydoc_id(d, v, len, &s, err, errlen) : ydoc_str(d, v, &s, err, errlen))
    return -1;
  if (strlen(s) >= len)
    return ydoc_errf(d, v, err, errlen, "\"%s\" is longer than %zu characters", key,
                     len - 1);
  memcpy(dst, s, strlen(s) + 1);
  return 0;
}

/* A path from the file, relative ones taken from the file's folder. */
/* A token file that exists must be a regular file (see cfg_file_kind); one
 * that does not exist yet is the fleet view's to report at start. */
static int secret_file(const ydoc *d, const ydoc_node *m, const char *key, const char *path,
                       char *err, size_t errlen) {
  struct stat st;
  if (!path[0] || stat(path, &st) != 0) return 0;
  const char *kind = cfg_file_kind(st.st_mode);
  if (!kind) return 0;
  return ydoc_errf(d, ydoc_get(m, key), err, errlen,
                   "%s %s is %s: expected a regular file holding the secret on its first "
                   "line",
                   key, path, kind);
}

static int path_of(const ydoc *d, const ydoc_node *m, const char *key, const char *cfgpath,
                   char *dst, size_t len, char *err, size_t errlen) {
  const ydoc_node *v = ydoc_get(m, key);
  const char *s;
  if (!v) return 0;
  if (ydoc_str(d, v, &s, err, errlen)) return -1;
  if (!s[0]) return 0;
  int n;
  if (s[0] == '/') {
    n = snprintf(dst, len, "%s", s);
  } else {
    char dir[CFG_PATH_MAX];
    snprintf(dir, sizeof dir, "%s", cfgpath);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0'; else snprintf(dir, sizeof dir, ".");
    char *abs = realpath(dir, NULL);
    n = snprintf(dst, len, "%s/%s", abs ? abs : dir, s);
    free(abs);
  }
  if (n < 0 || (size_t)n >= len)
    return ydoc_errf(d, v, err, errlen, "the path of \"%s\" is too long", key);
  return 0;
}

int fleet_cfg_load(const char *path, fleet_cfg **out, char *err, size_t errlen) {
  *out = NULL;
  ydoc *d = ydoc_load_file(path, err, errlen);
  if (!d) return -1;
  fleet_cfg *f = calloc(1, sizeof *f);
  if (!f) {
    snprintf(err, errlen, "%s:1:1: out of memory", path);
    ydoc_free(d);
    return -1;
  }
  snprintf(f->path, sizeof f->path, "%s", path);
  snprintf(f->mqtt.topic_prefix, sizeof f->mqtt.topic_prefix, "water");
  f->mqtt.version = 0; /* auto */
  f->baseline = CFG_DEFAULT_BASELINE;
  f->report_grace_ms = 3600000;
  f->push_timeout_ms = 30000;
  const ydoc_node *root = ydoc_root(d);
  if (!root) {
    snprintf(err, errlen, "%s:1:1: the file is empty (expected fleet, mqtt and register)",
             path);
    goto fail;
  }
  if (ydoc_check_map(d, root, "the top level", root_keys, err, errlen)) goto fail;
  const ydoc_node *fl = ydoc_get(root, "fleet");
  if (!fl) {
    ydoc_errf(d, root, err, errlen, "missing required key \"fleet\" at the top level");
    goto fail;
  }
  if (ydoc_check_map(d, fl, "fleet", fleet_keys, err, errlen) ||
      text(d, fl, "id", true, f->id, sizeof f->id, true, err, errlen))
    goto fail;
  snprintf(f->name, sizeof f->name, "%s", f->id);
  snprintf(f->timezone, sizeof f->timezone, "Asia/Shanghai");
  if (text(d, fl, "name", false, f->name, sizeof f->name, false, err, errlen) ||
      text(d, fl, "timezone", false, f->timezone, sizeof f->timezone, false, err, errlen))
    goto fail;

  const ydoc_node *mq = ydoc_get(root, "mqtt");
  if (!mq) {
    ydoc_errf(d, root, err, errlen, "missing required key \"mqtt\" at the top level");
    goto fail;
  }
  if (ydoc_check_map(d, mq, "mqtt", mqtt_keys, err, errlen) ||
      text(d, mq, "url", true, f->mqtt.url, sizeof f->mqtt.url, false, err, errlen))
    goto fail;
  if (strncmp(f->mqtt.url, "mqtt://", 7) != 0 && strncmp(f->mqtt.url, "mqtts://", 8) != 0) {
    ydoc_errf(d, ydoc_get(mq, "url"), err, errlen,
              "expected an mqtt:// or mqtts:// url, got \"%s\"", f->mqtt.url);
    goto fail;
  }
  snprintf(f->mqtt.client_id, sizeof f->mqtt.client_id, "fleet-%s", f->id);
  if (text(d, mq, "client_id", false, f->mqtt.client_id, sizeof f->mqtt.client_id, true,
           err, errlen) ||
      text(d, mq, "topic_prefix", false, f->mqtt.topic_prefix,
           sizeof f->mqtt.topic_prefix, false, err, errlen))
    goto fail;
  const ydoc_node *ver = ydoc_get(mq, "version");
  if (ver) {
    static const char *const versions[] = {"5", "3.1.1", "4", "auto", NULL};
    int vi;
    if (ydoc_enum(d, ver, versions, &vi, err, errlen)) goto fail;
    f->mqtt.version = vi == 0 ? 5 : vi == 3 ? 0 : 4;
  }
  const ydoc_node *on = ydoc_get(root, "online");
  if (on) {
    if (ydoc_check_map(d, on, "online", online_keys, err, errlen)) goto fail;
    const ydoc_node *b = ydoc_get(on, "baseline");
    if (b && ydoc_double(d, b, 0, 1, &f->baseline, err, errlen)) goto fail;
  }
  const ydoc_node *g = ydoc_get(root, "report_grace");
  if (g && ydoc_duration_ms(d, g, 0, 7 * 86400000LL, &f->report_grace_ms, err, errlen))
    goto fail;

  const ydoc_node *st = ydoc_get(root, "storage");
  if (st && (ydoc_check_map(d, st, "storage", storage_keys, err, errlen) ||
             path_of(d, st, "path", path, f->storage_path, sizeof f->storage_path, err,
                     errlen)))
    goto fail;
  const ydoc_node *rp = ydoc_get(root, "reports");
  if (rp) {
    if (ydoc_check_map(d, rp, "reports", reports_keys, err, errlen)) goto fail;
    const ydoc_node *u = ydoc_get(rp, "push_url");
    if (u) {
      if (text(d, rp, "push_url", false, f->push_url, sizeof f->push_url, false, err, errlen))
        goto fail;
      if (f->push_url[0] && strncmp(f->push_url, "http://", 7) &&
          strncmp(f->push_url, "https://", 8)) {
        ydoc_errf(d, u, err, errlen, "expected an http:// or https:// url, got \"%s\"",
                  f->push_url);
        goto fail;
      }
      if (f->push_url[0] && !f->storage_path[0]) {
        ydoc_errf(d, u, err, errlen,
                  "pushing reports needs storage.path, where they wait until accepted");
        goto fail;
      }
    }
    const ydoc_node *pt = ydoc_get(rp, "push_timeout");
    if (path_of(d, rp, "ca_file", path, f->ca_file, sizeof f->ca_file, err, errlen) ||
        path_of(d, rp, "token_file", path, f->token_file, sizeof f->token_file, err,
                errlen) ||
        secret_file(d, rp, "token_file", f->token_file, err, errlen) ||
        (pt && ydoc_duration_ms(d, pt, 1000, 600000, &f->push_timeout_ms, err, errlen)))
      goto fail;
    const ydoc_node *p = ydoc_get(rp, "periods");
    if (p) {
      if (ydoc_check_seq(d, p, "reports.periods", err, errlen)) goto fail;
      if (p->n > CFG_PERIODS_MAX) {
        ydoc_errf(d, p, err, errlen, "at most %d report periods", CFG_PERIODS_MAX);
        goto fail;
      }
      for (size_t i = 0; i < p->n; i++) {
        const char *s;
        if (ydoc_str(d, p->items[i], &s, err, errlen)) goto fail;
        if (!cfg_period_valid(s)) {
          ydoc_errf(d, p->items[i], err, errlen,
                    "expected a report period: hourly, daily, monthly or a duration "
                    "of at least 1s such as 15m, got \"%s\"", s);
          goto fail;
        }
        snprintf(f->periods[f->nperiods++], sizeof f->periods[0], "%s", s);
      }
    }
  }
  const ydoc_node *reg = ydoc_get(root, "register");
  if (!reg) {
    ydoc_errf(d, root, err, errlen, "missing required key \"register\" at the top level");
    goto fail;
  }
  if (ydoc_check_seq(d, reg, "register", err, errlen)) goto fail;
  if (reg->n == 0 || reg->n > MAX_MEMBERS) {
    ydoc_errf(d, reg, err, errlen, "the register needs 1 to %d meters", MAX_MEMBERS);
    goto fail;
  }
  f->members = calloc(reg->n, sizeof *f->members);
  if (!f->members) goto fail;
  for (size_t i = 0; i < reg->n; i++) {
    const ydoc_node *m = reg->items[i];
    fleet_member *fm = &f->members[i];
    if (ydoc_check_map(d, m, "register entry", member_keys, err, errlen) ||
        text(d, m, "site", true, fm->site, sizeof fm->site, true, err, errlen) ||
        text(d, m, "meter", true, fm->meter, sizeof fm->meter, true, err, errlen))
      goto fail;
    snprintf(fm->name, sizeof fm->name, "%s", fm->meter);
    snprintf(fm->county, sizeof fm->county, "-");
    if (text(d, m, "name", false, fm->name, sizeof fm->name, false, err, errlen) ||
        text(d, m, "county", false, fm->county, sizeof fm->county, false, err, errlen))
      goto fail;
    for (size_t j = 0; j < i; j++) {
      if (!strcmp(f->members[j].site, fm->site) && !strcmp(f->members[j].meter, fm->meter)) {
        ydoc_errf(d, m, err, errlen, "meter %s of site %s is registered twice",
                  fm->meter, fm->site);
        goto fail;
      }
    }
    f->nmembers++;
  }
  ydoc_free(d);
  *out = f;
  return 0;
fail:
  ydoc_free(d);
  fleet_cfg_free(f);
  return -1;
}

void fleet_cfg_free(fleet_cfg *f) {
  if (!f) return;
  free(f->members);
  free(f);
}
