#include "poll/dtuserver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/clock.h"

/* Connections taken from the backlog in one wake-up, at most: others wait
 * for the next turn of the loop, so a flood does not hold it. */
#define ACCEPT_BATCH 64
/* Addresses remembered as already reported, per kind of event; past it the
 * memory starts again (and each address is reported once more). */
#define SEEN_MAX 4096
/* How often bound connections are looked at for idle_timeout. */
#define SWEEP_MS 1000
/* Out of descriptors: the listening socket is left alone this long (its
 * connections wait in the backlog) rather than reported ready again and
 * again. */
#define ACCEPT_PAUSE_MS 100

typedef struct server server;

/* A connection that has not registered yet. */
typedef struct pending {
  uv_poll_t poll;
  int fd;
  server *sv;
  struct pending *prev, *next; /* in deadline order (accept order) */
  uint64_t deadline_ms;
  struct sockaddr_storage peer;
  size_t len;
  uint8_t buf[DTU_PKT_MAX];
} pending;

/* What the server keeps of an rtu-dtu bus. */
typedef struct {
  bool used;
  dtu_bus_info info;
  struct sockaddr_storage addr; /* the DTU's last address */
  bool has_addr;
  int64_t last_takeover_ms;     /* monotonic; 0 never */
} dtu_bus;

struct server {
  dtuservers *set;
  size_t index;
  const cfg_dtu_server *cfg;
  int fd;
  uv_poll_t listen;
  bool listen_open;
  uv_timer_t timer; /* the oldest pending connection's deadline */
  uv_timer_t sweep;  /* idle_timeout */
  uv_timer_t resume; /* accepting again after running out of descriptors */
  bool timers_open;
  pending *head, *tail;
  size_t npending;
  size_t reg_max; /* the longest registration among its buses */
};

struct dtuservers {
  uv_loop_t *loop;
  const cfg *cfg;
  dtu_links links;
  dtu_event_fn fn;
  void *ctx;
  server *servers;
  size_t n;
  dtu_bus *buses; /* by cfg bus index */
  uint64_t seen[SEEN_MAX * 2];
  size_t nseen;
};

/* ------------------------------------------------------------------------ */
/* Addresses                                                                */

/* The IP bytes of SA (IPv4 mapped into IPv6 taken as IPv4), for comparing
 * and matching. Their count; FAMILY set. */
