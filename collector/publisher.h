/* publisher: the MQTT side, on paho's asynchronous client.
 *
 * paho runs its own threads; its callbacks only enqueue events here and call
 * the notify hook (a uv_async_send), so the loop thread handles every
 * connection change and acknowledgement. A message sent with a non-zero tag
 * reports back exactly once per callback paho makes: DELIVERED when the
 * broker's PUBACK arrives (under MQTT 5 a PUBACK with a reason code of 0x80
 * or more is a refusal and reports FAILED), FAILED otherwise. paho persistence
 * is off and its offline buffer unused: the SQLite store is the outbox.
 */
#ifndef IC_PUBLISHER_H
#define IC_PUBLISHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct publisher publisher;

typedef enum {
  PUB_EV_CONNECTED = 1, /* (re)connected: detail names the server */
  PUB_EV_LOST,          /* connection lost: in-flight messages may be lost */
  PUB_EV_CONNECT_FAILED,/* a connection attempt failed: detail says why;
                           reason >= 0x80 when the broker refused it */
  PUB_EV_DELIVERED,     /* tag's PUBACK arrived */
  PUB_EV_FAILED,        /* tag was refused or could not be sent */
  PUB_EV_MESSAGE,       /* a message arrived on a subscription */
} pub_event_kind;

typedef struct pub_event {
  struct pub_event *next;
  pub_event_kind kind;
  uint64_t tag;
  int reason;       /* MQTT 5 reason code or paho error code */
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
  int version;            /* 5 or 4 (3.1.1) */
  const char *username;   /* NULL: none */
  const char *password;   /* NULL: none; never logged */
  int keepalive_s;
  const char *ca_file, *cert_file, *key_file; /* TLS, may be NULL */
  const char *will_topic; /* retained Last Will, QoS 1 */
  const char *will_payload;
  int max_inflight;       /* paho's window; 0: 1024 */
  void (*notify)(void *ctx); /* called from paho's threads after an event */
  void *notify_ctx;
} publisher_options;

int publisher_new(publisher **out, const publisher_options *opt, char *err,
                  size_t errlen);

/* Start connecting (with automatic reconnect and back-off). */
int publisher_start(publisher *p, char *err, size_t errlen);

/* Send PAYLOAD to TOPIC. TAG != 0 asks for a DELIVERED/FAILED event.
 * Returns 0 when paho took the message, or a negative paho code (for example
 * when disconnected), in which case no event follows. */
int publisher_send(publisher *p, const char *topic, const void *payload,
                   size_t len, int qos, bool retained, uint64_t tag);

bool publisher_is_connected(publisher *p);

/* Try connecting again with the same options (paho retries lost connections
 * by itself, but not a connection the broker refused). 0 when started. */
int publisher_reconnect(publisher *p);

/* Subscribe to FILTER at QoS 1 (call again after every reconnect: sessions
 * start clean). Messages arrive as PUB_EV_MESSAGE events. */
int publisher_subscribe(publisher *p, const char *filter);

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
