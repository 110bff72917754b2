/* ydoc: a small YAML document tree built with libyaml (see ydoc.h).
 *
 * The tree is built from libyaml's event stream rather than its document API
 * because events carry the marks we need and let us refuse what a config file
 * has no use for (aliases, several documents, complex keys) before building
 * anything. Every input is bounded: the loaders are fuzzed, and a site's
 * config is small.
 */
#include "ydoc.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

/* A config of 10,000 meters with their sim blocks is about 4 MiB. */
#define YDOC_MAX_BYTES ((size_t)8 << 20)
#define YDOC_MAX_DEPTH 32
/* Nodes bound the memory a document takes (about 150 bytes each, several
 * times that under AddressSanitizer), and a dense file reaches one node per
 * two bytes: a million of them cost hundreds of MB before anything was
 * checked. A site of 10,000 meters written out in full needs about 20 to 30
 * nodes a meter, which this still holds. */
#define YDOC_MAX_NODES 300000
/* A scalar after ${VAR} substitution. */
#define YDOC_MAX_VALUE ((size_t)1 << 20)
#define YDOC_MAX_VARNAME 128
/* Values quoted in messages are cut here so an error stays one short line. */
#define YDOC_SHOW_MAX 60
#define YDOC_MSG_MAX 1024

struct ydoc {
  char *name;
  ydoc_node *root;
  size_t nnodes;
};

