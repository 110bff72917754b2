/* libFuzzer target: the water-resources monitoring frame (drivers/proto/
 * szy206.c) that the uplink speaks to the bureau's centre: the frame parser,
 * the length a header announces, report data, values and time labels, and
 * the describer behind `uplink-decode`.
 *
 * Held to what they promise, against references written here from the
 * protocol notes rather than with the code under test: a frame is accepted
 * exactly when its start bytes, length, end byte and CRC-8 are right, and is
 * built back byte for byte from its parts; a report, a value or a time label
 * that decodes encodes back to the same bytes; the description is always a
 * terminated string within its buffer. A broken promise aborts. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/szy206.h"

#define FUZZ_TARGET "fuzz_uplink"
#include "fuzz_check.h"

/* CRC-8, polynomial 0xE5, bit by bit. */
static uint8_t ref_crc8(const uint8_t *p, size_t n) {
  uint8_t crc = 0;
  for (size_t i = 0; i < n; i++) {
    for (int b = 7; b >= 0; b--) {
      int top = ((crc >> 7) ^ (p[i] >> b)) & 1;
      crc = (uint8_t)(crc << 1);
      if (top) crc ^= 0xE5;
    }
  }
  return crc;
}

static int ref_frame_ok(const uint8_t *f, size_t n) {
  if (n < 12 || f[0] != 0x68 || f[2] != 0x68 || f[1] < 7 || n != (size_t)f[1] + 5 ||
      f[n - 1] != 0x16)
    return 0;
  if ((f[3] & 0x40) && f[1] < 8) return 0;
  return ref_crc8(f + 3, f[1]) == f[n - 2];
}

static void frame(const uint8_t *data, size_t size) {
  szy_frame f;
  int rc = szy_parse(data, size, &f);
  int want = ref_frame_ok(data, size);
  CHECK((rc == SZY_OK) == want, "%zu bytes: rc %d, reference %d", size, rc, want);
  if (rc != SZY_OK) {
    CHECK(rc == SZY_EMALFORMED || rc == SZY_ECRC, "rc %d", rc);
    return;
  }
  int len = szy_frame_len(data, size);
  CHECK(len == (int)size, "header says %d for %zu bytes", len, size);
  size_t hdr = (f.divs >= 0) ? 11 : 10;
  CHECK(f.data == data + hdr && f.data_len == size - hdr - 2, "data at %td, %zu bytes",
        f.data - data, f.data_len);
  if (f.divs < 0) {
    uint8_t back[SZY_FRAME_MAX];
    int n = szy_build(back, sizeof back, f.c, f.addr, f.afn, f.data, f.data_len);
    CHECK(n == (int)size && memcmp(back, data, size) == 0, "rebuilt frame differs (%d)", n);
  }
  /* Whatever the data, report decoding keeps to its bounds and round-trips. */
  static szy_report r;
  for (int tp = -1; tp <= 7; tp++) {
    if (szy_report_decode(f.data, f.data_len, tp, &r) != SZY_OK) continue;
    uint8_t back[SZY_FRAME_MAX];
    int n = szy_report_encode(back, sizeof back, &r);
    CHECK(n == (int)f.data_len && memcmp(back, f.data, f.data_len) == 0,
          "report data rebuilt differs (tp %d, %d of %zu)", tp, n, f.data_len);
  }
}

static void values(const uint8_t *data, size_t size) {
  if (size < 5) return;
  uint8_t back[8];
  int64_t flow;
  if (szy_flow_decode(data, &flow) == SZY_OK) {
    CHECK(flow >= -SZY_FLOW_MAX && flow <= SZY_FLOW_MAX, "flow %lld", (long long)flow);
    CHECK(szy_flow_encode(back, flow) == SZY_OK, "flow %lld refused", (long long)flow);
    /* Minus zero has no second spelling on the way out. */
    if (!(flow == 0 && (data[4] & 0x80)))
      CHECK(memcmp(back, data, 5) == 0, "flow %lld re-encoded differs", (long long)flow);
  }
  uint64_t vol;
  if (szy_volume_decode(data, &vol) == SZY_OK) {
    CHECK(vol <= SZY_VOLUME_MAX, "volume %llu", (unsigned long long)vol);
    CHECK(szy_volume_encode(back, vol) == SZY_OK && memcmp(back, data, 5) == 0,
          "volume %llu re-encoded differs", (unsigned long long)vol);
  }
  for (int len = 5; len <= 7; len += 2) {
    szy_tp tp;
    if ((size_t)len <= size && szy_tp_decode(data, size, len, &tp) == len) {
      CHECK(szy_tp_encode(back, sizeof back, len, &tp) == len &&
                memcmp(back, data, (size_t)len) == 0,
            "time label of %d re-encoded differs", len);
    }
  }
}

static void describe(const uint8_t *data, size_t size) {
  char out[600];
  size_t cap = 1 + (size ? data[0] : 0) * 2u;
  if (cap > sizeof out) cap = sizeof out;
  memset(out, 'x', sizeof out);
  int n = szy_describe(size ? data + 1 : data, size ? size - 1 : 0, out, cap);
  CHECK(n >= 0 && (size_t)n < cap && strlen(out) == (size_t)n, "described %d in %zu", n,
        cap);
  CHECK(cap == sizeof out || out[cap] == 'x', "wrote past %zu", cap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  uint8_t mode = data[0];
  data++;
  size--;
  switch (mode % 3) {
  case 0: frame(data, size); break;
  case 1: values(data, size); break;
  case 2: describe(data, size); break;
  }
  return 0;
}
