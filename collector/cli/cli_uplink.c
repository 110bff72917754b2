/* intake-collector uplink-decode HEX...: frames of the bureau's monitoring
 * protocol (SZY206 / SL/T 427) decoded, one JSON object a line, for a field
 * engineer holding what the centre logged. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "proto/szy206.h"

/* Bytes one invocation decodes: a few dozen frames. */
#define DECODE_MAX 8192

static void decode_usage(FILE *f) {
  fprintf(f,
          "usage: intake-collector uplink-decode HEX...\n"
          "\n"
          "Decodes frames of the bureau's monitoring protocol (SZY206 / SL/T 427)\n"
          "given as hexadecimal bytes: one argument or many, spaces, colons and a\n"
          "0x prefix allowed. Frames given back to back are decoded one by one.\n"
          "Prints one JSON object a frame; exit 0 when every frame is whole with a\n"
          "good CS, 1 when one is not, 2 for text that is not hexadecimal.\n");
}

static int hexval(int ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* Append the hex digits of S to BUF; -1 with a message when S holds
 * something else, an odd digit out, or too much. */
static int append_hex(const char *s, uint8_t *buf, size_t *n, int *half) {
  for (size_t i = 0; s[i]; i++) {
    if (s[i] == ' ' || s[i] == ':' || s[i] == ',' || s[i] == '\t' || s[i] == '\n')
      continue;
    if (s[i] == '0' && (s[i + 1] == 'x' || s[i + 1] == 'X') && *half < 0) {
      i++;
      continue;
    }
    int v = hexval((unsigned char)s[i]);
    if (v < 0) {
      fprintf(stderr, "uplink-decode: '%c' in \"%s\" is not a hexadecimal digit\n", s[i], s);
      return -1;
    }
    if (*half < 0) {
      *half = v;
    } else {
      if (*n >= DECODE_MAX) {
        fprintf(stderr, "uplink-decode: more than %d bytes\n", DECODE_MAX);
        return -1;
      }
      buf[(*n)++] = (uint8_t)(*half << 4 | v);
      *half = -1;
    }
  }
  return 0;
}

int cli_uplink_decode(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    decode_usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  static uint8_t buf[DECODE_MAX];
  size_t n = 0;
  int half = -1;
  for (int i = 1; i < argc; i++)
    if (append_hex(argv[i], buf, &n, &half) < 0) return 2;
  if (half >= 0) {
    fprintf(stderr, "uplink-decode: an odd number of hexadecimal digits\n");
    return 2;
  }
  if (n == 0) {
    fprintf(stderr, "uplink-decode: no bytes given\n");
    return 2;
  }
  bool all_ok = true;
  size_t at = 0;
  static char text[16384];
  while (at < n) {
    /* A header that announces a length within what was given is one frame;
     * anything else is the rest, described as it is. */
    int len = szy_frame_len(buf + at, n - at);
    size_t take = (len > 0 && (size_t)len <= n - at) ? (size_t)len : n - at;
    szy_frame f;
    if (szy_parse(buf + at, take, &f) != SZY_OK) all_ok = false;
    szy_describe(buf + at, take, text, sizeof text);
    printf("%s\n", text);
    at += take;
  }
  return all_ok ? 0 : 1;
}