/* ---- small character helpers (no locale: config syntax is ASCII) ---- */

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
static bool is_idchar(char c) {
  return is_alpha(c) || is_digit(c) || c == '_' || c == '-';
}
static int hexval(char c) {
  if (is_digit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
static bool ascii_ieq(const char *a, const char *b) {
  for (; *a && *b; a++, b++) {
    char x = *a, y = *b;
    if (x >= 'A' && x <= 'Z') x = (char)(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = (char)(y - 'A' + 'a');
    if (x != y) return false;
  }
  return *a == *b;
}

static int clamp_int(size_t v) { return v > INT_MAX ? INT_MAX : (int)v; }

/* Cut a trailing incomplete UTF-8 sequence left by a truncating snprintf. */
static void utf8_trim_tail(char *s) {
  size_t len = strlen(s);
  if (len == 0) return;
  size_t i = len;
  size_t cont = 0;
  while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80 && cont < 4) {
    i--;
    cont++;
  }
  if (i == 0) return;
  unsigned char lead = (unsigned char)s[i - 1];
  size_t need = 0;
  if (lead >= 0xF0) need = 3;
  else if (lead >= 0xE0) need = 2;
  else if (lead >= 0xC0) need = 1;
  else return;
  if (cont < need) s[i - 1] = '\0';
}

/* Messages are one line: whatever a value or a file name holds, a control
 * character never reaches the caller's output. */
static void one_line(char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7F) *s = ' ';
}

__attribute__((format(printf, 6, 0))) static int
vposerr(const char *name, int line, int col, char *err, size_t errlen,
        const char *fmt, va_list ap) {
  if (!err || errlen == 0) return -1;
  char msg[YDOC_MSG_MAX];
  vsnprintf(msg, sizeof msg, fmt, ap);
  snprintf(err, errlen, "%s:%d:%d: %s", name ? name : "<input>", line, col,
           msg);
  utf8_trim_tail(err);
  one_line(err);
  return -1;
}

__attribute__((format(printf, 6, 7))) static int
poserr(const char *name, int line, int col, char *err, size_t errlen,
       const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vposerr(name, line, col, err, errlen, fmt, ap);
  va_end(ap);
  return -1;
}

int ydoc_errf(const ydoc *d, const ydoc_node *n, char *err, size_t errlen,
              const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vposerr(d ? d->name : NULL, n ? n->line : 1, n ? n->col : 1, err, errlen,
          fmt, ap);
  va_end(ap);
  return -1;
}

/* A value as it appears in a message: escaped, and cut at YDOC_SHOW_MAX
 * bytes on a character boundary. */
typedef struct {
  char s[YDOC_SHOW_MAX * 4 + 8];
} shown;

static const char *show_quoted(const char *v, shown *b) {
  size_t o = 0;
  b->s[o++] = '"';
  size_t i = 0;
  for (; v[i] && i < YDOC_SHOW_MAX; i++) {
    unsigned char c = (unsigned char)v[i];
    if (c == '"' || c == '\\') {
      b->s[o++] = '\\';
      b->s[o++] = (char)c;
    } else if (c == '\n') {
      b->s[o++] = '\\';
      b->s[o++] = 'n';
    } else if (c == '\t') {
      b->s[o++] = '\\';
      b->s[o++] = 't';
    } else if (c < 0x20 || c == 0x7F) {
      static const char hex[] = "0123456789abcdef";
      b->s[o++] = '\\';
      b->s[o++] = 'x';
      b->s[o++] = hex[c >> 4];
      b->s[o++] = hex[c & 15];
    } else {
      b->s[o++] = (char)c;
    }
  }
  if (v[i]) {
    /* Do not split a multi-byte character. */
    while (o > 1 && ((unsigned char)b->s[o - 1] & 0xC0) == 0x80) o--;
    if (o > 1 && (unsigned char)b->s[o - 1] >= 0xC0) o--;
    memcpy(b->s + o, "...", 3);
    o += 3;
  }
  b->s[o++] = '"';
  b->s[o] = '\0';
  return b->s;
}

static bool is_null_text(const char *v) {
  return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
         strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

/* What a message says was found instead: "300" (quoted), a map, ... */
static const char *got(const ydoc_node *n, shown *b) {
  if (!n) return "nothing";
  if (n->kind == YDOC_MAP) return "a map";
  if (n->kind == YDOC_SEQ) return "a sequence";
  if (!n->quoted && is_null_text(n->value))
    return n->value[0] ? "null" : "an empty value";
  return show_quoted(n->value, b);
}

/* ---- the tree ---- */

static void node_free(ydoc_node *n) {
  if (!n) return;
  for (size_t i = 0; i < n->n; i++) {
    if (n->keys) node_free(n->keys[i]);
    if (n->items) node_free(n->items[i]);
  }
  free(n->keys);
  free(n->items);
  free(n->value);
  free(n);
}

void ydoc_free(ydoc *d) {
  if (!d) return;
  node_free(d->root);
  free(d->name);
  free(d);
}

const ydoc_node *ydoc_root(const ydoc *d) { return d ? d->root : NULL; }

const char *ydoc_name(const ydoc *d) { return d ? d->name : NULL; }

const ydoc_node *ydoc_get(const ydoc_node *m, const char *key) {
  if (!m || m->kind != YDOC_MAP || !key) return NULL;
  for (size_t i = 0; i < m->n; i++)
    if (strcmp(m->keys[i]->value, key) == 0) return m->items[i];
  return NULL;
}

/* ---- building from events ---- */

typedef struct {
  ydoc_node *node;
  size_t cap;
  ydoc_node *key; /* a map's key still waiting for its value */
} frame;

typedef struct {
  ydoc *d;
  frame st[YDOC_MAX_DEPTH];
  int depth;
  int ndocs;
  char *err;
  size_t errlen;
} builder;

__attribute__((format(printf, 3, 4))) static int
berr(builder *b, const yaml_mark_t *m, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vposerr(b->d->name, clamp_int(m->line + 1), clamp_int(m->column + 1), b->err,
          b->errlen, fmt, ap);
  va_end(ap);
  return -1;
}

static ydoc_node *node_new(builder *b, ydoc_kind kind, const yaml_mark_t *m) {
  if (b->d->nnodes >= YDOC_MAX_NODES) {
    berr(b, m, "too many YAML nodes (at most %d)", YDOC_MAX_NODES);
    return NULL;
  }
  ydoc_node *n = calloc(1, sizeof *n);
  if (!n) {
    berr(b, m, "out of memory");
    return NULL;
  }
  n->kind = kind;
  n->line = clamp_int(m->line + 1);
  n->col = clamp_int(m->column + 1);
  b->d->nnodes++;
  return n;
}

static int push(ydoc_node *c, size_t *cap, ydoc_node *key, ydoc_node *val) {
  if (c->n == *cap) {
    size_t nc = *cap ? *cap * 2 : 4;
    ydoc_node **ni = realloc(c->items, nc * sizeof *ni);
    if (!ni) return -1;
    c->items = ni;
    if (c->kind == YDOC_MAP) {
      ydoc_node **nk = realloc(c->keys, nc * sizeof *nk);
      if (!nk) return -1;
      c->keys = nk;
    }
    *cap = nc;
  }
  if (c->kind == YDOC_MAP) c->keys[c->n] = key;
  c->items[c->n++] = val;
  return 0;
}

/* Hang CHILD under the open collection. On failure the caller still owns
 * CHILD. */
static int attach(builder *b, ydoc_node *child, const yaml_mark_t *m) {
  if (b->depth == 0) {
    b->d->root = child;
    return 0;
  }
  frame *f = &b->st[b->depth - 1];
  if (f->node->kind == YDOC_MAP && !f->key) {
    f->key = child;
    return 0;
  }
  if (push(f->node, &f->cap, f->key, child)) return berr(b, m, "out of memory");
  f->key = NULL;
  return 0;
}

static bool expecting_key(const builder *b) {
  if (b->depth == 0) return false;
  const frame *f = &b->st[b->depth - 1];
  return f->node->kind == YDOC_MAP && !f->key;
}

/* A growable string, capped at YDOC_MAX_VALUE. */
typedef struct {
  char *s;
  size_t len, cap;
} sbuf;

static int sbuf_add(sbuf *s, const char *p, size_t n) {
  if (n > YDOC_MAX_VALUE || s->len + n > YDOC_MAX_VALUE) return -1;
  if (s->len + n + 1 > s->cap) {
    size_t nc = s->cap ? s->cap : 64;
    while (nc < s->len + n + 1) nc *= 2;
    char *ns = realloc(s->s, nc);
    if (!ns) return -1;
    s->s = ns;
    s->cap = nc;
  }
  memcpy(s->s + s->len, p, n);
  s->len += n;
  s->s[s->len] = '\0';
  return 0;
}

/* Replace ${NAME} and ${NAME:-default} in V (shell semantics: the default
 * applies when NAME is unset or empty). "$${" stands for a literal "${". */
static int substitute(builder *b, ydoc_node *n, const char *v, size_t len) {
  const yaml_mark_t m = {.line = (size_t)n->line - 1,
                         .column = (size_t)n->col - 1};
  sbuf out = {0};
  size_t i = 0;
  if (sbuf_add(&out, "", 0)) goto oom;
  while (i < len) {
    const char *dollar = memchr(v + i, '$', len - i);
    size_t upto = dollar ? (size_t)(dollar - v) : len;
    if (sbuf_add(&out, v + i, upto - i)) goto toolong;
    i = upto;
    if (i >= len) break;
    /* v[i] == '$' */
    if (i + 2 < len && v[i + 1] == '$' && v[i + 2] == '{') {
      if (sbuf_add(&out, "${", 2)) goto toolong;
      i += 3;
      continue;
    }
    if (i + 1 >= len || v[i + 1] != '{') {
      if (sbuf_add(&out, "$", 1)) goto toolong;
      i++;
      continue;
    }
    size_t ns = i + 2, j = ns;
    while (j < len && (is_alpha(v[j]) || is_digit(v[j]) || v[j] == '_')) j++;
    size_t nlen = j - ns;
    bool has_def = false;
    size_t ds = 0, de = 0, end;
    if (j < len && v[j] == '}') {
      end = j + 1;
    } else if (j + 1 < len && v[j] == ':' && v[j + 1] == '-') {
      has_def = true;
      ds = j + 2;
      const char *close = memchr(v + ds, '}', len - ds);
      if (!close) {
        free(out.s);
        return berr(b, &m, "unterminated ${ in value (expected ${NAME} or "
                           "${NAME:-default})");
      }
      de = (size_t)(close - v);
      end = de + 1;
    } else if (j >= len || !memchr(v + j, '}', len - j)) {
      free(out.s);
      return berr(b, &m, "unterminated ${ in value (expected ${NAME} or "
                         "${NAME:-default})");
    } else {
      nlen = 0; /* a character that cannot be in a name */
      end = j;
    }
    if (nlen == 0 || nlen > YDOC_MAX_VARNAME || is_digit(v[ns])) {
      free(out.s);
      return berr(b, &m,
                  "bad variable reference in value (expected ${NAME} or "
                  "${NAME:-default}, NAME made of letters, digits and '_')");
    }
    char name[YDOC_MAX_VARNAME + 1];
    memcpy(name, v + ns, nlen);
    name[nlen] = '\0';
    const char *val = getenv(name);
    if (has_def && (!val || !*val)) {
      if (sbuf_add(&out, v + ds, de - ds)) goto toolong;
    } else if (!val) {
      free(out.s);
      return berr(b, &m,
                  "environment variable %s is not set (write ${%s:-default} "
                  "to give a default)",
                  name, name);
    } else if (sbuf_add(&out, val, strlen(val))) {
      goto toolong;
    }
    i = end;
  }
  n->value = out.s;
  return 0;
toolong:
  free(out.s);
  return berr(b, &m, "value too long (at most %zu bytes after substitution)",
              YDOC_MAX_VALUE);
oom:
  free(out.s);
  return berr(b, &m, "out of memory");
}

typedef struct {
  const char *k;
  size_t i;
} kent;

static int kent_cmp(const void *pa, const void *pb) {
  const kent *a = pa, *b = pb;
  int c = strcmp(a->k, b->k);
  if (c) return c;
  return (a->i > b->i) - (a->i < b->i);
}

/* YAML requires the keys of a map to be unique and libyaml does not check,
 * so a repeated key (a frequent copy-paste slip) is caught here. Sorting keeps
 * this O(n log n) on hostile input; the earliest repeat is reported. */
static int check_dups(builder *b, const ydoc_node *m) {
  if (m->n < 2) return 0;
  kent *a = malloc(m->n * sizeof *a);
  if (!a) {
    yaml_mark_t mk = {.line = (size_t)m->line - 1, .column = (size_t)m->col - 1};
    return berr(b, &mk, "out of memory");
  }
  for (size_t i = 0; i < m->n; i++) {
    a[i].k = m->keys[i]->value;
    a[i].i = i;
  }
  qsort(a, m->n, sizeof *a, kent_cmp);
  size_t best_first = 0, best_dup = SIZE_MAX;
  for (size_t x = 0; x + 1 < m->n; x++) {
    if (strcmp(a[x].k, a[x + 1].k) != 0) continue;
    if (x > 0 && strcmp(a[x - 1].k, a[x].k) == 0) continue; /* not a group start */
    if (a[x + 1].i < best_dup) {
      best_dup = a[x + 1].i;
      best_first = a[x].i;
    }
  }
  free(a);
  if (best_dup == SIZE_MAX) return 0;
  const ydoc_node *k = m->keys[best_dup];
  shown s;
  return poserr(b->d->name, k->line, k->col, b->err, b->errlen,
                "duplicate key %s (first defined at line %d)",
                show_quoted(k->value, &s), m->keys[best_first]->line);
}

static int on_event(builder *b, const yaml_event_t *ev) {
  const yaml_mark_t *mk = &ev->start_mark;
  switch (ev->type) {
  case YAML_DOCUMENT_START_EVENT:
    if (++b->ndocs > 1)
      return berr(b, mk, "expected a single YAML document, found a second one");
    return 0;
  case YAML_ALIAS_EVENT:
    return berr(b, mk, "aliases (*%s) are not supported",
                (const char *)ev->data.alias.anchor);
  case YAML_SCALAR_EVENT: {
    ydoc_node *n = node_new(b, YDOC_SCALAR, mk);
    if (!n) return -1;
    n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
    const char *v = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    if (memchr(v, '\0', len)) {
      node_free(n);
      return berr(b, mk, "NUL characters are not allowed in values");
    }
    if (substitute(b, n, v, len) || attach(b, n, mk)) {
      node_free(n);
      return -1;
    }
    return 0;
  }
  case YAML_SEQUENCE_START_EVENT:
  case YAML_MAPPING_START_EVENT: {
    bool map = ev->type == YAML_MAPPING_START_EVENT;
    if (expecting_key(b))
      return berr(b, mk, "a key must be a plain value, not a %s",
                  map ? "map" : "sequence");
    if (b->depth >= YDOC_MAX_DEPTH)
      return berr(b, mk, "nested too deeply (at most %d levels)",
                  YDOC_MAX_DEPTH);
    ydoc_node *n = node_new(b, map ? YDOC_MAP : YDOC_SEQ, mk);
    if (!n) return -1;
    if (attach(b, n, mk)) {
      node_free(n);
      return -1;
    }
    b->st[b->depth++] = (frame){.node = n};
    return 0;
  }
  case YAML_SEQUENCE_END_EVENT:
  case YAML_MAPPING_END_EVENT: {
    if (b->depth == 0) return berr(b, mk, "unbalanced YAML events");
    frame *f = &b->st[--b->depth];
    /* libyaml always completes a pair (an absent value is an empty
     * scalar); a dangling key would be a parser bug, so drop it. */
    node_free(f->key);
    f->key = NULL;
    if (f->node->kind == YDOC_MAP) return check_dups(b, f->node);
    return 0;
  }
  default:
    return 0;
  }
}

/* Line and column (1-based, columns in characters as libyaml counts them)
 * of byte OFFSET, for reader errors that carry only an offset. */
static void offset_pos(const unsigned char *text, size_t len, size_t offset,
                       int *line, int *col) {
  size_t l = 1, c = 1;
  if (offset > len) offset = len;
  for (size_t i = 0; i < offset; i++) {
    if (text[i] == '\n') {
      l++;
      c = 1;
    } else if ((text[i] & 0xC0) != 0x80) {
      c++;
    }
  }
  *line = clamp_int(l);
  *col = clamp_int(c);
}

/* The byte starting the character at 0-based LINE and COLUMN, or 0. */
static unsigned char char_at(const unsigned char *text, size_t len,
                             size_t line, size_t column) {
  size_t i = 0;
  for (size_t l = 0; l < line && i < len; i++)
    if (text[i] == '\n') l++;
  for (size_t c = 0; i < len && text[i] != '\n'; i++) {
    if ((text[i] & 0xC0) == 0x80) continue;
    if (c++ == column) return text[i];
  }
  return 0;
}

static void syntax_error(builder *b, const yaml_parser_t *p,
                         const unsigned char *text, size_t len) {
  const char *problem = p->problem ? p->problem : "unknown error";
  switch (p->error) {
  case YAML_MEMORY_ERROR:
    poserr(b->d->name, 1, 1, b->err, b->errlen, "out of memory");
    return;
  case YAML_READER_ERROR: {
    int line, col;
    offset_pos(text, len, p->problem_offset, &line, &col);
    if (p->problem_value != -1)
      poserr(b->d->name, line, col, b->err, b->errlen,
             "invalid input: %s (#%X); the file must be UTF-8 text", problem,
             (unsigned)p->problem_value);
    else
      poserr(b->d->name, line, col, b->err, b->errlen,
             "invalid input: %s; the file must be UTF-8 text", problem);
    return;
  }
  default:
    if (char_at(text, len, p->problem_mark.line, p->problem_mark.column) ==
        '\t') {
      berr(b, &p->problem_mark,
           "YAML syntax error: %s (YAML is indented with spaces, not tabs)",
           problem);
      return;
    }
    if (p->context)
      berr(b, &p->problem_mark,
           "YAML syntax error: %s (%s at line %zu, column %zu)", problem,
           p->context, p->context_mark.line + 1, p->context_mark.column + 1);
    else
      berr(b, &p->problem_mark, "YAML syntax error: %s", problem);
    return;
  }
}

static ydoc *load(const char *name, const unsigned char *text, size_t len,
                  char *err, size_t errlen) {
  ydoc *d = calloc(1, sizeof *d);
  if (!d) {
    poserr(name, 1, 1, err, errlen, "out of memory");
    return NULL;
  }
  d->name = strdup(name ? name : "<input>");
  if (!d->name) {
    poserr(name, 1, 1, err, errlen, "out of memory");
    goto fail_doc;
  }
  if (len > YDOC_MAX_BYTES) {
    poserr(d->name, 1, 1, err, errlen, "file too large (at most %zu MiB)",
           YDOC_MAX_BYTES >> 20);
    goto fail_doc;
  }
  yaml_parser_t p;
  if (!yaml_parser_initialize(&p)) {
    poserr(d->name, 1, 1, err, errlen, "out of memory");
    goto fail_doc;
  }
  /* Positions are reported in UTF-8 characters; other encodings are
   * refused rather than guessed from a byte-order mark. A UTF-8 one, which
   * Windows editors put in front of files with Chinese text, is skipped: it
   * is not a character of the document. */
  yaml_parser_set_encoding(&p, YAML_UTF8_ENCODING);
  if (text && len >= 3 && text[0] == 0xEF && text[1] == 0xBB && text[2] == 0xBF) {
    text += 3;
    len -= 3;
  }
  yaml_parser_set_input_string(&p, text ? text : (const unsigned char *)"",
                               text ? len : 0);
  builder b = {.d = d, .err = err, .errlen = errlen};
  for (;;) {
    yaml_event_t ev;
    if (!yaml_parser_parse(&p, &ev)) {
      syntax_error(&b, &p, text, len);
      goto fail_parse;
    }
    int rc = on_event(&b, &ev);
    bool end = ev.type == YAML_STREAM_END_EVENT;
    yaml_event_delete(&ev);
    if (rc) goto fail_parse;
    if (end) break;
  }
  yaml_parser_delete(&p);
  return d;

fail_parse:
  for (int i = 0; i < b.depth; i++) node_free(b.st[i].key);
  yaml_parser_delete(&p);
fail_doc:
  ydoc_free(d);
  return NULL;
}

ydoc *ydoc_load_string(const char *name, const char *text, size_t len,
                       char *err, size_t errlen) {
  return load(name, (const unsigned char *)text, len, err, errlen);
}

ydoc *ydoc_load_file(const char *path, char *err, size_t errlen) {
  const char *name = path ? path : "<null>";
  if (!path) {
    poserr(name, 1, 1, err, errlen, "no file name given");
    return NULL;
  }
  FILE *f = fopen(path, "rb");
  if (!f) {
    poserr(name, 1, 1, err, errlen, "cannot open: %s", strerror(errno));
    return NULL;
  }
  /* A device (/dev/zero, a terminal) would be read forever or block; a
   * pipe is fine, it ends. */
  struct stat st;
  if (fstat(fileno(f), &st) == 0 &&
      (S_ISDIR(st.st_mode) || S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))) {
    fclose(f);
    poserr(name, 1, 1, err, errlen, "cannot read: not a regular file");
    return NULL;
  }
  size_t cap = 64 * 1024, len = 0;
  unsigned char *buf = malloc(cap);
  if (!buf) {
    fclose(f);
    poserr(name, 1, 1, err, errlen, "out of memory");
    return NULL;
  }
  /* Read one byte past the limit, which is enough to refuse the file. */
  while (len <= YDOC_MAX_BYTES) {
    if (len == cap) {
      size_t nc = cap * 2 > YDOC_MAX_BYTES + 1 ? YDOC_MAX_BYTES + 1 : cap * 2;
      unsigned char *nb = realloc(buf, nc);
      if (!nb) {
        free(buf);
        fclose(f);
        poserr(name, 1, 1, err, errlen, "out of memory");
        return NULL;
      }
      buf = nb;
      cap = nc;
    }
    size_t got_n = fread(buf + len, 1, cap - len, f);
    len += got_n;
    if (got_n == 0) {
      if (ferror(f)) {
        int e = errno;
        free(buf);
        fclose(f);
        poserr(name, 1, 1, err, errlen, "cannot read: %s",
               strerror(e ? e : EIO));
        return NULL;
      }
      break;
    }
  }
  fclose(f);
  ydoc *d = load(name, buf, len, err, errlen);
  free(buf);
  return d;
}

/* ---- typed accessors ---- */

int ydoc_str(const ydoc *d, const ydoc_node *n, const char **out, char *err,
             size_t errlen) {
  shown s;
  if (!n || n->kind != YDOC_SCALAR)
    return ydoc_errf(d, n, err, errlen, "expected a string, got %s",
                     got(n, &s));
  /* A plain null reads as the empty string: "username: ${USER:-}" and
   * "username:" both mean "none". */
  *out = (!n->quoted && is_null_text(n->value)) ? "" : n->value;
  return 0;
}

/* Decimal or 0x-hexadecimal, optional sign; no spaces. */
static int parse_i64(const char *s, int64_t *out) {
  bool neg = false;
  if (*s == '+' || *s == '-') neg = *s++ == '-';
  unsigned base = 10;
  if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    base = 16;
    s += 2;
  }
  if (!*s) return -1;
  uint64_t v = 0;
  const uint64_t lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  for (; *s; s++) {
    int dv = base == 16 ? hexval(*s) : (is_digit(*s) ? *s - '0' : -1);
    if (dv < 0) return -1;
    if (v > (lim - (uint64_t)dv) / base) return -1;
    v = v * base + (uint64_t)dv;
  }
  if (neg)
    *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
  else
    *out = (int64_t)v;
  return 0;
}

