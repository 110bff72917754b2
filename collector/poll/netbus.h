/* netbus: the network buses (Modbus TCP, RTU over TCP, DTUs that dial in)
 * on the event loop.
 *
 * A network endpoint, a meter with an Ethernet port or the serial server or
 * 4G DTU in front of a line, spends nearly all its time waiting for an
 * answer. Instead of a thread blocked on each, the daemon's loop keeps the
 * sockets in its epoll set: a slot sends the request at once, the answer is
 * judged (mb_xchg) when it comes in, and the poll's result goes straight to
 * the daemon, without a thread hop or a wake-up. Framing and judging
 * (mb_xchg), connecting and naming what went wrong with a connection
 * (transport/tr_net.h) are the blocking transport's too, so `intake-collector
 * read` judges an endpoint as the daemon does. Serial lines stay with the
 * bus workers (busworker.h): a tty's timing is libmodbus's to keep.
 *
 * Per bus, as with a bus worker: the polls queue (at most one per meter, so
 * the queue is bounded by the meters on the bus) and run one at a time, each
 * request after the bus's turnaround; a request unanswered within the bus
 * timeout fails with "timeout" and a late answer is told apart (by its
 * transaction id, or on RTU by its unit and function) and dropped; a broken
 * connection fails the poll it carried and is opened again by the next one;
 * a connection that cannot be opened is retried after 1 s, doubling to
 * 30 s, and meanwhile polls fail at once with the reason. Connecting never
 * blocks the loop: addresses are numeric or resolved on libuv's thread pool,
 * and connect(2) completes in the loop.
 *
 * An rtu-dtu bus does not connect: its DTU dials in to a DTU server
 * (dtuserver.h), which hands the registered connection over
 * (netbus_dtu_attach). Until then, and after its link closes, its polls
 * fail at once with TR_ENOTCONN. Its bytes go through a dtu_filter (the
 * registration and heartbeat packets taken out) before the RTU framer, and
 * only what the filter hands on counts towards TR_NET_JUNK_MAX.
 */
#ifndef IC_NETBUS_H
#define IC_NETBUS_H

#include <stdint.h>
#include <uv.h>

#include "poll/busworker.h" /* bus_result */
#include "cfg.h"
#include "profile/planner.h"

typedef struct netbuses netbuses;
typedef struct netbus netbus;

/* Called on the loop with each poll's result, which is then the callee's
 * (bus_result_free). It may be called from within netbus_submit, when a
 * poll fails at once (the bus is backing off a refused connection). */
typedef void (*netbus_deliver)(void *ctx, bus_result *r);

/* The set of network buses on LOOP: the exchanges they share, their name
 * lookups, and where their results go. */
int netbuses_new(netbuses **out, uv_loop_t *loop, netbus_deliver deliver, void *ctx,
                 char *err, size_t errlen);

/* A TCP or RTU-over-TCP bus with a copy of BUS's settings (nothing connects
 * before the first poll); TID_SEED sets its first transaction id apart from
 * other buses'. NULL when out of memory. */
netbus *netbus_open(netbuses *s, const cfg_bus *bus, uint16_t tid_seed);

/* Queue a poll of meter METER (the caller's number, returned in the result)
 * for SLOT_MS, with M's unit and profile and PLAN's requests; the caller
 * keeps M and PLAN alive until the result comes or the bus is closed. -1
 * when the bus is stopping or out of memory (the caller counts a skipped
 * slot). The caller queues at most one poll per meter. */
int netbus_submit(netbus *nb, uint32_t meter, int64_t slot_ms, const cfg_meter *m,
                  const mb_plan *plan);

/* Close one bus: its queued polls and the one in progress are abandoned (no
 * result), its connection closed; its memory goes with its handles' close
 * callbacks. NULL is a no-op. */
void netbus_close(netbus *nb);

/* rtu-dtu bus NB: FD, a DTU's connection that sent the bus's registration
 * (LEFT, NLEFT: the bytes that came behind it), is the bus's from now on
 * (and FD the netbus's to close). A connection the bus had is closed and
 * the poll on it fails (connection_reset). -1 when NB is not an rtu-dtu
 * bus or memory ran out (FD closed). */
int netbus_dtu_attach(netbus *nb, int fd, const uint8_t *left, size_t nleft);

/* Milliseconds since rtu-dtu bus NB's DTU connection last brought a byte,
 * or -1 when it has none. */
int64_t netbus_dtu_quiet_ms(const netbus *nb);

/* Close rtu-dtu bus NB's DTU connection (gone quiet); its poll in progress
 * fails (connection_reset). */
void netbus_dtu_close(netbus *nb);

/* Stop: every bus is closed as by netbus_close; let the loop run the close
 * callbacks before netbuses_free. NULL is a no-op. */
void netbuses_stop(netbuses *s);

/* Free the set (after netbuses_stop and a run of the loop). NULL is a
 * no-op. */
void netbuses_free(netbuses *s);

#endif
