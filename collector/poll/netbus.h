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
 * (netbuses_dtu_attach). Until then, and after its link closes, its polls
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

/* Called on the loop with each poll's result, which is then the callee's
 * (bus_result_free). It may be called from within netbuses_submit, when a
 * poll fails at once (the bus is backing off a refused connection). */
typedef void (*netbus_deliver)(void *ctx, bus_result *r);

/* Set up every TCP and RTU-over-TCP bus of C on LOOP (nothing connects
 * before the first poll). PLANS[i] is meter i's plan. */
int netbuses_new(netbuses **out, uv_loop_t *loop, const cfg *c,
                 mb_plan *const *plans, netbus_deliver deliver, void *ctx,
                 char *err, size_t errlen);

/* Queue a poll of meter METER (on network bus BUS) for SLOT_MS. -1 when
 * stopping or the bus's queue is full (the caller counts a skipped slot). */
int netbuses_submit(netbuses *s, size_t bus, uint32_t meter, int64_t slot_ms);

/* rtu-dtu bus BUS: FD, a DTU's connection that sent the bus's registration
 * (LEFT, NLEFT: the bytes that came behind it), is the bus's from now on
 * (and FD the netbus's to close). A connection the bus had is closed and
 * the poll on it fails (connection_reset). -1 when BUS is not an rtu-dtu
 * bus or memory ran out (FD closed). */
int netbuses_dtu_attach(netbuses *s, size_t bus, int fd, const uint8_t *left,
                        size_t nleft);

/* Milliseconds since rtu-dtu bus BUS's DTU connection last brought a byte,
 * or -1 when it has none. */
int64_t netbuses_dtu_quiet_ms(const netbuses *s, size_t bus);

/* Close rtu-dtu bus BUS's DTU connection (gone quiet); its poll in progress
 * fails (connection_reset). */
void netbuses_dtu_close(netbuses *s, size_t bus);

/* Stop: polls queued or in progress are abandoned (no result), connections
 * closed, and the handles closed; let the loop run their close callbacks
 * before netbuses_free. NULL is a no-op. */
void netbuses_stop(netbuses *s);

/* Free everything (after netbuses_stop and a run of the loop). NULL is a
 * no-op. */
void netbuses_free(netbuses *s);

#endif
