/* sim_clock: deadlines on the monotonic clock, precise to microseconds.
 *
 * libuv's timers count whole milliseconds from the loop's cached time, too
 * coarse for an emulated serial line whose exchanges take a few milliseconds:
 * rounding each one up costs a master several percent of the line. A
 * sim_clock keeps every deadline of the simulator in one heap and arms one
 * timerfd (CLOCK_MONOTONIC, absolute time in nanoseconds) at the earliest,
 * watched by the libuv loop; a deadline never fires before its time.
 *
 * Deadlines reserve their room in the heap when they are initialised, so
 * arming one never allocates and never fails. Callbacks run on the loop
 * thread, one at a time; a callback may start, stop or release any deadline,
 * itself included.
 */
#ifndef IC_SIM_CLOCK_H
#define IC_SIM_CLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct sim_clock sim_clock;
typedef struct sim_deadline sim_deadline;
typedef void (*sim_deadline_cb)(sim_deadline *d);

/* One deadline. The fields are the module's; `data` is the owner's. */
struct sim_deadline {
  sim_clock *clock; /* NULL until sim_deadline_init, and after release */
  sim_deadline_cb cb;
  void *data;
  uint64_t due_ns;
  size_t slot; /* place in the heap; SIZE_MAX while not armed */
};

/* The monotonic clock now, in nanoseconds (the clock deadlines use). */
uint64_t sim_clock_now_ns(void);

/* Create a clock on LOOP. Returns 0, or a negative errno (no timerfd, out of
 * memory). */
int sim_clock_open(sim_clock **out, uv_loop_t *loop);

/* Close the clock's handle; it is freed once the loop has closed it. Every
 * deadline must have been released first; a deadline's callback may do both.
 * NULL is a no-op. */
void sim_clock_close(sim_clock *c);

/* Tie D to clock C with callback CB. Returns 0, or -ENOMEM when the heap
 * cannot grow to hold one more deadline. */
int sim_deadline_init(sim_clock *c, sim_deadline *d, sim_deadline_cb cb,
                      void *data);

/* Fire D's callback once the monotonic clock reaches DUE_NS (right away when
 * that has passed). Re-arms D when it is armed already. */
void sim_deadline_start(sim_deadline *d, uint64_t due_ns);

/* Disarm D; its callback will not run. Harmless when D is not armed. */
void sim_deadline_stop(sim_deadline *d);

/* D is armed and has not fired yet. */
bool sim_deadline_armed(const sim_deadline *d);

/* Disarm D and give its room in the heap back. Harmless on a deadline never
 * initialised (zeroed) or released already. */
void sim_deadline_release(sim_deadline *d);

#endif
