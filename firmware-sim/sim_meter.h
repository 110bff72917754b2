/* sim_meter: one simulated meter's firmware.
 *
 * Keeps the meter's register map live: a flow with a daily pattern and noise
 * around sim.mean_flow_m3h, a totalizer that integrates it (rolling over where
 * the profile says the real meter does), a velocity consistent with the flow
 * through the pipe, and whatever else the profile's roles ask for. Values pinned
 * with sim.fixed (or the control socket) override the physics. It also decides
 * how a request is answered under the meter's fault mode.
 *
 * Pure apart from the clock it is handed: no I/O, so it is unit-tested.
 */
#ifndef IC_SIM_METER_H
#define IC_SIM_METER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "proto/mb_proto.h"

typedef struct {
  const cfg_meter *cfg;
  const mb_profile *profile;
  size_t nregs;      /* registers in each table: 0..nregs-1 are readable */
  uint16_t *holding;
  uint16_t *input;
  double *values;    /* current value of each profile field */
  bool *pinned;      /* field is pinned to values[i] */
  double flow_m3h;
  double total_m3;
  double net_total_m3;
  double last_s;     /* wall time of the last update, seconds */
  double phase_h;    /* hour offset of this meter's daily pattern */
  uint64_t rng;
  sim_fault fault;
  bool reset_pending;
  uint64_t requests;
  uint64_t answers;
} sim_meter;

/* Set up meter M from its config at wall time NOW_S (seconds since the epoch).
 * Returns 0 or -1 (out of memory, or a profile address beyond 65535). */
int sim_meter_init(sim_meter *m, const cfg_meter *mc, double now_s);
void sim_meter_free(sim_meter *m);

/* Advance the physics to NOW_S and rewrite the register map. Time going
 * backwards advances nothing. */
void sim_meter_update(sim_meter *m, double now_s);

/* Switch the fault mode. Switching to SIM_FAULT_RESET arms one totalizer
 * reset, applied at the next update. */
void sim_meter_set_fault(sim_meter *m, sim_fault f);

/* Pin field NAME to VALUE, in the field's unit (or unpin it with pin false).
 * A pinned flow drives the totalizers; a pinned totalizer holds still, and
 * once unpinned counts on from the pinned value. -1 for an unknown field. */
int sim_meter_pin(sim_meter *m, const char *name, double value, bool pin);

/* How to answer one request. */
typedef enum {
  SIM_ACT_ANSWER = 0, /* send pdu (a normal or exception response) */
  SIM_ACT_DROP,       /* say nothing */
  SIM_ACT_DELAY,      /* send pdu after delay_ms */
  SIM_ACT_BAD_CRC,    /* send pdu with its CRC corrupted (malformed on TCP) */
  SIM_ACT_GARBAGE,    /* send garbage_len noise bytes instead */
} sim_action_kind;

typedef struct {
  sim_action_kind kind;
  int64_t delay_ms;
  uint8_t pdu[MB_PDU_MAX];
  size_t pdulen;
  uint8_t garbage[64];
  size_t garbage_len;
} sim_action;

/* Answer the request PDU (already framed and checked) at wall time NOW_S:
 * updates the physics, builds the response (or an exception for an unknown
 * function, a bad address or count) and applies the fault mode. */
void sim_meter_handle(sim_meter *m, const uint8_t *pdu, size_t len,
                      double now_s, sim_action *act);

/* Deterministic generator (splitmix64) shared with the servers. */
uint64_t sim_rand(uint64_t *state);
double sim_rand01(uint64_t *state);

#endif
