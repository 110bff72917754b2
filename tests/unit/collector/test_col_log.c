/* base/log: a problem is said once (log_once) or once per cause
 * (log_changed), as the lines on stderr show. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/log.h"

/* The lines logged between begin() and end(), read into BUF by end(). */
static int saved_fd = -1;
static FILE *capture;

static void begin(void) {
  fflush(stderr);
  capture = tmpfile();
  assert_non_null(capture);
  saved_fd = dup(STDERR_FILENO);
  assert_true(saved_fd >= 0);
  assert_true(dup2(fileno(capture), STDERR_FILENO) >= 0);
}

static void end(char *buf, size_t len) {
  assert_true(dup2(saved_fd, STDERR_FILENO) >= 0);
  close(saved_fd);
  rewind(capture);
  size_t n = fread(buf, 1, len - 1, capture);
  buf[n] = '\0';
  fclose(capture);
}

static int count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
  return n;
}

static void test_once(void **state) {
  (void)state;
  char out[4096];
  bool said = false;
  log_set_level(LOGL_INFO);
  begin();
  for (int i = 0; i < 3; i++) log_once(&said, LOGL_WARN, "broker says %d", i);
  said = false; /* the problem ended; the next one is said */
  log_once(&said, LOGL_WARN, "broker says %d", 9);
  end(out, sizeof out);
  assert_int_equal(count(out, "warn  broker says 0\n"), 1);
  assert_int_equal(count(out, "broker says 1"), 0);
  assert_int_equal(count(out, "warn  broker says 9\n"), 1);
  assert_true(said);
}

static void test_changed(void **state) {
  (void)state;
  char out[4096];
  char last[64] = "";
  log_set_level(LOGL_INFO);
  begin();
  log_changed(last, sizeof last, "refused", LOGL_WARN, "cannot connect: refused; retry in %d s", 1);
  log_changed(last, sizeof last, "refused", LOGL_WARN, "cannot connect: refused; retry in %d s", 2);
  log_changed(last, sizeof last, "timeout", LOGL_WARN, "cannot connect: timeout; retry in %d s", 4);
  end(out, sizeof out);
  /* The second is the same cause with other words: not said at info. */
  assert_int_equal(count(out, "warn  cannot connect: refused; retry in 1 s\n"), 1);
  assert_int_equal(count(out, "retry in 2 s"), 0);
  assert_int_equal(count(out, "warn  cannot connect: timeout; retry in 4 s\n"), 1);
  assert_string_equal(last, "timeout");

  /* At debug, a repeat is said there, marked. */
  log_set_level(LOGL_DEBUG);
  begin();
  log_changed(last, sizeof last, "timeout", LOGL_WARN, "cannot connect: timeout; retry in %d s", 8);
  last[0] = '\0'; /* connected: the next failure is news */
  log_changed(last, sizeof last, "timeout", LOGL_WARN, "cannot connect: timeout; retry in %d s", 1);
  end(out, sizeof out);
  log_set_level(LOGL_INFO);
  assert_int_equal(count(out, "debug cannot connect: timeout; retry in 8 s (again)\n"), 1);
  assert_int_equal(count(out, "warn  cannot connect: timeout; retry in 1 s\n"), 1);
}

/* Under systemd, with stderr the journal's stream: each line starts with its
 * priority; JOURNAL_STREAM naming another file (stderr redirected by the
 * unit's command) leaves lines as they are. */
static void test_journal_priority(void **state) {
  (void)state;
  char out[4096], js[64];
  struct stat st;
  log_set_level(LOGL_DEBUG);
  begin();
  assert_int_equal(fstat(STDERR_FILENO, &st), 0);
  snprintf(js, sizeof js, "%ju:%ju", (uintmax_t)st.st_dev, (uintmax_t)st.st_ino);
  setenv("JOURNAL_STREAM", js, 1);
  assert_true(log_detect_journal());
  log_error("e %d", 1);
  log_warn("w");
  log_info("i");
  log_debug("d");
  snprintf(js, sizeof js, "%ju:%ju", (uintmax_t)st.st_dev, (uintmax_t)st.st_ino + 1);
  setenv("JOURNAL_STREAM", js, 1);
  assert_false(log_detect_journal());
  log_warn("plain");
  unsetenv("JOURNAL_STREAM");
  assert_false(log_detect_journal());
  log_info("plain too");
  end(out, sizeof out);
  log_set_level(LOGL_INFO);
  assert_string_equal(out, "<3>error e 1\n<4>warn  w\n<6>info  i\n<7>debug d\n"
                           "warn  plain\ninfo  plain too\n");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_once),
      cmocka_unit_test(test_changed),
      cmocka_unit_test(test_journal_priority),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
