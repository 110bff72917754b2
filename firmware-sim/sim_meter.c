#include "sim_meter.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "proto/mb_decode.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

uint64_t sim_rand(uint64_t *state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

double sim_rand01(uint64_t *state) {
  return (double)(sim_rand(state) >> 11) * (1.0 / 9007199254740992.0);
}

/* Approximately normal noise (Irwin-Hall of four uniforms, unit variance):
 * bounded, which keeps a noisy flow from ever going absurd. */
static double rand_noise(uint64_t *state) {
  double s = 0;
  for (int i = 0; i < 4; i++) s += sim_rand01(state);
  return (s - 2.0) * 1.7320508075688772; /* sqrt(12/4) */
}

static size_t part_end(const prof_part *p) {
  return (size_t)p->address + (size_t)mb_type_words(p->type);
}

static size_t profile_map_size(const mb_profile *p) {
  size_t end = 1;
  for (size_t i = 0; i < p->nfields; i++) {
    const prof_field *f = &p->fields[i];
    for (size_t j = 0; j < f->nparts; j++) {
      size_t e = part_end(&f->parts[j]);
      if (e > end) end = e;
    }
    if (f->has_unit_reg && part_end(&f->unit_reg) > end)
      end = part_end(&f->unit_reg);
  }
  return end;
}

int sim_meter_init(sim_meter *m, const cfg_meter *mc, double now_s) {
  memset(m, 0, sizeof *m);
  m->cfg = mc;
  m->profile = mc->profile;
  m->nregs = profile_map_size(m->profile);
  if (m->nregs > 65536) return -1;
  m->holding = calloc(m->nregs, sizeof *m->holding);
  m->input = calloc(m->nregs, sizeof *m->input);
  m->values = calloc(m->profile->nfields ? m->profile->nfields : 1,
                     sizeof *m->values);
  m->pinned = calloc(m->profile->nfields ? m->profile->nfields : 1,
                     sizeof *m->pinned);
  if (!m->holding || !m->input || !m->values || !m->pinned) goto fail;

  m->rng = mc->sim.seed;
  /* Each meter peaks at a slightly different hour, as intakes do. */
  m->phase_h = sim_rand01(&m->rng) * 2.0 - 1.0;
  m->flow_m3h = mc->sim.mean_flow_m3h;
  m->total_m3 = mc->sim.initial_total_m3;
  m->net_total_m3 = mc->sim.initial_total_m3;
  m->fault = mc->sim.fault;
  m->reset_pending = (m->fault == SIM_FAULT_RESET);
  for (size_t i = 0; i < mc->sim.nfixed; i++) {
    if (sim_meter_pin(m, mc->sim.fixed[i].field, mc->sim.fixed[i].value,
                      true) != 0)
      goto fail;
  }
  m->last_s = now_s;
  sim_meter_update(m, now_s);
  return 0;
fail:
  sim_meter_free(m);
  return -1;
}

void sim_meter_free(sim_meter *m) {
  if (!m) return;
  free(m->holding);
  free(m->input);
  free(m->values);
  free(m->pinned);
  m->holding = m->input = NULL;
  m->values = NULL;
  m->pinned = NULL;
}

void sim_meter_set_fault(sim_meter *m, sim_fault f) {
  m->fault = f;
  if (f == SIM_FAULT_RESET) m->reset_pending = true;
}

int sim_meter_pin(sim_meter *m, const char *name, double value, bool pin) {
  int i = profile_field_index(m->profile, name);
  if (i < 0) return -1;
  m->pinned[i] = pin;
  if (pin) {
    m->values[i] = value;
    /* Pinning the totalizer moves the integrator too (in canonical m3), and
     * the integrator stands still while the pin holds (sim_meter_update), so
     * unpinning later continues from the pinned value rather than jumping. */
    const prof_field *f = &m->profile->fields[i];
    if (f->role == PROF_ROLE_TOTAL) m->total_m3 = profile_unit_to_canonical(f->unit, value);
    if (f->role == PROF_ROLE_NET_TOTAL)
      m->net_total_m3 = profile_unit_to_canonical(f->unit, value);
  }
  return 0;
}

/* Daily pattern: irrigation intakes draw most in the afternoon and least
 * before dawn, about +-25 % around the mean. */
static double daily_factor(const sim_meter *m, double now_s) {
  double hour = fmod(now_s / 3600.0 + 8.0 + m->phase_h, 24.0); /* UTC+8 */
  return 1.0 + 0.25 * sin(2.0 * M_PI * (hour - 9.0) / 24.0);
}

/* Units the simulator converts to and from its canonical units (m3/h for
 * flows, m3 for volumes), by the profiles' one table: both directions use
 * the same ratio, so the conversions are exact inverses of each other. A
 * unit not listed is taken as canonical. */
static double from_canonical(const char *unit, double v) {
  double num, den;
  profile_unit_ratio(unit, &num, &den);
  return v * num / den;
}

static bool is_flow_unit(const char *unit) {
  double num, den;
  return profile_unit_ratio(unit, &num, &den) == PROF_UNIT_FLOW;
}

static double field_value(const sim_meter *m, const prof_field *f) {
  double d = m->cfg->sim.pipe_diameter_m;
  double area = M_PI * d * d / 4.0;
  switch (f->role) {
    case PROF_ROLE_FLOW:
      return from_canonical(f->unit, m->flow_m3h);
    case PROF_ROLE_VELOCITY:
      return area > 0 ? m->flow_m3h / 3600.0 / area : 0.0;
    case PROF_ROLE_TOTAL:
      return from_canonical(f->unit, m->total_m3);
    case PROF_ROLE_NET_TOTAL:
      return from_canonical(f->unit, m->net_total_m3);
    case PROF_ROLE_LEVEL: {
      /* A rough rating curve: level grows with the square root of flow. */
      double mean = m->cfg->sim.mean_flow_m3h > 0 ? m->cfg->sim.mean_flow_m3h : 1;
      double r = m->flow_m3h / mean;
      return 0.8 * sqrt(r > 0 ? r : 0);
    }
    case PROF_ROLE_SIGNAL:
      return 85.0;
    case PROF_ROLE_STATUS:
      return 0.0;
    case PROF_ROLE_NONE:
    default:
      /* Unnamed flow-like fields ("hourly flow") follow the flow. */
      if (is_flow_unit(f->unit)) return from_canonical(f->unit, m->flow_m3h);
      return 0.0;
  }
}

static void put_words(void *ctx, mb_table table, uint16_t address,
                      const uint16_t *words, uint16_t nwords) {
  sim_meter *m = ctx;
  uint16_t *t = table == MB_TABLE_INPUT ? m->input : m->holding;
  for (uint16_t i = 0; i < nwords; i++) {
    size_t a = (size_t)address + i;
    if (a < m->nregs) t[a] = words[i];
  }
}

static double wrap(double v, double rollover) {
  if (rollover > 0 && v >= rollover) v = fmod(v, rollover);
  return v;
}

void sim_meter_update(sim_meter *m, double now_s) {
  const mb_profile *p = m->profile;
  double dt = now_s - m->last_s;
  if (dt < 0) dt = 0;
  m->last_s = now_s;

  /* Flow: daily pattern times noise; the totalizer integrates it. */
  const sim_meter *cm = m;
  double noise = m->cfg->sim.noise * rand_noise(&m->rng);
  m->flow_m3h = m->cfg->sim.mean_flow_m3h * daily_factor(cm, now_s) * (1.0 + noise);
  if (m->flow_m3h < 0) m->flow_m3h = 0;
  int fi = profile_role_index(p, PROF_ROLE_FLOW);
  if (fi >= 0 && m->pinned[fi]) {
    /* A pinned flow drives the totalizer too, so physics stays consistent. */
    m->flow_m3h = profile_unit_to_canonical(p->fields[fi].unit, m->values[fi]);
  }
  /* A pinned totalizer stands still: the pin is the reading, and unpinning
   * continues from it. A reset does not move it either. */
  bool total_pinned = false, net_pinned = false;
  for (size_t i = 0; i < p->nfields; i++) {
    if (!m->pinned[i]) continue;
    if (p->fields[i].role == PROF_ROLE_TOTAL) total_pinned = true;
    if (p->fields[i].role == PROF_ROLE_NET_TOTAL) net_pinned = true;
  }
  if (!total_pinned) m->total_m3 += m->flow_m3h * dt / 3600.0;
  if (!net_pinned) m->net_total_m3 += m->flow_m3h * dt / 3600.0;
  if (m->reset_pending) {
    if (!total_pinned) m->total_m3 = 0;
    if (!net_pinned) m->net_total_m3 = 0;
    m->reset_pending = false;
  }

  for (size_t i = 0; i < p->nfields; i++) {
    const prof_field *f = &p->fields[i];
    if (f->role == PROF_ROLE_TOTAL || f->role == PROF_ROLE_NET_TOTAL) {
      double *acc = f->role == PROF_ROLE_TOTAL ? &m->total_m3 : &m->net_total_m3;
      *acc = wrap(*acc, f->rollover);
    }
    if (!m->pinned[i]) m->values[i] = field_value(m, f);
    profile_encode_field(f, m->values[i], -1, put_words, m);
  }
}

static bool should(uint64_t *rng, double ratio) {
  return sim_rand01(rng) < ratio;
}

void sim_meter_handle(sim_meter *m, const uint8_t *pdu, size_t len,
                      double now_s, sim_action *act) {
  memset(act, 0, sizeof *act);
  act->kind = SIM_ACT_ANSWER;
  m->requests++;

  mb_request req;
  int rc = mb_pdu_parse_read_req(pdu, len, &req);
  int n;
  if (rc == MB_OK && req.fc != MB_FC_READ_HOLDING && req.fc != MB_FC_READ_INPUT) {
    n = mb_pdu_exception(act->pdu, sizeof act->pdu, req.fc,
                         MB_EX_ILLEGAL_FUNCTION);
  } else if (rc == MB_ERANGE) {
    n = mb_pdu_exception(act->pdu, sizeof act->pdu, pdu[0], MB_EX_ILLEGAL_VALUE);
  } else if (rc != MB_OK) {
    /* Too short to be a request at all: a real meter stays silent. */
    act->kind = SIM_ACT_DROP;
    return;
  } else if ((size_t)req.addr + req.count > m->nregs) {
    n = mb_pdu_exception(act->pdu, sizeof act->pdu, req.fc,
                         MB_EX_ILLEGAL_ADDRESS);
  } else {
    sim_meter_update(m, now_s);
    const uint16_t *t = req.fc == MB_FC_READ_INPUT ? m->input : m->holding;
    n = mb_pdu_read_resp(act->pdu, sizeof act->pdu, req.fc, t + req.addr,
                         req.count);
  }
  if (n < 0) {
    act->kind = SIM_ACT_DROP;
    return;
  }
  act->pdulen = (size_t)n;

  const cfg_sim *s = &m->cfg->sim;
  switch (m->fault) {
    case SIM_FAULT_OFFLINE:
      act->kind = SIM_ACT_DROP;
      return;
    case SIM_FAULT_FLAKY:
      if (should(&m->rng, s->flaky_ratio)) {
        act->kind = SIM_ACT_DROP;
        return;
      }
      break;
    case SIM_FAULT_SLOW:
      act->kind = SIM_ACT_DELAY;
      act->delay_ms = s->slow_delay_ms;
      break;
    case SIM_FAULT_CRC:
      if (should(&m->rng, s->crc_ratio)) act->kind = SIM_ACT_BAD_CRC;
      break;
    case SIM_FAULT_EXCEPTION:
      n = mb_pdu_exception(act->pdu, sizeof act->pdu, pdu[0],
                           (uint8_t)s->exception_code);
      act->pdulen = n > 0 ? (size_t)n : 0;
      break;
    case SIM_FAULT_GARBAGE:
      act->kind = SIM_ACT_GARBAGE;
      act->garbage_len = 5 + (size_t)(sim_rand(&m->rng) % 20);
      for (size_t i = 0; i < act->garbage_len; i++)
        act->garbage[i] = (uint8_t)sim_rand(&m->rng);
      break;
    case SIM_FAULT_RESET:
    case SIM_FAULT_NONE:
    default:
      break;
  }
  if (act->kind != SIM_ACT_DROP) m->answers++;
}
