/* The Prometheus text exposition format (version 0.0.4), written into a
 * growing buffer: a family's # HELP and # TYPE lines, then its samples with
 * their labels. No I/O: the caller sends the text. */
#ifndef IC_METRICS_H
#define IC_METRICS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
  char *s;
  size_t len, cap;
  bool failed; /* out of memory at some point: the text is incomplete */
} mtext;

/* The content type of the text. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

void mtext_init(mtext *t);
void mtext_free(mtext *t);
/* Append printf-style text. */
void mtext_printf(mtext *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A family's header: # HELP NAME HELP and # TYPE NAME TYPE ("counter",
 * "gauge", "histogram"). */
void mtext_family(mtext *t, const char *name, const char *type, const char *help);
/* One sample: NAME{k1="v1",...} VALUE. LABELS holds NLABELS pairs of name
 * and value (values escaped as the format wants). */
void mtext_sample(mtext *t, const char *name, const char *const *labels, size_t nlabels,
                  double value);

#endif