static size_t ip_of(const struct sockaddr_storage *sa, int *family, const uint8_t **ip) {
  static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
  if (sa->ss_family == AF_INET) {
    *family = AF_INET;
    *ip = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
    return 4;
  }
  const uint8_t *a = (const uint8_t *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
  if (memcmp(a, mapped, 12) == 0) {
    *family = AF_INET;
    *ip = a + 12;
    return 4;
  }
  *family = AF_INET6;
  *ip = a;
  return 16;
}

static bool same_ip(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
  int fa, fb;
  const uint8_t *ia, *ib;
  size_t na = ip_of(a, &fa, &ia), nb = ip_of(b, &fb, &ib);
  return fa == fb && na == nb && memcmp(ia, ib, na) == 0;
}

static void addr_text(const struct sockaddr_storage *sa, char *buf, size_t cap) {
  int family;
  const uint8_t *ip;
  ip_of(sa, &family, &ip);
  char host[INET6_ADDRSTRLEN] = "?";
  inet_ntop(family, ip, host, sizeof host);
  unsigned port = sa->ss_family == AF_INET
                      ? ntohs(((const struct sockaddr_in *)sa)->sin_port)
                      : ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
  snprintf(buf, cap, family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, port);
}

static bool allowed(const server *sv, const struct sockaddr_storage *sa) {
  if (sv->cfg->nallow == 0) return true;
  int family;
  const uint8_t *ip;
  ip_of(sa, &family, &ip);
  for (size_t i = 0; i < sv->cfg->nallow; i++)
    if (cfg_cidr_contains(&sv->cfg->allow[i], family, ip)) return true;
  return false;
}

/* Has KIND been reported for SA's address by server SV before? Remembers
 * it. */
static bool seen_before(const server *sv, dtu_ev_kind kind, const struct sockaddr_storage *sa) {
  dtuservers *s = sv->set;
  int family;
  const uint8_t *ip;
  size_t n = ip_of(sa, &family, &ip);
  uint64_t h = 1469598103934665603ull ^ (uint64_t)kind ^ ((uint64_t)sv->index << 8);
  for (size_t i = 0; i < n; i++) h = (h ^ ip[i]) * 1099511628211ull;
  h |= 1; /* 0 marks a free slot */
  size_t cap = sizeof s->seen / sizeof s->seen[0];
  if (s->nseen >= SEEN_MAX) {
    memset(s->seen, 0, sizeof s->seen);
    s->nseen = 0;
  }
  for (size_t i = (size_t)(h % cap);; i = (i + 1) % cap) {
    if (s->seen[i] == h) return true;
    if (s->seen[i] == 0) {
      s->seen[i] = h;
      s->nseen++;
      return false;
    }
  }
}

static void tell(server *sv, dtu_ev_kind kind, size_t bus, const struct sockaddr_storage *sa,
                 const char *why) {
  dtuservers *s = sv->set;
  dtu_ev ev = {.kind = kind, .server = sv->index, .bus = bus, .why = why};
  if (sa) {
    addr_text(sa, ev.peer, sizeof ev.peer);
    ev.first = !seen_before(sv, kind, sa);
  }
  if (bus != SIZE_MAX && s->buses[bus].has_addr) {
    addr_text(&s->buses[bus].addr, ev.prev, sizeof ev.prev);
    ev.foreign = sa && !same_ip(&s->buses[bus].addr, sa);
  }
  s->fn(s->ctx, &ev);
}

/* ------------------------------------------------------------------------ */
/* Pending connections                                                      */

static void on_deadline(uv_timer_t *t);

static void free_pending(uv_handle_t *h) { free(h->data); }

static void drop_pending(pending *p) {
  server *sv = p->sv;
  if (p->prev) p->prev->next = p->next;
  else sv->head = p->next;
  if (p->next) p->next->prev = p->prev;
  else sv->tail = p->prev;
  sv->npending--;
  uv_close((uv_handle_t *)&p->poll, free_pending);
  if (p->fd >= 0) close(p->fd);
  p->fd = -1;
}

static void arm_timer(server *sv) {
  if (!sv->timers_open) return;
  if (!sv->head) {
    uv_timer_stop(&sv->timer);
    return;
  }
  uint64_t now = (uint64_t)clock_mono_ms();
  uint64_t due = sv->head->deadline_ms > now ? sv->head->deadline_ms - now : 0;
  uv_update_time(sv->set->loop);
  uv_timer_start(&sv->timer, on_deadline, due, 0);
}

/* Connection P sent bus BUS's registration: bind it, or refuse a takeover. */
static void registered(pending *p, size_t bus);

/* P's registration is complete, unknown, or not yet. */
static void judge(pending *p, bool at_deadline) {
  server *sv = p->sv;
  size_t bus;
  bool more = cfg_dtu_match(sv->set->cfg, sv->index, p->buf, p->len, &bus);
  if (bus != SIZE_MAX && (!more || at_deadline || p->len >= sv->reg_max)) {
    registered(p, bus);
    return;
  }
  if (more && !at_deadline) return;
  /* The start of a registration, never finished, is no registration in
   * time; bytes that cannot be one name no bus. */
  tell(sv, p->len && !more ? DTU_EV_UNKNOWN : DTU_EV_SILENT, SIZE_MAX, &p->peer, NULL);
  drop_pending(p);
  arm_timer(sv);
}

static void on_pending_io(uv_poll_t *h, int status, int events) {
  (void)events;
  pending *p = h->data;
  server *sv = p->sv;
  if (status < 0) {
    tell(sv, DTU_EV_HUNG_UP, SIZE_MAX, &p->peer, NULL);
    drop_pending(p);
    arm_timer(sv);
    return;
  }
  /* Never more than the longest registration: what follows it is the
   * bus's. A reload may have made the longest one shorter than what P
   * holds already: P is judged on what it sent, as at its deadline. */
  if (p->len >= sv->reg_max) {
    judge(p, true);
    return;
  }
  ssize_t n;
  do {
    n = recv(p->fd, p->buf + p->len, sv->reg_max - p->len, MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
  if (n <= 0) {
    tell(sv, p->len ? DTU_EV_UNKNOWN : DTU_EV_HUNG_UP, SIZE_MAX, &p->peer, NULL);
    drop_pending(p);
    arm_timer(sv);
    return;
  }
  p->len += (size_t)n;
  judge(p, false);
}

static void on_deadline(uv_timer_t *t) {
  server *sv = t->data;
  uint64_t now = (uint64_t)clock_mono_ms();
  while (sv->head && sv->head->deadline_ms <= now) judge(sv->head, true);
  arm_timer(sv);
}

/* ------------------------------------------------------------------------ */
/* Registration and takeover                                                */

/* May a connection from P's address take BUS over from the one it has,
 * QUIET ms quiet? NULL when it may, else why not. */
static const char *refuse_takeover(const server *sv, const dtu_bus *db,
                                   const pending *p, int64_t quiet, int64_t now) {
  int64_t hold = sv->cfg->takeover_hold_ms;
  if (db->last_takeover_ms && now - db->last_takeover_ms < hold)
    return "the bus was taken over less than takeover_hold ago";
  if (db->has_addr && !same_ip(&db->addr, &p->peer) && quiet < hold)
    return "from another address while the bus's DTU is alive";
  return NULL;
}

static void registered(pending *p, size_t bus) {
  server *sv = p->sv;
  dtuservers *s = sv->set;
  dtu_bus *db = &s->buses[bus];
  int64_t now = clock_mono_ms();
  int64_t quiet = s->links.quiet_ms(s->ctx, bus);
  bool foreign = db->has_addr && !same_ip(&db->addr, &p->peer);
  if (foreign) db->info.foreign++;
  if (quiet >= 0) {
    const char *why = refuse_takeover(sv, db, p, quiet, now);
    if (why) {
      db->info.refused++;
      tell(sv, DTU_EV_REFUSED, bus, &p->peer, why);
      drop_pending(p);
      arm_timer(sv);
      return;
    }
  }
  /* The connection is the bus's now: out of the pending list, its watcher
   * closed (netbus watches the descriptor from here on). */
  int fd = p->fd;
  p->fd = -1;
  struct sockaddr_storage peer = p->peer;
  uint8_t left[DTU_PKT_MAX];
  size_t reglen = s->cfg->buses[bus].reglen, nleft = p->len - reglen;
  memcpy(left, p->buf + reglen, nleft);
  tell(sv, quiet >= 0 ? DTU_EV_TAKEOVER : DTU_EV_REGISTERED, bus, &peer, NULL);
  drop_pending(p);
  arm_timer(sv);
  if (quiet >= 0) {
    db->info.takeovers++;
    db->last_takeover_ms = now;
  }
  if (foreign) {
    db->info.address_changed = true;
    db->info.changed_ms = clock_wall_ms();
  }
  db->addr = peer;
  db->has_addr = true;
  db->info.registrations++;
  addr_text(&peer, db->info.peer, sizeof db->info.peer);
  s->links.attach(s->ctx, bus, fd, left, nleft);
}

/* ------------------------------------------------------------------------ */
/* Listening                                                                */

static void take(server *sv, int fd, const struct sockaddr_storage *sa) {
  if (!allowed(sv, sa)) {
    close(fd); /* before a byte of it is read */
    tell(sv, DTU_EV_OUTSIDE, SIZE_MAX, sa, NULL);
    return;
  }
  if (sv->npending >= (size_t)sv->cfg->max_pending) {
    /* The oldest goes: a DTU sends its registration as soon as it is
     * connected, so the one that has waited longest is the least likely
     * to be one, and a flood of idle connections cannot keep a DTU that
     * dials in now off its line. */
    tell(sv, DTU_EV_FULL, SIZE_MAX, &sv->head->peer, NULL);
    drop_pending(sv->head);
  }
  pending *p = calloc(1, sizeof *p);
  if (!p || uv_poll_init_socket(sv->set->loop, &p->poll, fd) != 0) {
    free(p);
    close(fd);
    return;
  }
  p->poll.data = p;
  p->fd = fd;
  p->sv = sv;
  p->peer = *sa;
  p->deadline_ms = (uint64_t)clock_mono_ms() + (uint64_t)sv->cfg->register_timeout_ms;
  p->prev = sv->tail;
  if (sv->tail) sv->tail->next = p;
  else sv->head = p;
  sv->tail = p;
  sv->npending++;
  uv_poll_start(&p->poll, UV_READABLE, on_pending_io);
  if (sv->head == p) arm_timer(sv);
}

static void on_listen(uv_poll_t *h, int status, int events);

static void on_resume(uv_timer_t *t) {
  server *sv = t->data;
  if (sv->listen_open) uv_poll_start(&sv->listen, UV_READABLE, on_listen);
}

static void on_listen(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  server *sv = h->data;
  for (int i = 0; i < ACCEPT_BATCH; i++) {
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    int fd = accept4(sv->fd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      take(sv, fd, &sa);
      continue;
    }
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
      /* The connection waits in the backlog; the socket would be ready
       * again at once, and the loop would spin on it. */
      uv_poll_stop(&sv->listen);
      uv_timer_start(&sv->resume, on_resume, ACCEPT_PAUSE_MS, 0);
    }
    return; /* EAGAIN: the backlog is empty */
  }
}

static void on_sweep(uv_timer_t *t) {
  server *sv = t->data;
  dtuservers *s = sv->set;
  for (size_t b = 0; b < s->cfg->nbuses; b++) {
    const cfg_bus *cb = &s->cfg->buses[b];
    if (!s->buses[b].used || cb->server != sv->index) continue;
    int64_t quiet = s->links.quiet_ms(s->ctx, b);
    if (quiet < sv->cfg->idle_timeout_ms) continue;
    s->links.close(s->ctx, b);
    tell(sv, DTU_EV_IDLE, b, NULL, NULL);
  }
}

static int listen_on(server *sv, char *err, size_t errlen) {
  const cfg_dtu_server *c = sv->cfg;
  struct sockaddr_storage sa;
  memset(&sa, 0, sizeof sa);
  int rc = strchr(c->host, ':') ? uv_ip6_addr(c->host, c->port, (struct sockaddr_in6 *)&sa)
                                : uv_ip4_addr(c->host, c->port, (struct sockaddr_in *)&sa);
  if (rc == 0) {
    sv->fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    rc = sv->fd < 0 ? -errno : 0;
  }
  if (rc == 0) {
    int one = 1, zero = 0;
    setsockopt(sv->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* [::] takes IPv4 DTUs too. */
    if (sa.ss_family == AF_INET6)
      setsockopt(sv->fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    socklen_t sl = sa.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                           : sizeof(struct sockaddr_in6);
    if (bind(sv->fd, (struct sockaddr *)&sa, sl) != 0 || listen(sv->fd, 1024) != 0)
      rc = -errno;
  }
  if (rc == 0) rc = uv_poll_init_socket(sv->set->loop, &sv->listen, sv->fd);
  if (rc != 0) {
    snprintf(err, errlen, "DTU server %s: cannot listen on %s%s%s:%d: %s", c->id,
             strchr(c->host, ':') ? "[" : "", c->host, strchr(c->host, ':') ? "]" : "",
             c->port, strerror(-rc));
    if (sv->fd >= 0) close(sv->fd);
    sv->fd = -1;
    return -1;
  }
  sv->listen.data = sv;
  sv->listen_open = true;
  uv_poll_start(&sv->listen, UV_READABLE, on_listen);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Public                                                                   */

int dtuservers_new(dtuservers **out, uv_loop_t *loop, const cfg *c, const dtu_links *links,
                   dtu_event_fn fn, void *ctx, char *err, size_t errlen) {
  *out = NULL;
  dtuservers *s = calloc(1, sizeof *s);
  if (!s || !(s->buses = calloc(c->nbuses ? c->nbuses : 1, sizeof *s->buses)) ||
      !(s->servers = calloc(c->ndtu_servers ? c->ndtu_servers : 1, sizeof *s->servers))) {
    if (s) free(s->buses);
    free(s);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  s->loop = loop;
  s->cfg = c;
  s->links = *links;
  s->fn = fn;
  s->ctx = ctx;
  for (size_t i = 0; i < c->ndtu_servers; i++) {
    server *sv = &s->servers[i];
    sv->set = s;
    sv->index = i;
    sv->cfg = &c->dtu_servers[i];
    sv->fd = -1;
    sv->reg_max = cfg_dtu_reg_max(c, i);
    for (size_t b = 0; b < c->nbuses; b++)
      if (c->buses[b].transport == CFG_TRANSPORT_RTU_DTU && c->buses[b].server == i)
        s->buses[b].used = true;
    uv_timer_init(loop, &sv->timer);
    uv_timer_init(loop, &sv->sweep);
    uv_timer_init(loop, &sv->resume);
    sv->timer.data = sv->sweep.data = sv->resume.data = sv;
    sv->timers_open = true;
    s->n = i + 1;
    if (listen_on(sv, err, errlen) != 0) {
      *out = s; /* the caller stops and frees it */
      return -1;
    }
    uint64_t every = (uint64_t)sv->cfg->idle_timeout_ms < SWEEP_MS
                         ? (uint64_t)sv->cfg->idle_timeout_ms
                         : SWEEP_MS;
    uv_timer_start(&sv->sweep, on_sweep, every, every);
  }
  *out = s;
  return 0;
}

int dtuservers_rebind(dtuservers *s, const cfg *nc, const long *old_of_new) {
  if (!s) return 0;
  dtu_bus *nb = calloc(nc->nbuses ? nc->nbuses : 1, sizeof *nb);
  if (!nb) return -1;
  for (size_t j = 0; j < nc->nbuses; j++) {
    if (nc->buses[j].transport != CFG_TRANSPORT_RTU_DTU) continue;
    long i = old_of_new[j];
    if (i >= 0 && s->buses[i].used) nb[j] = s->buses[i];
    nb[j].used = true;
  }
  free(s->buses);
  s->buses = nb;
  s->cfg = nc;
  for (size_t i = 0; i < s->n; i++) {
    server *sv = &s->servers[i];
    sv->cfg = &nc->dtu_servers[i];
    sv->reg_max = cfg_dtu_reg_max(nc, i);
  }
  return 0;
}

bool dtuservers_bus_info(const dtuservers *s, size_t bus, dtu_bus_info *out) {
  if (!s || bus >= s->cfg->nbuses || !s->buses[bus].used) return false;
  *out = s->buses[bus].info;
  out->connected = s->links.quiet_ms(s->ctx, bus) >= 0;
  return true;
}

size_t dtuservers_pending(const dtuservers *s) {
  size_t n = 0;
  for (size_t i = 0; s && i < s->n; i++) n += s->servers[i].npending;
  return n;
}

void dtuservers_stop(dtuservers *s) {
  if (!s) return;
  for (size_t i = 0; i < s->n; i++) {
    server *sv = &s->servers[i];
    while (sv->head) drop_pending(sv->head);
    if (sv->listen_open) {
      uv_close((uv_handle_t *)&sv->listen, NULL);
      sv->listen_open = false;
    }
    if (sv->fd >= 0) close(sv->fd);
    sv->fd = -1;
    if (sv->timers_open) {
      uv_close((uv_handle_t *)&sv->timer, NULL);
      uv_close((uv_handle_t *)&sv->sweep, NULL);
      uv_close((uv_handle_t *)&sv->resume, NULL);
      sv->timers_open = false;
    }
  }
}

void dtuservers_free(dtuservers *s) {
  if (!s) return;
  free(s->servers);
  free(s->buses);
  free(s);
}