int ydoc_int(const ydoc *d, const ydoc_node *n, int64_t min, int64_t max,
             int64_t *out, char *err, size_t errlen) {
  int64_t v = 0;
  if (n && n->kind == YDOC_SCALAR && parse_i64(n->value, &v) == 0 && v >= min &&
      v <= max) {
    *out = v;
    return 0;
  }
  shown s;
  const char *g = got(n, &s);
  if (min == INT64_MIN && max == INT64_MAX)
    return ydoc_errf(d, n, err, errlen, "expected an integer, got %s", g);
  if (max == INT64_MAX)
    return ydoc_errf(d, n, err, errlen,
                     "expected an integer of at least %" PRId64 ", got %s", min,
                     g);
  if (min == INT64_MIN)
    return ydoc_errf(d, n, err, errlen,
                     "expected an integer of at most %" PRId64 ", got %s", max,
                     g);
  return ydoc_errf(d, n, err, errlen,
                   "expected an integer between %" PRId64 " and %" PRId64
                   ", got %s",
                   min, max, g);
}

/* [+-]digits[.digits][e[+-]digits], or .digits: what strtod reads, minus
 * hex floats, inf and nan, which a config has no use for. */
static int parse_double(const char *s, double *out) {
  const char *p = s;
  if (*p == '+' || *p == '-') p++;
  size_t digits = 0;
  while (is_digit(*p)) p++, digits++;
  if (*p == '.') {
    p++;
    while (is_digit(*p)) p++, digits++;
  }
  if (digits == 0) return -1;
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '+' || *p == '-') p++;
    if (!is_digit(*p)) return -1;
    while (is_digit(*p)) p++;
  }
  if (*p) return -1;
  char *end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (!end || *end || !isfinite(v)) return -1;
  *out = v;
  return 0;
}

