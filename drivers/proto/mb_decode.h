/* mb_decode: register words to values and back.
 *
 * Pure functions. Register words arrive as the protocol carries them (each
 * word big-endian on the wire, already a host uint16_t here); multi-word values
 * are assembled in one of four word orders, named after the bytes of the value
 * as written most significant first, A being the most significant byte:
 *
 *   abcd  big-endian: first register holds A B           (most meters, "ABCD")
 *   cdab  word-swapped: first register holds C D        (TUF-2000M, "low word first")
 *   badc  byte-swapped within each word
 *   dcba  little-endian throughout
 *
 * For 64-bit values the same rule extends: abcd = registers most significant
 * first; cdab = least significant register first (bytes within a register in
 * order); badc = registers in order with bytes swapped; dcba = fully reversed.
 *
 * The encoders are the exact inverses; intake-sim uses them to fill its
 * register maps.
 */
#ifndef IC_MB_DECODE_H
#define IC_MB_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
  MB_ORDER_ABCD = 0,
  MB_ORDER_CDAB,
  MB_ORDER_BADC,
  MB_ORDER_DCBA,
} mb_word_order;

typedef enum {
  MB_T_U16 = 0,
  MB_T_I16,
  MB_T_U32,
  MB_T_I32,
  MB_T_U64,
  MB_T_F32,
  MB_T_F64,
} mb_type;

/* Registers a type occupies: 1, 2 or 4. */
int mb_type_words(mb_type t);

/* Names for config files ("u16", "f32", "abcd"): parse returns -1 when
 * unknown. */
int mb_type_parse(const char *name, mb_type *out);
const char *mb_type_name(mb_type t);
int mb_order_parse(const char *name, mb_word_order *out);
const char *mb_order_name(mb_word_order o);

/* Assemble the raw bits of a 32- or 64-bit value from registers. */
uint32_t mb_get32(const uint16_t *regs, mb_word_order o);
uint64_t mb_get64(const uint16_t *regs, mb_word_order o);
void mb_put32(uint16_t *regs, uint32_t v, mb_word_order o);
void mb_put64(uint16_t *regs, uint64_t v, mb_word_order o);

/* Decode one value of type T at REGS to a double. Word order applies to
 * 32- and 64-bit types; 16-bit types ignore it. Values beyond 2^53 (u64) lose
 * precision as doubles do. */
double mb_decode(const uint16_t *regs, mb_type t, mb_word_order o);

/* Encode V as type T into REGS (rounding to nearest for integer types and
 * saturating at the type's range). */
void mb_encode(uint16_t *regs, mb_type t, mb_word_order o, double v);

/* Apply scale and offset: raw * scale + offset. */
double mb_scale(double raw, double scale, double offset);

/* The flow-meter totalizer pair: an integer part plus a float fraction, the
 * fraction carrying the same sign as the integer (a net totalizer below zero
 * reads e.g. -12 and -0.25). Returns integer + fraction, or NAN when the
 * fraction is not finite or lies outside (-1, 1). */
double mb_totalizer(int64_t integer, double fraction);

#endif
