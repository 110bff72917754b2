/* profile: a meter model's register map, as data.
 *
 * A profile is a YAML file (drivers/profiles/NAME.yaml for the built-ins, or
 * any path a site names) listing the fields a meter exposes: where each lives
 * (register table, 0-based PDU address), how it is encoded (type, word order,
 * scale, offset, bit mask), its unit, and its role, which tells intake-sim what
 * physics to put there and the collector which field is the flow or the
 * totalizer. A field may be the sum of several parts, which is how the
 * integer + fraction totalizer pair and the "high part in 10^8 m3 + low part"
 * counters are described. A field may name a unit register whose code selects
 * a multiplier, so values come out in the profile's unit (m3/h, m3) whatever
 * the meter is set to display.
 *
 * File format: see docs/profiles.md. Reading a file is config/'s part
 * (profile_load.h): this is the model, its lookups and its decoding.
 */
#ifndef IC_PROFILE_H
#define IC_PROFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/mb_decode.h"

typedef enum { MB_TABLE_HOLDING = 0, MB_TABLE_INPUT = 1 } mb_table;

/* What a field means. intake-sim fills each role with its physics; the
 * collector uses flow and total for quality checks and volumes. */
typedef enum {
  PROF_ROLE_NONE = 0, /* anything else; intake-sim writes 0 or sim.fixed */
  PROF_ROLE_FLOW,     /* instantaneous flow */
  PROF_ROLE_VELOCITY, /* flow velocity */
  PROF_ROLE_TOTAL,    /* forward (positive) totalizer */
  PROF_ROLE_NET_TOTAL,/* net totalizer (forward minus reverse) */
  PROF_ROLE_LEVEL,    /* water level */
  PROF_ROLE_STATUS,   /* alarm / error bits: 0 when healthy */
  PROF_ROLE_SIGNAL,   /* signal quality */
} prof_role;

#define PROF_NAME_MAX 48
#define PROF_UNIT_MAX 16
#define PROF_MAX_PARTS 4
#define PROF_MAX_CODES 16

typedef struct {
  mb_table table;
  uint16_t address; /* 0-based PDU address */
  mb_type type;
  mb_word_order order;
  double scale; /* this part contributes raw * scale */
} prof_part;

typedef struct {
  uint16_t code;
  double multiplier; /* value in the field's unit = raw * multiplier */
} prof_unit_code;

typedef struct {
  char name[PROF_NAME_MAX]; /* published key, with its unit: "flow_m3h" */
  char unit[PROF_UNIT_MAX]; /* "m3/h", "m3/s", "m3", "m/s", "m", "" */
  prof_role role;
  size_t nparts;            /* 1 for a plain field */
  prof_part parts[PROF_MAX_PARTS];
  uint16_t mask;            /* applied to a u16/i16 raw value; 0xFFFF default */
  uint8_t shift;            /* right shift after the mask */
  double scale;             /* value = sum(parts) * scale + offset */
  double offset;
  bool has_range;           /* values outside [min, max] are suspect */
  double min, max;
  double rollover;          /* a totalizer wraps to 0 here; 0 when unknown */
  bool has_unit_reg;        /* a unit register selects a multiplier */
  prof_part unit_reg;       /* u16 at (table, address) */
  size_t ncodes;
  prof_unit_code codes[PROF_MAX_CODES];
} prof_field;

typedef struct mb_profile {
  char name[64];
  char description[256];
  char path[4096];  /* the file it was loaded from */
  uint16_t max_gap; /* planner: fill holes of at most this many registers */
  uint16_t max_registers; /* planner: at most this many per request (<= 125) */
  size_t nfields;
  prof_field *fields;
} mb_profile;

/* Free a profile; NULL is a no-op. */
void profile_free(mb_profile *p);

/* Index of the field named NAME, or -1. */
int profile_field_index(const mb_profile *p, const char *name);

/* The first field with ROLE, or -1. */
int profile_role_index(const mb_profile *p, prof_role role);

const char *profile_role_name(prof_role r);

/* The role names as a profile writes them, indexed by prof_role, ending with
 * NULL. */
extern const char *const profile_role_names[];

/* Multiplier for a unit code of field F, or NAN for an unknown code. */
double profile_unit_multiplier(const prof_field *f, uint16_t code);

/* The flow and volume units a field may declare (m3/h, m3/s, m3/min, L/s;
 * m3, L) and how they stand to the canonical ones, m3/h for flows and m3
 * for volumes: a value in UNIT is canonical * *NUM / *DEN. PROF_UNIT_OTHER
 * (and 1/1) for any other unit. One table for every reader and writer of
 * flows and volumes, so that they agree. */
typedef enum { PROF_UNIT_OTHER = 0, PROF_UNIT_FLOW, PROF_UNIT_VOLUME } prof_unit_kind;
prof_unit_kind profile_unit_ratio(const char *unit, double *num, double *den);

/* V, in UNIT, in the canonical unit (m3/h or m3; as it is for another). */
double profile_unit_to_canonical(const char *unit, double v);

/* Decode field F from a lookup of register words. WORDS(table, address)
 * returns a pointer to the words starting at that address (as many as the
 * part needs) or NULL when they were not read. Returns 0 and the value, or -1
 * with a reason in err (a register not read, an unknown unit code, a NaN or
 * infinite value). */
typedef const uint16_t *(*prof_words_fn)(void *ctx, mb_table table,
                                         uint16_t address, uint16_t nwords);
int profile_decode_field(const prof_field *f, prof_words_fn words, void *ctx,
                         double *out, char *err, size_t errlen);

/* Encode value V of field F into registers, the inverse of decoding (for
 * intake-sim and tests). PUT(table, address, words, n) stores words.
 * Multi-part fields are split from the most significant part down: integer
 * parts take the whole units, the last part the remainder. A field with a unit
 * register is written in the code whose multiplier is 1 (or UNIT_CODE when it
 * is >= 0) and the code is stored too. */
typedef void (*prof_put_fn)(void *ctx, mb_table table, uint16_t address,
                            const uint16_t *words, uint16_t nwords);
int profile_encode_field(const prof_field *f, double v, int unit_code,
                         prof_put_fn put, void *ctx);

/* Helpers the profile's model, its loader (config/profile_load.c) and the
 * planner share. */

/* Format an error into ERR (ERRLEN bytes); ERR may be NULL. */
void prof_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* "input" or "holding". */
static inline const char *prof_table_name(mb_table t) {
  return t == MB_TABLE_INPUT ? "input" : "holding";
}

static inline bool prof_type_is_float(mb_type t) { return t == MB_T_F32 || t == MB_T_F64; }

static inline bool prof_type_is_16bit(mb_type t) { return t == MB_T_U16 || t == MB_T_I16; }

#endif