int ydoc_double(const ydoc *d, const ydoc_node *n, double min, double max,
                double *out, char *err, size_t errlen) {
  double v = 0;
  if (n && n->kind == YDOC_SCALAR && parse_double(n->value, &v) == 0 &&
      v >= min && v <= max) {
    *out = v;
    return 0;
  }
  shown s;
  const char *g = got(n, &s);
  bool lo = min > -DBL_MAX, hi = max < DBL_MAX;
  if (lo && hi)
    return ydoc_errf(d, n, err, errlen,
                     "expected a number between %g and %g, got %s", min, max,
                     g);
  if (lo)
    return ydoc_errf(d, n, err, errlen,
                     "expected a number of at least %g, got %s", min, g);
  if (hi)
    return ydoc_errf(d, n, err, errlen,
                     "expected a number of at most %g, got %s", max, g);
  return ydoc_errf(d, n, err, errlen, "expected a number, got %s", g);
}

int ydoc_bool(const ydoc *d, const ydoc_node *n, bool *out, char *err,
              size_t errlen) {
  if (n && n->kind == YDOC_SCALAR) {
    const char *v = n->value;
    if (ascii_ieq(v, "true") || ascii_ieq(v, "yes") || ascii_ieq(v, "on")) {
      *out = true;
      return 0;
    }
    if (ascii_ieq(v, "false") || ascii_ieq(v, "no") || ascii_ieq(v, "off")) {
      *out = false;
      return 0;
    }
  }
  shown s;
  return ydoc_errf(d, n, err, errlen, "expected true or false, got %s",
                   got(n, &s));
}

