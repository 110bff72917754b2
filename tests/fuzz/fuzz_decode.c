/* libFuzzer target: register decoding, from raw words to every type and word
 * order, and a built-in profile's fields through the planner's layout. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mb_decode.h"
#include "planner.h"
#include "profile.h"

static mb_profile *profiles[3];
static mb_plan *plans[3];

static void init(void) {
  static int done;
  if (done) return;
  done = 1;
  const char *names[3] = {"tuf2000m", "mag-00h", "open-channel"};
  char err[256];
  for (int i = 0; i < 3; i++) {
    profiles[i] = profile_load(names[i], NULL, NULL, err, sizeof err);
    if (profiles[i]) plans[i] = plan_build(profiles[i], -1, 0, err, sizeof err);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  init();
  if (size < 2) return 0;
  uint16_t words[256];
  size_t n = (size - 1) / 2;
  if (n > 256) n = 256;
  memset(words, 0, sizeof words);
  for (size_t i = 0; i < n; i++) words[i] = (uint16_t)(data[1 + 2 * i] << 8 | data[2 + 2 * i]);
  for (int t = MB_T_U16; t <= MB_T_F64; t++)
    for (int o = MB_ORDER_ABCD; o <= MB_ORDER_DCBA; o++) {
      double v = mb_decode(words, (mb_type)t, (mb_word_order)o);
      uint16_t back[4];
      mb_encode(back, (mb_type)t, (mb_word_order)o, v);
    }
  mb_totalizer((int64_t)(int32_t)mb_get32(words, MB_ORDER_CDAB),
               mb_decode(words + 2, MB_T_F32, MB_ORDER_CDAB));
  int pi = data[0] % 3;
  if (plans[pi] && plans[pi]->total_words <= 256) {
    double values[64];
    char err[256];
    if (profiles[pi]->nfields <= 64)
      plan_decode(plans[pi], profiles[pi], words, values, err, sizeof err);
  }
  return 0;
}
