/* The Prometheus text exposition format, into a buffer. */
#include "metrics/metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mtext_init(mtext *t) { memset(t, 0, sizeof *t); }

void mtext_free(mtext *t) {
  free(t->s);
  memset(t, 0, sizeof *t);
}

static bool reserve(mtext *t, size_t more) {
  if (t->failed) return false;
  if (t->len + more + 1 <= t->cap) return true;
  size_t cap = t->cap ? t->cap : 4096;
  while (cap < t->len + more + 1) cap *= 2;
  char *s = realloc(t->s, cap);
  if (!s) {
    t->failed = true;
    return false;
  }
  t->s = s;
  t->cap = cap;
  return true;
}

static void put(mtext *t, const char *s, size_t n) {
  if (!reserve(t, n)) return;
  memcpy(t->s + t->len, s, n);
  t->len += n;
  t->s[t->len] = '\0';
}

void mtext_printf(mtext *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || !reserve(t, (size_t)n)) return;
  va_start(ap, fmt);
  vsnprintf(t->s + t->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  t->len += (size_t)n;
}

void mtext_family(mtext *t, const char *name, const char *type, const char *help) {
  mtext_printf(t, "# HELP %s ", name);
  /* HELP text escapes backslash and line feed. */
  for (const char *p = help; *p; p++) {
    if (*p == '\\') put(t, "\\\\", 2);
    else if (*p == '\n') put(t, "\\n", 2);
    else put(t, p, 1);
  }
  mtext_printf(t, "\n# TYPE %s %s\n", name, type);
}

static void put_label_value(mtext *t, const char *v) {
  for (const char *p = v; *p; p++) {
    if (*p == '\\') put(t, "\\\\", 2);
    else if (*p == '"') put(t, "\\\"", 2);
    else if (*p == '\n') put(t, "\\n", 2);
    else put(t, p, 1);
  }
}

void mtext_sample(mtext *t, const char *name, const char *const *labels, size_t nlabels,
                  double value) {
  put(t, name, strlen(name));
  if (nlabels) {
    put(t, "{", 1);
    for (size_t i = 0; i < nlabels; i++) {
      if (i) put(t, ",", 1);
      put(t, labels[2 * i], strlen(labels[2 * i]));
      put(t, "=\"", 2);
      put_label_value(t, labels[2 * i + 1]);
      put(t, "\"", 1);
    }
    put(t, "}", 1);
  }
  if (isnan(value))
    put(t, " NaN\n", 5);
  else if (isinf(value))
    mtext_printf(t, " %s\n", value > 0 ? "+Inf" : "-Inf");
  else if (value == floor(value) && fabs(value) < 1e15)
    mtext_printf(t, " %.0f\n", value);
  else
    mtext_printf(t, " %.17g\n", value);
}
