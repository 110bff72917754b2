/* ydoc: the YAML tree, positions, ${VAR} substitution, typed accessors and
 * durations. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ydoc.h"

static char err[1024];

static ydoc *load(const char *text) {
  err[0] = '\0';
  return ydoc_load_string("t.yaml", text, strlen(text), err, sizeof err);
}

/* Loading TEXT fails with an error starting with PREFIX and containing PART. */
static void expect_load_error(const char *text, const char *prefix,
                              const char *part) {
  ydoc *d = load(text);
  if (d) {
    ydoc_free(d);
    fail_msg("loaded, expected an error %s ... %s", prefix, part);
  }
  if (strncmp(err, prefix, strlen(prefix)) != 0 || !strstr(err, part))
    fail_msg("error \"%s\", expected prefix \"%s\" and \"%s\"", err, prefix,
             part);
  assert_null(strchr(err, '\n'));
}

static void expect_err(const char *prefix, const char *part) {
  if (strncmp(err, prefix, strlen(prefix)) != 0 || !strstr(err, part))
    fail_msg("error \"%s\", expected prefix \"%s\" and \"%s\"", err, prefix,
             part);
  assert_null(strchr(err, '\n'));
}

static void test_tree_and_positions(void **state) {
  (void)state;
  ydoc *d = load("a: 1\n"
                 "b:\n"
                 "  - x\n"
                 "  - 'y'\n"
                 "c: {k: v}\n"
                 "name: \"柯柯亚\"\n");
  assert_non_null(d);
  assert_string_equal(ydoc_name(d), "t.yaml");
  const ydoc_node *r = ydoc_root(d);
  assert_int_equal(r->kind, YDOC_MAP);
  assert_int_equal(r->n, 4);
  assert_int_equal(r->line, 1);
  assert_int_equal(r->col, 1);
  assert_string_equal(r->keys[0]->value, "a");
  const ydoc_node *a = ydoc_get(r, "a");
  assert_string_equal(a->value, "1");
  assert_int_equal(a->line, 1);
  assert_int_equal(a->col, 4);
  assert_false(a->quoted);
  const ydoc_node *b = ydoc_get(r, "b");
  assert_int_equal(b->kind, YDOC_SEQ);
  assert_int_equal(b->n, 2);
  assert_int_equal(b->line, 3);
  assert_int_equal(b->col, 3);
  assert_string_equal(b->items[1]->value, "y");
  assert_true(b->items[1]->quoted);
  assert_int_equal(b->items[1]->line, 4);
  assert_int_equal(b->items[1]->col, 5);
  const ydoc_node *c = ydoc_get(r, "c");
  assert_int_equal(c->kind, YDOC_MAP);
  assert_string_equal(ydoc_get(c, "k")->value, "v");
  assert_int_equal(ydoc_get(c, "k")->col, 8);
  assert_string_equal(ydoc_get(r, "name")->value, "柯柯亚");
  assert_null(ydoc_get(r, "missing"));
  assert_null(ydoc_get(a, "x")); /* not a map */
  ydoc_free(d);
  ydoc_free(NULL);
}

static void test_empty_document(void **state) {
  (void)state;
  ydoc *d = load("# only a comment\n");
  assert_non_null(d);
  assert_null(ydoc_root(d));
  ydoc_free(d);
  d = load("");
  assert_non_null(d);
  assert_null(ydoc_root(d));
  ydoc_free(d);
}

static void test_syntax_error(void **state) {
  (void)state;
  expect_load_error("a: 1\nb: [1, 2\n", "t.yaml:3:1: ", "YAML syntax error");
  expect_load_error("a: 1\n  b: 2\n", "t.yaml:2:4: ",
                    "mapping values are not allowed");
  expect_load_error("a:\n\t- 1\n", "t.yaml:2:1: ", "not tabs");
}

/* A UTF-8 byte-order mark (Notepad writes one) is not part of the
 * document: it loads, and positions are those of the text after it. */
