#include "sim_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"

/* Control connections at once, and how long one may sit idle. */
#define CTL_MAX 16
#define CTL_IDLE_MS 5000
/* One control command line, and one line of the status reply at most: two
 * ids, a unit, a fault name and four counters. */
#define CTL_LINE_MAX 512
#define STATUS_LINE_MAX (2 * CFG_ID_MAX + 160)
/* Room for any reply but status (help, errors, acknowledgements). */
#define CTL_REPLY_BASE 1024

struct ctl_conn {
  uv_pipe_t pipe;
  uv_timer_t idle;
  sim *owner;
  ctl_conn *next;
  char line[CTL_LINE_MAX];
  size_t len;
  bool done;
  bool closing;
  int handles_open;
};

static void ctl_on_close(uv_handle_t *h) {
  ctl_conn *c = h->data;
  if (--c->handles_open == 0) free(c);
}

void sim__ctl_close(ctl_conn *c) {
  if (c->closing) return;
  c->closing = true;
  sim *s = c->owner;
  for (ctl_conn **pp = &s->ctls; *pp; pp = &(*pp)->next) {
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  }
  s->nctls--;
  uv_close((uv_handle_t *)&c->idle, ctl_on_close);
  uv_close((uv_handle_t *)&c->pipe, ctl_on_close);
}

static void ctl_on_idle(uv_timer_t *t) {
  ctl_conn *c = t->data;
  log_debug("control: closing a connection idle for %d ms", CTL_IDLE_MS);
  sim__ctl_close(c);
}

static void ctl_on_written(uv_write_t *req, int status) {
  (void)status;
  ctl_conn *c = req->handle->data;
  free(req);
  /* The reply is out (or the connection is going): one command per
   * connection, so close it now, not before the write has finished. */
  sim__ctl_close(c);
}

static void ctl_reply(ctl_conn *c, bool too_long) {
  size_t cap = sim_control_reply_max(c->owner);
  write_req *w = malloc(sizeof *w + cap);
  if (!w) {
    sim__ctl_close(c);
    return;
  }
  char *text = (char *)w->data;
  if (too_long)
    snprintf(text, cap, "error: command too long\n");
  else
    sim_control(c->owner, c->line, text, cap);
  w->buf = uv_buf_init(text, (unsigned)strlen(text));
  if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &w->buf, 1, ctl_on_written) != 0) {
    free(w);
    sim__ctl_close(c);
  }
}

static void ctl_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  ctl_conn *c = h->data;
  /* Never empty: reading stops once the line is full. */
  size_t room = sizeof c->line - 1 - c->len;
  *buf = uv_buf_init(c->line + c->len, (unsigned)room);
}

static void ctl_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  ctl_conn *c = s->data;
  if (c->done || c->closing) return;
  if (nread < 0 && c->len == 0) {
    sim__ctl_close(c);
    return;
  }
  if (nread > 0) c->len += (size_t)nread;
  c->line[c->len] = '\0';
  char *nl = strchr(c->line, '\n');
  bool full = c->len >= sizeof c->line - 1;
  if (!nl && nread >= 0 && !full) return;
  if (nl) *nl = '\0';
  c->done = true;
  uv_read_stop(s);
  ctl_reply(c, !nl && full);
}

static void ctl_on_connection(uv_stream_t *server, int status) {
  sim *s = server->data;
  if (status < 0) return;
  ctl_conn *c = calloc(1, sizeof *c);
  if (!c) return;
  c->owner = s;
  uv_pipe_init(s->loop, &c->pipe, 0);
  uv_timer_init(s->loop, &c->idle);
  c->pipe.data = c;
  c->idle.data = c;
  c->handles_open = 2;
  c->next = s->ctls;
  s->ctls = c;
  s->nctls++;
  if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0) {
    sim__ctl_close(c);
    return;
  }
  if (s->nctls > CTL_MAX) {
    log_warn("control: more than %d connections, refusing one", CTL_MAX);
    sim__ctl_close(c);
    return;
  }
  /* A client that connects and says nothing must not hold a connection (or
   * shutdown) forever. */
  uv_timer_start(&c->idle, ctl_on_idle, CTL_IDLE_MS, 0);
  uv_read_start((uv_stream_t *)&c->pipe, ctl_alloc, ctl_on_read);
}

static sim_meter *find_meter(sim *s, const char *id) {
  for (size_t i = 0; i < s->nmeters; i++)
    if (strcmp(s->meters[i].cfg->id, id) == 0) return &s->meters[i];
  return NULL;
}

/* Delayed answers of meter M still to go out. */
static size_t pending_answers(const sim *s, const sim_meter *m) {
  const sim_bus *b = &s->buses[m->cfg->bus];
  if (b->cfg->transport == CFG_TRANSPORT_RTU) return sim__late_count(b->late, m);
  size_t n = 0;
  for (const sim_conn *c = b->conns; c; c = c->next) n += sim__late_count(c->late, m);
  return n;
}

size_t sim_control_reply_max(const sim *s) {
  return CTL_REPLY_BASE + (s ? s->nmeters : 0) * STATUS_LINE_MAX;
}

