/* Tests of the transports against real sockets and a real pseudo-terminal.
 *
 * A small server thread, built on the protocol core, plays the meter: it
 * answers, delays, corrupts the CRC, sends an exception, closes the
 * connection, answers late or a byte at a time, as each test scripts it. The
 * rtu-over-tcp transport runs against its RTU variant on 127.0.0.1 (ephemeral
 * port), the tcp transport against its Modbus TCP (MBAP) variant,
 * and the libmodbus rtu transport against it on the master side of a pty.
 * Nothing waits by sleeping: the listening socket exists before the client
 * starts, and the test and the server hand over through a condition variable.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "proto/mb_proto.h"
#include "transport/transport.h"

#define TIMEOUT_MS 200
#define MAX_REQ 32

typedef enum {
  A_ANSWER = 0,   /* answer at once */
  A_DELAY,        /* answer after 50 ms, well within the timeout */
  A_SILENT,       /* never answer */
  A_BADCRC,       /* answer with a corrupted CRC */
  A_EXCEPTION,    /* exception 0x02, illegal data address */
  A_CLOSE,        /* close the connection instead of answering */
  A_LATE,         /* answer once the test says the client gave up */
  A_SPLIT,        /* answer one byte per write */
  A_WRONG_UNIT,   /* answer as unit + 1 */
  A_SHORT,        /* answer with one register too few */
  A_NOISE,        /* answer with bytes that cannot be framed */
  A_ANSWER_CLOSE, /* answer, then close the connection */
  A_FOREIGN_FIRST,  /* unit + 1 answers first, ours follows 5 ms later */
  A_FOREIGN_MERGED, /* unit + 1's answer, an answer for the other function
                     * and ours, in one write */
} action;

