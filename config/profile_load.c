/* profile_load: meter profiles read from YAML files (see profile_load.h and
 * docs/profiles.md). */
#include "profile_load.h"

#include <dirent.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ydoc.h"

/* The source tree's profiles, for a program run where it was built. */
#ifndef IC_PROFILE_DIR
#define IC_PROFILE_DIR "drivers/profiles"
#endif
/* The installed profiles, relative to the folder of the installed program
 * (bin/ -> share/intake-collector/profiles with GNUInstallDirs). */
#ifndef IC_PROFILE_RELDIR
#define IC_PROFILE_RELDIR "../share/intake-collector/profiles"
#endif

/* Bounds: a meter with more values than this is not a flow meter, and a
 * register map that large would not fit the few requests a poll can afford. */
#define PROF_MAX_FIELDS 256
#define PROF_MAX_BUILTINS 64

static const char *const table_names[] = {"holding", "input", NULL};
static const char *const order_choices[] = {"abcd", "cdab", "badc", "dcba",
                                            NULL};

static const char *const top_keys[] = {
    "name", "description", "table", "word_order", "max_gap", "max_registers",
    "fields", NULL};
static const char *const field_keys[] = {
    "name",  "role",  "unit",   "address", "type",  "word_order",
    "table", "scale", "offset", "mask",    "shift", "min",
    "max",   "rollover", "parts", "unit_register", NULL};
static const char *const part_keys[] = {"address", "type", "scale",
                                        "word_order", "table", NULL};
static const char *const unit_keys[] = {"address", "table", "codes", NULL};


/* ---------------------------------------------------------------- parsing */

/* Everything a parse step needs to write a positioned error. */
typedef struct {
  const ydoc *d;
  char *err;
  size_t errlen;
} pctx;

/* A non-negative integer, decimal or 0x hex (register tables are printed
 * both ways; ydoc_int reads both). */
static int get_uint(pctx *c, const ydoc_node *n, uint32_t max, uint32_t *out) {
  int64_t v;
  if (ydoc_int(c->d, n, 0, (int64_t)max, &v, c->err, c->errlen) != 0)
    return -1;
  *out = (uint32_t)v;
  return 0;
}

/* A finite number. */
static int get_double(pctx *c, const ydoc_node *n, double *out) {
  return ydoc_double(c->d, n, -DBL_MAX, DBL_MAX, out, c->err, c->errlen);
}

/* Copy a string value into a fixed field, refusing rather than truncating. */
static int get_text(pctx *c, const ydoc_node *n, const char *what, char *dst,
                    size_t cap) {
  const char *s;
  if (ydoc_str(c->d, n, &s, c->err, c->errlen) != 0)
    return -1;
  if (strlen(s) >= cap)
    return ydoc_errf(c->d, n, c->err, c->errlen,
                     "%s is longer than %zu characters", what, cap - 1);
  memcpy(dst, s, strlen(s) + 1);
  return 0;
}

static int get_table(pctx *c, const ydoc_node *n, mb_table *out) {
  int i;
  if (ydoc_enum(c->d, n, table_names, &i, c->err, c->errlen) != 0)
    return -1;
  *out = (mb_table)i;
  return 0;
}

static int get_order(pctx *c, const ydoc_node *n, mb_word_order *out) {
  int i;
  if (ydoc_enum(c->d, n, order_choices, &i, c->err, c->errlen) != 0)
    return -1;
  *out = (mb_word_order)i;
  return 0;
}

/* A value type name; "totalizer" only where ALLOW_TOTALIZER (a field's type,
 * not a part's). Returns 1 for totalizer, 0 for a plain type, -1 on error. */
static int get_type(pctx *c, const ydoc_node *n, bool allow_totalizer,
                    mb_type *out) {
  const char *s;
  if (ydoc_str(c->d, n, &s, c->err, c->errlen) != 0)
    return -1;
  if (mb_type_parse(s, out) == 0)
    return 0;
  if (strcmp(s, "totalizer") == 0) {
    if (allow_totalizer)
      return 1;
    return ydoc_errf(c->d, n, c->err, c->errlen,
                     "type totalizer names a whole field, not a part: give "
                     "the parts' own types (i32, f32, ...)");
  }
  return ydoc_errf(c->d, n, c->err, c->errlen,
                   "unknown type '%s' (expected u16, i16, u32, i32, u64, f32, "
                   "f64%s)",
                   s, allow_totalizer ? " or totalizer" : "");
}