static void test_utf8_bom(void **state) {
  (void)state;
  ydoc *d = load("\xEF\xBB\xBFsite:\n  name: \"柯柯亚\"\n");
  assert_non_null(d);
  const ydoc_node *site = ydoc_get(ydoc_root(d), "site");
  assert_non_null(site);
  const ydoc_node *name = ydoc_get(site, "name");
  assert_string_equal(name->value, "柯柯亚");
  assert_int_equal(name->line, 2);
  assert_int_equal(name->col, 9);
  ydoc_free(d);
  expect_load_error("\xEF\xBB\xBF" "a: 1\n  b: 2\n", "t.yaml:2:4: ",
                    "mapping values are not allowed");
}

static void test_invalid_utf8(void **state) {
  (void)state;
  expect_load_error("a: 1\nbé: \xff\n", "t.yaml:2:5: ", "UTF-8");
}

static void test_duplicate_key(void **state) {
  (void)state;
  expect_load_error("a: 1\nb: 2\na: 3\n", "t.yaml:3:1: ",
                    "duplicate key \"a\" (first defined at line 1)");
  /* many keys take the sorting path; the earliest repeat is reported */
  char text[4096];
  size_t o = 0;
  for (int i = 0; i < 40; i++)
    o += (size_t)snprintf(text + o, sizeof text - o, "k%d: %d\n", i, i);
  o += (size_t)snprintf(text + o, sizeof text - o, "k30: x\nk5: y\n");
  expect_load_error(text, "t.yaml:41:1: ",
                    "duplicate key \"k30\" (first defined at line 31)");
}

static void test_refused_constructs(void **state) {
  (void)state;
  expect_load_error("a: &x 1\nb: *x\n", "t.yaml:2:4: ", "aliases (*x)");
  expect_load_error("a: 1\n---\nb: 2\n", "t.yaml:2:1: ",
                    "single YAML document");
  expect_load_error("? [a, b]\n: 1\n", "t.yaml:1:3: ", "a key must be");
  expect_load_error("a: \"x\\0y\"\n", "t.yaml:1:4: ", "NUL");
  /* nesting is bounded */
  char deep[200];
  memset(deep, '[', 100);
  deep[100] = '\0';
  expect_load_error(deep, "t.yaml:1:33: ", "nested too deeply");
}

static void test_size_limit(void **state) {
  (void)state;
  size_t len = ((size_t)8 << 20) + 1;
  char *big = malloc(len);
  assert_non_null(big);
  memset(big, ' ', len);
  ydoc *d = ydoc_load_string("big.yaml", big, len, err, sizeof err);
  free(big);
  assert_null(d);
  expect_err("big.yaml:1:1: ", "too large");
}

/* The node cap: a document of small numbers reaches one node per two bytes,
 * and each node costs far more memory than that, so the count is bounded
 * well below what the size limit alone allows. */
#define NODE_CAP 300000

static void test_node_limit(void **state) {
  (void)state;
  /* A block sequence: the sequence is one node, item k (0-based) is on line
   * k + 1 at column 3. */
  size_t items = NODE_CAP - 1;
  size_t cap = (items + 1) * 4 + 1;
  char *text = malloc(cap);
  assert_non_null(text);
  for (size_t k = 0; k < items + 1; k++) memcpy(text + 4 * k, "- 7\n", 4);

  /* Exactly the cap loads. */
  ydoc *d = ydoc_load_string("n.yaml", text, 4 * items, err, sizeof err);
  if (!d) fail_msg("%s", err);
  assert_int_equal(ydoc_root(d)->n, items);
  ydoc_free(d);

  /* One more node is refused where it starts. */
  d = ydoc_load_string("n.yaml", text, 4 * (items + 1), err, sizeof err);
  assert_null(d);
  char want[128];
  snprintf(want, sizeof want, "n.yaml:%zu:3: ", items + 1);
  expect_err(want, "too many YAML nodes (at most 300000)");

  free(text);
}

/* A site of 10,000 meters written out as the demo writes its meters (every
 * key, a sim block with fixed values: 27 nodes a meter) fits the cap. */
