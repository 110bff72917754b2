/* cfg: the site configuration.
 *
 * One YAML file describes a site: its id, the MQTT broker, storage, the buses
 * (serial lines and TCP endpoints) and the meters on them, the online-rate
 * thresholds, and for intake-sim each meter's simulated behaviour. cfg_load
 * parses and validates it completely; every error names FILE:LINE:COL and
 * says what was expected. Relative paths are resolved against the folder of
 * the config file. See docs/configuration.md for every key.
 */
#ifndef IC_CFG_H
#define IC_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "profile/profile.h"
#include "proto/dtu_filter.h"
#include "transport/transport.h"

#define CFG_ID_MAX 64
#define CFG_NAME_MAX 256
#define CFG_PATH_MAX 4096
/* Kept shorter: every bus and meter carries one, thousands on a
 * concentrator. */
#define CFG_DEVICE_MAX 256
#define CFG_REF_MAX 512
#define CFG_HOST_MAX 256
#define CFG_ERR_MAX 1024
#define CFG_FIXED_MAX 16
#define CFG_PERIODS_MAX 8
#define CFG_PERIOD_NAME_MAX 32

typedef enum {
  CFG_TRANSPORT_RTU = 0,
  CFG_TRANSPORT_TCP,
  CFG_TRANSPORT_RTU_OVER_TCP,
  CFG_TRANSPORT_RTU_DTU, /* RTU over a DTU's connection that dials in */
} cfg_transport;

/* An address range of dtu_servers[].allow: FAMILY AF_INET or AF_INET6,
 * ADDR its first 4 or 16 bytes (network order), PREFIX its length. */
typedef struct {
  int family;
  uint8_t addr[16];
  int prefix;
} cfg_cidr;

/* At most this many ranges a server. */
#define CFG_ALLOW_MAX 64

/* A server DTUs dial in to ("dtu_servers:"). */
typedef struct {
  char id[CFG_ID_MAX];
  int line, col;
  /* listen: an IPv4 or IPv6 literal (without brackets) and a port. */
  char host[64];
  int port;
  int64_t idle_timeout_ms;     /* no byte this long: the link is dead; 5m */
  int64_t register_timeout_ms; /* the registration must come within; 5s */
  int max_pending;             /* connections not registered yet; 256 */
  int64_t takeover_hold_ms;    /* a second takeover of a bus within this
                                  is refused; 30s */
  size_t nallow;               /* 0: any address */
  cfg_cidr allow[CFG_ALLOW_MAX];
} cfg_dtu_server;

/* Parse "ADDR/PREFIX" (or an address alone, a range of one) into *OUT; an
 * IPv4 range written mapped into IPv6 (::ffff:a.b.c.d/PREFIX of 96 or more)
 * is taken as the IPv4 range. -1 when it is not one. */
int cfg_cidr_parse(const char *s, cfg_cidr *out);

/* Is the address ADDR of FAMILY (AF_INET: 4 bytes, AF_INET6: 16) in C? An
 * IPv4 address mapped into IPv6 (::ffff:a.b.c.d, as a dual-stack socket
 * sees an IPv4 peer) is taken as the IPv4 address. */
bool cfg_cidr_contains(const cfg_cidr *c, int family, const uint8_t *addr);

/* The online rate a city reported for its first-level intakes' meters: the
 * baseline a site or a fleet is measured against unless it names one. */
#define CFG_DEFAULT_BASELINE 0.9468

const char *cfg_transport_name(cfg_transport t);

/* What a file of mode MODE is when it is not a regular file ("a directory",
 * "a FIFO", ...), or NULL for a regular file: a secret or a token must be
 * read from a regular file. */
const char *cfg_file_kind(unsigned mode);

typedef enum {
  SIM_FAULT_NONE = 0,
  SIM_FAULT_OFFLINE,   /* never answers */
  SIM_FAULT_FLAKY,     /* drops sim.flaky_ratio of requests */
  SIM_FAULT_SLOW,      /* answers after sim.slow_delay */
  SIM_FAULT_CRC,       /* corrupts the CRC of sim.crc_ratio of answers */
  SIM_FAULT_EXCEPTION, /* answers with sim.exception_code */
  SIM_FAULT_GARBAGE,   /* answers with noise bytes */
  SIM_FAULT_RESET,     /* the totalizer jumps back to zero, once */
  SIM_FAULT_COUNT_
} sim_fault;

const char *sim_fault_name(sim_fault f);
/* -1 when NAME is not a fault mode. */
int sim_fault_parse(const char *name, sim_fault *out);