static int control_status(sim *s, char *out, size_t outlen) {
  size_t used = 0;
  int w;
  for (size_t i = 0; i < s->nmeters; i++) {
    sim_meter *m = &s->meters[i];
    w = snprintf(out + used, outlen - used,
                 "%s bus=%s unit=%d fault=%s requests=%llu answers=%llu "
                 "pending=%zu\n",
                 m->cfg->id, s->cfg->buses[m->cfg->bus].id, m->cfg->unit,
                 sim_fault_name(m->fault), (unsigned long long)m->requests,
                 (unsigned long long)m->answers, pending_answers(s, m));
    if (w < 0 || (size_t)w >= outlen - used) goto too_long;
    used += (size_t)w;
  }
  for (size_t i = 0; i < s->nbuses; i++) {
    const sim_bus *b = &s->buses[i];
    if (b->cfg->transport == CFG_TRANSPORT_RTU_DTU) continue;
    if (b->cfg->transport == CFG_TRANSPORT_RTU && b->clients < 0)
      w = snprintf(out + used, outlen - used, "bus %s open=unknown closes=%llu\n",
                   b->cfg->id, (unsigned long long)b->port_closes);
    else if (b->cfg->transport == CFG_TRANSPORT_RTU)
      w = snprintf(out + used, outlen - used, "bus %s open=%d closes=%llu\n", b->cfg->id,
                   b->clients, (unsigned long long)b->port_closes);
    else
      w = snprintf(out + used, outlen - used, "bus %s accepted=%llu open=%zu\n", b->cfg->id,
                   (unsigned long long)b->accepted, b->nconns);
    if (w < 0 || (size_t)w >= outlen - used) goto too_long;
    used += (size_t)w;
  }
  w = snprintf(out + used, outlen - used, "ok\n");
  if (w < 0 || (size_t)w >= outlen - used) goto too_long;
  return 0;
too_long:
  /* Never a cut reply: a reader would take a partial list for the whole. */
  snprintf(out, outlen, "error: the status of %zu meters does not fit in %zu bytes\n",
           s->nmeters, outlen);
  return -1;
}

int sim_control(sim *s, const char *line, char *out, size_t outlen) {
  if (!out || outlen == 0) return -1;
  char cmd[32] = "", a[CFG_ID_MAX] = "", b[PROF_NAME_MAX] = "", c[64] = "";
  char extra[8] = "";
  int n = sscanf(line, "%31s %63s %47s %63s %7s", cmd, a, b, c, extra);
  if (n <= 0) {
    snprintf(out, outlen, "error: empty command (try: help)\n");
    return -1;
  }
  if (strcmp(cmd, "help") == 0) {
    snprintf(out, outlen,
             "commands:\n"
             "  fault METER MODE     none|offline|flaky|slow|crc|exception|garbage|reset\n"
             "  pin METER FIELD VAL  pin a field to a value\n"
             "  unpin METER FIELD    let the physics drive it again\n"
             "  status               one line per meter, then per tcp or rtu-over-tcp bus\n"
             "  dtu BUS ACTION       status|drop|reconnect|off|on|garbage|heartbeat|inside on|off\n"
             "ok\n");
    return 0;
  }
  if (strcmp(cmd, "status") == 0) return control_status(s, out, outlen);
  if (strcmp(cmd, "dtu") == 0 && (n == 3 || n == 4))
    return sim__dtu_control(s, a, b, n == 4 ? c : "", out, outlen);
  sim_meter *m = n >= 2 ? find_meter(s, a) : NULL;
  if (strcmp(cmd, "fault") == 0 || strcmp(cmd, "pin") == 0 ||
      strcmp(cmd, "unpin") == 0) {
    if (!m) {
      snprintf(out, outlen, "error: no meter \"%s\"\n", a);
      return -1;
    }
  }
  if (strcmp(cmd, "fault") == 0 && n == 3) {
    sim_fault f;
    if (sim_fault_parse(b, &f) != 0) {
      snprintf(out, outlen,
               "error: unknown fault \"%s\" (expected none, offline, flaky, "
               "slow, crc, exception, garbage or reset)\n", b);
      return -1;
    }
    sim_meter_set_fault(m, f);
    log_info("meter %s: fault %s", m->cfg->id, sim_fault_name(f));
    snprintf(out, outlen, "ok %s fault %s\n", m->cfg->id, sim_fault_name(f));
    return 0;
  }
  if (strcmp(cmd, "pin") == 0 && n == 4) {
    char *end;
    double v = strtod(c, &end);
    if (*end != '\0') {
      snprintf(out, outlen, "error: \"%s\" is not a number\n", c);
      return -1;
    }
    if (sim_meter_pin(m, b, v, true) != 0) {
      snprintf(out, outlen, "error: meter %s has no field \"%s\"\n", a, b);
      return -1;
    }
    snprintf(out, outlen, "ok %s %s %g\n", a, b, v);
    return 0;
  }
  if (strcmp(cmd, "unpin") == 0 && n == 3) {
    if (sim_meter_pin(m, b, 0, false) != 0) {
      snprintf(out, outlen, "error: meter %s has no field \"%s\"\n", a, b);
      return -1;
    }
    snprintf(out, outlen, "ok %s %s unpinned\n", a, b);
    return 0;
  }
  snprintf(out, outlen, "error: cannot understand \"%.100s\" (try: help)\n", line);
  return -1;
}

int sim__control_listen(sim *s, char *err, size_t errlen) {
  struct stat st;
  if (lstat(s->control_path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      snprintf(err, errlen, "%s exists and is not a socket; refusing to replace it",
               s->control_path);
      return -1;
    }
    unlink(s->control_path);
  }
  uv_pipe_init(s->loop, &s->control, 0);
  s->control.data = s;
  s->control_open = true;
  int rc = uv_pipe_bind(&s->control, s->control_path);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&s->control, 16, ctl_on_connection);
  if (rc != 0) {
    snprintf(err, errlen, "cannot listen on control socket %s: %s",
             s->control_path, uv_strerror(rc));
    return -1;
  }
  return 0;
}