int ydoc_parse_duration(const char *s, int64_t *out_ms) {
  if (!s || !*s || !out_ms) return -1;
  if (strcmp(s, "0") == 0) {
    *out_ms = 0;
    return 0;
  }
  /* Units from the largest down, each at most once: "1h30m", not "30m1h". */
  int last_rank = 5;
  int64_t total = 0;
  const char *p = s;
  while (*p) {
    if (!is_digit(*p)) return -1;
    uint64_t v = 0;
    while (is_digit(*p)) {
      uint64_t dv = (uint64_t)(*p - '0');
      if (v > ((uint64_t)INT64_MAX - dv) / 10) return -1;
      v = v * 10 + dv;
      p++;
    }
    int64_t mult;
    int rank;
    if (p[0] == 'm' && p[1] == 's') {
      mult = 1, rank = 0, p += 2;
    } else if (*p == 's') {
      mult = 1000, rank = 1, p++;
    } else if (*p == 'm') {
      mult = 60000, rank = 2, p++;
    } else if (*p == 'h') {
      mult = 3600000, rank = 3, p++;
    } else if (*p == 'd') {
      mult = 86400000, rank = 4, p++;
    } else {
      return -1;
    }
    if (rank >= last_rank) return -1;
    last_rank = rank;
    if (v > (uint64_t)(INT64_MAX / mult)) return -1;
    int64_t part = (int64_t)v * mult;
    if (total > INT64_MAX - part) return -1;
    total += part;
  }
  *out_ms = total;
  return 0;
}

