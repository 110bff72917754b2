/* The poll schedule: each meter's slots on the wall clock, steps of that
 * clock, and the periodic gateway-state and maintenance timers. */
#include "gateway/gw_impl.h"

/* The step that first followed a reading taken when the wall clock stood at
 * BASE against the monotonic one (the store flags its row with that one), or
 * 0 when none has since. */
int64_t gw__step_after(const gw *d, int64_t base) {
  int64_t off = d->clock_base_ms - base;
  if (!d->clock_steps || (off <= CLOCK_JUMP_MS && off >= -CLOCK_JUMP_MS)) return 0;
  uint64_t n = d->clock_steps < 16 ? d->clock_steps : 16;
  for (uint64_t i = d->clock_steps - n; i < d->clock_steps; i++) {
    int64_t b = d->steps[i % 16].base_before - base;
    if (b <= CLOCK_JUMP_MS && b >= -CLOCK_JUMP_MS) return d->steps[i % 16].step;
  }
  return off; /* older than the steps kept: all of them */
}

/* Notice a step of the wall clock against the monotonic one (NTP setting a
 * gateway that booted with a wrong clock, or someone setting it by hand).
 * Slow slewing moves the difference too, a little at a time: only a change
 * of more than CLOCK_JUMP_MS between two looks is a step. The readings of
 * this run taken before it carry the step from now on: those in the store
 * are flagged there (and so when replayed), those still on the bus when
 * their result comes in. */
void gw__check_clock(gw *d) {
  int64_t mono = clock_mono_ms();
  int64_t wall = clock_wall_ms();
  int64_t base = wall - mono;
  int64_t step = base - d->clock_base_ms;
  d->clock_base_ms = base;
  if (step <= CLOCK_JUMP_MS && step >= -CLOCK_JUMP_MS) return;
  d->steps[d->clock_steps % 16].base_before = base - step;
  d->steps[d->clock_steps % 16].step = step;
  d->clock_steps++;
  d->last_step_ms = step;
  d->last_step_wall_ms = wall;
  log_warn("wall clock stepped by %+lld ms: re-aligning the schedule; readings taken "
           "before it are flagged with clock_step_ms",
           (long long)step);
  /* Refused only when out of memory: the readings then keep their times
   * unflagged, as the log line above says of them. */
  (void)store_clock_step(d->store, d->run_from_id, step);
  gw__publish_gateway_state(d, true);
}

static void on_slot(uv_timer_t *t);

void gw__schedule(meter_rt *m, int64_t now) {
  int64_t delay = m->due_ms - now;
  if (delay < 0) delay = 0;
  uv_update_time(&m->d->loop);
  uv_timer_start(&m->timer, on_slot, (uint64_t)delay, 0);
}

static void skip_slot(gw *d, meter_rt *m, int64_t slot) {
  d->skipped++;
  (void)store_count_poll(d->store, m->cfg->id, slot, STORE_POLL_SKIPPED); /* statistics */
  log_debug("meter %s: bus %s is busy, slot skipped", m->cfg->id,
            d->cfg->buses[m->cfg->bus].id);
}

static void on_slot(uv_timer_t *t) {
  meter_rt *m = t->data;
  gw *d = m->d;
  if (d->stopping) return;
  const cfg_meter *mc = m->cfg;
  gw__check_clock(d);
  int64_t now = clock_wall_ms();
  int64_t slot = m->due_ms;
  if (now - slot > CLOCK_JUMP_MS || slot - now > CLOCK_JUMP_MS) {
    /* The wall clock stepped (or the loop was held up that long): re-align
     * to it without polling now, so there is neither a stall nor a burst of
     * catch-up polls. */
    m->due_ms = clock_next_slot(now, mc->interval_ms, m->phase_ms);
    m->st.watch_from_ms = now;
    gw__schedule(m, now);
    return;
  }
  if (now < slot) {
    /* The monotonic timer and the wall clock round differently: never poll
     * before the slot, wait the last millisecond out. */
    gw__schedule(m, now);
    return;
  }
  gw__meter_changed(d, m, mstate_tick(&m->st, now, mc->interval_ms,
                                  d->cfg->online.offline_after,
                                  d->cfg->buses[mc->bus].timeout_ms));
  if (m->st.state == MSTATE_OFFLINE && m->retry_at_ms && now < m->retry_at_ms) {
    /* Backing off a dead meter: this slot is not polled. */
  } else if (m->pending) {
    skip_slot(d, m, slot);
  } else {
    if (gw__submit_poll(d, m, slot) != 0) skip_slot(d, m, slot);
  }
  int64_t base = now > slot ? now : slot;
  m->due_ms = clock_next_slot(base, mc->interval_ms, m->phase_ms);
  gw__schedule(m, now);
}

void gw__on_maintenance(uv_timer_t *t) {
  gw *d = t->data;
  (void)store_maintain(d->store, clock_wall_ms()); /* if refused, the next tick */
}

void gw__on_gateway_timer(uv_timer_t *t) {
  gw *d = t->data;
  (void)store_run_alive(d->store, clock_wall_ms()); /* the next minute's will do */
  gw__publish_gateway_state(d, true);
  gw__publish_online_rate(d);
}
