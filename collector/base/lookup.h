/* lookup: a host name looked up on a detached thread of its own.
 *
 * getaddrinfo cannot be cancelled, and libuv's getaddrinfo runs on its
 * thread pool, which the process waits for at exit: a DNS server that does
 * not answer held SIGTERM for 8 to 10 s. A detached thread is simply ended
 * with the process. A lookup given up (its owner timed out, or stops) is
 * marked abandoned: its thread frees it when getaddrinfo returns and wakes
 * nobody. The network buses and the uplink to the monitoring centre use it;
 * an address literal needs none (tr_net_resolve, numeric only). Loop thread
 * (the owner's), but for the lookup's own thread.
 */
#ifndef IC_LOOKUP_H
#define IC_LOOKUP_H

#include <netdb.h>
#include <stdbool.h>
#include <uv.h>

typedef struct lookup lookup;

/* Look HOST:PORT up (TCP addresses) on a thread of its own, which sends
 * WAKE when done. NULL with *ERR an errno value when out of memory or
 * when no thread could be made. */
lookup *lookup_start(const char *host, int port, uv_async_t *wake, int *err);

/* When L has ended: true, with its getaddrinfo code in *RC and, when 0, the
 * addresses in *RES (the caller's to free); L is freed. False while it
 * runs. */
bool lookup_take(lookup *l, int *rc, struct addrinfo **res);

/* Give up on L: it never sends its wake-up again, and is freed by its
 * thread, or here when it has ended already. NULL is a no-op. */
void lookup_abandon(lookup *l);

#endif
