#include "sim_impl.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "base/log.h"

static void rtu_process(sim_bus *b);
static void rtu_on_poll(uv_poll_t *p, int status, int events);

/* Watch the master for requests, and for room while answers wait to go out. */
static void rtu_watch(sim_bus *b) {
  if (!b->poll_open) return;
  uv_poll_start(&b->poll, UV_READABLE | (b->out_len ? UV_WRITABLE : 0),
                rtu_on_poll);
}

static void rtu_flush_out(sim_bus *b) {
  while (b->out_len > 0) {
    ssize_t w = write(b->master_fd, b->out, b->out_len);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      log_warn("bus %s: write to pty failed: %s", b->cfg->id, strerror(errno));
      b->out_len = 0;
      break;
    }
    memmove(b->out, b->out + w, b->out_len - (size_t)w);
    b->out_len -= (size_t)w;
  }
}

static void ports_drain(sim *s);

void sim__rtu_send(sim_bus *b, const uint8_t *data, size_t len) {
  if (!b->poll_open || len > sizeof b->out) return; /* stopping */
  /* Take in the opens and closes so far first: a client's open is queued
   * before its request is written, so a client that asked is counted. */
  if (b->clients == 0) ports_drain(b->owner);
  if (b->clients == 0) {
    log_debug("bus %s: nobody has the port open; %zu bytes are lost, as on "
              "a closed serial port", b->cfg->id, len);
    return;
  }
  if (len > sizeof b->out - b->out_len) {
    log_warn("bus %s: nobody reads the line, dropping %zu bytes", b->cfg->id,
             b->out_len);
    b->out_len = 0;
  }
  memcpy(b->out + b->out_len, data, len);
  b->out_len += len;
  rtu_flush_out(b);
  /* Whatever the pty did not take goes out when it has room again. */
  rtu_watch(b);
}

/* A new request is on the line: whatever the line delivered before it and
 * nobody has read is stale (a late answer, an answer its client gave up on).
 * A real port forgets such bytes when its client closes it; this pty's slave
 * end stays open in the simulator, so it forgets them here. */
static void rtu_forget_unread(sim_bus *b) {
  if (b->slave_fd >= 0) (void)tcflush(b->slave_fd, TCIFLUSH);
  b->out_len = 0;
}

/* The last client closed the port. A real port forgets what it received
 * when closed; the simulator holds this pty's slave end open, so it forgets
 * on the port's behalf: the next client must not read answers meant for
 * the last one. */
static void rtu_port_closed(sim_bus *b) {
  rtu_forget_unread(b);
  rtu_watch(b);
}

/* How many descriptors other processes hold on B's slave end now (ours
 * excepted), from /proc; -1 when /proc cannot tell. */
static int ports_count(const sim_bus *b) {
  DIR *proc = opendir("/proc");
  if (!proc) return -1;
  char self[32], path[6 + 2 * 256 + 4], target[sizeof b->slave_name + 1];
  snprintf(self, sizeof self, "%ld", (long)getpid());
  int n = 0;
  struct dirent *p;
  while ((p = readdir(proc)) != NULL) {
    if (!isdigit((unsigned char)p->d_name[0]) || strcmp(p->d_name, self) == 0) continue;
    snprintf(path, sizeof path, "/proc/%s/fd", p->d_name);
    DIR *fds = opendir(path);
    if (!fds) continue; /* gone, or another user's */
    struct dirent *f;
    while ((f = readdir(fds)) != NULL) {
      if (f->d_name[0] == '.') continue;
      snprintf(path, sizeof path, "/proc/%s/fd/%s", p->d_name, f->d_name);
      ssize_t len = readlink(path, target, sizeof target - 1);
      if (len <= 0) continue;
      target[len] = '\0';
      if (strcmp(target, b->slave_name) == 0) n++;
    }
    closedir(fds);
  }
  closedir(proc);
  return n;
}