static bool valid_field_name(const char *s) {
  if (*s == '\0')
    return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
      return false;
  return true;
}

/* Defaults a field inherits from the profile. */
typedef struct {
  mb_table table;
  mb_word_order order;
} defaults;

/* One entry of a field's parts list. */
static int parse_part(pctx *c, const ydoc_node *n, const defaults *def,
                      prof_part *pt) {
  if (ydoc_check_map(c->d, n, "part", part_keys, c->err, c->errlen) != 0)
    return -1;
  const ydoc_node *v;
  uint32_t u;

  pt->table = def->table;
  pt->order = def->order;
  pt->scale = 1.0;
  if ((v = ydoc_get(n, "address")) == NULL)
    return ydoc_errf(c->d, n, c->err, c->errlen, "part has no address");
  if (get_uint(c, v, 65535, &u) != 0)
    return -1;
  pt->address = (uint16_t)u;
  if ((v = ydoc_get(n, "type")) == NULL)
    return ydoc_errf(c->d, n, c->err, c->errlen, "part has no type");
  if (get_type(c, v, false, &pt->type) != 0)
    return -1;
  if ((v = ydoc_get(n, "scale")) != NULL) {
    if (get_double(c, v, &pt->scale) != 0)
      return -1;
    /* A part's scale says how many field units one raw count is worth; the
     * split when encoding needs it positive. */
    if (!(pt->scale > 0))
      return ydoc_errf(c->d, v, c->err, c->errlen,
                       "a part's scale must be greater than 0");
  }
  if ((v = ydoc_get(n, "word_order")) != NULL &&
      get_order(c, v, &pt->order) != 0)
    return -1;
  if ((v = ydoc_get(n, "table")) != NULL && get_table(c, v, &pt->table) != 0)
    return -1;
  return 0;
}

static bool ranges_overlap(mb_table ta, uint32_t a, uint32_t na, mb_table tb,
                           uint32_t b, uint32_t nb) {
  return ta == tb && a < b + nb && b < a + na;
}

/* Checks on a field's parts once they are all known. NODES[i] is the node to
 * blame for part i. */
static int check_parts(pctx *c, const prof_field *f,
                       const ydoc_node *const *nodes) {
  for (size_t i = 0; i < f->nparts; i++) {
    const prof_part *p = &f->parts[i];
    uint32_t w = (uint32_t)mb_type_words(p->type);
    if ((uint32_t)p->address + w > 65536u)
      return ydoc_errf(c->d, nodes[i], c->err, c->errlen,
                       "%s at address %u needs %u registers and runs past "
                       "register 65535",
                       mb_type_name(p->type), (unsigned)p->address,
                       (unsigned)w);
    for (size_t j = 0; j < i; j++) {
      const prof_part *q = &f->parts[j];
      if (ranges_overlap(p->table, p->address, w, q->table, q->address,
                         (uint32_t)mb_type_words(q->type)))
        return ydoc_errf(c->d, nodes[i], c->err, c->errlen,
                         "part %zu (%s %s at %u) overlaps part %zu (%s at %u)",
                         i + 1, prof_table_name(p->table), mb_type_name(p->type),
                         (unsigned)p->address, j + 1, mb_type_name(q->type),
                         (unsigned)q->address);
    }
    if (f->nparts > 1 && i + 1 < f->nparts && prof_type_is_float(p->type))
      return ydoc_errf(c->d, nodes[i], c->err, c->errlen,
                       "part %zu is a %s: only the last part of a field may "
                       "be a float (it carries the fraction)",
                       i + 1, mb_type_name(p->type));
    if (i > 0 && p->scale > f->parts[i - 1].scale)
      return ydoc_errf(c->d, nodes[i], c->err, c->errlen,
                       "part %zu has a larger scale (%g) than part %zu (%g): "
                       "parts go from the most significant down",
                       i + 1, p->scale, i, f->parts[i - 1].scale);
  }
  return 0;
}