static void test_node_limit_holds_a_large_site(void **state) {
  (void)state;
  size_t meters = 10000;
  size_t cap = 256 + meters * 320;
  char *text = malloc(cap);
  assert_non_null(text);
  size_t o = (size_t)snprintf(text, cap, "site: {id: big}\nmeters:\n");
  for (size_t i = 0; i < meters; i++)
    o += (size_t)snprintf(text + o, cap - o,
                          "  - id: m%zu\n"
                          "    name: \"meter %zu\"\n"
                          "    bus: b%zu\n"
                          "    unit: %zu\n"
                          "    profile: tuf2000m\n"
                          "    interval: 2s\n"
                          "    sim:\n"
                          "      seed: %zu\n"
                          "      mean_flow_m3h: 36.625\n"
                          "      fixed: {flow_m3h: 36.625, velocity_ms: 0.5, "
                          "total_m3: 1234.5}\n",
                          i, i, i / 247, i % 247 + 1, i);
  assert_true(o < cap);
  ydoc *d = ydoc_load_string("big.yaml", text, o, err, sizeof err);
  free(text);
  if (!d) fail_msg("%s", err);
  const ydoc_node *m = ydoc_get(ydoc_root(d), "meters");
  assert_non_null(m);
  assert_int_equal(m->n, meters);
  ydoc_free(d);
}

static void test_load_file(void **state) {
  (void)state;
  ydoc *d = ydoc_load_file("/nonexistent/site.yaml", err, sizeof err);
  assert_null(d);
  expect_err("/nonexistent/site.yaml:1:1: ", "cannot open");
  d = ydoc_load_file("/dev/null", err, sizeof err);
  assert_null(d);
  expect_err("/dev/null:1:1: ", "not a regular file");
  d = ydoc_load_file("/tmp", err, sizeof err);
  assert_null(d);
  expect_err("/tmp:1:1: ", "not a regular file");

  char path[] = "/tmp/ydoc-test-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "w");
  assert_non_null(f);
  fputs("x:\n  y: [1, 2]\n", f);
  fclose(f);
  d = ydoc_load_file(path, err, sizeof err);
  assert_non_null(d);
  const ydoc_node *y = ydoc_get(ydoc_get(ydoc_root(d), "x"), "y");
  assert_int_equal(y->kind, YDOC_SEQ);
  assert_int_equal(y->line, 2);
  assert_int_equal(y->col, 6);
  ydoc_free(d);
  unlink(path);
}

static void test_env_substitution(void **state) {
  (void)state;
  setenv("YDOC_T_PORT", "1502", 1);
  setenv("YDOC_T_EMPTY", "", 1);
  unsetenv("YDOC_T_UNSET");
  ydoc *d = load("a: ${YDOC_T_PORT}\n"
                 "b: ${YDOC_T_UNSET:-./x.db}\n"
                 "c: ${YDOC_T_EMPTY:-dflt}\n"
                 "d: ${YDOC_T_EMPTY}\n"
                 "e: \"tcp://h:${YDOC_T_PORT}/p\"\n"
                 "f: $${YDOC_T_PORT} costs $5\n"
                 "g: ${YDOC_T_UNSET:-}\n");
  assert_non_null(d);
  const ydoc_node *r = ydoc_root(d);
  assert_string_equal(ydoc_get(r, "a")->value, "1502");
  assert_string_equal(ydoc_get(r, "b")->value, "./x.db");
  assert_string_equal(ydoc_get(r, "c")->value, "dflt");
  assert_string_equal(ydoc_get(r, "d")->value, "");
  assert_string_equal(ydoc_get(r, "e")->value, "tcp://h:1502/p");
  assert_string_equal(ydoc_get(r, "f")->value, "${YDOC_T_PORT} costs $5");
  assert_string_equal(ydoc_get(r, "g")->value, "");
  int64_t v;
  assert_int_equal(ydoc_int(d, ydoc_get(r, "a"), 1, 65535, &v, err, sizeof err),
                   0);
  assert_int_equal(v, 1502);
  ydoc_free(d);

  expect_load_error("a: 1\nb:\n  c: ${YDOC_T_UNSET}\n", "t.yaml:3:6: ",
                    "environment variable YDOC_T_UNSET is not set");
  expect_load_error("a: ${YDOC_T_PORT\n", "t.yaml:1:4: ", "unterminated ${");
  expect_load_error("a: ${1X}\n", "t.yaml:1:4: ", "bad variable reference");
  expect_load_error("a: ${A B}\n", "t.yaml:1:4: ", "bad variable reference");
  expect_load_error("a: ${}\n", "t.yaml:1:4: ", "bad variable reference");
}