/* Read the queued open and close events of the slave ends. The events only
 * say that the count changed: the kernel merges two like events that wait
 * unread (two opens in a row read as one), so each is followed by counting
 * the holders in /proc, and only where /proc cannot tell are the events
 * counted themselves. An open is counted at least once: its descriptor may
 * not be in its process's table yet when its event is read. */
static void ports_drain(sim *s) {
  if (s->ino_fd < 0) return;
  _Alignas(struct inotify_event) char buf[4096];
  for (;;) {
    ssize_t n = read(s->ino_fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    for (ssize_t off = 0; off + (ssize_t)sizeof(struct inotify_event) <= n;) {
      const struct inotify_event *e = (const struct inotify_event *)(buf + off);
      off += (ssize_t)(sizeof *e + e->len);
      for (size_t i = 0; i < s->nbuses; i++) {
        sim_bus *b = &s->buses[i];
        if (e->mask & IN_Q_OVERFLOW) {
          b->clients = -1; /* lost count: never drop answers again */
          continue;
        }
        if (b->wd < 0 || b->wd != e->wd) continue;
        if (e->mask & IN_IGNORED) {
          b->wd = -1;
          b->clients = -1;
        } else if (e->mask & IN_OPEN) {
          b->seen_open = true;
          if (b->clients < 0) continue;
          int held = ports_count(b);
          b->clients = held >= 1 ? held : held == 0 ? 1 : b->clients + 1;
        } else if (e->mask & (IN_CLOSE_WRITE | IN_CLOSE_NOWRITE)) {
          if (b->clients < 0) continue;
          b->port_closes++;
          int was = b->clients, held = ports_count(b);
          b->clients = held >= 0 ? held : was > 0 ? was - 1 : 0;
          if (was > 0 && b->clients == 0) rtu_port_closed(b);
        }
      }
    }
  }
}

static void ports_on_poll(uv_poll_t *p, int status, int events) {
  (void)events;
  if (status < 0) return;
  ports_drain(p->data);
}

/* Count who opens BUS's slave end from now on. Without inotify the
 * simulator still works; it only cannot tell a closed port from an open one. */
static void ports_watch(sim_bus *b) {
  sim *s = b->owner;
  b->wd = -1;
  b->clients = -1;
  if (s->ino_fd < 0 && !s->ino_open) {
    s->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (s->ino_fd >= 0 && uv_poll_init(s->loop, &s->ino_poll, s->ino_fd) == 0) {
      s->ino_poll.data = s;
      s->ino_open = true;
      uv_poll_start(&s->ino_poll, UV_READABLE, ports_on_poll);
    } else if (s->ino_fd >= 0) {
      close(s->ino_fd);
      s->ino_fd = -1;
    }
  }
  if (!s->ino_open) return;
  b->wd = inotify_add_watch(s->ino_fd, b->slave_name,
                            IN_OPEN | IN_CLOSE_WRITE | IN_CLOSE_NOWRITE);
  if (b->wd >= 0) b->clients = 0;
  else log_debug("bus %s: cannot watch %s: %s", b->cfg->id, b->slave_name,
                 strerror(errno));
}

static void rtu_on_reply(sim_deadline *d) {
  sim_bus *b = d->data;
  if (b->reply_len) sim__rtu_send(b, b->reply, b->reply_len);
  b->reply_len = 0;
  b->busy = false;
  rtu_process(b);
}

static void rtu_on_stale(uv_timer_t *t) {
  sim_bus *b = t->data;
  if (b->framer.len > 0 && !b->busy) {
    b->bad_frames++;
    log_debug("bus %s: dropping %zu bytes of an incomplete frame", b->cfg->id,
              b->framer.len);
    mb_rtu_framer_reset(&b->framer);
  }
}

static void rtu_process(sim_bus *b) {
  while (!b->busy) {
    uint8_t frame[MB_RTU_MAX];
    int n = mb_rtu_framer_next(&b->framer, frame, sizeof frame);
    if (n == MB_ENEEDMORE) return;
    if (n < 0) {
      b->bad_frames++;
      log_debug("bus %s: bad frame on the line (%s)", b->cfg->id,
                mb_proto_strerror(n));
      continue;
    }
    uint8_t unit;
    const uint8_t *pdu;
    size_t pdulen;
    if (mb_rtu_parse(frame, (size_t)n, &unit, &pdu, &pdulen) != MB_OK) continue;
    rtu_forget_unread(b);
    if (b->clients == 0 && !b->seen_open) {
      /* A request, yet no open was ever reported: the watch does not see
       * this pty's clients. Stop counting rather than drop every answer. */
      ports_drain(b->owner);
      if (b->clients == 0 && !b->seen_open) {
        log_debug("bus %s: cannot tell when clients open the port", b->cfg->id);
        b->clients = -1;
      }
    }
    b->requests++;
    sim_meter *m = b->by_unit[unit];
    if (!m || unit == 0) continue; /* not ours, or broadcast: stay silent */
    sim_action act;
    sim_meter_handle(m, pdu, pdulen, sim__wall_now(), &act);
    uint8_t out[MB_RTU_MAX + 64];
    size_t len = sim__encode_action(b, &act, 0, unit, out, sizeof out);
    if (len == 0) continue;
    answer_timing t = sim__answer_timing_of(b, (size_t)n, len, &act);
    uint64_t start = sim__exchange_start_ns(b->rx_ns, b->free_ns);
    if (t.late) {
      /* The slow answer goes out when due, whatever the line carries by
       * then (on a real line it may collide with another answer). */
      if (!sim__late_schedule(b->late, m, out, len, start + t.late_ns)) {
        b->late_dropped++;
        log_debug("bus %s: %d delayed answers in flight, dropping one",
                  b->cfg->id, LATE_MAX);
      }
      b->reply_len = 0;
    } else if (t.busy_ns == 0) {
      sim__rtu_send(b, out, len);
      continue;
    } else {
      memcpy(b->reply, out, len);
      b->reply_len = len;
    }
    if (t.busy_ns > 0) {
      b->busy = true;
      b->free_ns = start + t.busy_ns;
      sim_deadline_start(&b->reply_due, b->free_ns);
    }
  }
}

static void rtu_on_poll(uv_poll_t *p, int status, int events) {
  sim_bus *b = p->data;
  if (status < 0) return;
  if (events & UV_WRITABLE) rtu_flush_out(b);
  if (events & UV_READABLE) {
    uint8_t tmp[512];
    for (;;) {
      ssize_t r = read(b->master_fd, tmp, sizeof tmp);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      /* Read after the bytes were: a request is never taken as earlier
       * than it arrived. */
      b->rx_ns = sim_clock_now_ns();
      size_t off = 0;
      while (off < (size_t)r) {
        size_t took = mb_rtu_framer_feed(&b->framer, tmp + off, (size_t)r - off);
        off += took;
        if (took == 0) {
          if (b->busy) {
            /* The master talks over a pending answer: a bus collision. */
            b->bad_frames++;
            mb_rtu_framer_reset(&b->framer);
          } else {
            rtu_process(b);
            if (b->framer.len == sizeof b->framer.buf) mb_rtu_framer_reset(&b->framer);
          }
        }
      }
    }
    uv_timer_start(&b->stale_timer, rtu_on_stale, RTU_STALE_MS, 0);
    rtu_process(b);
  }
  rtu_watch(b);
}

/* A link at the device path may be replaced only when it points at a
 * pseudo-terminal (a previous simulator's, left behind by a crash): links
 * such as udev's under /dev/serial/by-id/ name real ports. */
static bool links_to_pty(const char *path) {
  char target[256];
  ssize_t n = readlink(path, target, sizeof target - 1);
  if (n <= 0 || (size_t)n >= sizeof target - 1) return false;
  target[n] = '\0';
  static const char prefix[] = "/dev/pts/";
  if (strncmp(target, prefix, sizeof prefix - 1) != 0) return false;
  const char *num = target + sizeof prefix - 1;
  if (!*num) return false;
  for (const char *p = num; *p; p++)
    if (*p < '0' || *p > '9') return false;
  return true;
}

int sim__rtu_open(sim_bus *b, char *err, size_t errlen) {
  const cfg_bus *cb = b->cfg;
  /* Check the device path first, so a refusal creates nothing. */
  struct stat st;
  bool replace = false;
  if (lstat(cb->device, &st) == 0) {
    if (!S_ISLNK(st.st_mode)) {
      snprintf(err, errlen,
               "bus %s: %s exists and is not a link; refusing to replace it",
               cb->id, cb->device);
      return -1;
    }
    if (!links_to_pty(cb->device)) {
      char target[256] = "?";
      ssize_t n = readlink(cb->device, target, sizeof target - 1);
      if (n > 0) target[n] = '\0';
      snprintf(err, errlen,
               "bus %s: %s is a link to %s, not to a pseudo-terminal "
               "(/dev/pts/N); refusing to replace it",
               cb->id, cb->device, target);
      return -1;
    }
    replace = true;
  }

  b->master_fd = posix_openpt(O_RDWR | O_NOCTTY);
  if (b->master_fd < 0 || grantpt(b->master_fd) != 0 ||
      unlockpt(b->master_fd) != 0 ||
      ptsname_r(b->master_fd, b->slave_name, sizeof b->slave_name) != 0) {
    snprintf(err, errlen, "bus %s: cannot create a pseudo-terminal: %s", cb->id,
             strerror(errno));
    return -1;
  }
  /* Keep the slave end open ourselves so that the collector can close and
   * reopen the port without the master seeing a hang-up. */
  b->slave_fd = open(b->slave_name, O_RDWR | O_NOCTTY);
  if (b->slave_fd < 0) {
    snprintf(err, errlen, "bus %s: cannot open %s: %s", cb->id, b->slave_name,
             strerror(errno));
    return -1;
  }
  struct termios tio;
  if (tcgetattr(b->slave_fd, &tio) == 0) {
    cfmakeraw(&tio);
    tcsetattr(b->slave_fd, TCSANOW, &tio);
  }
  int fl = fcntl(b->master_fd, F_GETFL);
  fcntl(b->master_fd, F_SETFL, fl | O_NONBLOCK);
  fcntl(b->master_fd, F_SETFD, FD_CLOEXEC);
  fcntl(b->slave_fd, F_SETFD, FD_CLOEXEC);
  /* After our own open of the slave end, so only clients are counted. */
  ports_watch(b);

  if (replace) unlink(cb->device);
  if (symlink(b->slave_name, cb->device) != 0) {
    snprintf(err, errlen, "bus %s: cannot link %s to %s: %s", cb->id,
             cb->device, b->slave_name, strerror(errno));
    return -1;
  }
  b->linked = true;
  mb_rtu_framer_init(&b->framer, true);

  uv_loop_t *loop = b->owner->loop;
  uv_timer_init(loop, &b->stale_timer);
  b->stale_timer.data = b;
  b->timers_open = true;
  sim_clock *clock = b->owner->clock;
  int rc = sim_deadline_init(clock, &b->reply_due, rtu_on_reply, b);
  for (size_t i = 0; i < LATE_MAX && rc == 0; i++)
    rc = sim__late_init(&b->late[i], clock, b, NULL);
  if (rc != 0) {
    snprintf(err, errlen, "bus %s: out of memory", cb->id);
    return -1;
  }
  if (uv_poll_init(loop, &b->poll, b->master_fd) != 0) {
    snprintf(err, errlen, "bus %s: cannot watch the pty", cb->id);
    return -1;
  }
  b->poll.data = b;
  b->poll_open = true;
  rtu_watch(b);
  return 0;
}