static int parse_unit_register(pctx *c, const ydoc_node *n, mb_table deftable,
                               prof_field *f) {
  if (ydoc_check_map(c->d, n, "unit_register", unit_keys, c->err,
                     c->errlen) != 0)
    return -1;
  const ydoc_node *v;
  uint32_t u;

  f->has_unit_reg = true;
  f->unit_reg.table = deftable;
  f->unit_reg.type = MB_T_U16;
  f->unit_reg.order = MB_ORDER_ABCD;
  f->unit_reg.scale = 1.0;
  if ((v = ydoc_get(n, "address")) == NULL)
    return ydoc_errf(c->d, n, c->err, c->errlen,
                     "unit_register has no address");
  if (get_uint(c, v, 65535, &u) != 0)
    return -1;
  f->unit_reg.address = (uint16_t)u;
  if ((v = ydoc_get(n, "table")) != NULL &&
      get_table(c, v, &f->unit_reg.table) != 0)
    return -1;
  for (size_t i = 0; i < f->nparts; i++) {
    const prof_part *p = &f->parts[i];
    if (ranges_overlap(f->unit_reg.table, f->unit_reg.address, 1, p->table,
                       p->address, (uint32_t)mb_type_words(p->type)))
      return ydoc_errf(c->d, ydoc_get(n, "address"), c->err, c->errlen,
                       "unit register %u lies inside the field's own value "
                       "registers",
                       (unsigned)f->unit_reg.address);
  }

  const ydoc_node *codes = ydoc_get(n, "codes");
  if (codes == NULL)
    return ydoc_errf(c->d, n, c->err, c->errlen,
                     "unit_register has no codes (CODE: multiplier)");
  if (codes->kind != YDOC_MAP)
    return ydoc_errf(c->d, codes, c->err, c->errlen,
                     "codes: expected a map of CODE: multiplier");
  if (codes->n == 0)
    return ydoc_errf(c->d, codes, c->err, c->errlen, "codes is empty");
  if (codes->n > PROF_MAX_CODES)
    return ydoc_errf(c->d, codes, c->err, c->errlen,
                     "at most %d unit codes", PROF_MAX_CODES);
  for (size_t i = 0; i < codes->n; i++) {
    prof_unit_code *uc = &f->codes[i];
    if (get_uint(c, codes->keys[i], 65535, &u) != 0)
      return -1;
    uc->code = (uint16_t)u;
    /* "0x01" and "1" are the same code: compare numbers, not key text. */
    for (size_t j = 0; j < i; j++)
      if (f->codes[j].code == uc->code)
        return ydoc_errf(c->d, codes->keys[i], c->err, c->errlen,
                         "unit code %u appears twice", (unsigned)uc->code);
    if (get_double(c, codes->items[i], &uc->multiplier) != 0)
      return -1;
    if (!(uc->multiplier > 0))
      return ydoc_errf(c->d, codes->items[i], c->err, c->errlen,
                       "a unit multiplier must be greater than 0");
    f->ncodes = i + 1;
  }
  return 0;
}

