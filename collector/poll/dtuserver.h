/* dtuserver: the servers 4G DTUs dial in to (dtu_servers), on the event loop.
 *
 * Each listens on its address and accepts any number of DTUs, with no
 * thread per connection: a connection from outside the server's `allow`
 * ranges is closed before a byte of it is read; at most `max_pending`
 * connections wait for their registration (a new one beyond closes the
 * oldest), each for at most `register_timeout`, read with a bound of the longest registration among
 * the server's buses; the registration binds the connection to its rtu-dtu
 * bus (exact match of the first bytes), which netbus then polls (handed
 * over through the caller's dtu_links, netbus_dtu_attach); an unknown
 * registration, or none in time, closes the connection. A bound connection that brings no byte for
 * `idle_timeout` is closed.
 *
 * A second connection with a bus's registration takes the bus over and
 * closes the old one (a DTU dials again before the server sees its old link
 * die), within limits, since a registration is no password: a takeover
 * within `takeover_hold` of the bus's last one is refused, and so is one
 * from another address than the bus's DTU's while that DTU is alive (has
 * brought a byte within `takeover_hold`). A DTU whose address changed is
 * remembered (dtuservers_bus_info) for the gateway state.
 *
 * A library module: it does not log. What happens is told to the caller's
 * event function, with whether it is the first of its kind from that
 * address, so that the caller logs once per address.
 */
#ifndef IC_DTUSERVER_H
#define IC_DTUSERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cfg.h"

typedef struct dtuservers dtuservers;

typedef enum {
  DTU_EV_OUTSIDE,    /* a connection from outside allow, closed unread */
  DTU_EV_FULL,       /* max_pending reached: the oldest pending one closed */
  DTU_EV_UNKNOWN,    /* a registration no bus has: closed */
  DTU_EV_SILENT,     /* no registration within register_timeout: closed */
  DTU_EV_HUNG_UP,    /* closed by the peer before registering */
  DTU_EV_REGISTERED, /* a DTU registered on a bus without one */
  DTU_EV_TAKEOVER,   /* a DTU took a bus over from the connection it had */
  DTU_EV_REFUSED,    /* a takeover refused (see why) */
  DTU_EV_IDLE,       /* a bus's DTU brought nothing for idle_timeout */
} dtu_ev_kind;

/* Room for an address in text, "[v6]:port" included. */
#define DTU_ADDR_MAX 64

typedef struct {
  dtu_ev_kind kind;
  size_t server;    /* index into cfg.dtu_servers */
  size_t bus;       /* index into cfg.buses; SIZE_MAX when none */
  char peer[DTU_ADDR_MAX];  /* the connection's address:port */
  char prev[DTU_ADDR_MAX];  /* the bus's DTU's before, when it had one */
  bool foreign;     /* from another address than the bus's DTU's before */
  bool first;       /* the first event of its kind from this address */
  const char *why;  /* DTU_EV_REFUSED: why */
} dtu_ev;

typedef void (*dtu_event_fn)(void *ctx, const dtu_ev *ev);

/* What a bus's DTU has done, for the gateway state and metrics. */
typedef struct {
  bool connected;
  char peer[DTU_ADDR_MAX];  /* the DTU's address:port, "" never seen */
  uint64_t registrations;   /* connections bound to the bus */
  uint64_t takeovers;       /* of them, taking over a connection */
  uint64_t foreign;         /* registrations and attempts from another
                               address than the DTU's before */
  uint64_t refused;         /* takeovers refused */
  bool address_changed;     /* the DTU is on another address than before */
  int64_t changed_ms;       /* when it changed (wall clock) */
} dtu_bus_info;

/* The rtu-dtu buses' links, by the configuration's bus index, as the
 * caller keeps them (netbus_dtu_attach and the rest on its buses). */
typedef struct {
  /* FD sent bus BUS's registration (LEFT, NLEFT: what came behind it): the
   * bus's from now on; -1 when it could not be taken (FD closed). */
  int (*attach)(void *ctx, size_t bus, int fd, const uint8_t *left, size_t nleft);
  /* Milliseconds since bus BUS's link last brought a byte; -1: none. */
  int64_t (*quiet_ms)(void *ctx, size_t bus);
  /* Close bus BUS's link (gone quiet). */
  void (*close)(void *ctx, size_t bus);
} dtu_links;

/* Listen on every server of C (nothing when there are none), handing
 * registered connections over through LINKS (with CTX, as FN). Listening
 * sockets are made here: an address in use is an error, with a message in
 * ERR. */
int dtuservers_new(dtuservers **out, uv_loop_t *loop, const cfg *c, const dtu_links *links,
                   dtu_event_fn fn, void *ctx, char *err, size_t errlen);

/* A reload's configuration NC, with the same DTU servers: from now on bus
 * indexes are NC's (OLD_OF_NEW[j]: new bus j's index in the configuration
 * before, or -1), and what each rtu-dtu bus's DTU has done goes with its
 * bus. -1, nothing changed, when out of memory. */
int dtuservers_rebind(dtuservers *s, const cfg *nc, const long *old_of_new);

/* What bus BUS's DTU has done; false when BUS is not an rtu-dtu bus. */
bool dtuservers_bus_info(const dtuservers *s, size_t bus, dtu_bus_info *out);

/* Connections waiting for their registration now, on every server. */
size_t dtuservers_pending(const dtuservers *s);

/* Close the listening sockets and pending connections; let the loop run the
 * close callbacks before dtuservers_free. NULL is a no-op. */
void dtuservers_stop(dtuservers *s);

/* NULL is a no-op. */
void dtuservers_free(dtuservers *s);

#endif