/* "1h30m", "500ms", "0s": the inverse of ydoc_parse_duration, for messages. */
static const char *fmt_duration(int64_t ms, char *buf, size_t len) {
  static const struct {
    int64_t ms;
    const char *unit;
  } units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"},
               {1, "ms"}};
  if (ms <= 0) {
    snprintf(buf, len, "0s");
    return buf;
  }
  size_t o = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    int64_t q = ms / units[i].ms;
    if (q == 0) continue;
    ms -= q * units[i].ms;
    int w = snprintf(buf + o, len - o, "%" PRId64 "%s", q, units[i].unit);
    if (w < 0 || (size_t)w >= len - o) break;
    o += (size_t)w;
  }
  return buf;
}

int ydoc_duration_ms(const ydoc *d, const ydoc_node *n, int64_t min_ms,
                     int64_t max_ms, int64_t *out, char *err, size_t errlen) {
  shown s;
  int64_t v = 0;
  if (!n || n->kind != YDOC_SCALAR || ydoc_parse_duration(n->value, &v) != 0)
    return ydoc_errf(d, n, err, errlen,
                     "expected a duration such as 500ms, 2s, 5m or 1h, got %s",
                     got(n, &s));
  if (v < min_ms || v > max_ms) {
    char a[64], b[64];
    fmt_duration(min_ms, a, sizeof a);
    fmt_duration(max_ms, b, sizeof b);
    if (max_ms == INT64_MAX)
      return ydoc_errf(d, n, err, errlen,
                       "expected a duration of at least %s, got %s", a,
                       got(n, &s));
    return ydoc_errf(d, n, err, errlen,
                     "expected a duration between %s and %s, got %s", a, b,
                     got(n, &s));
  }
  *out = v;
  return 0;
}