static int parse_field(pctx *c, const ydoc_node *n, const defaults *pdef,
                       prof_field *f) {
  if (ydoc_check_map(c->d, n, "field", field_keys, c->err, c->errlen) != 0)
    return -1;
  const ydoc_node *v;
  uint32_t u;
  int idx;

  memset(f, 0, sizeof *f);
  f->mask = 0xFFFF;
  f->scale = 1.0;

  if ((v = ydoc_get(n, "name")) == NULL)
    return ydoc_errf(c->d, n, c->err, c->errlen, "field has no name");
  if (get_text(c, v, "a field name", f->name, sizeof f->name) != 0)
    return -1;
  if (!valid_field_name(f->name))
    return ydoc_errf(c->d, v, c->err, c->errlen,
                     "field name '%s': use lower-case letters, digits and _ "
                     "(it is a JSON key, e.g. flow_m3h)",
                     f->name);
  if ((v = ydoc_get(n, "role")) != NULL) {
    if (ydoc_enum(c->d, v, profile_role_names, &idx, c->err, c->errlen) != 0)
      return -1;
    f->role = (prof_role)idx;
  }
  if ((v = ydoc_get(n, "unit")) != NULL &&
      get_text(c, v, "a unit", f->unit, sizeof f->unit) != 0)
    return -1;

  defaults def = *pdef;
  if ((v = ydoc_get(n, "table")) != NULL && get_table(c, v, &def.table) != 0)
    return -1;
  if ((v = ydoc_get(n, "word_order")) != NULL &&
      get_order(c, v, &def.order) != 0)
    return -1;

  /* Where the value lives: address + type, or parts. */
  const ydoc_node *addr = ydoc_get(n, "address");
  const ydoc_node *type = ydoc_get(n, "type");
  const ydoc_node *parts = ydoc_get(n, "parts");
  const ydoc_node *blame[PROF_MAX_PARTS];
  if (parts != NULL) {
    if (addr != NULL || type != NULL)
      return ydoc_errf(c->d, addr != NULL ? addr : type, c->err, c->errlen,
                       "field %s has parts: address and type belong to each "
                       "part, not the field",
                       f->name);
    if (ydoc_check_seq(c->d, parts, "parts", c->err, c->errlen) != 0)
      return -1;
    if (parts->n == 0)
      return ydoc_errf(c->d, parts, c->err, c->errlen, "parts is empty");
    if (parts->n > PROF_MAX_PARTS)
      return ydoc_errf(c->d, parts, c->err, c->errlen,
                       "at most %d parts in a field", PROF_MAX_PARTS);
    for (size_t i = 0; i < parts->n; i++) {
      if (parse_part(c, parts->items[i], &def, &f->parts[i]) != 0)
        return -1;
      blame[i] = parts->items[i];
    }
    f->nparts = parts->n;
  } else {
    if (addr == NULL)
      return ydoc_errf(c->d, n, c->err, c->errlen,
                       "field %s has neither address and type nor parts",
                       f->name);
    if (type == NULL)
      return ydoc_errf(c->d, n, c->err, c->errlen, "field %s has no type",
                       f->name);
    if (get_uint(c, addr, 65535, &u) != 0)
      return -1;
    mb_type t;
    int tot = get_type(c, type, true, &t);
    if (tot < 0)
      return -1;
    if (tot == 1) {
      /* The integer + fraction pair of flow meters: a signed 32-bit count
       * of whole units and a float fraction right behind it. */
      f->nparts = 2;
      f->parts[0] = (prof_part){def.table, (uint16_t)u, MB_T_I32, def.order,
                                1.0};
      if (u + 2 > 65535)
        return ydoc_errf(c->d, addr, c->err, c->errlen,
                         "a totalizer at address %lu needs 4 registers and "
                         "runs past register 65535",
                         (unsigned long)u);
      f->parts[1] = (prof_part){def.table, (uint16_t)(u + 2), MB_T_F32,
                                def.order, 1.0};
    } else {
      f->nparts = 1;
      f->parts[0] = (prof_part){def.table, (uint16_t)u, t, def.order, 1.0};
    }
    blame[0] = blame[1] = addr;
  }
  if (check_parts(c, f, blame) != 0)
    return -1;

  if ((v = ydoc_get(n, "scale")) != NULL) {
    if (get_double(c, v, &f->scale) != 0)
      return -1;
    if (f->scale == 0)
      return ydoc_errf(c->d, v, c->err, c->errlen, "scale must not be 0");
  }
  if ((v = ydoc_get(n, "offset")) != NULL && get_double(c, v, &f->offset) != 0)
    return -1;

  /* Bit fields live in one 16-bit register. */
  const ydoc_node *mask = ydoc_get(n, "mask");
  const ydoc_node *shift = ydoc_get(n, "shift");
  const ydoc_node *bits = mask != NULL ? mask : shift;
  if (bits != NULL) {
    const char *what = mask != NULL ? "mask" : "shift";
    if (f->nparts != 1)
      return ydoc_errf(c->d, bits, c->err, c->errlen,
                       "%s applies to a single 16-bit register, not a field "
                       "with parts",
                       what);
    if (!prof_type_is_16bit(f->parts[0].type))
      return ydoc_errf(c->d, bits, c->err, c->errlen,
                       "%s applies to a 16-bit type (u16 or i16), not %s", what,
                       mb_type_name(f->parts[0].type));
  }
  if (mask != NULL) {
    if (get_uint(c, mask, 0xFFFF, &u) != 0)
      return -1;
    if (u == 0)
      return ydoc_errf(c->d, mask, c->err, c->errlen,
                       "mask 0 keeps no bits");
    f->mask = (uint16_t)u;
  }
  if (shift != NULL) {
    if (get_uint(c, shift, 15, &u) != 0)
      return -1;
    f->shift = (uint8_t)u;
    if ((f->mask >> f->shift) == 0)
      return ydoc_errf(c->d, shift, c->err, c->errlen,
                       "shift %u moves every bit of mask 0x%04X out",
                       (unsigned)f->shift, (unsigned)f->mask);
  }

  const ydoc_node *vmin = ydoc_get(n, "min"), *vmax = ydoc_get(n, "max");
  f->min = -INFINITY;
  f->max = INFINITY;
  if (vmin != NULL && get_double(c, vmin, &f->min) != 0)
    return -1;
  if (vmax != NULL && get_double(c, vmax, &f->max) != 0)
    return -1;
  if (vmin != NULL || vmax != NULL) {
    f->has_range = true;
    if (f->min > f->max)
      return ydoc_errf(c->d, vmax != NULL ? vmax : vmin, c->err, c->errlen,
                       "min %g is greater than max %g", f->min, f->max);
  }

  if ((v = ydoc_get(n, "rollover")) != NULL) {
    if (get_double(c, v, &f->rollover) != 0)
      return -1;
    if (!(f->rollover > 0))
      return ydoc_errf(c->d, v, c->err, c->errlen,
                       "rollover must be greater than 0");
    if (f->role != PROF_ROLE_TOTAL && f->role != PROF_ROLE_NET_TOTAL)
      return ydoc_errf(c->d, v, c->err, c->errlen,
                       "rollover applies to a totalizer (role total or "
                       "net_total)");
  }

  if ((v = ydoc_get(n, "unit_register")) != NULL &&
      parse_unit_register(c, v, def.table, f) != 0)
    return -1;
  return 0;
}

