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
 * The server under test is expected to bound what such clients cost it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
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

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  int rc = 2;
  if (argc > 1 && strcmp(argv[1], "flood") == 0) rc = flood(argc, argv);
  if (argc > 1 && strcmp(argv[1], "idle") == 0) rc = idle(argc, argv);
  if (argc > 1 && strcmp(argv[1], "rtt") == 0) rc = rtt(argc, argv);
  if (rc == 2)
    fprintf(stderr,
            "usage: ic-simclient flood tcp|rot HOST PORT UNIT COUNT SECONDS\n"
            "       ic-simclient rtt tcp|rot HOST PORT UNIT COUNT\n"
            "       ic-simclient rtt rtu DEVICE UNIT COUNT\n"
            "       ic-simclient idle SOCKET\n");
  return rc;
}