static void test_int(void **state) {
  (void)state;
  ydoc *d = load("a: 300\nb: 0x10\nc: -7\nd: 1.5\ne: [1]\nf:\ng: "
                 "99999999999999999999\n");
  assert_non_null(d);
  const ydoc_node *r = ydoc_root(d);
  int64_t v = 0;
  assert_int_equal(ydoc_int(d, ydoc_get(r, "a"), 1, 247, &v, err, sizeof err),
                   -1);
  expect_err("t.yaml:1:4: ", "expected an integer between 1 and 247, got \"300\"");
  assert_int_equal(ydoc_int(d, ydoc_get(r, "b"), 0, 100, &v, err, sizeof err),
                   0);
  assert_int_equal(v, 16);
  assert_int_equal(
      ydoc_int(d, ydoc_get(r, "c"), INT64_MIN, INT64_MAX, &v, err, sizeof err),
      0);
  assert_int_equal(v, -7);
  assert_int_equal(ydoc_int(d, ydoc_get(r, "d"), 0, 10, &v, err, sizeof err),
                   -1);
  expect_err("t.yaml:4:4: ", "got \"1.5\"");
  assert_int_equal(ydoc_int(d, ydoc_get(r, "e"), 0, 10, &v, err, sizeof err),
                   -1);
  expect_err("t.yaml:5:4: ", "got a sequence");
  assert_int_equal(ydoc_int(d, ydoc_get(r, "f"), 0, 10, &v, err, sizeof err),
                   -1);
  expect_err("t.yaml:6:3: ", "got an empty value");
  assert_int_equal(
      ydoc_int(d, ydoc_get(r, "g"), INT64_MIN, INT64_MAX, &v, err, sizeof err),
      -1);
  expect_err("t.yaml:7:4: ", "expected an integer, got");
  ydoc_free(d);
}

static void test_double_bool_str(void **state) {
  (void)state;
  ydoc *d = load("a: 0.9468\nb: 1.5\nc: nan\nd: 1e400\ne: yes\nf: False\n"
                 "g: maybe\nh: ~\ni: \"~\"\nj: {x: 1}\nk: -.5e1\n");
  assert_non_null(d);
  const ydoc_node *r = ydoc_root(d);
  double x = 0;
  assert_int_equal(ydoc_double(d, ydoc_get(r, "a"), 0, 1, &x, err, sizeof err),
                   0);
  assert_true(x > 0.9467 && x < 0.9469);
  assert_int_equal(ydoc_double(d, ydoc_get(r, "b"), 0, 1, &x, err, sizeof err),
                   -1);
  expect_err("t.yaml:2:4: ", "expected a number between 0 and 1, got \"1.5\"");
  assert_int_equal(ydoc_double(d, ydoc_get(r, "c"), 0, 1, &x, err, sizeof err),
                   -1);
  assert_int_equal(ydoc_double(d, ydoc_get(r, "d"), 0, 1, &x, err, sizeof err),
                   -1);
  assert_int_equal(
      ydoc_double(d, ydoc_get(r, "k"), -10, 10, &x, err, sizeof err), 0);
  assert_true(x == -5.0);
  bool b = false;
  assert_int_equal(ydoc_bool(d, ydoc_get(r, "e"), &b, err, sizeof err), 0);
  assert_true(b);
  assert_int_equal(ydoc_bool(d, ydoc_get(r, "f"), &b, err, sizeof err), 0);
  assert_false(b);
  assert_int_equal(ydoc_bool(d, ydoc_get(r, "g"), &b, err, sizeof err), -1);
  expect_err("t.yaml:7:4: ", "expected true or false, got \"maybe\"");
  const char *s = NULL;
  assert_int_equal(ydoc_str(d, ydoc_get(r, "h"), &s, err, sizeof err), 0);
  assert_string_equal(s, "");
  assert_int_equal(ydoc_str(d, ydoc_get(r, "i"), &s, err, sizeof err), 0);
  assert_string_equal(s, "~");
  assert_int_equal(ydoc_str(d, ydoc_get(r, "j"), &s, err, sizeof err), -1);
  expect_err("t.yaml:10:4: ", "expected a string, got a map");
  ydoc_free(d);
}