typedef struct {
  bool mbap; /* Modbus TCP instead of RTU frames */
  int lfd;   /* listening socket, or -1 when serving a pty */
  int ptyfd; /* the pty master */
  int stop[2];
  uint16_t port;
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  action script[MAX_REQ]; /* what to do with the i-th request */
  size_t nreq;            /* requests seen */
  mb_request req[MAX_REQ];
  uint8_t unit[MAX_REQ];
  uint64_t req_ns[MAX_REQ]; /* when each arrived, CLOCK_MONOTONIC */
  int nconn;                /* connections accepted */
  int nclosed;              /* connections the server closed */
  bool late_go, late_done;
} server;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void pause_ms(long ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* The register values the server serves: the address itself, so a test
 * can tell which request an answer belongs to. */
static uint16_t reg_value(uint16_t addr) { return (uint16_t)(addr ^ 0x5A00); }

static int write_all(int fd, const uint8_t *buf, size_t len) {
  size_t off = 0;
  while (off < len) {
    ssize_t n = write(fd, buf + off, len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    off += (size_t)n;
  }
  return 0;
}

/* Build the server's answer to REQ from UNIT per action A. */
static int build_answer(server *s, action a, uint16_t tid, uint8_t unit,
                        const mb_request *req, uint8_t *out, size_t cap) {
  uint8_t pdu[MB_PDU_MAX];
  int plen;
  if (a == A_NOISE) {
    const uint8_t noise[] = {0x55, 0x2B, 0x99, 0x11, 0x22};
    memcpy(out, noise, sizeof noise);
    return (int)sizeof noise;
  }
  if (a == A_EXCEPTION || (req->fc != 0x03 && req->fc != 0x04)) {
    plen = mb_pdu_exception(pdu, sizeof pdu, req->fc,
                            a == A_EXCEPTION ? MB_EX_ILLEGAL_ADDRESS
                                             : MB_EX_ILLEGAL_FUNCTION);
  } else {
    uint16_t regs[MB_READ_MAX];
    uint16_t n = req->count;
    if (a == A_SHORT && n > 1) n--;
    for (uint16_t i = 0; i < n; i++)
      regs[i] = reg_value((uint16_t)(req->addr + i));
    plen = mb_pdu_read_resp(pdu, sizeof pdu, req->fc, regs, n);
  }
  if (plen < 0) return plen;
  if (a == A_WRONG_UNIT) unit = (uint8_t)(unit + 1);
  int len = s->mbap ? mb_mbap_frame(out, cap, tid, unit, pdu, (size_t)plen)
                    : mb_rtu_frame(out, cap, unit, pdu, (size_t)plen);
  if (len > 0 && a == A_BADCRC) out[len - 1] ^= 0xFF;
  return len;
}

/* An answer that is not ours but looks like one: the register values of
 * another address, from UNIT with function FC, RTU framed. */
static int foreign_frame(uint8_t unit, uint8_t fc, const mb_request *req,
                         uint8_t *out, size_t cap) {
  uint8_t pdu[MB_PDU_MAX];
  uint16_t regs[MB_READ_MAX];
  for (uint16_t i = 0; i < req->count; i++)
    regs[i] = reg_value((uint16_t)(req->addr + 1000 + i));
  int plen = mb_pdu_read_resp(pdu, sizeof pdu, fc, regs, req->count);
  if (plen < 0) return plen;
  return mb_rtu_frame(out, cap, unit, pdu, (size_t)plen);
}

/* Handle one request. false when the connection is to be closed. */
static bool handle(server *s, int fd, uint16_t tid, uint8_t unit,
                   const mb_request *req) {
  pthread_mutex_lock(&s->mu);
  size_t i = s->nreq++;
  action a = i < MAX_REQ ? s->script[i] : A_ANSWER;
  if (i < MAX_REQ) {
    s->req[i] = *req;
    s->unit[i] = unit;
    s->req_ns[i] = now_ns();
  }
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);

  uint8_t out[MB_TCP_MAX + 1];
  int len = build_answer(s, a, tid, unit, req, out, sizeof out);
  if (len < 0) return false;
  switch (a) {
  case A_SILENT:
    return true;
  case A_CLOSE:
    return false;
  case A_DELAY:
    pause_ms(50);
    break;
  case A_LATE:
    pthread_mutex_lock(&s->mu);
    while (!s->late_go) pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    break;
  case A_SPLIT:
    for (int k = 0; k < len; k++) {
      if (write_all(fd, out + k, 1) != 0) return false;
      pause_ms(1);
    }
    return true;
  case A_FOREIGN_FIRST: {
    uint8_t other[MB_RTU_MAX];
    int olen = foreign_frame((uint8_t)(unit + 1), req->fc, req, other,
                             sizeof other);
    if (olen < 0 || write_all(fd, other, (size_t)olen) != 0) return false;
    pause_ms(5);
    break;
  }
  case A_FOREIGN_MERGED: {
    uint8_t all[3 * MB_RTU_MAX];
    int o1 = foreign_frame((uint8_t)(unit + 1), req->fc, req, all,
                           sizeof all);
    if (o1 < 0) return false;
    uint8_t other_fc = req->fc == 0x03 ? 0x04 : 0x03;
    int o2 = foreign_frame(unit, other_fc, req, all + o1,
                           sizeof all - (size_t)o1);
    if (o2 < 0) return false;
    memcpy(all + o1 + o2, out, (size_t)len);
    return write_all(fd, all, (size_t)(o1 + o2 + len)) == 0;
  }
  default:
    break;
  }
  if (write_all(fd, out, (size_t)len) != 0) return false;
  if (a == A_LATE) {
    pthread_mutex_lock(&s->mu);
    s->late_done = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
  }
  return a != A_ANSWER_CLOSE;
}

/* Serve one stream until the peer goes, a script closes it, or the test
 * stops the server. true when stopped. */
static bool serve(server *s, int fd) {
  mb_rtu_framer fr;
  mb_rtu_framer_init(&fr, true);
  uint8_t buf[2 * MB_TCP_MAX];
  size_t have = 0;
  for (;;) {
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN},
                          {.fd = s->stop[0], .events = POLLIN}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return true;
    }
    if (p[1].revents) return true;
    uint8_t tmp[512];
    ssize_t n = read(fd, tmp, sizeof tmp);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;

    if (s->mbap) {
      if (have + (size_t)n > sizeof buf) return false;
      memcpy(buf + have, tmp, (size_t)n);
      have += (size_t)n;
      for (;;) {
        mb_mbap h;
        int total = mb_mbap_parse(buf, have, &h);
        if (total == MB_ENEEDMORE || (total > 0 && have < (size_t)total))
          break;
        if (total < 0) return false;
        mb_request req;
        if (mb_pdu_parse_read_req(buf + MB_MBAP_HDR,
                                  (size_t)total - MB_MBAP_HDR,
                                  &req) == MB_EMALFORMED)
          return false;
        memmove(buf, buf + total, have - (size_t)total);
        have -= (size_t)total;
        if (!handle(s, fd, h.tid, h.unit, &req)) return false;
      }
    } else {
      size_t off = 0;
      while (off < (size_t)n) {
        off += mb_rtu_framer_feed(&fr, tmp + off, (size_t)n - off);
        uint8_t frame[MB_RTU_MAX];
        int fl;
        while ((fl = mb_rtu_framer_next(&fr, frame, sizeof frame)) !=
               MB_ENEEDMORE) {
          if (fl < 0) continue;
          uint8_t unit;
          const uint8_t *pdu;
          size_t plen;
          mb_request req;
          if (mb_rtu_parse(frame, (size_t)fl, &unit, &pdu, &plen) != MB_OK)
            continue;
          if (mb_pdu_parse_read_req(pdu, plen, &req) == MB_EMALFORMED)
            continue;
          if (!handle(s, fd, 0, unit, &req)) return false;
        }
      }
    }
  }
}

static void *server_main(void *arg) {
  server *s = arg;
  if (s->lfd < 0) {
    serve(s, s->ptyfd);
    return NULL;
  }
  for (;;) {
    struct pollfd p[2] = {{.fd = s->lfd, .events = POLLIN},
                          {.fd = s->stop[0], .events = POLLIN}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return NULL;
    }
    if (p[1].revents) return NULL;
    int c = accept(s->lfd, NULL, NULL);
    if (c < 0) continue;
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    pthread_mutex_lock(&s->mu);
    s->nconn++;
    pthread_mutex_unlock(&s->mu);
    bool stopped = serve(s, c);
    close(c);
    pthread_mutex_lock(&s->mu);
    s->nclosed++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (stopped) return NULL;
  }
}

static void server_init(server *s, bool mbap) {
  memset(s, 0, sizeof *s);
  s->mbap = mbap;
  s->lfd = -1;
  s->ptyfd = -1;
  assert_int_equal(pipe(s->stop), 0);
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
}

/* Listen on 127.0.0.1, an ephemeral port, before the thread starts: the
 * client may connect as soon as this returns. */
static void server_start_tcp(server *s, bool mbap, const action *script,
                             size_t n) {
  server_init(s, mbap);
  assert_true(n <= MAX_REQ);
  if (n) memcpy(s->script, script, n * sizeof *script);
  s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(s->lfd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(s->lfd, 8), 0);
  socklen_t al = sizeof a;
  assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &al), 0);
  s->port = ntohs(a.sin_port);
  assert_int_equal(pthread_create(&s->th, NULL, server_main, s), 0);
}

