/* transport_modbus: the `rtu` transport, a serial line, on libmodbus.
 *
 * One modbus_t per transport, used only by the bus worker that owns it
 * (libmodbus contexts are not thread-safe): a tty's timing is libmodbus's to
 * keep. libmodbus reports failures in errno, with its own codes above
 * MODBUS_ENOBASE; they are translated into tr_code right after each call,
 * before anything else can touch errno. The network kinds are
 * transport_net.c's.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>

#include <modbus.h>

#include "transport/transport_impl.h"

typedef struct {
  modbus_t *ctx;
} mbx;

static mbx *impl_of(transport *t) { return (mbx *)t->impl; }

static void mbx_close(transport *t) {
  mbx *m = impl_of(t);
  if (m->ctx && t->is_open) modbus_close(m->ctx);
  t->is_open = 0;
}

static void mbx_destroy(transport *t) {
  mbx *m = impl_of(t);
  if (!m) return;
  if (m->ctx) modbus_free(m->ctx);
  free(m);
  t->impl = NULL;
}

/* libmodbus's own text for its codes, strerror_r for the system's. */
static const char *err_text(int err, char *buf, size_t len) {
  if (err >= MODBUS_ENOBASE) return modbus_strerror(err);
  return tr_strerror(err, buf, len);
}

static int mbx_open(transport *t, tr_error *e) {
  mbx *m = impl_of(t);
  char eb[128];
  if (modbus_connect(m->ctx) != 0) {
    int err = errno;
    /* libmodbus may leave a half-made descriptor behind. */
    modbus_close(m->ctx);
    return tr_fail(e, TR_EIO, "open %s: %s", t->where,
                   err_text(err, eb, sizeof eb));
  }
  /* Opening a serial device waits on nothing, but every read waits in
   * select(): refuse a descriptor past FD_SETSIZE here, where it is only an
   * error (FD_SET on it would abort the process). */
  int fd = modbus_get_socket(m->ctx);
  if (fd >= FD_SETSIZE) {
    modbus_close(m->ctx);
    return tr_fail(e, TR_EIO,
                   "open %s: descriptor %d is at or above FD_SETSIZE (%d), "
                   "which select() cannot wait on: too many open files",
                   t->where, fd, FD_SETSIZE);
  }
  /* Let the kernel drive the RS-485 transceiver where the UART can. On a
   * USB adapter that switches by itself, or a pseudo-terminal, the ioctl
   * fails, which is harmless there. */
  (void)modbus_rtu_set_serial_mode(m->ctx, MODBUS_RTU_RS485);
  /* The line's input queue may hold what a previous user of the port left,
   * or a meter's late answer: none of it answers anything we will ask. */
  (void)modbus_flush(m->ctx);
  t->is_open = 1;
  return TR_OK;
}

/* Translate errno after a failed read, at the call site. */
static int mbx_fail(transport *t, int err, uint8_t unit, tr_error *e) {
  char eb[128];
  if (err == ETIMEDOUT)
    return tr_fail(e, TR_ETIMEOUT, "no answer from unit %u within %lld ms",
                   (unsigned)unit, (long long)t->opt.timeout_ms);
  if (err == EMBBADCRC)
    return tr_fail(e, TR_ECRC, "bad CRC in the answer from unit %u",
                   (unsigned)unit);
  if (err >= EMBXILFUN && err <= EMBXGTAR)
    return tr_fail_exception(e, err - MODBUS_ENOBASE);
  if (err == EMBBADDATA || err == EMBBADSLAVE || err == EMBMDATA ||
      err == EMBBADEXC || err == EMBUNKEXC)
    return tr_fail(e, TR_EMALFORMED, "invalid answer from unit %u: %s",
                   (unsigned)unit, modbus_strerror(err));
  if (err == ECONNRESET || err == EPIPE || err == ENOTCONN) {
    mbx_close(t);
    return tr_fail(e, TR_ECONNRESET, "connection to %s lost: %s", t->where,
                   err_text(err, eb, sizeof eb));
  }
  /* Anything else leaves the line in an unknown state (a USB adapter
   * unplugged, a socket error): start afresh on the next read. */
  mbx_close(t);
  return tr_fail(e, TR_EIO, "%s: %s", t->where, err_text(err, eb, sizeof eb));
}

static int mbx_read(transport *t, uint8_t unit, uint8_t fc, uint16_t addr,
                    uint16_t count, uint16_t *out, tr_error *e) {
  mbx *m = impl_of(t);
  /* Whatever arrived before the request cannot be its answer: the rest of
   * an answer that timed out or came garbled, a late answer, noise. One
   * non-blocking call when there is nothing (tcflush), so it is done before
   * every request, not only after a failure. */
  (void)modbus_flush(m->ctx);
  if (modbus_set_slave(m->ctx, unit) != 0)
    return tr_fail(e, TR_EIO, "unit %u refused by libmodbus", (unsigned)unit);
  errno = 0;
  int rc = fc == 0x04 ? modbus_read_input_registers(m->ctx, addr, count, out)
                      : modbus_read_registers(m->ctx, addr, count, out);
  if (rc < 0) return mbx_fail(t, errno, unit, e);
  if (rc != count)
    return tr_fail(e, TR_EMALFORMED, "unit %u answered %d registers, not %u",
                   (unsigned)unit, rc, (unsigned)count);
  return TR_OK;
}

static const transport_ops mbx_ops = {
    .open = mbx_open,
    .read = mbx_read,
    .close = mbx_close,
    .destroy = mbx_destroy,
};

static void set_timeout(modbus_t *ctx, int64_t ms,
                        int (*set)(modbus_t *, uint32_t, uint32_t)) {
  set(ctx, (uint32_t)(ms / 1000), (uint32_t)(ms % 1000) * 1000u);
}

int tr_modbus_create(transport *t, char *err, size_t errlen) {
  char eb[128];
  mbx *m = calloc(1, sizeof *m);
  if (!m) {
    snprintf(err, errlen, "bus %s: out of memory", t->opt.id);
    return -1;
  }
  m->ctx = modbus_new_rtu(t->opt.device, t->opt.baud, t->opt.parity,
                          t->opt.data_bits, t->opt.stop_bits);
  if (!m->ctx) {
    snprintf(err, errlen, "bus %s: libmodbus: %s", t->opt.id,
             err_text(errno, eb, sizeof eb));
    goto fail_ctx;
  }
  if (modbus_set_error_recovery(m->ctx, MODBUS_ERROR_RECOVERY_NONE) != 0) {
    snprintf(err, errlen, "bus %s: libmodbus refused the recovery mode",
             t->opt.id);
    goto fail_opts;
  }
  /* libmodbus's 0.5 s default is too short over 4G: the bus says. */
  set_timeout(m->ctx, t->opt.timeout_ms, modbus_set_response_timeout);
  /* Between the bytes of one frame: a USB adapter delivers in chunks up to
   * its latency timer (16 ms by default), slow lines need a few character
   * times; never longer than the whole answer may take. */
  int bits = 1 + t->opt.data_bits + (t->opt.parity != 'N') + t->opt.stop_bits;
  int64_t char_ms = ((int64_t)bits * 1000 + t->opt.baud - 1) / t->opt.baud;
  int64_t ms = 50;
  if (10 * char_ms > ms) ms = 10 * char_ms;
  if (ms > t->opt.timeout_ms) ms = t->opt.timeout_ms;
  set_timeout(m->ctx, ms, modbus_set_byte_timeout);
  t->ops = &mbx_ops;
  t->impl = m;
  return 0;

fail_opts:
  modbus_free(m->ctx);
fail_ctx:
  free(m);
  return -1;
}
