/* ic-simclient: misbehaving clients for intake-sim's robustness tests.
 *
 *   ic-simclient flood tcp|rot HOST PORT UNIT COUNT SECONDS
 *       Connect to a Modbus TCP (tcp) or RTU-over-TCP (rot) server and send
 *       read-holding requests for COUNT registers at address 0 of UNIT, back
 *       to back for SECONDS, never reading an answer. Prints "flooded N
 *       bytes" and then holds the connection open, still not reading, until
 *       it is killed.
 *
 *   ic-simclient rtt tcp|rot HOST PORT UNIT COUNT
 *   ic-simclient rtt rtu DEVICE UNIT COUNT
 *       Send one read-holding request for COUNT registers at address 0 of
 *       UNIT and wait for the whole answer; print "rtt_us N", the
 *       microseconds from just before the request was written until the
 *       answer's last byte was read. Exits 1 without an answer within 5 s.
 *
 *   ic-simclient idle PATH
 *       Connect to the Unix socket PATH, print "connected", send nothing.
 *       When the peer closes, print "closed by peer after N ms" and exit 0.
 *
 *   ic-simclient read tcp|rot HOST PORT UNIT 2
 *   ic-simclient read rtu DEVICE|fd:N UNIT 2
 *       One read-holding request for 2 registers at address 0 of UNIT;
 *       check the answer's framing (transaction id, unit, function, byte
 *       count, CRC) and print "regs 0xHHHH 0xHHHH". fd:N uses the already
 *       open descriptor N instead of opening the port (so the port is not
 *       opened once more). Exits 1, saying why, without a whole answer
 *       within 5 s.
 *
 *   ic-simclient bad KIND tcp|rot HOST PORT UNIT
 *   ic-simclient bad KIND rtu DEVICE UNIT
 *       Send one kind of bad input, then a good request (as "read" does,
 *       for 2 registers) and print its registers. KIND is one of
 *         noise      1 KiB of pseudo-random bytes
 *         flood      256 KiB of them, written as fast as the server takes them
 *         crc        three read requests (for 4 registers) with a damaged CRC
 *                    or a damaged byte, the good request right behind them in
 *                    the same write (RTU framing only)
 *         truncated  the first bytes of a request, the rest never sent
 *         mbap-len0, mbap-len65535, mbap-proto
 *                    an MBAP header with length 0, length 65535, or protocol
 *                    id 1 (Modbus TCP only)
 *       The noise holds no byte run that passes as an RTU frame with a good
 *       CRC, whatever its length, so no answer is owed to it. After "crc" the
 *       good request is already on its way, on the same port or connection.
 *       After the others it follows on the same port on an RTU line, once
 *       the line has been silent long enough to end any frame, and so on
 *       rtu-over-tcp after "truncated" (the DTU's line falls silent too);
 *       otherwise on rtu-over-tcp and Modbus TCP, streams with no silence
 *       to end a frame by, on a new connection, the bad one still open. On Modbus TCP it
 *       first prints "bad connection: closed by peer" or "bad connection:
 *       open" (after waiting up to 5 s for the close when KIND is mbap-*,
 *       noise or flood).
 *
 * The server under test is expected to bound what such clients cost it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Modbus CRC16 (polynomial 0xA001, initial 0xFFFF), low byte sent first. */
static uint16_t crc16(const uint8_t *p, size_t n) {
  uint16_t crc = 0xFFFF;
  for (size_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int b = 0; b < 8; b++) crc = (crc & 1) ? (uint16_t)((crc >> 1) ^ 0xA001) : (uint16_t)(crc >> 1);
  }
  return crc;
}

/* One request into OUT; returns its length. */
static size_t build_request(int rot, uint16_t tid, uint8_t unit,
                            uint16_t count, uint8_t *out) {
  uint8_t pdu[5] = {0x03, 0x00, 0x00, (uint8_t)(count >> 8), (uint8_t)count};
  if (rot) {
    out[0] = unit;
    memcpy(out + 1, pdu, sizeof pdu);
    uint16_t crc = crc16(out, 6);
    out[6] = (uint8_t)(crc & 0xFF);
    out[7] = (uint8_t)(crc >> 8);
    return 8;
  }
  out[0] = (uint8_t)(tid >> 8);
  out[1] = (uint8_t)tid;
  out[2] = out[3] = 0;
  out[4] = 0;
  out[5] = 6; /* unit id + PDU */
  out[6] = unit;
  memcpy(out + 7, pdu, sizeof pdu);
  return 12;
}

