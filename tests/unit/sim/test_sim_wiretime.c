/* intake-sim's emulated serial line: an answer comes when a real line would
 * deliver it, never sooner and, on an idle machine, well under a millisecond
 * later.
 *
 * The simulator runs in this process on its own loop thread; the test talks
 * to it from outside, as a master does: over the pty linked at an rtu bus's
 * device path, and over TCP to an rtu-over-tcp bus. Each exchange is timed on
 * the monotonic clock from just before the request is written until the
 * answer's last byte is read, and compared with the line's time computed here
 * from first principles (start, data, parity and stop bits per character, and
 * the 3.5-character silence after the request). Scheduling noise only ever
 * adds time, so the shortest exchange must not beat the line and the median
 * must be within half a millisecond of it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cfg.h"
#include "proto/mb_proto.h"
#include "sim.h"

/* Exchanges timed per case: enough for a median that ignores the odd
 * wake-up delayed by other work on the machine. */
#define EXCHANGES 61
/* How much later than the line the median answer may come. */
#define SLACK_NS 500000
/* No answer within this long: the simulator is not serving. */
#define ANSWER_TIMEOUT_MS 2000

typedef struct {
  char dir[64];
  char path[128];
  int dtu_port;
  cfg *cfg;
  uv_loop_t loop;
  uv_async_t stop;
  sim *sim;
  pthread_t thread;
} fixture;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The time a real line needs for a REQ-byte request, the 3.5-character
 * silence and an ANS-byte answer, in ns rounded up: counted in half
 * characters so the 3.5 is exact. Below 19200 baud only (above it the
 * silence is fixed at 1.75 ms). */
static int64_t line_ns(size_t req, size_t ans, int baud, int char_bits) {
  uint64_t half_chars = 2 * (req + ans) + 7;
  uint64_t num = half_chars * (uint64_t)char_bits * 1000000000u;
  uint64_t den = 2 * (uint64_t)baud;
  return (int64_t)((num + den - 1) / den);
}

/* A loopback port nobody listens on now. */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_in sa = {.sin_family = AF_INET};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  int port = -1;
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
      getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
    port = ntohs(sa.sin_port);
  close(fd);
  return port;
}

static void *loop_thread(void *arg) {
  fixture *f = arg;
  uv_run(&f->loop, UV_RUN_DEFAULT);
  return NULL;
}