static mb_profile *parse_profile(const ydoc *d, const char *path, char *err,
                                 size_t errlen) {
  pctx c = {d, err, errlen};
  const ydoc_node *root = ydoc_root(d);
  const ydoc_node *v;
  uint32_t u;
  mb_profile *p = NULL;

  if (root == NULL) {
    prof_errf(err, errlen, "%s:1:1: the profile is empty", ydoc_name(d));
    return NULL;
  }
  if (ydoc_check_map(d, root, "profile", top_keys, err, errlen) != 0)
    return NULL;

  p = calloc(1, sizeof *p);
  if (p == NULL)
    goto nomem;
  if (strlen(path) >= sizeof p->path) {
    prof_errf(err, errlen, "%s: path too long", path);
    goto fail;
  }
  memcpy(p->path, path, strlen(path) + 1);
  p->max_gap = 8;
  p->max_registers = 125;

  if ((v = ydoc_get(root, "name")) == NULL) {
    ydoc_errf(d, root, err, errlen, "the profile has no name");
    goto fail;
  }
  const char *name;
  if (ydoc_id(d, v, sizeof p->name, &name, err, errlen) != 0)
    goto fail;
  memcpy(p->name, name, strlen(name) + 1);
  if ((v = ydoc_get(root, "description")) != NULL &&
      get_text(&c, v, "description", p->description,
               sizeof p->description) != 0)
    goto fail;

  defaults def = {MB_TABLE_HOLDING, MB_ORDER_ABCD};
  if ((v = ydoc_get(root, "table")) != NULL && get_table(&c, v, &def.table) != 0)
    goto fail;
  if ((v = ydoc_get(root, "word_order")) != NULL &&
      get_order(&c, v, &def.order) != 0)
    goto fail;
  if ((v = ydoc_get(root, "max_gap")) != NULL) {
    if (get_uint(&c, v, 125, &u) != 0)
      goto fail;
    p->max_gap = (uint16_t)u;
  }
  if ((v = ydoc_get(root, "max_registers")) != NULL) {
    if (get_uint(&c, v, 125, &u) != 0)
      goto fail;
    if (u == 0) {
      ydoc_errf(d, v, err, errlen, "max_registers must be 1 to 125");
      goto fail;
    }
    p->max_registers = (uint16_t)u;
  }

  const ydoc_node *fields = ydoc_get(root, "fields");
  if (fields == NULL) {
    ydoc_errf(d, root, err, errlen, "the profile has no fields");
    goto fail;
  }
  if (ydoc_check_seq(d, fields, "fields", err, errlen) != 0)
    goto fail;
  if (fields->n == 0) {
    ydoc_errf(d, fields, err, errlen, "fields is empty");
    goto fail;
  }
  if (fields->n > PROF_MAX_FIELDS) {
    ydoc_errf(d, fields, err, errlen, "at most %d fields in a profile",
              PROF_MAX_FIELDS);
    goto fail;
  }
  p->fields = calloc(fields->n, sizeof *p->fields);
  if (p->fields == NULL)
    goto nomem;
  for (size_t i = 0; i < fields->n; i++) {
    if (parse_field(&c, fields->items[i], &def, &p->fields[i]) != 0)
      goto fail;
    for (size_t j = 0; j < i; j++) {
      if (strcmp(p->fields[j].name, p->fields[i].name) == 0) {
        const ydoc_node *first = ydoc_get(fields->items[j], "name");
        ydoc_errf(d, ydoc_get(fields->items[i], "name"), err, errlen,
                  "duplicate field name '%s' (first at line %d)",
                  p->fields[i].name, first->line);
        goto fail;
      }
    }
    p->nfields = i + 1;
  }
  return p;

nomem:
  prof_errf(err, errlen, "%s: out of memory", path);
fail:
  profile_free(p);
  return NULL;
}