typedef struct {
  char id[CFG_ID_MAX];
  int line, col; /* where the bus was declared */
  cfg_transport transport;
  /* rtu: the serial device; tcp, rtu-over-tcp: the host. A bus has one or
   * the other, so they share their room (a concentrator has thousands of
   * buses). */
  union {
    char device[CFG_DEVICE_MAX];
    char host[CFG_HOST_MAX];
  };
  /* rtu */
  int baud;      /* default 9600 */
  char parity;   /* 'N', 'E' or 'O'; default 'N' */
  int data_bits; /* 7 or 8; default 8 */
  int stop_bits; /* 1 or 2; default 1 */
  /* tcp, rtu-over-tcp */
  int port;
  /* rtu-dtu: the server it dials in to (index into cfg.dtu_servers), its
   * registration and heartbeat packets */
  size_t server;
  uint8_t registration[DTU_PKT_MAX];
  uint8_t heartbeat[DTU_PKT_MAX];
  uint8_t reglen, hblen; /* hblen 0: no heartbeat */
  bool registration_every_packet;
  int64_t sim_heartbeat_ms; /* intake-sim: heartbeat interval; default 10s */
  /* all */
  int64_t timeout_ms;    /* response timeout; default 1s */
  int64_t turnaround_ms; /* extra silence between frames; default 0 */
  int max_gap;           /* planner hole filling; -1: the profile's */
  int max_registers;     /* per request, 1..125; 0: the profile's */
  bool sim_wire_time;    /* intake-sim: emulate the baud rate's wire time */
} cfg_bus;

typedef struct {
  char field[PROF_NAME_MAX];
  double value;
} cfg_fixed;

/* intake-sim's view of a meter ("sim:" under a meter). */
typedef struct {
  double mean_flow_m3h;    /* default 100 */
  double pipe_diameter_m;  /* for velocity; default 0.5 */
  double initial_total_m3; /* totalizer at start; default 0 */
  double noise;            /* relative noise on flow; default 0.02 */
  uint64_t seed;           /* default: derived from the meter id */
  sim_fault fault;
  double flaky_ratio;      /* default 0.5 */
  double crc_ratio;        /* default 1.0 */
  int64_t slow_delay_ms;   /* default 2s */
  int exception_code;      /* default 4 (server device failure) */
  size_t nfixed;
  cfg_fixed *fixed;  /* pinned field values, by field name (nfixed of them,
                        allocated only when there are any: a collector with
                        thousands of meters carries none) */
} cfg_sim;

typedef struct {
  char id[CFG_ID_MAX];
  /* Owned by the cfg, each as long as it needs (at most CFG_NAME_MAX and
   * CFG_REF_MAX bytes with the NUL): a gateway with thousands of meters
   * would otherwise carry kilobytes of empty room for each. */
  char *name;          /* default: the id */
  int line, col;
  size_t bus;          /* index into cfg.buses */
  int unit;            /* 1..247 */
  char *profile_ref;   /* as written */
  const mb_profile *profile;      /* owned by the cfg */
  int64_t interval_ms; /* default 1m */
  cfg_sim sim;
} cfg_meter;

/* The bureau uplink (docs/uplink.md): the time label's length names the
 * edition of the protocol. */
typedef enum {
  CFG_UPLINK_SZY206 = 0, /* 5-byte time label */
  CFG_UPLINK_SL427,      /* 7-byte time label (SL/T 427-2021) */
} cfg_uplink_protocol;

/* Meters one station reports: the frame's length byte holds 23 of them. */
#define CFG_UPLINK_STATION_METERS_MAX 23
#define CFG_UPLINK_STATIONS_MAX 1000

typedef struct {
  uint8_t address[5]; /* A1 + A2 as sent, from admin + station or raw_address */
  char admin[7];      /* "" when given as raw_address */
  unsigned station;   /* 0 when given as raw_address */
  int line, col;
  size_t nmeters;
  uint32_t meters[CFG_UPLINK_STATION_METERS_MAX]; /* meter indexes, report order */
} cfg_uplink_station;

typedef struct {
  bool enabled; /* an uplink section is present */
  cfg_uplink_protocol protocol; /* default szy206 */
  char host[CFG_HOST_MAX];
  int port;
  int64_t report_interval_ms;  /* default 5m, at least 10s, aligned to local time */
  int64_t heartbeat_ms;        /* default 60s */
  int64_t confirm_timeout_ms;  /* per try; default 10s */
  int delay_minutes;           /* the time label's allowed delay; default 10 */
  size_t nstations;
  cfg_uplink_station *stations;
} cfg_uplink;

/* The time label's length for protocol P: 5 or 7 bytes. */
int cfg_uplink_tp_len(cfg_uplink_protocol p);