static void server_stop(server *s) {
  /* A server held in A_LATE is released too. */
  pthread_mutex_lock(&s->mu);
  s->late_go = true;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
  assert_int_equal(write(s->stop[1], "x", 1), 1);
  pthread_join(s->th, NULL);
  if (s->lfd >= 0) close(s->lfd);
  close(s->stop[0]);
  close(s->stop[1]);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
}

/* Wait (bounded) until the server has seen N connections closed. */
static void wait_closed(server *s, int n) {
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += 5;
  pthread_mutex_lock(&s->mu);
  int rc = 0;
  while (s->nclosed < n && rc == 0)
    rc = pthread_cond_timedwait(&s->cv, &s->mu, &dl);
  pthread_mutex_unlock(&s->mu);
  assert_true(s->nclosed >= n);
}

/* Counters read under the lock: the server thread writes them. */
static size_t srv_nreq(server *s) {
  pthread_mutex_lock(&s->mu);
  size_t n = s->nreq;
  pthread_mutex_unlock(&s->mu);
  return n;
}

static int srv_nconn(server *s) {
  pthread_mutex_lock(&s->mu);
  int n = s->nconn;
  pthread_mutex_unlock(&s->mu);
  return n;
}

/* A port that refuses connections: bound, never listening, held for the
 * test so nobody else takes it. */
static int refusing_port(uint16_t *port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  socklen_t al = sizeof a;
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
  *port = ntohs(a.sin_port);
  return fd;
}

static cfg_bus net_bus(cfg_transport kind, uint16_t port) {
  cfg_bus b;
  memset(&b, 0, sizeof b);
  snprintf(b.id, sizeof b.id, "%s", "line1");
  b.transport = kind;
  snprintf(b.host, sizeof b.host, "%s", "127.0.0.1");
  b.port = port;
  b.baud = 9600;
  b.parity = 'N';
  b.data_bits = 8;
  b.stop_bits = 1;
  b.timeout_ms = TIMEOUT_MS;
  b.max_gap = -1;
  return b;
}

/* A transport for bus B, made as the daemon makes one. */
static transport *bus_transport(const cfg_bus *b, char *err, size_t errlen) {
  transport_options o;
  cfg_bus_transport_options(b, &o);
  return transport_new(&o, err, errlen);
}

static transport *new_transport(const cfg_bus *b) {
  char err[256];
  transport *t = bus_transport(b, err, sizeof err);
  if (!t) fail_msg("transport_new: %s", err);
  return t;
}

static void assert_values(const uint16_t *v, uint16_t addr, uint16_t n) {
  for (uint16_t i = 0; i < n; i++)
    assert_int_equal(v[i], reg_value((uint16_t)(addr + i)));
}

/* Run SCRIPT against a fresh rtu-over-tcp transport: one read per action,
 * each expected to end in the matching code. */
static void run_rot(const action *script, const int *want, size_t n,
                    server *s, transport **tp) {
  server_start_tcp(s, false, script, n);
  cfg_bus b = net_bus(CFG_TRANSPORT_RTU_OVER_TCP, s->port);
  *tp = new_transport(&b);
  for (size_t i = 0; i < n; i++) {
    uint16_t v[4] = {0};
    tr_error e;
    int rc = transport_read(*tp, 1, MB_TABLE_HOLDING, 100, 4, v, &e);
    if (rc != want[i])
      fail_msg("read %zu: got %s (%s), want %s", i, tr_code_name(rc),
               e.detail, tr_code_name(want[i]));
    assert_int_equal(e.code, rc);
    if (rc == TR_OK) assert_values(v, 100, 4);
  }
}

/* --- rtu-over-tcp ---------------------------------------------------------- */

static void test_rot_answer(void **state) {
  (void)state;
  server s;
  server_start_tcp(&s, false, NULL, 0);
  cfg_bus b = net_bus(CFG_TRANSPORT_RTU_OVER_TCP, s.port);
  transport *t = new_transport(&b);
  assert_false(transport_is_open(t));
  tr_error e;
  assert_int_equal(transport_open(t, &e), TR_OK);
  assert_true(transport_is_open(t));

  uint16_t v[125];
  assert_int_equal(transport_read(t, 7, MB_TABLE_HOLDING, 40, 125, v, &e),
                   TR_OK);
  assert_int_equal(e.code, TR_OK);
  assert_values(v, 40, 125);
  assert_int_equal(transport_read(t, 7, MB_TABLE_INPUT, 0xFFFF, 1, v, &e),
                   TR_OK);
  assert_values(v, 0xFFFF, 1);
  assert_int_equal(srv_nreq(&s), 2);
  assert_int_equal(s.req[0].fc, 0x03);
  assert_int_equal(s.req[0].addr, 40);
  assert_int_equal(s.req[0].count, 125);
  assert_int_equal(s.unit[0], 7);
  assert_int_equal(s.req[1].fc, 0x04);
  assert_int_equal(srv_nconn(&s), 1);

  transport_close(t);
  assert_false(transport_is_open(t));
  transport_free(t);
  server_stop(&s);
}

static void test_rot_delay_and_split(void **state) {
  (void)state;
  const action script[] = {A_DELAY, A_SPLIT, A_SPLIT, A_ANSWER};
  const int want[] = {TR_OK, TR_OK, TR_OK, TR_OK};
  server s;
  transport *t;
  run_rot(script, want, 4, &s, &t);
  assert_int_equal(srv_nconn(&s), 1);
  transport_free(t);
  server_stop(&s);
}

