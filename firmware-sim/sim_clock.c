#include "sim_clock.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

struct sim_clock {
  uv_poll_t poll;
  int fd;
  sim_deadline **heap; /* a binary min-heap on due_ns */
  size_t len;          /* armed deadlines */
  size_t cap;          /* room: at least `reserved` */
  size_t reserved;     /* deadlines initialised and not released */
  uint64_t armed_ns;   /* what the timerfd is set to; 0: disarmed */
  bool dispatching;    /* callbacks are running: re-arm once they are done */
};

uint64_t sim_clock_now_ns(void) {
  struct timespec ts;
  /* CLOCK_MONOTONIC cannot fail with a valid pointer on Linux. */
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------------ */
/* The heap                                                                 */

static void heap_place(sim_clock *c, size_t i, sim_deadline *d) {
  c->heap[i] = d;
  d->slot = i;
}

static void heap_up(sim_clock *c, size_t i) {
  sim_deadline *d = c->heap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (c->heap[parent]->due_ns <= d->due_ns) break;
    heap_place(c, i, c->heap[parent]);
    i = parent;
  }
  heap_place(c, i, d);
}

static void heap_down(sim_clock *c, size_t i) {
  sim_deadline *d = c->heap[i];
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= c->len) break;
    if (child + 1 < c->len && c->heap[child + 1]->due_ns < c->heap[child]->due_ns)
      child++;
    if (d->due_ns <= c->heap[child]->due_ns) break;
    heap_place(c, i, c->heap[child]);
    i = child;
  }
  heap_place(c, i, d);
}

static void heap_remove(sim_clock *c, sim_deadline *d) {
  size_t i = d->slot;
  d->slot = SIZE_MAX;
  c->len--;
  if (i == c->len) return;
  sim_deadline *moved = c->heap[c->len];
  heap_place(c, i, moved);
  /* The last deadline, moved into the gap, may belong above or below it. */
  heap_up(c, i);
  heap_down(c, moved->slot);
}

/* ------------------------------------------------------------------------ */
/* The timerfd                                                              */

/* Set the timerfd to the earliest deadline, or disarm it. With a valid
 * descriptor and a time in range this cannot fail; should it, armed_ns says
 * disarmed, so the next deadline started tries again. */
static void clock_arm(sim_clock *c) {
  uint64_t due = c->len ? c->heap[0]->due_ns : 0;
  if (due == c->armed_ns) return;
  struct itimerspec its = {0};
  if (due) {
    its.it_value.tv_sec = (time_t)(due / 1000000000u);
    its.it_value.tv_nsec = (long)(due % 1000000000u);
  }
  c->armed_ns = timerfd_settime(c->fd, TFD_TIMER_ABSTIME, &its, NULL) == 0 ? due : 0;
}

static void clock_on_poll(uv_poll_t *p, int status, int events) {
  (void)events;
  sim_clock *c = p->data;
  if (status < 0) return;
  uint64_t expirations;
  /* Clear the readiness; EAGAIN only means the timer was re-armed since. */
  ssize_t r = read(c->fd, &expirations, sizeof expirations);
  (void)r;
  c->armed_ns = 0; /* a one-shot timer that fired (or was moved) */
  /* One reading of the clock for the whole pass: a callback that arms a
   * deadline already due is run on the next wake-up, which the timerfd
   * gives at once, so a pass always ends. */
  uint64_t now = sim_clock_now_ns();
  c->dispatching = true;
  while (c->len > 0 && c->heap[0]->due_ns <= now) {
    sim_deadline *d = c->heap[0];
    heap_remove(c, d);
    d->cb(d);
  }
  c->dispatching = false;
  clock_arm(c);
}

int sim_clock_open(sim_clock **out, uv_loop_t *loop) {
  sim_clock *c = calloc(1, sizeof *c);
  if (!c) return -ENOMEM;
  c->fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (c->fd < 0) {
    int e = errno;
    free(c);
    return -e;
  }
  int rc = uv_poll_init(loop, &c->poll, c->fd);
  if (rc == 0) {
    c->poll.data = c;
    rc = uv_poll_start(&c->poll, UV_READABLE, clock_on_poll);
    if (rc != 0) {
      /* The handle exists now: it must be closed through the loop. */
      sim_clock_close(c);
      return rc;
    }
  } else {
    close(c->fd);
    free(c);
    return rc;
  }
  *out = c;
  return 0;
}

static void clock_on_close(uv_handle_t *h) {
  sim_clock *c = h->data;
  close(c->fd);
  free(c->heap);
  free(c);
}

void sim_clock_close(sim_clock *c) {
  if (!c) return;
  uv_close((uv_handle_t *)&c->poll, clock_on_close);
}

/* ------------------------------------------------------------------------ */
/* Deadlines                                                                */

int sim_deadline_init(sim_clock *c, sim_deadline *d, sim_deadline_cb cb,
                      void *data) {
  if (c->reserved == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 16;
    sim_deadline **heap = realloc(c->heap, cap * sizeof *heap);
    if (!heap) return -ENOMEM;
    c->heap = heap;
    c->cap = cap;
  }
  c->reserved++;
  d->clock = c;
  d->cb = cb;
  d->data = data;
  d->due_ns = 0;
  d->slot = SIZE_MAX;
  return 0;
}

void sim_deadline_start(sim_deadline *d, uint64_t due_ns) {
  sim_clock *c = d->clock;
  if (!c) return;
  if (d->slot != SIZE_MAX) heap_remove(c, d);
  /* 0 would disarm the timerfd: the clock is far past it anyway. */
  d->due_ns = due_ns ? due_ns : 1;
  /* Room was reserved by sim_deadline_init: len < reserved <= cap. */
  heap_place(c, c->len++, d);
  heap_up(c, d->slot);
  if (!c->dispatching && c->heap[0] == d &&
      (c->armed_ns == 0 || d->due_ns < c->armed_ns))
    clock_arm(c);
}

void sim_deadline_stop(sim_deadline *d) {
  /* The timerfd stays set: a wake-up with nothing due is harmless. */
  if (d->clock && d->slot != SIZE_MAX) heap_remove(d->clock, d);
}

bool sim_deadline_armed(const sim_deadline *d) {
  return d->clock && d->slot != SIZE_MAX;
}

void sim_deadline_release(sim_deadline *d) {
  if (!d->clock) return;
  sim_deadline_stop(d);
  d->clock->reserved--;
  d->clock = NULL;
}