static int flood(int argc, char **argv) {
  if (argc != 8) return 2;
  int rot = strcmp(argv[2], "rot") == 0;
  if (!rot && strcmp(argv[2], "tcp") != 0) return 2;
  struct sockaddr_in sa = {.sin_family = AF_INET};
  if (inet_pton(AF_INET, argv[3], &sa.sin_addr) != 1) {
    fprintf(stderr, "ic-simclient: %s is not an IPv4 address\n", argv[3]);
    return 2;
  }
  sa.sin_port = htons((uint16_t)atoi(argv[4]));
  uint8_t unit = (uint8_t)atoi(argv[5]);
  uint16_t count = (uint16_t)atoi(argv[6]);
  int64_t seconds = atoi(argv[7]);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    perror("ic-simclient: connect");
    return 1;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);

  /* A batch of requests, so each write carries many of them. */
  uint8_t batch[4096];
  size_t blen = 0;
  uint16_t tid = 0;
  while (blen + 12 <= sizeof batch)
    blen += build_request(rot, tid++, unit, count, batch + blen);

  uint64_t sent = 0;
  size_t off = 0;
  int64_t deadline = now_ms() + seconds * 1000;
  while (now_ms() < deadline) {
    ssize_t w = write(fd, batch + off, blen - off);
    if (w > 0) {
      sent += (uint64_t)w;
      off = (off + (size_t)w) % blen;
      continue;
    }
    if (w < 0 && errno != EAGAIN && errno != EINTR) {
      perror("ic-simclient: write");
      break;
    }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    (void)poll(&p, 1, 100);
  }
  printf("flooded %llu bytes\n", (unsigned long long)sent);
  fflush(stdout);
  for (;;) pause(); /* hold the connection, never read */
}

static int64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int rtt(int argc, char **argv) {
  int fd = -1, rot = 0, rtu = 0;
  uint8_t unit;
  uint16_t count;
  if (argc == 6 && strcmp(argv[2], "rtu") == 0) {
    rtu = 1;
    fd = open(argv[3], O_RDWR | O_NOCTTY);
    if (fd < 0) {
      perror("ic-simclient: open");
      return 1;
    }
    struct termios tio;
    if (tcgetattr(fd, &tio) == 0) {
      cfmakeraw(&tio);
      tcsetattr(fd, TCSANOW, &tio);
    }
    unit = (uint8_t)atoi(argv[4]);
    count = (uint16_t)atoi(argv[5]);
  } else if (argc == 7 && (strcmp(argv[2], "tcp") == 0 || strcmp(argv[2], "rot") == 0)) {
    rot = strcmp(argv[2], "rot") == 0;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (inet_pton(AF_INET, argv[3], &sa.sin_addr) != 1) return 2;
    sa.sin_port = htons((uint16_t)atoi(argv[4]));
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
      perror("ic-simclient: connect");
      return 1;
    }
    unit = (uint8_t)atoi(argv[5]);
    count = (uint16_t)atoi(argv[6]);
  } else {
    return 2;
  }
  if (count < 1 || count > 125) return 2;
  uint8_t req[16];
  size_t rlen = build_request(rot || rtu, 1, unit, count, req);
  size_t want = (rot || rtu) ? 5u + 2u * count : 9u + 2u * count;
  uint8_t ans[512];
  size_t got = 0;
  int64_t t0 = now_us();
  if (write(fd, req, rlen) != (ssize_t)rlen) {
    perror("ic-simclient: write");
    return 1;
  }
  while (got < want) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int64_t left = 5000 - (now_us() - t0) / 1000;
    if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
      fprintf(stderr, "ic-simclient: %zu of %zu answer bytes within 5 s\n", got, want);
      return 1;
    }
    ssize_t r = read(fd, ans + got, want - got);
    if (r <= 0) {
      fprintf(stderr, "ic-simclient: connection closed after %zu bytes\n", got);
      return 1;
    }
    got += (size_t)r;
  }
  int64_t t1 = now_us();
  if (ans[(rot || rtu) ? 1 : 7] != 0x03) {
    fprintf(stderr, "ic-simclient: not an answer to function 3\n");
    return 1;
  }
  printf("rtt_us %lld\n", (long long)(t1 - t0));
  close(fd);
  return 0;
}