typedef struct {
  char path[CFG_PATH_MAX]; /* the file as given */
  char dir[CFG_PATH_MAX];  /* its folder, for relative paths */

  struct {
    char id[CFG_ID_MAX];
    char name[CFG_NAME_MAX];
    char timezone[64]; /* default Asia/Shanghai */
  } site;

  struct {
    char url[512];               /* mqtt://host:port or mqtts://host:port */
    char client_id[CFG_ID_MAX * 2]; /* default "<site>-gw" */
    char topic_prefix[CFG_ID_MAX];  /* default "water" */
    int version;                 /* 0 auto (default: 5, else 3.1.1), 5, or 4 for 3.1.1 */
    char username[CFG_NAME_MAX];
    char password_file[CFG_PATH_MAX]; /* secret read at connect time */
    char password_env[CFG_NAME_MAX];  /* or an environment variable */
    int64_t keepalive_ms;        /* default 30s */
    char ca_file[CFG_PATH_MAX];
    char cert_file[CFG_PATH_MAX];
    char key_file[CFG_PATH_MAX];
  } mqtt;

  struct {
    char path[CFG_PATH_MAX]; /* SQLite database */
    int64_t max_size;        /* bytes, the -wal and -shm files included;
                                default 512 MiB */
    int64_t retention_ms;    /* rows older than this go; default 400 days */
    int64_t maintenance_ms;  /* how often the bounds are enforced; 1 min */
    int64_t commit_ms;       /* group commit: how long a reading may wait for
                                others to share its transaction; 50 ms */
    int hold_max;            /* operations held in memory while the database
                                cannot be written; default 20000 */
  } storage;

  struct {
    double baseline;          /* default CFG_DEFAULT_BASELINE */
    int offline_after;        /* consecutive failed polls; default 3 */
    int min_readings;         /* per window; default 1 */
    double min_completeness;  /* per window; default 0 */
    int64_t backoff_max_ms;   /* retry cap for offline meters; default 5m */
  } online;

  struct {
    char control[CFG_PATH_MAX]; /* intake-sim control socket; "" none */
  } sim;

  struct {
    /* metrics.listen: the metrics endpoint's address, an IPv4 or IPv6
     * literal (without brackets), and its port; host "" when off. */
    char host[64];
    int port;
  } metrics;

  struct {
    /* Report periods as written: "hourly", "daily", "monthly" (or "hour",
     * "day", "month") or a duration of at least 1s. Default hourly, daily. */
    size_t nperiods;
    char periods[CFG_PERIODS_MAX][CFG_PERIOD_NAME_MAX];
    char push_url[512];             /* http:// or https://; "" no push */
    char ca_file[CFG_PATH_MAX];     /* CA bundle for https; "" system's */
    char token_file[CFG_PATH_MAX];  /* bearer token, first line; "" none */
    int64_t push_timeout_ms;        /* per request; default 30s */
  } reports;

  size_t ndtu_servers;
  cfg_dtu_server *dtu_servers;
  cfg_uplink uplink;

  size_t nbuses;
  cfg_bus *buses;
  size_t nmeters;
  cfg_meter *meters;
  size_t nmeters_alloc;  /* entries allocated in meters (parsed or not) */
  uint32_t *meter_order; /* meter indexes sorted by id, for cfg_meter_index */

  size_t nprofiles;
  mb_profile **profiles; /* loaded once each, shared by meters */
} cfg;

/* Load and validate FILE. PROFILE_DIR overrides the built-in profile folder
 * (NULL for the compiled-in one). Returns 0 and *out, or -1 with
 * "FILE:LINE:COL: message" in err. */
int cfg_load(const char *path, const char *profile_dir, cfg **out, char *err,
             size_t errlen);

void cfg_free(cfg *c);

/* The registration of rtu-dtu bus B as text for messages ("KKY-DTU-03",
 * or "hex:7B01..." when it is not printable) into BUF; returns BUF. */
const char *cfg_bus_registration_text(const cfg_bus *b, char *buf, size_t cap);
#define CFG_REG_TEXT_MAX (4 + 2 * DTU_PKT_MAX + 1)

/* Which of server SERVER's rtu-dtu buses BUF (LEN bytes, a connection's
 * first) registers: *BUS the one with the longest registration BUF holds
 * whole (SIZE_MAX none); true while a longer registration than that is
 * still possible (BUF is the start of it). When two registrations are
 * prefixes of one another, the longest one the bytes match wins. */
bool cfg_dtu_match(const cfg *c, size_t server, const uint8_t *buf, size_t len, size_t *bus);

/* The longest registration among server SERVER's buses (1 when it has
 * none): the most of a connection's first bytes read before judging them. */
size_t cfg_dtu_reg_max(const cfg *c, size_t server);

/* The bus of meter M. */
const cfg_bus *cfg_meter_bus(const cfg *c, const cfg_meter *m);

/* What a transport needs of bus B, into *OUT (for transport_new). Strings
 * are copied as they are: transport_new judges them. */
void cfg_bus_transport_options(const cfg_bus *b, transport_options *out);

/* Is S a report period: hourly, daily, monthly (or hour, day, month), or a
 * duration of at least 1s that fits CFG_PERIOD_NAME_MAX? */
bool cfg_period_valid(const char *s);

/* Meter I's offset within its interval, in ms: the k-th meter of a bus (in
 * file order) polls k * min(interval / meters on the bus, 100 ms) after each
 * wall-clock slot, so the meters of one line do not all queue at once; a
 * network bus (tcp, rtu-over-tcp, rtu-dtu) adds (r mod g) * min(interval / 10, 10 ms)
 * for its rank r among them, as they share the bus threads, where g is the
 * number of network buses / 100, at most 10 (no offset below 200 of them).
 * All modulo the interval. The daemon schedules by it and reports count
 * expected readings by it. */
int64_t cfg_meter_phase_ms(const cfg *c, size_t i);

/* Index of the meter with id ID, or -1. */
int cfg_meter_index(const cfg *c, const char *id);

#endif