static void test_enum_id(void **state) {
  (void)state;
  ydoc *d = load("p: evn\nq: odd\nid: KKY-01\nbad: a b\nlong: "
                 "abcdefghijklmnop\nmsg: \"two\\nlines\"\n");
  assert_non_null(d);
  const ydoc_node *r = ydoc_root(d);
  static const char *const parity[] = {"none", "even", "odd", NULL};
  int i = -1;
  assert_int_equal(ydoc_enum(d, ydoc_get(r, "q"), parity, &i, err, sizeof err),
                   0);
  assert_int_equal(i, 2);
  assert_int_equal(ydoc_enum(d, ydoc_get(r, "p"), parity, &i, err, sizeof err),
                   -1);
  expect_err("t.yaml:1:4: ", "expected none, even or odd, got \"evn\"");
  const char *s = NULL;
  assert_int_equal(ydoc_id(d, ydoc_get(r, "id"), 64, &s, err, sizeof err), 0);
  assert_string_equal(s, "KKY-01");
  assert_int_equal(ydoc_id(d, ydoc_get(r, "bad"), 64, &s, err, sizeof err), -1);
  expect_err("t.yaml:4:6: ", "expected an id");
  assert_int_equal(ydoc_id(d, ydoc_get(r, "long"), 8, &s, err, sizeof err), -1);
  expect_err("t.yaml:5:7: ", "too long (at most 7 characters)");
  /* a value with a newline still gives a one-line message */
  assert_int_equal(ydoc_id(d, ydoc_get(r, "msg"), 64, &s, err, sizeof err), -1);
  expect_err("t.yaml:6:6: ", "got \"two\\nlines\"");
  ydoc_free(d);
}

static void test_check_map_seq(void **state) {
  (void)state;
  ydoc *d = load("bus:\n  id: x\n  bauds: 9600\nlist: {a: 1}\n");
  assert_non_null(d);
  const ydoc_node *r = ydoc_root(d);
  static const char *const keys[] = {"id", "transport", "baud", NULL};
  assert_int_equal(
      ydoc_check_map(d, ydoc_get(r, "bus"), "bus", keys, err, sizeof err), -1);
  expect_err("t.yaml:3:3: ", "unknown key \"bauds\" in bus (expected one of: "
                             "id, transport, baud)");
  static const char *const top[] = {"bus", "list", NULL};
  assert_int_equal(ydoc_check_map(d, r, "the top level", top, err, sizeof err),
                   0);
  assert_int_equal(
      ydoc_check_map(d, ydoc_get(r, "list"), "list", keys, err, sizeof err), -1);
  assert_int_equal(
      ydoc_check_seq(d, ydoc_get(r, "list"), "buses", err, sizeof err), -1);
  expect_err("t.yaml:4:7: ", "expected a sequence for buses, got a map");
  assert_int_equal(ydoc_check_map(d, ydoc_get(ydoc_get(r, "bus"), "id"), "bus",
                                  keys, err, sizeof err),
                   -1);
  expect_err("t.yaml:2:7: ", "expected a map for bus, got \"x\"");
  ydoc_free(d);
}

static void test_errf(void **state) {
  (void)state;
  ydoc *d = load("a: 1\n");
  assert_non_null(d);
  const ydoc_node *a = ydoc_get(ydoc_root(d), "a");
  assert_int_equal(ydoc_errf(d, a, err, sizeof err, "bad %s", "thing"), -1);
  assert_string_equal(err, "t.yaml:1:4: bad thing");
  char small[12];
  assert_int_equal(ydoc_errf(d, a, small, sizeof small, "very long message"),
                   -1);
  assert_string_equal(small, "t.yaml:1:4:");
  ydoc_free(d);
}

static int64_t dur(const char *s) {
  int64_t v = -42;
  if (ydoc_parse_duration(s, &v) != 0) return -1;
  return v;
}

