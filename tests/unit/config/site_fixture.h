/* What the configuration's unit tests share: a site file in a temporary
 * folder, loaded as the daemon loads it, and the check of an error's exact
 * FILE:LINE:COL prefix and of what its message says. Included by each test
 * file (static); the file keeps its own setup and teardown around
 * site_dir_make. */
#ifndef IC_TEST_SITE_FIXTURE_H
#define IC_TEST_SITE_FIXTURE_H

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"

static char tmpdir[PATH_MAX]; /* as created */
static char site_path[PATH_MAX + 32];
static char err[CFG_ERR_MAX];

/* A fresh folder from TEMPLATE (mkdtemp's "...XXXXXX"), with site.yaml in
 * it to be. 0, or -1. */
static int site_dir_make(const char *template) {
  snprintf(tmpdir, sizeof tmpdir, "%s", template);
  if (!mkdtemp(tmpdir)) return -1;
  snprintf(site_path, sizeof site_path, "%s/site.yaml", tmpdir);
  return 0;
}

static void write_file(const char *name, const char *text) {
  char p[PATH_MAX + 32];
  snprintf(p, sizeof p, "%s/%s", tmpdir, name);
  FILE *f = fopen(p, "w");
  assert_non_null(f);
  assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
  assert_int_equal(fclose(f), 0);
}

static cfg *load_ok(const char *text) {
  write_file("site.yaml", text);
  cfg *c = NULL;
  err[0] = '\0';
  if (cfg_load(site_path, NULL, &c, err, sizeof err) != 0)
    fail_msg("load failed: %s", err);
  assert_non_null(c);
  return c;
}

/* Loading TEXT fails with "site.yaml:LINE:COL: " and a message holding PART. */
static void expect_error_at(const char *text, int line, int col,
                            const char *part) {
  write_file("site.yaml", text);
  cfg *c = (cfg *)(uintptr_t)1;
  err[0] = '\0';
  int rc = cfg_load(site_path, NULL, &c, err, sizeof err);
  if (rc == 0) {
    cfg_free(c);
    fail_msg("loaded, expected an error at %d:%d: %s", line, col, part);
  }
  assert_null(c);
  char prefix[PATH_MAX + 64];
  snprintf(prefix, sizeof prefix, "%s:%d:%d: ", site_path, line, col);
  if (strncmp(err, prefix, strlen(prefix)) != 0 || !strstr(err, part))
    fail_msg("error \"%s\"\nexpected \"%s...%s...\"", err, prefix, part);
  assert_null(strchr(err, '\n'));
}

#endif
