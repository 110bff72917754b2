#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include "poll/busload.h"
#include "cfg.h"
#include "ydoc.h"
#include "cli/cli.h"
#include "transport/mb_poll.h"
#include "profile/planner.h"
#include "transport/transport.h"

int cli_check_config(const char *path, const char *profile_dir) {
  char err[CFG_ERR_MAX];
  cfg *c = NULL;
  if (cfg_load(path, profile_dir, &c, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  printf("%s: ok: site %s, %zu meters on %zu buses\n", path, c->site.id,
         c->nmeters, c->nbuses);
  for (size_t b = 0; b < c->nbuses; b++) {
    char w[512];
    if (busload_warning(c, b, w, sizeof w)) printf("%s: warning: %s\n", path, w);
  }
  for (size_t i = 0; i < c->ndtu_servers; i++)
    if (c->dtu_servers[i].nallow == 0)
      printf("%s: warning: DTU server %s has no allow list: DTUs are taken from any "
             "address\n", path, c->dtu_servers[i].id);
  cfg_free(c);
  return 0;
}

static void read_usage(FILE *f) {
  fprintf(f,
          "usage: intake-collector read --config FILE [--meter ID]... [--json]\n"
          "                             [--wait DURATION]\n"
          "\n"
          "Polls each meter once (or only the ones named) over its bus and\n"
          "prints the decoded fields, or why the poll failed. For commissioning:\n"
          "it exits 0 only when every meter answered. On an rtu-dtu bus it\n"
          "listens on the bus's DTU server address until the DTU registers, for\n"
          "at most --wait (default 2m); the daemon must not be listening there.\n");
}

/* dtu_servers[].allow for the blocking transport: CTX is the server. */
static bool dtu_allow(const void *ctx, const void *sa) {
  const cfg_dtu_server *sv = ctx;
  if (sv->nallow == 0) return true;
  const struct sockaddr_storage *ss = sa;
  int family = ss->ss_family;
  const uint8_t *ip = family == AF_INET
                          ? (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr
                          : (const uint8_t *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
  for (size_t i = 0; i < sv->nallow; i++)
    if (cfg_cidr_contains(&sv->allow[i], family, ip)) return true;
  return false;
}

/* Which bus a DTU's first bytes register, as the daemon's server judges
 * them (the longest registration matched wins). */
typedef struct {
  const cfg *c;
  size_t bus;
} dtu_judge_ctx;

static int dtu_judge(const void *ctx, const uint8_t *buf, size_t len, bool at_deadline) {
  const dtu_judge_ctx *j = ctx;
  size_t bus;
  bool more = cfg_dtu_match(j->c, j->c->buses[j->bus].server, buf, len, &bus);
  if (more && !at_deadline) return 0;
  return bus == j->bus ? 1 : -1;
}

/* An rtu-dtu bus's transport listens where its server does. */
static void dtu_options(const cfg *c, const cfg_bus *b, int64_t wait_ms,
                        const dtu_judge_ctx *jc, transport_options *o) {
  const cfg_dtu_server *sv = &c->dtu_servers[b->server];
  snprintf(o->host, sizeof o->host, "%s", sv->host);
  o->port = sv->port;
  o->wait_ms = wait_ms;
  o->register_timeout_ms = sv->register_timeout_ms;
  o->allow = dtu_allow;
  o->allow_ctx = sv;
  o->judge = dtu_judge;
  o->judge_ctx = jc;
  o->reg_max = cfg_dtu_reg_max(c, b->server);
}

/* Print one meter's outcome. */
static void print_result(const cfg_meter *m, const cfg_bus *b, int rc,
                         const tr_error *e, const double *values, int requests,
                         bool json) {
  const mb_profile *p = m->profile;
  if (json) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "meter", m->id);
    cJSON_AddStringToObject(o, "bus", b->id);
    cJSON_AddNumberToObject(o, "unit", m->unit);
    cJSON_AddStringToObject(o, "profile", p->name);
    cJSON_AddBoolToObject(o, "ok", rc == TR_OK);
    cJSON_AddNumberToObject(o, "requests", requests);
    if (rc == TR_OK) {
      cJSON *fields = cJSON_AddObjectToObject(o, "fields");
      for (size_t i = 0; i < p->nfields; i++)
        cJSON_AddNumberToObject(fields, p->fields[i].name, values[i]);
    } else {
      cJSON_AddStringToObject(o, "error", tr_code_name(rc));
      if (rc == TR_EEXCEPTION)
        cJSON_AddNumberToObject(o, "exception", e->exception);
      cJSON_AddStringToObject(o, "detail", e->detail);
    }
    char *s = cJSON_PrintUnformatted(o);
    if (s) puts(s);
    free(s);
    cJSON_Delete(o);
    return;
  }
  printf("%s (%s) on %s unit %d, profile %s: ", m->id, m->name, b->id, m->unit,
         p->name);
  if (rc != TR_OK) {
    printf("FAILED, %s: %s\n", tr_code_name(rc), e->detail);
    return;
  }
  printf("ok, %d request%s\n", requests, requests == 1 ? "" : "s");
  for (size_t i = 0; i < p->nfields; i++)
    printf("  %-24s %.10g%s%s\n", p->fields[i].name, values[i],
           p->fields[i].unit[0] ? " " : "", p->fields[i].unit);
}

int cli_read(int argc, char **argv) {
  const char *config = NULL, *profile_dir = NULL;
  bool json = false;
  int64_t wait_ms = 2 * 60 * 1000;
  const char *only[256];
  size_t nonly = 0;
  static const struct option longopts[] = {
      {"config", required_argument, 0, 'c'},
      {"meter", required_argument, 0, 'm'},
      {"json", no_argument, 0, 'j'},
      {"profile-dir", required_argument, 0, 'p'},
      {"wait", required_argument, 0, 'w'},
      {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  int ch;
  optind = 1;
  while ((ch = getopt_long(argc, argv, "c:m:jw:h", longopts, NULL)) != -1) {
    switch (ch) {
      case 'c': config = optarg; break;
      case 'm':
        if (nonly == sizeof only / sizeof only[0]) {
          fprintf(stderr, "read: too many --meter options\n");
          return 2;
        }
        only[nonly++] = optarg;
        break;
      case 'j': json = true; break;
      case 'p': profile_dir = optarg; break;
      case 'w':
        if (ydoc_parse_duration(optarg, &wait_ms) != 0 || wait_ms < 1 ||
            wait_ms > 24 * 3600 * 1000) {
          fprintf(stderr, "read: --wait takes a duration such as 30s or 5m, got \"%s\"\n",
                  optarg);
          return 2;
        }
        break;
      case 'h': read_usage(stdout); return 0;
      default: read_usage(stderr); return 2;
    }
  }
  if (!config || optind != argc) {
    read_usage(stderr);
    return 2;
  }
  char err[CFG_ERR_MAX];
  cfg *c = NULL;
  if (cfg_load(config, profile_dir, &c, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  for (size_t i = 0; i < nonly; i++) {
    if (cfg_meter_index(c, only[i]) < 0) {
      fprintf(stderr, "read: %s has no meter \"%s\"\n", config, only[i]);
      cfg_free(c);
      return 2;
    }
  }

  int failures = 0;
  transport **tr = calloc(c->nbuses, sizeof *tr);
  dtu_judge_ctx *jc = calloc(c->nbuses, sizeof *jc);
  if (!tr || !jc) {
    free(tr);
    free(jc);
    cfg_free(c);
    return 1;
  }
  for (size_t i = 0; i < c->nmeters; i++) {
    const cfg_meter *m = &c->meters[i];
    bool wanted = nonly == 0;
    for (size_t j = 0; j < nonly; j++)
      if (strcmp(only[j], m->id) == 0) wanted = true;
    if (!wanted) continue;
    const cfg_bus *b = cfg_meter_bus(c, m);
    if (!tr[m->bus]) {
      transport_options topt;
      cfg_bus_transport_options(b, &topt);
      jc[m->bus] = (dtu_judge_ctx){.c = c, .bus = m->bus};
      if (b->transport == CFG_TRANSPORT_RTU_DTU)
        dtu_options(c, b, wait_ms, &jc[m->bus], &topt);
      tr[m->bus] = transport_new(&topt, err, sizeof err);
      if (!tr[m->bus]) {
        fprintf(stderr, "read: bus %s: %s\n", b->id, err);
        failures++;
        continue;
      }
    }
    mb_plan *plan = plan_build(m->profile, b->max_gap, b->max_registers, err,
                               sizeof err);
    if (!plan) {
      fprintf(stderr, "read: meter %s: %s\n", m->id, err);
      failures++;
      continue;
    }
    uint16_t *buf = calloc(plan->total_words ? plan->total_words : 1, sizeof *buf);
    double *values = calloc(m->profile->nfields ? m->profile->nfields : 1,
                            sizeof *values);
    tr_error e;
    int requests = 0;
    int rc = TR_EIO;
    if (buf && values)
      rc = mb_poll_meter(tr[m->bus], m->unit, plan, m->profile, buf, values, &e,
                         &requests);
    else
      snprintf(e.detail, sizeof e.detail, "out of memory");
    print_result(m, b, rc, &e, values, requests, json);
    if (rc != TR_OK) failures++;
    free(buf);
    free(values);
    plan_free(plan);
  }
  for (size_t i = 0; i < c->nbuses; i++) transport_free(tr[i]);
  free(tr);
  free(jc);
  cfg_free(c);
  return failures ? 1 : 0;
}
