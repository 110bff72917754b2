/* busworker: a serial bus's queue of polls, run on a thread of its own.
 *
 * A libmodbus context is not thread-safe and an RS-485 line carries one frame
 * at a time, so every request on a bus runs strictly one after another, on
 * the bus's own thread. Network buses do not come here: they run on the
 * event loop (netbus.h). The loop submits poll jobs (at most one outstanding
 * per meter: the scheduler skips a slot whose previous poll is still queued,
 * so the queue is bounded by the meters on the bus) and takes results back
 * after the notify hook (a uv_async_send) wakes it. Connections that fail to
 * open are retried on a back-off of 1 s doubling to 30 s; meanwhile polls
 * fail at once with the connection error instead of each waiting out a
 * timeout.
 */
#ifndef IC_BUSWORKER_H
#define IC_BUSWORKER_H

#include <stdbool.h>
#include <stdint.h>

#include "cfg.h"
#include "profile/planner.h"
#include "transport/transport.h"

typedef struct bus_result {
  struct bus_result *next;
  uint32_t meter;    /* the caller's number for the meter */
  int64_t slot_ms;   /* the slot the poll was for */
  int64_t start_ms;  /* wall time the first request went out */
  int64_t start_mono_ms; /* the same on the monotonic clock */
  int64_t end_ms;
  int rc;            /* TR_OK or a tr_code */
  tr_error err;
  int requests;
  double *values;    /* profile->nfields values when rc == TR_OK (they live
                        in the same allocation as the result) */
} bus_result;

/* A result for METER's poll of SLOT_MS with room for NVALUES values (at
 * least one) in the same allocation; NULL when out of memory. */
bus_result *bus_result_new(uint32_t meter, int64_t slot_ms, size_t nvalues);

void bus_result_free(bus_result *r);

/* A poll queued on a bus: the caller's number for the meter, the slot, the
 * result it will fill (allocated when queued, so a poll that starts can
 * always report back), and the settings and plan it runs with. */
typedef struct bus_job {
  uint32_t meter;
  int64_t slot_ms;
  bus_result *res;
  const cfg_meter *m;
  const mb_plan *plan;
} bus_job;

/* A bus's queue of polls, oldest first: a ring that doubles when full (the
 * callers queue at most one poll per meter, so it is bounded by the meters
 * ever on the bus). Zero-initialised, it is empty. */
typedef struct {
  bus_job *v;
  size_t cap, head, count;
} bus_jobs;

/* Queue J; -1 when out of memory. */
int bus_jobs_push(bus_jobs *q, bus_job j);

/* Take the oldest job into *OUT; false when there is none. */
bool bus_jobs_pop(bus_jobs *q, bus_job *out);

/* Abandon every queued job (their results freed), and free the ring. */
void bus_jobs_free(bus_jobs *q);

typedef struct busworker busworker;

/* Start the worker for the serial bus BUS (its settings are copied) on a
 * thread of its own. */
int busworker_start(busworker **out, const cfg_bus *bus, void (*notify)(void *),
                    void *ctx, char *err, size_t errlen);

/* Queue a poll of meter METER (the caller's number, returned in the result)
 * for SLOT_MS, with M's unit and profile and PLAN's requests; the caller
 * keeps M and PLAN alive until the result is taken or the worker joined. -1
 * when stopping or out of memory (the caller counts a skipped slot). The
 * caller queues at most one poll per meter. */
int busworker_submit(busworker *w, uint32_t meter, int64_t slot_ms, const cfg_meter *m,
                     const mb_plan *plan);

/* Every result of W so far, oldest first, or NULL. */
bus_result *busworker_take_results(busworker *w);

/* New settings BUS (a serial line's, the same id): the worker closes its
 * line and opens it with them before its next poll, on its own thread, so
 * that no other handle ever holds the line meanwhile; queued polls stay.
 * Does not wait. */
void busworker_reconfigure(busworker *w, const cfg_bus *bus);

/* Whether a poll runs now, and then its meter into *METER. */
bool busworker_running(busworker *w, uint32_t *meter);

/* Ask the worker to stop: queued jobs are abandoned, the request in progress
 * finishes (within the bus timeout). Does not wait. */
void busworker_stop(busworker *w);

/* Wait until no job of this bus runs any more and close its transport
 * (after busworker_stop); results stay available to busworker_take_results. */
void busworker_join(busworker *w);

/* Wait for the thread to end and free everything, pending results too.
 * NULL is a no-op. */
void busworker_free(busworker *w);

#endif
