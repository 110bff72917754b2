/* tr_net: a network bus's TCP connection, as every caller opens and judges it.
 *
 * The blocking transport for `tcp` and `rtu-over-tcp` (transport_net.c,
 * what `intake-collector read` runs) and the daemon's event loop
 * (collector/poll/netbus.c) share these: the bus's "host:port" text,
 * resolving its host, starting a non-blocking connect and finishing it, what
 * a failed connect or a broken connection is called (which failure kind,
 * which words), discarding what a connection brings unasked, and the bound on
 * bytes that frame no answer. Each caller does its own waiting (poll(2) or
 * epoll); what they say about the connection is the same.
 */
#ifndef IC_TR_NET_H
#define IC_TR_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport/transport.h"

struct addrinfo;

/* Room for a bus's "host:port" text. */
#define TR_WHERE_MAX (TR_HOST_MAX + 16)

/* Bytes a connection may bring that frame no answer (unasked between
 * exchanges, or garbage around an answer) before it is closed and the
 * exchange counted malformed: a peer streaming bytes would otherwise be read
 * for ever. A good answer starts the count again. */
#define TR_NET_JUNK_MAX 4096

/* At most this many unsolicited bytes are discarded before a request
 * (tr_net_drain); a peer that sends more without pause is answered by the
 * request going out anyway. */
#define TR_NET_DRAIN_MAX 65536

/* "host:port" into BUF (CAP >= TR_WHERE_MAX), "[addr]:port" for an IPv6
 * literal; returns BUF. */
const char *tr_net_where(char *buf, size_t cap, const char *host, int port);

/* Resolve HOST and PORT for a stream connection (getaddrinfo; only an
 * address literal when NUMERIC_ONLY). getaddrinfo's code, with *RES set on
 * success. */
int tr_net_resolve(const char *host, int port, bool numeric_only,
                   struct addrinfo **res);

/* HOST did not resolve: getaddrinfo said GRC (SYSERR is errno for
 * EAI_SYSTEM, or 0). TR_EIO with E filled ("resolve HOST: ..."). */
int tr_net_resolve_failed(tr_error *e, const char *host, int grc, int syserr);

/* A non-blocking, close-on-exec socket for AI. The descriptor, or -1 with
 * errno. */
int tr_net_socket(const struct addrinfo *ai);

/* Start connecting FD to AI: 0 when connected already, 1 when the connect
 * goes on (wait for FD to become writable, then tr_net_connect_result), -1
 * with errno when it failed. */
int tr_net_connect(int fd, const struct addrinfo *ai);

/* The connect in progress on FD has ended (FD became writable): 0 when it
 * succeeded, else the errno it failed with. */
int tr_net_connect_result(int fd);

/* FD is connected: set it up for requests (TCP_NODELAY). */
void tr_net_connected(int fd);

/* Connecting to WHERE failed with ERR (an errno; ETIMEDOUT when the bus
 * timeout TIMEOUT_MS ran out, 0 when the name had no address):
 * TR_ECONNREFUSED, TR_ETIMEOUT or TR_EIO, with E filled ("connect WHERE:
 * ..."). */
int tr_net_connect_failed(tr_error *e, int err, const char *where,
                          int64_t timeout_ms);

/* Is ERR (an errno) a connection that broke, rather than another error? */
bool tr_net_is_reset(int err);

/* The connection to WHERE broke with ERR (an errno, or 0 when the peer
 * closed it): TR_ECONNRESET or TR_EIO with E filled. */
int tr_net_lost(tr_error *e, int err, const char *where);

/* WHERE sent N bytes that frame no answer (N > TR_NET_JUNK_MAX): the
 * connection is to be closed. TR_EMALFORMED with E filled. */
int tr_net_junk(tr_error *e, const char *where, size_t n);

/* Discard what FD has to read now, up to TR_NET_DRAIN_MAX bytes: the late
 * answer to a request that timed out, a DTU's heartbeat. 0 when the
 * connection is still up, -1 when the peer closed it or it broke. */
int tr_net_drain(int fd);

#endif