static int idle(int argc, char **argv) {
  if (argc != 3) return 2;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(argv[2]) >= sizeof sa.sun_path) return 2;
  strcpy(sa.sun_path, argv[2]);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    perror("ic-simclient: connect");
    return 1;
  }
  int64_t t0 = now_ms();
  printf("connected\n");
  fflush(stdout);
  char buf[256];
  ssize_t r;
  while ((r = read(fd, buf, sizeof buf)) > 0 || (r < 0 && errno == EINTR)) {
  }
  printf("closed by peer after %lld ms\n", (long long)(now_ms() - t0));
  return 0;
}

/* --- read and bad --------------------------------------------------------- */

#define ANSWER_MS 5000   /* a good answer comes within this */
#define CLOSE_WAIT_MS 5000
/* An RTU line is framed by silence: intake-sim drops an incomplete frame
 * after 100 ms without a byte. The master keeps the line quiet well beyond
 * that before its next request. */
#define LINE_SILENCE_MS 500
#define NOISE_BYTES 1024
#define FLOOD_BYTES (256 * 1024)
#define GOOD_COUNT 2
#define GOOD_TID 0x4B1D
/* Unit id and PDU of the longest RTU frame (256 bytes with its CRC). */
#define MB_RTU_MAX_DATA 254

typedef enum { T_TCP, T_ROT, T_RTU } transport_kind;

typedef struct {
  transport_kind kind;
  const char *host, *port, *device;
  uint8_t unit;
} target;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  fflush(stdout);
}

/* Parse "tcp|rot HOST PORT UNIT" or "rtu DEVICE UNIT" at ARGV; returns how
 * many arguments it took, 0 when they do not fit. */
static int parse_target(int argc, char **argv, target *t) {
  memset(t, 0, sizeof *t);
  if (argc >= 3 && strcmp(argv[0], "rtu") == 0) {
    t->kind = T_RTU;
    t->device = argv[1];
    t->unit = (uint8_t)atoi(argv[2]);
    return 3;
  }
  if (argc >= 4 && (strcmp(argv[0], "tcp") == 0 || strcmp(argv[0], "rot") == 0)) {
    t->kind = strcmp(argv[0], "rot") == 0 ? T_ROT : T_TCP;
    t->host = argv[1];
    t->port = argv[2];
    t->unit = (uint8_t)atoi(argv[3]);
    return 4;
  }
  return 0;
}

/* Open the transport, non-blocking (but for an inherited descriptor). -1
 * with a message on failure. */