static void test_parse_duration_good(void **state) {
  (void)state;
  assert_int_equal(dur("500ms"), 500);
  assert_int_equal(dur("2s"), 2000);
  assert_int_equal(dur("5m"), 300000);
  assert_int_equal(dur("1h"), 3600000);
  assert_int_equal(dur("1d"), 86400000);
  assert_int_equal(dur("1h30m"), 5400000);
  assert_int_equal(dur("1d2h3m4s5ms"), 86400000 + 7200000 + 180000 + 4000 + 5);
  assert_int_equal(dur("0"), 0);
  assert_int_equal(dur("0ms"), 0);
  assert_int_equal(dur("007s"), 7000);
  assert_int_equal(dur("90s"), 90000);
  assert_true(dur("9223372036854775807ms") == INT64_MAX);
  assert_true(dur("106751991167d") == (int64_t)106751991167 * 86400000);
}

static void test_parse_duration_bad(void **state) {
  (void)state;
  static const char *const bad[] = {
      "",     "5",     "5 minutes", "1.5s",  "-1s",  "+1s",   "30m1h",
      "1m1m", "1ms500", "s",        "1H",    " 1s",  "1s ",   "1sec",
      "1 s",  "ms",    "1m30",      "0x10s", "1e3s", "1d1d",  "00",
      "9223372036854775808ms",      "106751991168d", "106751991167d23h",
      "99999999999999999999999s",   NULL};
  for (size_t i = 0; bad[i]; i++) {
    int64_t v = 0;
    if (ydoc_parse_duration(bad[i], &v) == 0)
      fail_msg("\"%s\" parsed as %lld", bad[i], (long long)v);
  }
  int64_t v;
  assert_int_equal(ydoc_parse_duration(NULL, &v), -1);
  assert_int_equal(ydoc_parse_duration("1s", NULL), -1);
}

static void test_duration_accessor(void **state) {
  (void)state;
  ydoc *d = load("a: 5 minutes\nb: 2m\nc: 1h30m\nd: 1ms\n");
  assert_non_null(d);
  const ydoc_node *r = ydoc_root(d);
  int64_t v = 0;
  assert_int_equal(ydoc_duration_ms(d, ydoc_get(r, "a"), 0, INT64_MAX, &v, err,
                                    sizeof err),
                   -1);
  expect_err("t.yaml:1:4: ", "expected a duration such as 500ms, 2s, 5m or 1h, "
                             "got \"5 minutes\"");
  assert_int_equal(ydoc_duration_ms(d, ydoc_get(r, "b"), 10, 60000, &v, err,
                                    sizeof err),
                   -1);
  expect_err("t.yaml:2:4: ",
             "expected a duration between 10ms and 1m, got \"2m\"");
  assert_int_equal(ydoc_duration_ms(d, ydoc_get(r, "c"), 100, 86400000, &v, err,
                                    sizeof err),
                   0);
  assert_int_equal(v, 5400000);
  assert_int_equal(ydoc_duration_ms(d, ydoc_get(r, "d"), 1000, INT64_MAX, &v,
                                    err, sizeof err),
                   -1);
  expect_err("t.yaml:4:4: ", "expected a duration of at least 1s, got \"1ms\"");
  ydoc_free(d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tree_and_positions),
      cmocka_unit_test(test_empty_document),
      cmocka_unit_test(test_syntax_error),
      cmocka_unit_test(test_utf8_bom),
      cmocka_unit_test(test_invalid_utf8),
      cmocka_unit_test(test_duplicate_key),
      cmocka_unit_test(test_refused_constructs),
      cmocka_unit_test(test_size_limit),
      cmocka_unit_test(test_node_limit),
      cmocka_unit_test(test_node_limit_holds_a_large_site),
      cmocka_unit_test(test_load_file),
      cmocka_unit_test(test_env_substitution),
      cmocka_unit_test(test_int),
      cmocka_unit_test(test_double_bool_str),
      cmocka_unit_test(test_enum_id),
      cmocka_unit_test(test_check_map_seq),
      cmocka_unit_test(test_errf),
      cmocka_unit_test(test_parse_duration_good),
      cmocka_unit_test(test_parse_duration_bad),
      cmocka_unit_test(test_duration_accessor),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