static void test_rot_timeout(void **state) {
  (void)state;
  server s;
  const action script[] = {A_SILENT, A_ANSWER};
  server_start_tcp(&s, false, script, 2);
  cfg_bus b = net_bus(CFG_TRANSPORT_RTU_OVER_TCP, s.port);
  transport *t = new_transport(&b);
  uint16_t v[4];
  tr_error e;
  uint64_t t0 = now_ns();
  assert_int_equal(transport_read(t, 3, MB_TABLE_HOLDING, 100, 4, v, &e),
                   TR_ETIMEOUT);
  uint64_t took_ms = (now_ns() - t0) / 1000000u;
  assert_true(took_ms >= TIMEOUT_MS);
  assert_true(took_ms < TIMEOUT_MS + 150);
  assert_string_equal(e.detail, "no answer from unit 3 within 200 ms");
  assert_string_equal(tr_code_name(e.code), "timeout");
  /* A timeout does not break the connection. */
  assert_true(transport_is_open(t));
  assert_int_equal(transport_read(t, 3, MB_TABLE_HOLDING, 100, 4, v, &e),
                   TR_OK);
  assert_values(v, 100, 4);
  assert_int_equal(srv_nconn(&s), 1);
  transport_free(t);
  server_stop(&s);
}

static void test_rot_bad_crc(void **state) {
  (void)state;
  const action script[] = {A_BADCRC, A_ANSWER};
  const int want[] = {TR_ECRC, TR_OK};
  server s;
  transport *t;
  run_rot(script, want, 2, &s, &t);
  transport_free(t);
  server_stop(&s);
}

static void test_rot_exception(void **state) {
  (void)state;
  server s;
  const action script[] = {A_EXCEPTION};
  server_start_tcp(&s, false, script, 1);
  cfg_bus b = net_bus(CFG_TRANSPORT_RTU_OVER_TCP, s.port);
  transport *t = new_transport(&b);
  uint16_t v[2];
  tr_error e;
  assert_int_equal(transport_read(t, 1, MB_TABLE_INPUT, 9000, 2, v, &e),
                   TR_EEXCEPTION);
  assert_int_equal(e.code, TR_EEXCEPTION);
  assert_int_equal(e.exception, 2);
  assert_string_equal(e.detail, "exception 0x02 (illegal data address)");
  transport_free(t);
  server_stop(&s);
}

static void test_rot_closed_by_peer(void **state) {
  (void)state;
  server s;
  const action script[] = {A_CLOSE, A_ANSWER};
  server_start_tcp(&s, false, script, 2);
  cfg_bus b = net_bus(CFG_TRANSPORT_RTU_OVER_TCP, s.port);
  transport *t = new_transport(&b);
  uint16_t v[4];
  tr_error e;
  assert_int_equal(transport_read(t, 1, MB_TABLE_HOLDING, 100, 4, v, &e),
                   TR_ECONNRESET);
  assert_false(transport_is_open(t));
  assert_non_null(strstr(e.detail, "127.0.0.1:"));
  /* The next read connects again. */
  assert_int_equal(transport_read(t, 1, MB_TABLE_HOLDING, 100, 4, v, &e),
                   TR_OK);
  assert_values(v, 100, 4);
  assert_int_equal(srv_nconn(&s), 2);
  transport_free(t);
  server_stop(&s);
}

static void test_rot_idle_close_reconnects(void **state) {
  (void)state;
  server s;
  const action script[] = {A_ANSWER_CLOSE, A_ANSWER};
  server_start_tcp(&s, false, script, 2);
  cfg_bus b = net_bus(CFG_TRANSPORT_RTU_OVER_TCP, s.port);
  transport *t = new_transport(&b);
  uint16_t v[4];
  tr_error e;
  assert_int_equal(transport_read(t, 1, MB_TABLE_HOLDING, 100, 4, v, &e),
                   TR_OK);
  /* The peer hangs up between two polls (DTUs drop idle links): the next
   * read finds out before sending and connects again, losing nothing. */
  wait_closed(&s, 1);
  assert_int_equal(transport_read(t, 1, MB_TABLE_HOLDING, 100, 4, v, &e),
                   TR_OK);
  assert_values(v, 100, 4);
  assert_int_equal(srv_nconn(&s), 2);
  transport_free(t);
  server_stop(&s);
}

static void test_rot_late_answer(void **state) {
  (void)state;
  server s;
  const action script[] = {A_LATE, A_ANSWER};
  server_start_tcp(&s, false, script, 2);
  cfg_bus b = net_bus(CFG_TRANSPORT_RTU_OVER_TCP, s.port);
  transport *t = new_transport(&b);
  uint16_t v[4] = {0};
  tr_error e;
  assert_int_equal(transport_read(t, 1, MB_TABLE_HOLDING, 10, 4, v, &e),
                   TR_ETIMEOUT);
  /* The client gave up: now the answer to the first request arrives. */
  pthread_mutex_lock(&s.mu);
  s.late_go = true;
  pthread_cond_broadcast(&s.cv);
  while (!s.late_done) pthread_cond_wait(&s.cv, &s.mu);
  pthread_mutex_unlock(&s.mu);
  /* Same unit, function and count: only the values tell them apart. */
  assert_int_equal(transport_read(t, 1, MB_TABLE_HOLDING, 20, 4, v, &e),
                   TR_OK);
  assert_values(v, 20, 4);
  transport_free(t);
  server_stop(&s);
}

/* Only another unit answers (a late answer of another meter behind the same
 * DTU): not taken for ours, and not a fault of the unit asked; the wait goes
 * on to the deadline. */