static void on_stop(uv_async_t *a) {
  fixture *f = a->data;
  sim_stop(f->sim);
  uv_close((uv_handle_t *)a, NULL);
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (!f) return -1;
  snprintf(f->dir, sizeof f->dir, "/tmp/ic-test_sim_wiretime.XXXXXX");
  if (!mkdtemp(f->dir)) return -1;
  f->dtu_port = free_port();
  if (f->dtu_port < 0) return -1;
  snprintf(f->path, sizeof f->path, "%s/site.yaml", f->dir);
  FILE *fp = fopen(f->path, "w");
  if (!fp) return -1;
  fprintf(fp,
          "site: {id: wiretime-test}\n"
          "mqtt: {url: \"mqtt://127.0.0.1:1883\"}\n"
          "storage: {path: ./readings.db}\n"
          "buses:\n"
          "  - {id: line96, transport: rtu, device: ./tty96, baud: 9600, sim_wire_time: true}\n"
          "  - {id: line192e, transport: rtu, device: ./tty192e, baud: 19200, parity: even, sim_wire_time: true}\n"
          "  - {id: dtu, transport: rtu-over-tcp, host: 127.0.0.1, port: %d, baud: 9600, sim_wire_time: true}\n"
          "meters:\n"
          "  - {id: A, bus: line96, unit: 1, profile: mag-00h}\n"
          "  - {id: B, bus: line192e, unit: 7, profile: mag-00h}\n"
          "  - {id: C, bus: dtu, unit: 1, profile: mag-00h}\n",
          f->dtu_port);
  if (fclose(fp) != 0) return -1;
  char err[512];
  if (cfg_load(f->path, NULL, &f->cfg, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  if (uv_loop_init(&f->loop) != 0) return -1;
  if (sim_start(&f->sim, f->cfg, &f->loop, NULL, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  f->stop.data = f;
  if (uv_async_init(&f->loop, &f->stop, on_stop) != 0) return -1;
  if (pthread_create(&f->thread, NULL, loop_thread, f) != 0) return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  uv_async_send(&f->stop);
  pthread_join(f->thread, NULL);
  int rc = uv_loop_close(&f->loop);
  sim_free(f->sim);
  cfg_free(f->cfg);
  unlink(f->path);
  rmdir(f->dir);
  free(f);
  return rc == 0 ? 0 : -1;
}

/* Open the pty linked at DEV (relative to the site folder) as a master
 * would: raw, no controlling terminal. */
static int open_port(const fixture *f, const char *dev) {
  char path[192];
  snprintf(path, sizeof path, "%s/%s", f->dir, dev);
  int fd = open(path, O_RDWR | O_NOCTTY);
  assert_true(fd >= 0);
  struct termios tio;
  assert_int_equal(tcgetattr(fd, &tio), 0);
  cfmakeraw(&tio);
  assert_int_equal(tcsetattr(fd, TCSANOW, &tio), 0);
  return fd;
}

static int connect_dtu(const fixture *f) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in sa = {.sin_family = AF_INET};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons((uint16_t)f->dtu_port);
  assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  return fd;
}

/* A read of COUNT holding registers at 0 of UNIT, RTU-framed into OUT. */
static size_t build_request(uint8_t unit, uint16_t count, uint8_t *out, size_t cap) {
  uint8_t pdu[8];
  int n = mb_pdu_read_req(pdu, sizeof pdu, MB_FC_READ_HOLDING, 0, count);
  assert_int_equal(n, 5);
  n = mb_rtu_frame(out, cap, unit, pdu, (size_t)n);
  assert_int_equal(n, 8);
  return (size_t)n;
}

/* Read exactly LEN bytes from FD; fails the test after ANSWER_TIMEOUT_MS. */
static void read_all(int fd, uint8_t *buf, size_t len) {
  size_t got = 0;
  int64_t deadline = now_ns() + (int64_t)ANSWER_TIMEOUT_MS * 1000000;
  while (got < len) {
    int64_t left_ms = (deadline - now_ns()) / 1000000;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (left_ms <= 0 || poll(&p, 1, (int)left_ms) <= 0)
      fail_msg("%zu of %zu answer bytes within %d ms", got, len, ANSWER_TIMEOUT_MS);
    ssize_t r = read(fd, buf + got, len - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) fail_msg("the line closed after %zu of %zu bytes", got, len);
    got += (size_t)r;
  }
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* Time PIPELINE requests for COUNT registers of UNIT written at once on FD,
 * EXCHANGES times, until the last answer's last byte; check them against
 * PIPELINE times the line's exchange time. */
static void time_exchanges(int fd, const char *what, uint8_t unit, uint16_t count,
                           int baud, int char_bits, int pipeline, int rounds) {
  uint8_t req[8 * 4];
  size_t rlen = 0;
  assert_true(pipeline >= 1 && pipeline <= 4);
  for (int i = 0; i < pipeline; i++)
    rlen += build_request(unit, count, req + rlen, sizeof req - rlen);
  size_t alen = 5u + 2u * count;
  int64_t expect = pipeline * line_ns(8, alen, baud, char_bits);
  int64_t took[EXCHANGES];
  assert_true(rounds <= EXCHANGES);
  uint8_t ans[4 * 260];
  for (int i = 0; i < rounds; i++) {
    int64_t t0 = now_ns();
    assert_int_equal(write(fd, req, rlen), (ssize_t)rlen);
    read_all(fd, ans, alen * (size_t)pipeline);
    took[i] = now_ns() - t0;
    for (int k = 0; k < pipeline; k++) {
      const uint8_t *a = ans + (size_t)k * alen;
      assert_int_equal(a[0], unit);
      assert_int_equal(a[1], MB_FC_READ_HOLDING);
      assert_int_equal(a[2], 2 * count);
      assert_int_equal(mb_crc16(a, alen), 0);
    }
  }
  qsort(took, (size_t)rounds, sizeof took[0], cmp_i64);
  int64_t min = took[0], median = took[rounds / 2], max = took[rounds - 1];
  printf("%s: line %lld us; measured min %lld, median %lld, max %lld us "
         "(%d exchanges)\n",
         what, (long long)expect / 1000, (long long)min / 1000,
         (long long)median / 1000, (long long)max / 1000, rounds);
  if (min < expect)
    fail_msg("%s: an answer came %lld us before the line could deliver it",
             what, (long long)(expect - min) / 1000);
  if (median > expect + SLACK_NS)
    fail_msg("%s: the median answer came %lld us after the line's time "
             "(at most %d us allowed)",
             what, (long long)(median - expect) / 1000, SLACK_NS / 1000);
}

static void test_rtu_9600_8n1(void **state) {
  fixture *f = *state;
  int fd = open_port(f, "tty96");
  /* 8-byte request, 9-byte answer: 20.5 characters of 10 bits. */
  time_exchanges(fd, "rtu 9600 8N1, 2 registers", 1, 2, 9600, 10, 1, EXCHANGES);
  close(fd);
}

static void test_rtu_19200_8e1(void **state) {
  fixture *f = *state;
  int fd = open_port(f, "tty192e");
  /* 8-byte request, 45-byte answer, 11 bits a character with parity. */
  time_exchanges(fd, "rtu 19200 8E1, 20 registers", 7, 20, 19200, 11, 1, EXCHANGES);
  close(fd);
}

static void test_rtu_over_tcp_9600(void **state) {
  fixture *f = *state;
  int fd = connect_dtu(f);
  time_exchanges(fd, "rtu-over-tcp 9600 8N1, 2 registers", 1, 2, 9600, 10, 1,
                 EXCHANGES);
  close(fd);
}

/* A DTU buffers requests that arrive while its line is busy: the second of
 * two written at once starts on the line when the first exchange ends, so
 * both answers take exactly two exchanges, not two plus a timer's rounding. */
static void test_rtu_over_tcp_back_to_back(void **state) {
  fixture *f = *state;
  int fd = connect_dtu(f);
  time_exchanges(fd, "rtu-over-tcp 9600 8N1, two requests at once", 1, 2, 9600,
                 10, 2, 31);
  close(fd);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rtu_9600_8n1),
      cmocka_unit_test(test_rtu_19200_8e1),
      cmocka_unit_test(test_rtu_over_tcp_9600),
      cmocka_unit_test(test_rtu_over_tcp_back_to_back),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
