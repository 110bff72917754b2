/* libFuzzer target: the YAML loaders. Half the inputs go to the profile
 * parser from memory, the other half to the whole site loader through a
 * file, as a site file is read. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "profile/profile.h"
#include "profile_load.h"
#include "ydoc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  char err[1024];
  if (data[0] & 1) {
    mb_profile *p = profile_load_string("fuzz.yaml", (const char *)data + 1, size - 1,
                                        err, sizeof err);
    profile_free(p);
    ydoc *d = ydoc_load_string("fuzz.yaml", (const char *)data + 1, size - 1, err,
                               sizeof err);
    ydoc_free(d);
    return 0;
  }
  static char path[64];
  if (!path[0]) snprintf(path, sizeof path, "/tmp/ic-fuzz-config-%d.yaml", (int)getpid());
  FILE *f = fopen(path, "wb");
  if (!f) return 0;
  fwrite(data + 1, 1, size - 1, f);
  fclose(f);
  cfg *c = NULL;
  if (cfg_load(path, NULL, &c, err, sizeof err) == 0) cfg_free(c);
  return 0;
}