static void test_rot_foreign_only(void **state) {
  (void)state;
  server s;
  const action script[] = {A_WRONG_UNIT, A_ANSWER};
  server_start_tcp(&s, false, script, 2);
  cfg_bus b = net_bus(CFG_TRANSPORT_RTU_OVER_TCP, s.port);
  transport *t = new_transport(&b);
  uint16_t v[4];
  tr_error e;
  uint64_t t0 = now_ns();
  assert_int_equal(transport_read(t, 5, MB_TABLE_HOLDING, 100, 4, v, &e),
                   TR_ETIMEOUT);
  assert_true((now_ns() - t0) / 1000000u >= TIMEOUT_MS);
  assert_string_equal(e.detail,
                      "no answer from unit 5 within 200 ms; discarded 1 "
                      "frame not for it (first: unit 6, function 0x03)");
  assert_true(transport_is_open(t));
  assert_int_equal(transport_read(t, 5, MB_TABLE_HOLDING, 100, 4, v, &e),
                   TR_OK);
  assert_values(v, 100, 4);
  assert_int_equal(srv_nconn(&s), 1);
  transport_free(t);
  server_stop(&s);
}

/* Frames from another unit, or for another function, come before ours:
 * alone or in the same segment, they are passed over and ours is taken. */
static void test_rot_foreign_then_answer(void **state) {
  (void)state;
  const action script[] = {A_FOREIGN_FIRST, A_FOREIGN_MERGED, A_ANSWER};
  const int want[] = {TR_OK, TR_OK, TR_OK};
  server s;
  transport *t;
  run_rot(script, want, 3, &s, &t);
  assert_int_equal(srv_nreq(&s), 3);
  assert_int_equal(srv_nconn(&s), 1);
  transport_free(t);
  server_stop(&s);
}

static void test_rot_malformed(void **state) {
  (void)state;
  /* A byte count that does not answer the request, then noise. */
  const action script[] = {A_SHORT, A_NOISE, A_ANSWER};
  const int want[] = {TR_EMALFORMED, TR_EMALFORMED, TR_OK};
  server s;
  transport *t;
  run_rot(script, want, 3, &s, &t);
  transport_free(t);
  server_stop(&s);
}

static void test_rot_refused(void **state) {
  (void)state;
  uint16_t port;
  int hold = refusing_port(&port);
  cfg_bus b = net_bus(CFG_TRANSPORT_RTU_OVER_TCP, port);
  transport *t = new_transport(&b);
  tr_error e;
  assert_int_equal(transport_open(t, &e), TR_ECONNREFUSED);
  char want[128];
  snprintf(want, sizeof want, "connect 127.0.0.1:%u: Connection refused",
           (unsigned)port);
  assert_string_equal(e.detail, want);
  uint16_t v[1];
  assert_int_equal(transport_read(t, 1, MB_TABLE_HOLDING, 0, 1, v, &e),
                   TR_ECONNREFUSED);
  assert_string_equal(tr_code_name(e.code), "connection_refused");
  assert_false(transport_is_open(t));
  transport_free(t);
  close(hold);
}

static void test_rot_turnaround(void **state) {
  (void)state;
  server s;
  server_start_tcp(&s, false, NULL, 0);
  cfg_bus b = net_bus(CFG_TRANSPORT_RTU_OVER_TCP, s.port);
  b.turnaround_ms = 60;
  transport *t = new_transport(&b);
  uint16_t v[1];
  tr_error e;
  for (int i = 0; i < 3; i++)
    assert_int_equal(transport_read(t, 1, MB_TABLE_HOLDING, 0, 1, v, &e),
                     TR_OK);
  assert_int_equal(srv_nreq(&s), 3);
  for (int i = 1; i < 3; i++)
    assert_true(s.req_ns[i] - s.req_ns[i - 1] >= 60u * 1000000u);
  transport_free(t);
  server_stop(&s);
}

/* --- tcp ------------------------------------------------------------------- */

static void test_tcp_answer_and_exception(void **state) {
  (void)state;
  server s;
  const action script[] = {A_ANSWER, A_EXCEPTION, A_ANSWER};
  server_start_tcp(&s, true, script, 3);
  cfg_bus b = net_bus(CFG_TRANSPORT_TCP, s.port);
  transport *t = new_transport(&b);
  uint16_t v[125];
  tr_error e;
  assert_int_equal(transport_read(t, 1, MB_TABLE_HOLDING, 300, 125, v, &e),
                   TR_OK);
  assert_values(v, 300, 125);
  assert_int_equal(transport_read(t, 1, MB_TABLE_INPUT, 7, 2, v, &e),
                   TR_EEXCEPTION);
  assert_int_equal(e.exception, 2);
  assert_string_equal(e.detail, "exception 0x02 (illegal data address)");
  assert_int_equal(transport_read(t, 255, MB_TABLE_INPUT, 7, 2, v, &e),
                   TR_OK);
  assert_values(v, 7, 2);
  assert_int_equal(srv_nconn(&s), 1);
  assert_int_equal(s.req[1].fc, 0x04);
  assert_int_equal(s.unit[2], 255);
  transport_free(t);
  server_stop(&s);
}

