/* ydoc: a small YAML document tree built with libyaml.
 *
 * The config loader and the profile loader both want the same things from a
 * YAML file: every node's line and column for error messages, ${VAR}
 * substitution in scalars, and a readable tree to validate. ydoc parses one
 * file into such a tree; validation is the caller's job. Errors come back as
 * "FILE:LINE:COL: message" in a caller-provided buffer.
 */
#ifndef IC_YDOC_H
#define IC_YDOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { YDOC_SCALAR, YDOC_MAP, YDOC_SEQ } ydoc_kind;

typedef struct ydoc_node ydoc_node;
struct ydoc_node {
  ydoc_kind kind;
  int line; /* 1-based */
  int col;  /* 1-based */
  char *value;       /* YDOC_SCALAR: the text after ${VAR} substitution */
  bool quoted;       /* YDOC_SCALAR: written in quotes (so never null/bool) */
  size_t n;          /* YDOC_MAP: pairs; YDOC_SEQ: items */
  ydoc_node **keys;  /* YDOC_MAP: scalar keys, in file order */
  ydoc_node **items; /* YDOC_MAP: values; YDOC_SEQ: items */
};

typedef struct ydoc ydoc;

#define YDOC_ERR_MAX 512

/* Parse FILE. Scalars have ${VAR} and ${VAR:-default} replaced from the
 * environment; an unset variable without a default is an error. Returns NULL
 * and fills err ("FILE:LINE:COL: message") on failure. */
ydoc *ydoc_load_file(const char *path, char *err, size_t errlen);

/* Parse a document held in memory; NAME is used in error messages. */
ydoc *ydoc_load_string(const char *name, const char *text, size_t len,
                       char *err, size_t errlen);

/* The root node, or NULL for an empty document. */
const ydoc_node *ydoc_root(const ydoc *d);

/* The file name given at load time. */
const char *ydoc_name(const ydoc *d);

void ydoc_free(ydoc *d);

/* The value for KEY in map M, or NULL when absent (or M is not a map). */
const ydoc_node *ydoc_get(const ydoc_node *m, const char *key);

/* Write "NAME:LINE:COL: message" for node N into err. Returns -1 so callers
 * can `return ydoc_errf(...)`. */
int ydoc_errf(const ydoc *d, const ydoc_node *n, char *err, size_t errlen,
              const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Typed accessors. Each checks the node, writes a positioned error that says
 * what was expected, and returns 0 on success or -1 on failure. */
int ydoc_str(const ydoc *d, const ydoc_node *n, const char **out, char *err,
             size_t errlen);
int ydoc_int(const ydoc *d, const ydoc_node *n, int64_t min, int64_t max,
             int64_t *out, char *err, size_t errlen);
int ydoc_double(const ydoc *d, const ydoc_node *n, double min, double max,
                double *out, char *err, size_t errlen);
int ydoc_bool(const ydoc *d, const ydoc_node *n, bool *out, char *err,
              size_t errlen);
/* Durations: one or more <number><unit> with unit ms, s, m, h or d
 * ("500ms", "2s", "1h30m"). */
int ydoc_duration_ms(const ydoc *d, const ydoc_node *n, int64_t min_ms,
                     int64_t max_ms, int64_t *out, char *err, size_t errlen);
/* One of the NULL-terminated CHOICES; *out is its index. */
int ydoc_enum(const ydoc *d, const ydoc_node *n, const char *const *choices,
              int *out, char *err, size_t errlen);
/* An id: [A-Za-z0-9_-]+, at most maxlen-1 characters. */
int ydoc_id(const ydoc *d, const ydoc_node *n, size_t maxlen, const char **out,
            char *err, size_t errlen);

/* Check that N is a map whose keys are all in the NULL-terminated ALLOWED
 * list and appear once. WHAT names the section in messages ("bus"). */
int ydoc_check_map(const ydoc *d, const ydoc_node *n, const char *what,
                   const char *const *allowed, char *err, size_t errlen);
/* Check that N is a sequence. */
int ydoc_check_seq(const ydoc *d, const ydoc_node *n, const char *what,
                   char *err, size_t errlen);

/* Pure helper: parse a duration string into milliseconds. 0 or -1. */
int ydoc_parse_duration(const char *s, int64_t *out_ms);

#endif