/* "a, b or c" into buf, cut with "..." when it does not fit. */
static void join_choices(const char *const *choices, const char *last_sep,
                         char *buf, size_t len) {
  size_t o = 0, count = 0;
  buf[0] = '\0';
  while (choices[count]) count++;
  for (size_t i = 0; i < count; i++) {
    const char *sep = i == 0 ? "" : (i + 1 == count ? last_sep : ", ");
    int w = snprintf(buf + o, len - o, "%s%s", sep, choices[i]);
    if (w < 0 || (size_t)w >= len - o) {
      if (len >= 4) memcpy(buf + len - 4, "...", 4);
      return;
    }
    o += (size_t)w;
  }
}

int ydoc_enum(const ydoc *d, const ydoc_node *n, const char *const *choices,
              int *out, char *err, size_t errlen) {
  if (n && n->kind == YDOC_SCALAR) {
    for (int i = 0; choices[i]; i++) {
      if (strcmp(n->value, choices[i]) == 0) {
        *out = i;
        return 0;
      }
    }
  }
  char list[512];
  join_choices(choices, " or ", list, sizeof list);
  shown s;
  return ydoc_errf(d, n, err, errlen, "expected %s, got %s", list, got(n, &s));
}

int ydoc_id(const ydoc *d, const ydoc_node *n, size_t maxlen, const char **out,
            char *err, size_t errlen) {
  shown s;
  if (!n || n->kind != YDOC_SCALAR || n->value[0] == '\0')
    return ydoc_errf(d, n, err, errlen,
                     "expected an id (letters, digits, '_' and '-'), got %s",
                     got(n, &s));
  for (const char *p = n->value; *p; p++) {
    if (!is_idchar(*p))
      return ydoc_errf(d, n, err, errlen,
                       "expected an id (letters, digits, '_' and '-'), got %s",
                       got(n, &s));
  }
  size_t len = strlen(n->value);
  if (maxlen == 0 || len >= maxlen)
    return ydoc_errf(d, n, err, errlen, "id %s is too long (at most %zu characters)",
                     show_quoted(n->value, &s), maxlen ? maxlen - 1 : 0);
  *out = n->value;
  return 0;
}