static void test_tcp_timeout_and_reset(void **state) {
  (void)state;
  server s;
  const action script[] = {A_SILENT, A_ANSWER, A_CLOSE, A_ANSWER};
  server_start_tcp(&s, true, script, 4);
  cfg_bus b = net_bus(CFG_TRANSPORT_TCP, s.port);
  transport *t = new_transport(&b);
  uint16_t v[3];
  tr_error e;
  assert_int_equal(transport_read(t, 2, MB_TABLE_HOLDING, 50, 3, v, &e),
                   TR_ETIMEOUT);
  assert_string_equal(e.detail, "no answer from unit 2 within 200 ms");
  assert_int_equal(transport_read(t, 2, MB_TABLE_HOLDING, 50, 3, v, &e),
                   TR_OK);
  assert_values(v, 50, 3);
  assert_int_equal(transport_read(t, 2, MB_TABLE_HOLDING, 50, 3, v, &e),
                   TR_ECONNRESET);
  assert_false(transport_is_open(t));
  assert_int_equal(transport_read(t, 2, MB_TABLE_HOLDING, 50, 3, v, &e),
                   TR_OK);
  assert_int_equal(srv_nconn(&s), 2);
  transport_free(t);
  server_stop(&s);
}

static void test_tcp_refused(void **state) {
  (void)state;
  uint16_t port;
  int hold = refusing_port(&port);
  cfg_bus b = net_bus(CFG_TRANSPORT_TCP, port);
  transport *t = new_transport(&b);
  tr_error e;
  uint16_t v[1];
  assert_int_equal(transport_read(t, 1, MB_TABLE_HOLDING, 0, 1, v, &e),
                   TR_ECONNREFUSED);
  char want[128];
  snprintf(want, sizeof want, "connect 127.0.0.1:%u: Connection refused",
           (unsigned)port);
  assert_string_equal(e.detail, want);
  assert_false(transport_is_open(t));
  transport_free(t);
  close(hold);
}

/* --- libmodbus rtu on a pty ---------------------------------------------------- */

/* Serve SCRIPT on the master side of a fresh pty; NAME gets the slave's
 * path. Returns the slave, held open (raw) for the whole test so the master
 * never sees a hang-up while libmodbus opens and closes its side. */
static int pty_server_start(server *s, const action *script, size_t n,
                            char *name, size_t namelen) {
  server_init(s, false);
  assert_true(n <= MAX_REQ);
  if (n) memcpy(s->script, script, n * sizeof *script);
  s->ptyfd = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  assert_true(s->ptyfd >= 0);
  assert_int_equal(grantpt(s->ptyfd), 0);
  assert_int_equal(unlockpt(s->ptyfd), 0);
  assert_int_equal(ptsname_r(s->ptyfd, name, namelen), 0);
  int keep = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
  assert_true(keep >= 0);
  struct termios tio;
  assert_int_equal(tcgetattr(keep, &tio), 0);
  cfmakeraw(&tio);
  assert_int_equal(tcsetattr(keep, TCSANOW, &tio), 0);
  assert_int_equal(pthread_create(&s->th, NULL, server_main, s), 0);
  return keep;
}

static void pty_server_stop(server *s, int keep) {
  server_stop(s);
  close(keep);
  close(s->ptyfd);
}

static cfg_bus pty_bus(const char *name) {
  cfg_bus b = net_bus(CFG_TRANSPORT_RTU, 0);
  b.host[0] = '\0';
  b.port = 0;
  snprintf(b.device, sizeof b.device, "%s", name);
  b.baud = 115200;
  b.parity = 'E';
  b.timeout_ms = 150;
  return b;
}

static void test_rtu_pty(void **state) {
  (void)state;
  server s;
  const action script[] = {A_ANSWER, A_SILENT, A_ANSWER};
  char name[128];
  int keep = pty_server_start(&s, script, 3, name, sizeof name);
  cfg_bus b = pty_bus(name);
  transport *t = new_transport(&b);
  tr_error e;
  assert_int_equal(transport_open(t, &e), TR_OK);
  uint16_t v[10];
  assert_int_equal(transport_read(t, 17, MB_TABLE_INPUT, 1000, 10, v, &e),
                   TR_OK);
  assert_values(v, 1000, 10);
  assert_int_equal(transport_read(t, 17, MB_TABLE_INPUT, 1000, 10, v, &e),
                   TR_ETIMEOUT);
  assert_string_equal(e.detail, "no answer from unit 17 within 150 ms");
  assert_int_equal(transport_read(t, 17, MB_TABLE_HOLDING, 5, 3, v, &e),
                   TR_OK);
  assert_values(v, 5, 3);
  assert_int_equal(srv_nreq(&s), 3);
  assert_int_equal(s.unit[0], 17);
  assert_int_equal(s.req[2].fc, 0x03);
  transport_free(t);
  pty_server_stop(&s, keep);
}

/* Put an answer-shaped frame (unit, function and count of the request to
 * come, another address's values) into the line's input queue, and wait
 * until the line discipline holds it. */
static void pty_stray(server *s, int keep, uint8_t unit, uint8_t fc,
                      uint16_t count) {
  /* Values no request of the test reads. */
  mb_request req = {.fc = fc, .addr = 30000, .count = count};
  uint8_t frame[MB_RTU_MAX];
  int len = foreign_frame(unit, fc, &req, frame, sizeof frame);
  assert_true(len > 0);
  assert_int_equal(write_all(s->ptyfd, frame, (size_t)len), 0);
  struct pollfd p = {.fd = keep, .events = POLLIN};
  assert_int_equal(poll(&p, 1, 5000), 1);
}

/* Bytes waiting in a serial line's input queue (left by a previous user of
 * the port, or a meter's late answer) are never taken for the answer: the
 * line is flushed when opened and before every request. */
