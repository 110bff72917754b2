/* publisher: the MQTT side, on paho's asynchronous client.
 *
 * paho runs its own threads; its callbacks only enqueue events here and call
 * the notify hook (a uv_async_send), so the loop thread handles every
 * connection change and acknowledgement. A message sent with a non-zero tag
 * reports back exactly once per callback paho makes: DELIVERED when the
 * broker's PUBACK arrives (under MQTT 5 a PUBACK with a reason code of 0x80
 * or more is a refusal and reports FAILED), FAILED otherwise. paho persistence
 * is off and its offline buffer unused: the SQLite store is the outbox.
 *
 * Flow control is ours, not paho's: at most the broker's Receive Maximum
 * (from its CONNACK) QoS 1 messages are handed to paho unacknowledged; the
 * rest wait here, in order, and the next one is handed over from the
 * acknowledgement's callback on paho's thread. Given more than the broker's
 * window, paho's sending thread parks its queue and sleeps on its own timer
 * between retries, which held delivery to about 150 messages a second.
 *
 * Connecting is the caller's to pace: the publisher never reconnects by
 * itself. After PUB_EV_LOST or PUB_EV_CONNECT_FAILED, call
 * publisher_reconnect() when the back-off allows.
 */
#ifndef IC_PUBLISHER_H
#define IC_PUBLISHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct publisher publisher;

typedef enum {
  PUB_EV_CONNECTED = 1, /* (re)connected: detail names the server; the
                           broker's limits are in publisher_get_limits() */
  PUB_EV_LOST,          /* connection lost: in-flight messages may be lost;
                           tag is the message the broker closed on when that
                           is certain (after a loss soon after a connect, the
                           next connection sends its first messages one at a
                           time), else 0 */
  PUB_EV_CONNECT_FAILED,/* a connection attempt failed: detail says why;
                           reason >= 0x80 when the broker refused it */
  PUB_EV_DELIVERED,     /* tag's PUBACK arrived */
  PUB_EV_FAILED,        /* tag was refused or could not be sent */
  PUB_EV_MESSAGE,       /* a message arrived on a subscription */
  PUB_EV_STRAY_ACK,     /* the broker acknowledged a packet id with no message
                           in flight (a protocol error): reason is the id */
} pub_event_kind;

typedef struct pub_event {
  struct pub_event *next;
  pub_event_kind kind;
  uint64_t tag;
  int reason;       /* MQTT 5 reason code or paho error code */
  bool retry_now;   /* PUB_EV_CONNECT_FAILED: the next attempt changes what
                       failed (another MQTT version, an unretained Will):
                       try again at once */
  char *topic;      /* PUB_EV_MESSAGE: owned, NUL-terminated */
  char *payload;    /* PUB_EV_MESSAGE: owned, NUL-terminated */
  size_t len;
  char detail[];    /* as long as it is (at most PUB_DETAIL_MAX with the
                       NUL): most events are acknowledgements with none */
} pub_event;

#define PUB_DETAIL_MAX 400

/* Largest message payload taken from a subscription; longer ones are
 * dropped and counted. At most PUB_MESSAGES_MAX wait for the loop; beyond
 * that new ones are dropped and counted. */
#define PUB_MESSAGE_MAX (256 * 1024)
#define PUB_MESSAGES_MAX 10000

typedef struct {
  const char *url;        /* mqtt://host:port or mqtts://host:port */
  const char *client_id;
  int version;            /* 5, 4 (3.1.1), or 0: MQTT 5, and 3.1.1 when the
                             broker refuses 5 or closes at its CONNECT */
  const char *username;   /* NULL: none */
  const char *password;   /* NULL: none; never logged */
  int keepalive_s;
  const char *ca_file, *cert_file, *key_file; /* TLS, may be NULL */
  const char *will_topic; /* retained Last Will, QoS 1 */
  const char *will_payload;
  int max_inflight;       /* messages taken and not yet acknowledged, at
                             most (0: 1024); the broker's window may be
                             smaller */
  void (*notify)(void *ctx); /* called from paho's threads after an event */
  void *notify_ctx;
} publisher_options;

int publisher_new(publisher **out, const publisher_options *opt, char *err,
                  size_t errlen);