int ydoc_check_map(const ydoc *d, const ydoc_node *n, const char *what,
                   const char *const *allowed, char *err, size_t errlen) {
  shown s;
  if (!n || n->kind != YDOC_MAP)
    return ydoc_errf(d, n, err, errlen, "expected a map for %s, got %s", what,
                     got(n, &s));
  /* The loader has already refused repeated keys, so only membership is
   * left to check. */
  for (size_t i = 0; i < n->n; i++) {
    const ydoc_node *k = n->keys[i];
    bool ok = false;
    for (size_t j = 0; allowed[j]; j++) {
      if (strcmp(k->value, allowed[j]) == 0) {
        ok = true;
        break;
      }
    }
    if (!ok) {
      char list[600];
      join_choices(allowed, ", ", list, sizeof list);
      return ydoc_errf(d, k, err, errlen,
                       "unknown key %s in %s (expected one of: %s)",
                       show_quoted(k->value, &s), what, list);
    }
  }
  return 0;
}

int ydoc_check_seq(const ydoc *d, const ydoc_node *n, const char *what,
                   char *err, size_t errlen) {
  shown s;
  if (!n || n->kind != YDOC_SEQ)
    return ydoc_errf(d, n, err, errlen, "expected a sequence for %s, got %s",
                     what, got(n, &s));
  return 0;
}