static void test_rtu_stale_input(void **state) {
  (void)state;
  server s;
  char name[128];
  int keep = pty_server_start(&s, NULL, 0, name, sizeof name);
  cfg_bus b = pty_bus(name);
  transport *t = new_transport(&b);
  uint16_t v[10];
  tr_error e;

  /* Before the port is opened. */
  pty_stray(&s, keep, 17, 0x04, 10);
  assert_int_equal(transport_open(t, &e), TR_OK);
  assert_int_equal(transport_read(t, 17, MB_TABLE_INPUT, 1000, 10, v, &e),
                   TR_OK);
  assert_values(v, 1000, 10);

  /* Between two requests on the open port. */
  pty_stray(&s, keep, 17, 0x03, 3);
  assert_int_equal(transport_read(t, 17, MB_TABLE_HOLDING, 5, 3, v, &e),
                   TR_OK);
  assert_values(v, 5, 3);

  /* After a reopen. */
  transport_close(t);
  pty_stray(&s, keep, 17, 0x03, 3);
  assert_int_equal(transport_read(t, 17, MB_TABLE_HOLDING, 40, 3, v, &e),
                   TR_OK);
  assert_values(v, 40, 3);
  assert_int_equal(srv_nreq(&s), 3);
  transport_free(t);
  pty_server_stop(&s, keep);
}

/* --- descriptors past FD_SETSIZE ------------------------------------------ */

/* Make sure this process may hold WANT descriptors, raising the hard limit
 * too when it may (as root). false when it cannot. */
static bool nofile_at_least(rlim_t want, struct rlimit *saved) {
  assert_int_equal(getrlimit(RLIMIT_NOFILE, saved), 0);
  if (saved->rlim_cur != RLIM_INFINITY && saved->rlim_cur >= want) return true;
  rlim_t max = saved->rlim_max != RLIM_INFINITY && saved->rlim_max < want ? want : saved->rlim_max;
  struct rlimit rl = {.rlim_cur = want, .rlim_max = max};
  return setrlimit(RLIMIT_NOFILE, &rl) == 0;
}

/* A case that could not run here: the program then exits 77, which CTest
 * shows as skipped (SKIP_RETURN_CODE), not as passed. */
static bool skipped_here;

/* A process holding more than 1,024 descriptors (a concentrator of many
 * links) opens an rtu transport: libmodbus would wait on the line with
 * select() and abort the process inside FD_SET. The transport refuses it
 * with TR_EIO instead; tcp and rtu-over-tcp, which wait with poll(), work.
 * Once descriptors are free again, the rtu transport works too. */
static void test_fd_past_setsize(void **state) {
  (void)state;
  enum { FILL = FD_SETSIZE + 80 };
  struct rlimit saved;
  if (!nofile_at_least(FILL + 64, &saved)) {
    print_message("RLIMIT_NOFILE hard limit below %d and cannot be raised: skipped\n",
                  FILL + 64);
    skipped_here = true;
    skip();
  }
  server tcp, rot;
  server_start_tcp(&tcp, true, NULL, 0);
  server_start_tcp(&rot, false, NULL, 0);
  server pty;
  char name[128];
  int keep = pty_server_start(&pty, NULL, 0, name, sizeof name);
  cfg_bus b = net_bus(CFG_TRANSPORT_TCP, tcp.port);
  transport *tt = new_transport(&b);
  b = net_bus(CFG_TRANSPORT_RTU_OVER_TCP, rot.port);
  transport *rt = new_transport(&b);
  b = pty_bus(name);
  transport *st = new_transport(&b);

  /* Take every descriptor up to past FD_SETSIZE: the next one made is
   * beyond it. */
  static int fds[FILL + 1];
  size_t n = 0;
  for (;;) {
    assert_true(n < sizeof fds / sizeof fds[0]);
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    fds[n++] = fd;
    if (fd >= FILL - 1) break;
  }

  tr_error e;
  uint16_t v[4];
  assert_int_equal(transport_read(tt, 1, MB_TABLE_HOLDING, 0, 4, v, &e),
                   TR_OK);
  assert_values(v, 0, 4);

  assert_int_equal(transport_open(st, &e), TR_EIO);
  assert_non_null(strstr(e.detail, "FD_SETSIZE"));
  assert_false(transport_is_open(st));

  assert_int_equal(transport_read(rt, 1, MB_TABLE_HOLDING, 100, 4, v, &e),
                   TR_OK);
  assert_values(v, 100, 4);

  for (size_t i = 0; i < n; i++) close(fds[i]);
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);

  assert_int_equal(transport_read(tt, 1, MB_TABLE_HOLDING, 7, 4, v, &e),
                   TR_OK);
  assert_values(v, 7, 4);
  assert_int_equal(transport_read(st, 1, MB_TABLE_HOLDING, 9, 4, v, &e),
                   TR_OK);
  assert_values(v, 9, 4);
  transport_free(tt);
  transport_free(rt);
  transport_free(st);
  server_stop(&tcp);
  server_stop(&rot);
  pty_server_stop(&pty, keep);
}

static void test_rtu_open_fails(void **state) {
  (void)state;
  cfg_bus b = net_bus(CFG_TRANSPORT_RTU, 0);
  snprintf(b.device, sizeof b.device, "%s", "/nonexistent/ttyUSB9");
  transport *t = new_transport(&b);
  tr_error e;
  uint16_t v[1];
  assert_int_equal(transport_read(t, 1, MB_TABLE_HOLDING, 0, 1, v, &e),
                   TR_EIO);
  assert_string_equal(e.detail,
                      "open /nonexistent/ttyUSB9: No such file or directory");
  transport_free(t);
}

/* --- the interface itself -------------------------------------------------- */

