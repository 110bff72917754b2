#include "meter/reading.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/clock.h"

static int digits_for(const prof_field *f) {
  return f->nparts == 1 && f->parts[0].type == MB_T_F32 ? 7 : 15;
}

int reading_fields_json(const mb_profile *p, const double *values, char *buf,
                        size_t len) {
  size_t n = 0;
  if (len < 2) return -1;
  buf[n++] = '{';
  for (size_t i = 0; i < p->nfields; i++) {
    if (!isfinite(values[i])) return -1;
    double v = values[i];
    if (v == 0) v = 0; /* no "-0" */
    int w = snprintf(buf + n, len - n, "%s\"%s\":%.*g", i ? "," : "",
                     p->fields[i].name, digits_for(&p->fields[i]), v);
    if (w < 0 || (size_t)w >= len - n) return -1;
    n += (size_t)w;
  }
  if (n + 2 > len) return -1;
  buf[n++] = '}';
  buf[n] = '\0';
  return (int)n;
}

int reading_payload(char *buf, size_t len, int64_t ts_ms, int64_t seq,
                    const char *fields, bool suspect, bool historical,
                    int64_t clock_step_ms) {
  char ts[CLOCK_RFC3339_LEN + 8];
  clock_format_rfc3339(ts_ms, ts, sizeof ts);
  /* Splice the fields object's members between ts/seq and quality. */
  size_t flen = strlen(fields);
  const char *inner = fields;
  size_t ilen = 0;
  if (flen >= 2 && fields[0] == '{' && fields[flen - 1] == '}') {
    inner = fields + 1;
    ilen = flen - 2;
  }
  char seqtext[32] = "";
  if (seq > 0) snprintf(seqtext, sizeof seqtext, ",\"seq\":%lld", (long long)seq);
  char steptext[48] = "";
  if (clock_step_ms)
    snprintf(steptext, sizeof steptext, ",\"clock_step_ms\":%lld", (long long)clock_step_ms);
  int w = snprintf(buf, len, "{\"ts\":\"%s\"%s%s%.*s,\"quality\":\"%s\"%s%s%s}",
                   ts, seqtext, ilen ? "," : "", (int)ilen, inner,
                   suspect ? "suspect" : "good", steptext,
                   historical ? ",\"historical\":true" : "",
                   seq > 0 ? "" : ",\"stored\":false");
  if (w < 0 || (size_t)w >= len) return -1;
  return w;
}