static int open_target(const target *t) {
  int fd;
  if (t->kind == T_RTU && strncmp(t->device, "fd:", 3) == 0) {
    /* Left blocking: the descriptor's owner reads it after us, and its
     * flags are shared. Reads wait in poll() first all the same. */
    fd = atoi(t->device + 3);
    if (fcntl(fd, F_GETFL) < 0) {
      perror("ic-simclient: descriptor");
      return -1;
    }
    return fd;
  }
  if (t->kind == T_RTU) {
    fd = open(t->device, O_RDWR | O_NOCTTY);
    if (fd < 0) {
      perror("ic-simclient: open");
      return -1;
    }
    struct termios tio;
    if (tcgetattr(fd, &tio) == 0) {
      cfmakeraw(&tio);
      tcsetattr(fd, TCSANOW, &tio);
    }
  } else {
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (inet_pton(AF_INET, t->host, &sa.sin_addr) != 1) {
      fprintf(stderr, "ic-simclient: %s is not an IPv4 address\n", t->host);
      return -1;
    }
    sa.sin_port = htons((uint16_t)atoi(t->port));
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
      perror("ic-simclient: connect");
      if (fd >= 0) close(fd);
      return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

/* Write all of DATA before DEADLINE (ms). 0, or -1 with errno (ETIMEDOUT
 * when the peer stopped taking bytes). */
static int write_all(int fd, const uint8_t *data, size_t len, int64_t deadline) {
  size_t off = 0;
  while (off < len) {
    ssize_t w = write(fd, data + off, len - off);
    if (w > 0) {
      off += (size_t)w;
      continue;
    }
    if (w < 0 && errno != EAGAIN && errno != EINTR) return -1;
    int64_t left = deadline - now_ms();
    if (left <= 0) {
      errno = ETIMEDOUT;
      return -1;
    }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    (void)poll(&p, 1, (int)left);
  }
  return 0;
}

/* Table-driven CRC16 step, for screening noise quickly. */
static uint16_t crc_table[256];
static void crc_table_init(void) {
  for (unsigned i = 0; i < 256; i++) {
    uint16_t c = (uint16_t)i;
    for (int b = 0; b < 8; b++) c = (c & 1) ? (uint16_t)((c >> 1) ^ 0xA001) : (uint16_t)(c >> 1);
    crc_table[i] = c;
  }
}
static uint16_t crc_step(uint16_t crc, uint8_t byte) {
  return (uint16_t)((crc >> 8) ^ crc_table[(crc ^ byte) & 0xFF]);
}

/* Pseudo-random bytes in which no run of 4..256 bytes is an RTU frame with a
 * good CRC: a server owes no answer to any part of them, however it cuts
 * them into frames. The same SEED gives the same bytes. */
static void make_noise(uint8_t *buf, size_t n, uint64_t seed) {
  uint64_t x = seed ? seed : 1;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    buf[i] = (uint8_t)(x >> 24);
  }
  crc_table_init();
  size_t i = 0;
  while (i + 4 <= n) {
    uint16_t crc = 0xFFFF;
    size_t fix = 0;
    /* Frame buf[i .. i+k+2): k bytes of unit and PDU, then the CRC. */
    for (size_t k = 1; k <= MB_RTU_MAX_DATA && i + k + 1 < n; k++) {
      crc = crc_step(crc, buf[i + k - 1]);
      if (k >= 2 && buf[i + k] == (uint8_t)(crc & 0xFF) &&
          buf[i + k + 1] == (uint8_t)(crc >> 8)) {
        fix = i + k + 1;
        break;
      }
    }
    if (!fix) {
      i++;
      continue;
    }
    /* Spoil that CRC. The byte changed may complete another frame ending
     * there, or one it is part of, which ends later: never one that ends
     * before it. Frames ending there each rule out one value at most, so
     * counting up finds a value none of them has; frames starting up to a
     * frame's length before it are looked at again. */
    buf[fix]++;
    i = fix > MB_RTU_MAX_DATA + 2 ? fix - (MB_RTU_MAX_DATA + 2) : 0;
  }
}

static void hex_line(const char *what, const uint8_t *p, size_t n) {
  printf("%s:", what);
  for (size_t i = 0; i < n && i < 64; i++) printf(" %02x", p[i]);
  printf("%s\n", n > 64 ? " ..." : "");
  fflush(stdout);
}

/* Send the good request on FD (unless SENT: it went with the bytes before
 * it) and judge its answer: print "regs ..." and return 0, or say what was
 * wrong and return 1. */
static int good_exchange(int fd, const target *t, bool sent) {
  bool rtu = t->kind != T_TCP;
  uint8_t req[16];
  size_t rlen = build_request(rtu, GOOD_TID, t->unit, GOOD_COUNT, req);
  int64_t deadline = now_ms() + ANSWER_MS;
  if (!sent && write_all(fd, req, rlen, deadline) != 0) {
    say("no answer: the request could not be written (%s)\n", strerror(errno));
    return 1;
  }
  size_t want = rtu ? 5u + 2u * GOOD_COUNT : 9u + 2u * GOOD_COUNT;
  uint8_t ans[64];
  size_t got = 0;
  while (got < want) {
    int64_t left = deadline - now_ms();
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
      say("no answer: %zu of %zu bytes within %d ms\n", got, want, ANSWER_MS);
      if (got) hex_line("partial", ans, got);
      return 1;
    }
    ssize_t r = read(fd, ans + got, want - got);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (r <= 0) {
      say("no answer: the connection closed after %zu bytes\n", got);
      return 1;
    }
    got += (size_t)r;
  }
  const char *bad = NULL;
  if (rtu) {
    uint16_t crc = crc16(ans, want - 2);
    if (ans[0] != t->unit) bad = "another unit";
    else if (ans[1] != 0x03) bad = "not function 3";
    else if (ans[2] != 2 * GOOD_COUNT) bad = "wrong byte count";
    else if (ans[want - 2] != (uint8_t)crc || ans[want - 1] != (uint8_t)(crc >> 8))
      bad = "bad CRC";
  } else {
    if (ans[0] != (uint8_t)(GOOD_TID >> 8) || ans[1] != (uint8_t)GOOD_TID)
      bad = "another transaction id";
    else if (ans[2] || ans[3]) bad = "protocol id not 0";
    else if (ans[4] || ans[5] != 3 + 2 * GOOD_COUNT) bad = "wrong length";
    else if (ans[6] != t->unit) bad = "another unit";
    else if (ans[7] != 0x03) bad = "not function 3";
    else if (ans[8] != 2 * GOOD_COUNT) bad = "wrong byte count";
  }
  if (bad) {
    say("bad answer: %s\n", bad);
    hex_line("answer", ans, got);
    return 1;
  }
  const uint8_t *data = ans + (rtu ? 3 : 9);
  printf("regs");
  for (int i = 0; i < GOOD_COUNT; i++) printf(" 0x%02X%02X", data[2 * i], data[2 * i + 1]);
  printf("\n");
  fflush(stdout);
  return 0;
}