mb_profile *profile_load_string(const char *name, const char *text, size_t len,
                                char *err, size_t errlen) {
  ydoc *d = ydoc_load_string(name, text, len, err, errlen);
  if (d == NULL)
    return NULL;
  mb_profile *p = parse_profile(d, name, err, errlen);
  ydoc_free(d);
  return p;
}

/* ---------------------------------------------------------------- loading */

static const char *builtin_dir = IC_PROFILE_DIR;
static char installed_dir[PATH_MAX];
static pthread_once_t builtin_once = PTHREAD_ONCE_INIT;

/* An installed program finds its profiles next to it: IC_PROFILE_RELDIR from
 * the folder of /proc/self/exe, when that folder exists. A program run from
 * its build tree has none there and keeps the compiled-in IC_PROFILE_DIR. */
static void find_builtin_dir(void) {
  char exe[PATH_MAX], cand[PATH_MAX + sizeof IC_PROFILE_RELDIR + 1];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0)
    return;
  exe[n] = '\0';
  char *slash = strrchr(exe, '/');
  if (slash == NULL)
    return;
  *slash = '\0';
  int w = snprintf(cand, sizeof cand, "%s/%s", exe, IC_PROFILE_RELDIR);
  if (w < 0 || (size_t)w >= sizeof cand)
    return;
  struct stat st;
  if (realpath(cand, installed_dir) != NULL && stat(installed_dir, &st) == 0 &&
      S_ISDIR(st.st_mode))
    builtin_dir = installed_dir;
}

