/* reading: the text forms of a reading. Pure.
 *
 * Fields are stored and published as one JSON object keyed by the profile's
 * field names, which carry their units ("flow_m3h"). A value read from a
 * single 32-bit float carries about seven significant digits, so it is
 * written with seven: 36.6254, not 36.6254005432129. Everything else is
 * written with fifteen, which round-trips totalizers to the litre.
 */
#ifndef IC_READING_H
#define IC_READING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "profile/profile.h"

/* Write VALUES (one per field of P) as a JSON object into BUF. Returns the
 * length, or -1 when BUF is too small or a value is not finite. */
int reading_fields_json(const mb_profile *p, const double *values, char *buf,
                        size_t len);

/* The MQTT payload of a reading: {"ts":"<RFC 3339 ms>","seq":N,<fields>,
 * "quality":"good"|"suspect"[,"clock_step_ms":S][,"historical":true]}.
 * CLOCK_STEP_MS, when not 0, says the wall clock stepped by that much after
 * the reading was taken (its ts is off by about that). A SEQ of 0 (a reading
 * the database could not take) leaves "seq" out and ends with
 * "stored":false. FIELDS is the object from reading_fields_json. Returns the
 * length or -1 when BUF is too small. */
int reading_payload(char *buf, size_t len, int64_t ts_ms, int64_t seq,
                    const char *fields, bool suspect, bool historical,
                    int64_t clock_step_ms);

#endif