static int read_cmd(int argc, char **argv) {
  target t;
  /* The transport's arguments, then COUNT. */
  if (argc < 3 || parse_target(argc - 3, argv + 2, &t) != argc - 3) return 2;
  if (atoi(argv[argc - 1]) != GOOD_COUNT) {
    fprintf(stderr, "ic-simclient: read asks for %d registers\n", GOOD_COUNT);
    return 2;
  }
  int fd = open_target(&t);
  if (fd < 0) return 1;
  return good_exchange(fd, &t, false);
}

/* Wait up to MS for the peer to close FD; true when it did. Bytes it sends
 * meanwhile are read and shown. */
static bool closed_by_peer(int fd, int ms) {
  int64_t deadline = now_ms() + ms;
  for (;;) {
    int64_t left = deadline - now_ms();
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (left <= 0 || poll(&p, 1, (int)left) <= 0) return false;
    uint8_t buf[512];
    ssize_t r = read(fd, buf, sizeof buf);
    if (r == 0 || (r < 0 && errno == ECONNRESET)) return true;
    if (r > 0) hex_line("bad connection answered", buf, (size_t)r);
  }
}

static int bad_cmd(int argc, char **argv) {
  if (argc < 4) return 2;
  const char *kind = argv[2];
  target t;
  int took = parse_target(argc - 3, argv + 3, &t);
  if (!took || took != argc - 3) return 2;
  bool mbap_kind = strncmp(kind, "mbap-", 5) == 0;
  if (mbap_kind && t.kind != T_TCP) return 2;
  if (strcmp(kind, "crc") == 0 && t.kind == T_TCP) return 2;

  static uint8_t bytes[FLOOD_BYTES];
  size_t n = 0;
  bool rtu = t.kind != T_TCP;
  if (strcmp(kind, "noise") == 0) {
    n = NOISE_BYTES;
    make_noise(bytes, n, 0x1CEDC0FFEEull);
  } else if (strcmp(kind, "flood") == 0) {
    n = FLOOD_BYTES;
    make_noise(bytes, n, 0xF100Dull);
  } else if (strcmp(kind, "crc") == 0) {
    /* Requests whose answers (4 registers) cannot pass for the good one's. */
    for (int i = 0; i < 3; i++) {
      uint8_t *f = bytes + n;
      n += build_request(true, 0, t.unit, 4, f);
      if (i == 0) f[6] ^= 0xFF;   /* the CRC's low byte */
      if (i == 1) f[7] ^= 0x01;   /* one bit of its high byte */
      if (i == 2) f[3] ^= 0x10;   /* a byte of the PDU, the CRC left as it was */
    }
    /* The good request right behind them, in the same write: the framer
     * must pick it out at once. */
    n += build_request(true, GOOD_TID, t.unit, GOOD_COUNT, bytes + n);
  } else if (strcmp(kind, "truncated") == 0) {
    n = build_request(rtu, 0x7A11, t.unit, 4, bytes);
    /* RTU: a byte of the count and the CRC never come; MBAP: the
     * address's low byte and the count. */
    n -= 3;
  } else if (mbap_kind) {
    n = build_request(false, 0x0BAD, t.unit, GOOD_COUNT, bytes);
    if (strcmp(kind, "mbap-len0") == 0) bytes[4] = bytes[5] = 0x00;
    else if (strcmp(kind, "mbap-len65535") == 0) bytes[4] = bytes[5] = 0xFF;
    else if (strcmp(kind, "mbap-proto") == 0) bytes[3] = 0x01;
    else return 2;
  } else {
    return 2;
  }

  int fd = open_target(&t);
  if (fd < 0) return 1;
  int64_t t0 = now_ms();
  int wrc = write_all(fd, bytes, n, t0 + 30000);
  int werr = errno;
  if (wrc != 0 && !(t.kind == T_TCP && (werr == EPIPE || werr == ECONNRESET))) {
    say("the bad bytes could not be written: %s\n", strerror(werr));
    return 1;
  }
  say("sent %s: %zu bytes in %lld ms%s\n", kind, n, (long long)(now_ms() - t0),
      wrc != 0 ? " (the peer closed the connection meanwhile)" : "");

  if (strcmp(kind, "crc") == 0) return good_exchange(fd, &t, true);
  if (t.kind == T_RTU || (t.kind == T_ROT && strcmp(kind, "truncated") == 0)) {
    /* The line stays silent: the frame in progress, if any, ends (a DTU
     * passes its serial line's silence on as a pause in the stream). */
    struct timespec ts = {LINE_SILENCE_MS / 1000, (LINE_SILENCE_MS % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    return good_exchange(fd, &t, false);
  }
  if (t.kind == T_TCP) {
    bool wait_close = mbap_kind || strcmp(kind, "noise") == 0 || strcmp(kind, "flood") == 0;
    bool closed = wrc != 0 || (wait_close && closed_by_peer(fd, CLOSE_WAIT_MS));
    say("bad connection: %s\n", closed ? "closed by peer" : "open");
  }
  /* A new connection, the bad one still open. */
  int good = open_target(&t);
  if (good < 0) return 1;
  int rc = good_exchange(good, &t, false);
  close(good);
  close(fd);
  return rc;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  int rc = 2;
  if (argc > 1 && strcmp(argv[1], "flood") == 0) rc = flood(argc, argv);
  if (argc > 1 && strcmp(argv[1], "idle") == 0) rc = idle(argc, argv);
  if (argc > 1 && strcmp(argv[1], "rtt") == 0) rc = rtt(argc, argv);
  if (argc > 1 && strcmp(argv[1], "read") == 0) rc = read_cmd(argc, argv);
  if (argc > 1 && strcmp(argv[1], "bad") == 0) rc = bad_cmd(argc, argv);
  if (rc == 2)
    fprintf(stderr,
            "usage: ic-simclient flood tcp|rot HOST PORT UNIT COUNT SECONDS\n"
            "       ic-simclient rtt tcp|rot HOST PORT UNIT COUNT\n"
            "       ic-simclient rtt rtu DEVICE UNIT COUNT\n"
            "       ic-simclient idle SOCKET\n"
            "       ic-simclient read tcp|rot HOST PORT UNIT 2\n"
            "       ic-simclient read rtu DEVICE|fd:N UNIT 2\n"
            "       ic-simclient bad noise|flood|crc|truncated tcp|rot HOST PORT UNIT\n"
            "       ic-simclient bad noise|flood|crc|truncated rtu DEVICE UNIT\n"
            "       ic-simclient bad mbap-len0|mbap-len65535|mbap-proto tcp HOST PORT UNIT\n");
  return rc;
}