const char *profile_builtin_dir(void) {
  pthread_once(&builtin_once, find_builtin_dir);
  return builtin_dir;
}

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

static bool is_builtin_name(const char *s) {
  if (*s == '\0')
    return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
          (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
      return false;
  return true;
}

static int str_cmp(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* "a, b, c": the built-in profiles in DIR, sorted, into OUT. */
static void list_builtins(const char *dir, char *out, size_t cap) {
  char names[PROF_MAX_BUILTINS][64];
  const char *sorted[PROF_MAX_BUILTINS];
  size_t n = 0;
  out[0] = '\0';
  DIR *dp = opendir(dir);
  if (dp == NULL) {
    snprintf(out, cap, "none: %s", strerror(errno));
    return;
  }
  struct dirent *e;
  int read_err = 0;
  while (n < PROF_MAX_BUILTINS) {
    /* readdir tells the end from a failure (EOVERFLOW for a position that
     * does not fit off_t, EIO) by errno only. */
    errno = 0;
    if ((e = readdir(dp)) == NULL) {
      read_err = errno;
      break;
    }
    size_t len = strlen(e->d_name);
    if (len <= 5 || len - 5 >= sizeof names[0] || !ends_with(e->d_name, ".yaml"))
      continue;
    memcpy(names[n], e->d_name, len - 5);
    names[n][len - 5] = '\0';
    if (!is_builtin_name(names[n]))
      continue;
    sorted[n] = names[n];
    n++;
  }
  if (read_err != 0) {
    snprintf(out, cap, "unreadable: %s", strerror(read_err));
    closedir(dp);
    return;
  }
  closedir(dp);
  if (n == 0) {
    snprintf(out, cap, "none");
    return;
  }
  qsort(sorted, n, sizeof sorted[0], str_cmp);
  size_t used = 0;
  for (size_t i = 0; i < n && used < cap; i++) {
    int w = snprintf(out + used, cap - used, "%s%s", i ? ", " : "", sorted[i]);
    if (w < 0)
      break;
    used += (size_t)w;
  }
}

mb_profile *profile_load(const char *ref, const char *base_dir,
                         const char *profile_dir, char *err, size_t errlen) {
  char path[4096];
  int w;

  if (ref == NULL || *ref == '\0') {
    prof_errf(err, errlen, "no profile named");
    return NULL;
  }
  bool is_path = strchr(ref, '/') != NULL || ends_with(ref, ".yaml") ||
                 ends_with(ref, ".yml");
  if (!is_path) {
    if (!is_builtin_name(ref)) {
      prof_errf(err, errlen,
              "profile '%s' is neither a built-in name ([A-Za-z0-9_-]+) nor "
              "a path to a .yaml file",
              ref);
      return NULL;
    }
    const char *dir = profile_dir != NULL ? profile_dir : profile_builtin_dir();
    w = snprintf(path, sizeof path, "%s/%s.yaml", dir, ref);
    if (w < 0 || (size_t)w >= sizeof path) {
      prof_errf(err, errlen, "profile '%s': path too long", ref);
      return NULL;
    }
    if (access(path, F_OK) != 0) {
      char list[512];
      list_builtins(dir, list, sizeof list);
      prof_errf(err, errlen, "unknown profile '%s' (built-in profiles: %s)", ref,
              list);
      return NULL;
    }
  } else if (ref[0] != '/' && base_dir != NULL && *base_dir != '\0') {
    w = snprintf(path, sizeof path, "%s/%s", base_dir, ref);
    if (w < 0 || (size_t)w >= sizeof path) {
      prof_errf(err, errlen, "profile '%s': path too long", ref);
      return NULL;
    }
  } else {
    w = snprintf(path, sizeof path, "%s", ref);
    if (w < 0 || (size_t)w >= sizeof path) {
      prof_errf(err, errlen, "profile '%s': path too long", ref);
      return NULL;
    }
  }

  ydoc *d = ydoc_load_file(path, err, errlen);
  if (d == NULL)
    return NULL;
  mb_profile *p = parse_profile(d, path, err, errlen);
  ydoc_free(d);
  return p;
}