static void test_bad_bus(void **state) {
  (void)state;
  char err[256];
  assert_null(transport_new(NULL, err, sizeof err));
  cfg_bus b = net_bus(CFG_TRANSPORT_TCP, 502);
  b.port = 0;
  assert_null(bus_transport(&b, err, sizeof err));
  assert_string_equal(err, "bus line1: port 0 outside 1..65535");
  b = net_bus(CFG_TRANSPORT_RTU_OVER_TCP, 502);
  b.host[0] = '\0';
  assert_null(bus_transport(&b, err, sizeof err));
  assert_string_equal(err, "bus line1: no host");
  b = net_bus(CFG_TRANSPORT_TCP, 502);
  b.timeout_ms = 0;
  assert_null(bus_transport(&b, err, sizeof err));
  assert_non_null(strstr(err, "timeout"));
  b = net_bus(CFG_TRANSPORT_RTU, 0);
  b.device[0] = '\0'; /* it shares its room with the host */
  assert_null(bus_transport(&b, err, sizeof err));
  assert_string_equal(err, "bus line1: no serial device");
  snprintf(b.device, sizeof b.device, "%s", "/dev/ttyS0");
  b.parity = 'X';
  assert_null(bus_transport(&b, err, sizeof err));
  b.parity = 'O';
  b.stop_bits = 3;
  assert_null(bus_transport(&b, err, sizeof err));
  b.stop_bits = 2;
  b.baud = 0;
  assert_null(bus_transport(&b, err, sizeof err));
  b.baud = 19200;
  transport *t = bus_transport(&b, err, sizeof err);
  assert_non_null(t);
  transport_free(t);
  b.transport = (cfg_transport)42;
  assert_null(bus_transport(&b, err, sizeof err));
  transport_free(NULL);
}

static void test_bad_request(void **state) {
  (void)state;
  uint16_t port;
  int hold = refusing_port(&port);
  cfg_bus b = net_bus(CFG_TRANSPORT_RTU_OVER_TCP, port);
  transport *t = new_transport(&b);
  uint16_t v[126];
  tr_error e;
  /* Refused before anything touches the network (which would be refused
   * too, with another code). */
  assert_int_equal(transport_read(t, 1, MB_TABLE_HOLDING, 0, 0, v, &e),
                   TR_EIO);
  assert_int_equal(transport_read(t, 1, MB_TABLE_HOLDING, 0, 126, v, &e),
                   TR_EIO);
  assert_int_equal(transport_read(t, 1, MB_TABLE_HOLDING, 0xFFFF, 2, v, &e),
                   TR_EIO);
  assert_int_equal(transport_read(t, 0, MB_TABLE_HOLDING, 0, 1, v, &e),
                   TR_EIO);
  assert_int_equal(transport_read(t, 255, MB_TABLE_HOLDING, 0, 1, v, &e),
                   TR_EIO);
  assert_int_equal(transport_read(t, 1, (mb_table)7, 0, 1, v, &e), TR_EIO);
  assert_int_equal(transport_read(t, 1, MB_TABLE_HOLDING, 0, 1, NULL, &e),
                   TR_EIO);
  assert_int_equal(transport_read(NULL, 1, MB_TABLE_HOLDING, 0, 1, v, &e),
                   TR_EIO);
  assert_false(transport_is_open(t));
  /* A NULL error record is allowed. */
  assert_int_equal(transport_read(t, 1, MB_TABLE_HOLDING, 0, 1, v, NULL),
                   TR_ECONNREFUSED);
  transport_free(t);
  close(hold);
}

static void test_code_names(void **state) {
  (void)state;
  assert_string_equal(tr_code_name(TR_OK), "ok");
  assert_string_equal(tr_code_name(TR_ETIMEOUT), "timeout");
  assert_string_equal(tr_code_name(TR_ECRC), "crc");
  assert_string_equal(tr_code_name(TR_EEXCEPTION), "exception");
  assert_string_equal(tr_code_name(TR_ECONNREFUSED), "connection_refused");
  assert_string_equal(tr_code_name(TR_ECONNRESET), "connection_reset");
  assert_string_equal(tr_code_name(TR_EMALFORMED), "malformed");
  assert_string_equal(tr_code_name(TR_EIO), "io");
  assert_string_equal(tr_code_name(TR_EDECODE), "decode");
  assert_string_equal(tr_code_name(-99), "unknown");
}

int main(void) {
  /* A test server writing to a client that has gone must not kill us. */
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rot_answer),
      cmocka_unit_test(test_rot_delay_and_split),
      cmocka_unit_test(test_rot_timeout),
      cmocka_unit_test(test_rot_bad_crc),
      cmocka_unit_test(test_rot_exception),
      cmocka_unit_test(test_rot_closed_by_peer),
      cmocka_unit_test(test_rot_idle_close_reconnects),
      cmocka_unit_test(test_rot_late_answer),
      cmocka_unit_test(test_rot_foreign_only),
      cmocka_unit_test(test_rot_foreign_then_answer),
      cmocka_unit_test(test_rot_malformed),
      cmocka_unit_test(test_rot_refused),
      cmocka_unit_test(test_rot_turnaround),
      cmocka_unit_test(test_tcp_answer_and_exception),
      cmocka_unit_test(test_tcp_timeout_and_reset),
      cmocka_unit_test(test_tcp_refused),
      cmocka_unit_test(test_rtu_pty),
      cmocka_unit_test(test_rtu_stale_input),
      cmocka_unit_test(test_fd_past_setsize),
      cmocka_unit_test(test_rtu_open_fails),
      cmocka_unit_test(test_bad_bus),
      cmocka_unit_test(test_bad_request),
      cmocka_unit_test(test_code_names),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  return failed ? failed : skipped_here ? 77 : 0;
}
