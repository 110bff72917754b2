/* sim_impl: the declarations intake-sim's servers share among their files;
 * sim.h is their interface, and nothing here is for use outside firmware-sim/.
 * Functions one file calls in another are named sim__*.
 *
 * sim.c      the meters and buses, start and stop, answer timing and framing
 * sim_tcp.c  tcp and rtu-over-tcp buses: their servers and connections
 * sim_rtu.c  rtu buses: Modbus RTU on pseudo-terminals
 * sim_dtu.c  rtu-dtu buses: a DTU that dials the collector
 * sim_ctl.c  the control socket (intake-sim ctl)
 */
#ifndef IC_SIM_IMPL_H
#define IC_SIM_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cfg.h"
#include "proto/mb_proto.h"
#include "sim.h"
#include "sim_clock.h"
#include "sim_meter.h"

/* Request bytes a connection buffers before the simulator stops reading from
 * it (the client then waits in its own send buffer). */
#define CONN_BUF_MAX 2048
/* An incomplete RTU frame older than this is line noise: drop it. */
#define RTU_STALE_MS 100
/* Delayed (slow) answers in flight per line; beyond that a slow answer is
 * dropped, as a meter that cannot keep up drops requests. */
#define LATE_MAX 8

typedef struct sim_bus sim_bus;
typedef struct sim_conn sim_conn;
typedef struct ctl_conn ctl_conn;

/* An answer scheduled for later (a slow meter): it goes out when due,
 * whatever else the line carries meanwhile. */
typedef struct {
  sim_deadline due;
  sim_bus *bus;
  sim_conn *conn; /* NULL on an rtu bus */
  const sim_meter *meter;
  bool used;
  size_t len;
  uint8_t data[MB_TCP_MAX + 64];
} late_reply;

struct sim_conn {
  uv_tcp_t tcp;
  sim_deadline line_free; /* wire time on an rtu-over-tcp bus */
  sim_deadline stale;     /* rtu-over-tcp: an incomplete frame is dropped
                             RTU_STALE_MS after its last byte came */
  sim_bus *bus;
  sim_conn *next;
  uint8_t buf[CONN_BUF_MAX]; /* received bytes not yet framed */
  size_t len;
  mb_rtu_framer framer; /* rtu-over-tcp */
  bool busy;            /* the emulated serial line behind the DTU is busy */
  uint64_t rx_ns;       /* when requests last arrived (monotonic) */
  uint64_t free_ns;     /* when the emulated line was last free again */
  bool reading;
  bool closing;
  bool mute;            /* rtu-dtu: a link left half-open, neither read nor
                           written again */
  bool throttle_logged;
  int handles_open;
  uint8_t pending[MB_TCP_MAX + 64]; /* sent when the wire time is up */
  size_t pending_len;
  late_reply late[LATE_MAX];
};

struct sim_bus {
  sim *owner;
  const cfg_bus *cfg;
  size_t index;
  sim_meter *by_unit[256];
  bool wire_time;
  int char_bits;
  uint64_t requests;
  uint64_t bad_frames;
  uint64_t late_dropped;
  /* tcp and rtu-over-tcp */
  uv_tcp_t server;
  bool server_open;
  sim_conn *conns;
  size_t nconns;
  uint64_t accepted; /* connections taken so far (status: a client's reconnects) */
  /* rtu-dtu */
  sim_conn *dtu_conn;      /* the link in use (registered), or NULL */
  uv_connect_t dtu_connect;
  bool dtu_dialling;
  uv_timer_t dtu_hb_timer, dtu_dial_timer;
  bool dtu_timers_open;
  bool dtu_hold;           /* told to stay off the line */
  bool dtu_inside;         /* cut each answer with a heartbeat inside it */
  uint64_t dtu_links;      /* links made */
  /* rtu */
  int master_fd;
  int slave_fd;
  char slave_name[128];
  int wd;      /* inotify watch on the slave end, -1 without */
  int clients; /* others holding the slave end open; -1 when unknown */
  uint64_t port_closes; /* close events of the slave end seen */
  bool seen_open; /* the watch has reported an open: it works */
  bool linked;
  uv_poll_t poll;
  bool poll_open;
  sim_deadline reply_due;
  uv_timer_t stale_timer;
  bool timers_open;
  mb_rtu_framer framer;
  bool busy; /* the line carries a request or an answer (wire time) */
  uint64_t rx_ns;   /* when bytes last arrived from the line (monotonic) */
  uint64_t free_ns; /* when the line was last free again */
  uint8_t reply[MB_RTU_MAX + 64];
  size_t reply_len;
  uint8_t out[4096];
  size_t out_len;
  late_reply late[LATE_MAX];
};

