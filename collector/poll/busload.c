#include "poll/busload.h"

#include <stdio.h>

#include "proto/mb_proto.h"
#include "profile/planner.h"

int64_t busload_us_per_s(const cfg *c, size_t bus, char *err, size_t errlen) {
  const cfg_bus *b = &c->buses[bus];
  if (b->transport == CFG_TRANSPORT_TCP) return 0;
  int bits = mb_rtu_char_bits(b->data_bits, b->parity != 'N', b->stop_bits);
  if (bits <= 0 || b->baud <= 0) return 0;
  uint64_t silence = mb_rtu_silence_us(b->baud, bits);
  double total = 0;
  for (size_t i = 0; i < c->nmeters; i++) {
    const cfg_meter *m = &c->meters[i];
    if (m->bus != bus) continue;
    mb_plan *plan = plan_build(m->profile, b->max_gap, b->max_registers, err, errlen);
    if (!plan) return -1;
    uint64_t us = 0;
    for (size_t r = 0; r < plan->nreqs; r++) {
      /* unit, function, address, count, CRC; then unit, function, byte
       * count, the registers, CRC */
      us += mb_rtu_wire_us(8, b->baud, bits) + silence +
            mb_rtu_wire_us(5 + 2 * (size_t)plan->reqs[r].count, b->baud, bits) + silence +
            (uint64_t)b->turnaround_ms * 1000;
    }
    plan_free(plan);
    total += (double)us * 1000.0 / (double)m->interval_ms;
  }
  return (int64_t)total;
}

int busload_warning(const cfg *c, size_t bus, char *buf, size_t len) {
  char err[256];
  int64_t need = busload_us_per_s(c, bus, err, sizeof err);
  if (need <= 1000000) return 0;
  const cfg_bus *b = &c->buses[bus];
  size_t n = 0;
  for (size_t i = 0; i < c->nmeters; i++)
    if (c->meters[i].bus == bus) n++;
  snprintf(buf, len,
           "bus %s: its %zu meters need about %.2f s of line time a second at %d baud: "
           "slots will be skipped and meters may go offline; lengthen their intervals "
           "or split the line",
           b->id, n, (double)need / 1e6, b->baud);
  return 1;
}