/* Start connecting (with automatic reconnect and back-off). */
int publisher_start(publisher *p, char *err, size_t errlen);

/* Errors of publisher_send (negative). */
enum {
  PUB_EDISCONNECTED = -1, /* not connected */
  PUB_EFULL = -2,         /* max_inflight messages taken and unacknowledged */
  PUB_ETOOBIG = -3,       /* larger than the broker's Maximum Packet Size */
  PUB_ENOMEM = -4,
};
const char *publisher_strerror(int rc);

/* Send PAYLOAD to TOPIC. TAG != 0 asks for a DELIVERED/FAILED event.
 * Returns 0 when the message was taken (sent now, or queued until the
 * broker's window has room), or a PUB_E* code, in which case no event
 * follows. A retained message goes out unretained to a broker without
 * Retain Available. */
int publisher_send(publisher *p, const char *topic, const void *payload,
                   size_t len, int qos, bool retained, uint64_t tag);

/* The size of TOPIC and a LEN-byte payload as a PUBLISH packet on the
 * current connection, to compare with the broker's Maximum Packet Size. */
size_t publisher_packet_size(publisher *p, const char *topic, size_t len, int qos);

/* What the broker's CONNACK said, as applied to the current connection. */
typedef struct {
  int version;              /* 5 or 4 (3.1.1) */
  bool fell_back;           /* 3.1.1 because the broker refused MQTT 5 */
  unsigned receive_maximum; /* QoS 1 messages unacknowledged, at most */
  uint32_t maximum_packet_size; /* bytes; 0: no limit given */
  int maximum_qos;          /* 0, 1 or 2 */
  bool retain_available;
  unsigned topic_alias_maximum; /* aliases the broker accepts (we use none) */
  int server_keep_alive;    /* seconds the broker imposes; -1: not given */
  char assigned_client_id[128]; /* when the broker assigned one */
} pub_limits;

/* Fill OUT; false when not connected. */
bool publisher_get_limits(publisher *p, pub_limits *out);

/* The median and 99th percentile of the PUBLISH to PUBACK round trip of the
 * latest acknowledged messages (up to 1,024), in ms; returns how many. With
 * the window full, messages a second = window / round trip. */
size_t publisher_rtt(publisher *p, double *p50_ms, double *p99_ms);

/* Since the last restart: the average number of QoS 1 messages outstanding
 * (AVG; with the window always full, the window) and the share of the time
 * the window had room while nothing waited to be sent (STARVED). RESTART
 * starts a new period. */
void publisher_occupancy(publisher *p, bool restart, double *avg, double *starved);

bool publisher_is_connected(publisher *p);

/* Try connecting again with the same options (after a lost connection or a
 * failed attempt; under version 0, with the MQTT version the last attempt
 * showed the broker to speak). 0 when started, or when connected or
 * connecting already. */
int publisher_reconnect(publisher *p);

/* Whether paho's side makes progress (the watchdog's question, loop
 * thread): false, with WHY, when a connection attempt has had no outcome
 * for paho's connect timeout plus GRACE_MS, or when, connected, the oldest
 * message handed to paho has had none for twice the keepalive plus
 * GRACE_MS (by then paho has either had its PUBACK or declared the
 * connection lost). A broker that is slow or away is progress too: its
 * attempts fail and its connection is lost. */
bool publisher_progressing(publisher *p, int64_t grace_ms, char *why, size_t len);

/* Subscribe to FILTER at QoS 1 (call again after every reconnect: sessions
 * start clean). Messages arrive as PUB_EV_MESSAGE events. 0 or a PUB_E*
 * code (publisher_strerror). */
int publisher_subscribe(publisher *p, const char *filter);

/* Undo publisher_subscribe on the connection of the moment. */
int publisher_unsubscribe(publisher *p, const char *filter);

/* Messages dropped for size or a full queue. */
uint64_t publisher_dropped_messages(publisher *p);

/* Every event so far, oldest first, or NULL. */
pub_event *publisher_take_events(publisher *p);
void pub_event_free(pub_event *ev);

/* Disconnect, giving in-flight messages up to TIMEOUT_MS. */
void publisher_stop(publisher *p, int timeout_ms);

/* NULL is a no-op. */
void publisher_free(publisher *p);

#endif