struct sim {
  uv_loop_t *loop;
  const cfg *cfg;
  char dtu_source[64]; /* rtu-dtu: the address DTUs dial from; "" any */
  sim_meter *meters;
  size_t nmeters;
  sim_bus *buses;
  size_t nbuses;
  uv_pipe_t control;
  bool control_open;
  char control_path[CFG_PATH_MAX];
  ctl_conn *ctls;
  size_t nctls;
  /* Every answer deadline (wire time, slow meters), to the microsecond. */
  sim_clock *clock;
  /* Who opens and closes the ptys' slave ends (inotify), shared by every rtu
   * bus; -1 when unavailable. */
  int ino_fd;
  uv_poll_t ino_poll;
  bool ino_open;
};

typedef struct {
  uv_write_t req;
  uv_buf_t buf;
  uint8_t data[];
} write_req;

/* When an answer goes out (sim__answer_timing_of). */
typedef struct {
  uint64_t busy_ns; /* the line is occupied this long from the request */
  bool late;        /* the answer is scheduled on its own (a slow meter) */
  uint64_t late_ns; /* ... and goes out this long after the request */
} answer_timing;

/* sim.c */

/* The wall clock, in seconds since the epoch (what meters are handed). */
double sim__wall_now(void);
/* Where an exchange starts on an emulated line. */
uint64_t sim__exchange_start_ns(uint64_t rx_ns, uint64_t free_ns);
/* How the answer of LEN bytes to a request of REQLEN bytes on B goes out. */
answer_timing sim__answer_timing_of(const sim_bus *b, size_t reqlen,
                                    size_t len, const sim_action *act);
/* Tie a late-answer slot to its bus and connection (NULL on an rtu bus). */
int sim__late_init(late_reply *l, sim_clock *clock, sim_bus *b, sim_conn *c);
/* Schedule an answer in one of SLOTS; false when every slot is taken. */
bool sim__late_schedule(late_reply *slots, const sim_meter *m,
                        const uint8_t *data, size_t len, uint64_t due_ns);
/* Delayed answers of meter M waiting in SLOTS (LATE_MAX of them). */
size_t sim__late_count(const late_reply *slots, const sim_meter *m);
/* The bytes that carry ACT on B's transport; 0 when nothing is sent. */
size_t sim__encode_action(const sim_bus *b, const sim_action *act,
                          uint16_t tid, uint8_t unit, uint8_t *out, size_t cap);

/* sim_tcp.c */

/* Listen on tcp or rtu-over-tcp bus B's address. Returns 0, or -1 with a
 * message in err. */
int sim__tcp_listen(sim_bus *b, char *err, size_t errlen);
/* Close client connection C (sim_stop closes them all). */
void sim__conn_close(sim_conn *c);
/* Queue LEN bytes of answer for C's client (on an rtu-dtu bus, as the DTU
 * sends them: sim__dtu_write). */
void sim__conn_write(sim_conn *c, const uint8_t *data, size_t len);
/* Queue LEN bytes for C's peer as they are. */
void sim__conn_write_raw(sim_conn *c, const uint8_t *data, size_t len);
/* A new connection of bus B, in its list (its handle initialised, not yet
 * connected or accepted); *ROOM false when its timers could not be had.
 * NULL when out of memory. */
sim_conn *sim__conn_new(sim_bus *b, bool *room);
/* Read C's requests while there is room and its client takes the answers. */
void sim__conn_update_reading(sim_conn *c);

/* sim_rtu.c */

/* Open rtu bus B: a pseudo-terminal linked at the bus's device path. Returns
 * 0, or -1 with a message in err. */
int sim__rtu_open(sim_bus *b, char *err, size_t errlen);
/* Send an answer on B's line (dropped when no client has the port open). */
void sim__rtu_send(sim_bus *b, const uint8_t *data, size_t len);

/* sim_dtu.c */

/* Start rtu-dtu bus B: dial its server (and keep dialling). 0, or -1 with a
 * message in err. */
int sim__dtu_start(sim_bus *b, char *err, size_t errlen);
/* Stop B's timers (sim_stop). */
void sim__dtu_stop(sim_bus *b);
/* B's link in use is closing: dial again after a pause. */
void sim__dtu_lost(sim_bus *b);
/* An answer as the DTU sends it: with the registration in front when
 * registration_every_packet, cut by a heartbeat when told to. */
void sim__dtu_write(sim_conn *c, const uint8_t *data, size_t len);
/* A control command for an rtu-dtu bus (ARGS after "dtu"): the reply in
 * OUT. 0 on ok. */
int sim__dtu_control(sim *s, const char *bus, const char *what, const char *arg,
                     char *out, size_t outlen);

/* sim_ctl.c */

/* Listen on the control socket at s->control_path. Returns 0, or -1 with a
 * message in err. */
int sim__control_listen(sim *s, char *err, size_t errlen);
/* Close control connection C (sim_stop closes them all). */
void sim__ctl_close(ctl_conn *c);

#endif
