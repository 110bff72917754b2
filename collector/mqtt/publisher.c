#include "mqtt/publisher.h"

#include <MQTTAsync.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/xqueue.h"

/* One QoS 1 message handed to paho and awaiting its callback. Kept on a list
 * in the order they were handed over, so that the oldest unacknowledged one
 * is known when the connection drops, and whatever paho never calls back for
 * is still freed at the end. GEN is the connection it was sent on: a
 * callback from an earlier one touches neither the window nor the caller. */
typedef struct msg_ctx {
  struct msg_ctx *prev, *next;
  publisher *pub;
  uint64_t tag;
  unsigned gen;
  int64_t sent_ns;       /* handed to paho (monotonic) */
} msg_ctx;

/* The loop is woken for an acknowledgement at once while fewer than
 * NOTIFY_LOW messages wait for the window, else with every NOTIFY_BATCH-th. */
#define NOTIFY_LOW 128
#define NOTIFY_BATCH 64

/* PUBLISH to PUBACK round trips kept for publisher_rtt(). */
#define RTT_SAMPLES 1024

static int64_t mono_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* A message taken by publisher_send and waiting for room in the broker's
 * window. The topic and the payload follow the struct. */
typedef struct out_msg {
  struct out_msg *next;
  uint64_t tag;
  int qos;
  bool retained;
  size_t len;
  char *payload;
  char topic[];
} out_msg;

struct publisher {
  MQTTAsync client;
  bool created;
  int client_version; /* the MQTT version the client was created for */
  pthread_mutex_t mu;
  /* Everything below the mutex is shared with paho's threads. */
  xqueue events;         /* to the loop, oldest first */
  msg_ctx pending;       /* list head, oldest first */
  /* Every PUBACK is told by paho's deliveryComplete and, when it matches a
   * message of ours, by that message's callback, one right after the
   * other on paho's receiving thread (in either order): a PUBACK told
   * only by the first is for a packet id we have not sent. */
  bool ack_open;         /* ack_token was told by deliveryComplete alone */
  int ack_token;
  int settled_token;     /* the last message settled, not yet told */
  out_msg *q_head, *q_tail;
  size_t nqueued;        /* messages waiting in q */
  size_t outstanding;    /* QoS 1 messages with paho, unacknowledged */
  size_t window;         /* at most this many outstanding */
  bool pumping;          /* a thread is handing queued messages to paho */
  bool connected, connecting;
  int64_t connecting_ns; /* when the attempt in progress began (monotonic) */
  bool dying;            /* paho has begun failing what is in flight: the
                            connection is going; send nothing more on it */
  bool acked;            /* the client has had a CONNACK: paho then keeps
                            the smallest Receive Maximum it ever saw, so the
                            next connection gets a new client */
  unsigned gen;          /* connection count */
  int keepalive_s;       /* the broker's Server Keep Alive, once given */
  uint64_t lost_tag;     /* the oldest message failed by a connection loss */
  bool lost_tag_set;
  /* Finding a message the broker closes the connection on. A broker that
   * closes at once after a connect may have acknowledged messages whose
   * PUBACKs paho never read, so the oldest unacknowledged is only a guess.
   * After such a loss, the next connection sends its first messages one at
   * a time, as far as the lost one had got: a loss there names the message
   * for certain. */
  size_t sent_in_conn;   /* QoS 1 messages handed to paho on this connection */
  size_t careful_until;  /* ... one at a time while fewer than this */
  struct timespec acked_at; /* this connection's CONNACK (monotonic) */
  int next_version;      /* the version the next attempt uses */
  bool fell_back;
  pub_limits lim;
  /* How full the window is kept: the time integral of outstanding, and the
   * time it had room while nothing waited to be sent (see occ_note). */
  int64_t occ_since_ns, occ_last_ns, occ_starved_ns;
  double occ_area;
  int64_t rtt[RTT_SAMPLES]; /* the latest round trips, ns (a ring) */
  size_t nrtt;           /* samples taken so far */
  size_t nmessages;      /* PUB_EV_MESSAGE events waiting */
  size_t unheard;        /* events queued since the loop was last woken */
  uint64_t dropped_messages;
  /* Set at creation. */
  publisher_options opt;
  char url[600];
  char *client_id, *username, *password, *ca, *cert, *key, *will_topic,
      *will_payload;
  bool will_retained;    /* cleared for a broker without Retain Available */
  MQTTAsync_willOptions will;
  MQTTAsync_SSLOptions ssl;
  MQTTAsync_connectOptions conn;
};

static size_t cap_of(const publisher *p) {
  return p->opt.max_inflight > 0 ? (size_t)p->opt.max_inflight : 1024;
}

static pub_event *new_event(pub_event_kind kind, uint64_t tag, int reason,
                            const char *detail) {
  size_t dlen = detail ? strnlen(detail, PUB_DETAIL_MAX - 1) : 0;
  pub_event *ev = calloc(1, sizeof *ev + dlen + 1);
  if (!ev) return NULL;
  ev->kind = kind;
  ev->tag = tag;
  ev->reason = reason;
  if (dlen) memcpy(ev->detail, detail, dlen);
  return ev;
}

/* Queue EV for the loop and wake it. Called with p->mu held. */
static void post_locked(publisher *p, pub_event *ev) {
  xqueue_push(&p->events, ev);
  /* An acknowledgement while plenty waits to be sent is no hurry: the loop
   * hears of it with a later one. Waking it for each costs a switch of
   * threads a message, taken from the broker's share of the CPU. Whatever
   * waits is sent and acknowledged (or failed with the connection, which
   * wakes the loop), so no event stays unheard. */
  if (ev->kind == PUB_EV_DELIVERED && p->nqueued >= NOTIFY_LOW &&
      ++p->unheard < NOTIFY_BATCH)
    return;
  p->unheard = 0;
  /* uv_async_send takes no lock of ours. */
  xqueue_wake(&p->events);
}

static void push_event_locked(publisher *p, pub_event_kind kind, uint64_t tag,
                              int reason, const char *detail) {
  pub_event *ev = new_event(kind, tag, reason, detail);
  if (ev) post_locked(p, ev);
}

static void free_queue_locked(publisher *p) {
  out_msg *m = p->q_head;
  while (m) {
    out_msg *next = m->next;
    free(m);
    m = next;
  }
  p->q_head = p->q_tail = NULL;
  p->nqueued = 0;
}

static void on_sent5(void *ctx, MQTTAsync_successData5 *resp);
static void on_send_failure5(void *ctx, MQTTAsync_failureData5 *resp);
static void on_sent(void *ctx, MQTTAsync_successData *resp);
static void on_send_failure(void *ctx, MQTTAsync_failureData *resp);

/* Account for the time since the last change of the window or the queue,
 * before changing either (mutex held). */
static void occ_note(publisher *p) {
  int64_t now = mono_ns();
  if (p->occ_last_ns) {
    int64_t dt = now - p->occ_last_ns;
    p->occ_area += (double)p->outstanding * (double)dt;
    if (p->connected && !p->q_head && p->outstanding < p->window) p->occ_starved_ns += dt;
  }
  p->occ_last_ns = now;
}

/* Hand queued messages to paho while the broker's window has room. One
 * thread at a time does it (the loop after a send, paho's after an
 * acknowledgement), so messages leave in the order they were taken; paho is
 * never called with the mutex held, since paho calls back into us holding
 * locks of its own. */
static void pump(publisher *p) {
  pthread_mutex_lock(&p->mu);
  if (p->pumping) {
    pthread_mutex_unlock(&p->mu);
    return;
  }
  p->pumping = true;
  while (p->connected && !p->dying && p->q_head &&
         (p->q_head->qos == 0 ||
          p->outstanding < (p->sent_in_conn < p->careful_until ? 1 : p->window))) {
    occ_note(p);
    out_msg *m = p->q_head;
    p->q_head = m->next;
    if (!p->q_head) p->q_tail = NULL;
    p->nqueued--;
    msg_ctx *c = NULL;
    if (m->qos > 0) {
      c = calloc(1, sizeof *c);
      if (!c) {
        if (m->tag) push_event_locked(p, PUB_EV_FAILED, m->tag, -1, "out of memory");
        free(m);
        continue;
      }
      c->pub = p;
      c->tag = m->tag;
      c->gen = p->gen;
      c->sent_ns = mono_ns();
      c->prev = p->pending.prev;
      c->next = &p->pending;
      p->pending.prev->next = c;
      p->pending.prev = c;
      p->outstanding++;
      p->sent_in_conn++;
    }
    bool retained = m->retained && p->lim.retain_available;
    int version = p->client_version;
    pthread_mutex_unlock(&p->mu);

    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    if (c) {
      ro.context = c;
      if (version == 5) {
        ro.onSuccess5 = on_sent5;
        ro.onFailure5 = on_send_failure5;
      } else {
        ro.onSuccess = on_sent;
        ro.onFailure = on_send_failure;
      }
    }
    MQTTAsync_message msg = MQTTAsync_message_initializer;
    msg.payload = m->payload;
    msg.payloadlen = (int)m->len;
    msg.qos = m->qos;
    msg.retained = retained;
    int rc = MQTTAsync_sendMessage(p->client, m->topic, &msg, &ro);

    pthread_mutex_lock(&p->mu);
    if (rc != MQTTASYNC_SUCCESS) {
      /* Taken by publisher_send, so the caller hears of it. */
      if (c) {
        c->prev->next = c->next;
        c->next->prev = c->prev;
        if (c->gen == p->gen && p->outstanding) p->outstanding--;
        free(c);
      }
      if (m->tag) {
        char d[160];
        snprintf(d, sizeof d, "not sent: %s", MQTTAsync_strerror(rc));
        push_event_locked(p, PUB_EV_FAILED, m->tag, rc < 0 ? rc : -rc, d);
      }
    }
    free(m);
  }
  p->pumping = false;
  pthread_mutex_unlock(&p->mu);
}

/* An acknowledgement or a failure for C: the window has room again. */
static void settle(msg_ctx *c, int token, pub_event_kind kind, int reason,
                   const char *detail) {
  publisher *p = c->pub;
  pthread_mutex_lock(&p->mu);
  if (p->ack_open && token == p->ack_token)
    p->ack_open = false;
  else
    p->settled_token = token;
  occ_note(p);
  c->prev->next = c->next;
  c->next->prev = c->prev;
  bool current = c->gen == p->gen;
  /* At a connection loss paho fails what is in flight, oldest first, before
   * or after telling us of the loss: remember the oldest. */
  if (current && kind == PUB_EV_FAILED && reason == MQTTASYNC_OPERATION_INCOMPLETE) {
    if (!p->lost_tag_set) {
      p->lost_tag = c->tag;
      p->lost_tag_set = true;
    }
    p->dying = true;
  }
  if (current && p->outstanding) p->outstanding--;
  if (current && kind == PUB_EV_DELIVERED) p->rtt[p->nrtt++ % RTT_SAMPLES] = mono_ns() - c->sent_ns;
  /* A failure on a connection already given up is no news: everything in
   * flight then counts as undelivered. */
  if (c->tag && (current || kind == PUB_EV_DELIVERED))
    push_event_locked(p, kind, c->tag, reason, detail);
  /* Room in the window: hand over the next one, unless the connection is
   * going (paho is closing it, and calls us from inside that). */
  bool more = !p->dying;
  pthread_mutex_unlock(&p->mu);
  free(c);
  if (more) pump(p);
}

/* --- paho callbacks (paho's threads) ------------------------------------ */

static int on_message(void *ctx, char *topic, int len, MQTTAsync_message *m) {
  publisher *p = ctx;
  (void)len;
  pub_event *ev = NULL;
  pthread_mutex_lock(&p->mu);
  bool room = p->nmessages < PUB_MESSAGES_MAX;
  pthread_mutex_unlock(&p->mu);
  if (room && m->payloadlen >= 0 && (size_t)m->payloadlen <= PUB_MESSAGE_MAX)
    ev = calloc(1, sizeof *ev + 1);
  if (ev) {
    ev->kind = PUB_EV_MESSAGE;
    ev->topic = strdup(topic);
    ev->payload = malloc((size_t)m->payloadlen + 1);
    if (ev->topic && ev->payload) {
      memcpy(ev->payload, m->payload, (size_t)m->payloadlen);
      ev->payload[m->payloadlen] = '\0';
      ev->len = (size_t)m->payloadlen;
      pthread_mutex_lock(&p->mu);
      p->nmessages++;
      post_locked(p, ev);
      pthread_mutex_unlock(&p->mu);
      ev = NULL;
    } else {
      free(ev->topic);
      free(ev->payload);
      free(ev);
      ev = NULL;
      room = false;
    }
  } else {
    room = false;
  }
  if (!room) {
    pthread_mutex_lock(&p->mu);
    p->dropped_messages++;
    pthread_mutex_unlock(&p->mu);
  }
  MQTTAsync_freeMessage(&m);
  MQTTAsync_free(topic);
  return 1;
}

static void on_connection_lost(void *ctx, char *cause) {
  publisher *p = ctx;
  pthread_mutex_lock(&p->mu);
  if (p->ack_open)
    push_event_locked(p, PUB_EV_STRAY_ACK, 0, p->ack_token,
                      "a PUBACK for a packet id with no message in flight");
  p->ack_open = false;
  p->settled_token = 0;
  /* A broker closes the connection on a message it will not take after
   * acknowledging every one before it, so the oldest still unacknowledged
   * is the one it closed on. */
  /* Named only when it was certain: the one message outstanding while
   * sending one at a time. */
  uint64_t oldest = 0;
  bool careful = p->sent_in_conn <= p->careful_until;
  if (careful && p->lost_tag_set) {
    oldest = p->lost_tag;
  } else if (careful) {
    for (msg_ctx *c = p->pending.next; c != &p->pending; c = c->next)
      if (c->gen == p->gen) {
        oldest = c->tag;
        break;
      }
  }
  /* A loss within seconds of the connect, with messages sent: the next
   * connection goes carefully twice as far as this one got (at least 64
   * messages, at most 4,096), since what is sent first after a connect
   * shifts a little (states of meters come and go). A loss long after the
   * connect is an outage, not a message. */
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  double up = (double)(now.tv_sec - p->acked_at.tv_sec) +
              (double)(now.tv_nsec - p->acked_at.tv_nsec) / 1e9;
  if (p->connected && up < 10 && p->sent_in_conn > 0)
    p->careful_until = p->sent_in_conn < 32 ? 64 : p->sent_in_conn < 2048 ? 2 * p->sent_in_conn : 4096;
  else
    p->careful_until = 0;
  bool was = p->connected;
  p->connected = false;
  p->connecting = false;
  occ_note(p);
  p->gen++;
  p->outstanding = 0;
  free_queue_locked(p);
  if (was) push_event_locked(p, PUB_EV_LOST, oldest, 0, cause ? cause : "connection lost");
  pthread_mutex_unlock(&p->mu);
}

/* paho cannot tell a refused TCP connection from a failed TLS handshake. */
static const char *tls_hint(const publisher *p) {
  return strncmp(p->url, "ssl://", 6) == 0
             ? "; the broker is unreachable or the TLS handshake failed (check "
               "ca_file, the client certificate and that the host name in the url "
               "matches the broker's certificate)"
             : "";
}

/* The limits of a connection: the broker's CONNACK properties (MQTT 5), or
 * none (3.1.1), within our own bound. Called with p->mu held. */
static void apply_limits_locked(publisher *p, MQTTProperties *props, int version) {
  pub_limits l = {0};
  l.version = version;
  l.fell_back = p->fell_back;
  l.receive_maximum = 65535;
  l.maximum_qos = 2;
  l.retain_available = true;
  l.server_keep_alive = -1;
  if (props && version == 5) {
    if (MQTTProperties_hasProperty(props, MQTTPROPERTY_CODE_RECEIVE_MAXIMUM))
      l.receive_maximum =
          (unsigned)MQTTProperties_getNumericValue(props, MQTTPROPERTY_CODE_RECEIVE_MAXIMUM);
    if (MQTTProperties_hasProperty(props, MQTTPROPERTY_CODE_MAXIMUM_PACKET_SIZE))
      l.maximum_packet_size = (uint32_t)MQTTProperties_getNumericValue(
          props, MQTTPROPERTY_CODE_MAXIMUM_PACKET_SIZE);
    if (MQTTProperties_hasProperty(props, MQTTPROPERTY_CODE_MAXIMUM_QOS))
      l.maximum_qos = MQTTProperties_getNumericValue(props, MQTTPROPERTY_CODE_MAXIMUM_QOS);
    if (MQTTProperties_hasProperty(props, MQTTPROPERTY_CODE_RETAIN_AVAILABLE))
      l.retain_available =
          MQTTProperties_getNumericValue(props, MQTTPROPERTY_CODE_RETAIN_AVAILABLE) != 0;
    if (MQTTProperties_hasProperty(props, MQTTPROPERTY_CODE_TOPIC_ALIAS_MAXIMUM))
      l.topic_alias_maximum = (unsigned)MQTTProperties_getNumericValue(
          props, MQTTPROPERTY_CODE_TOPIC_ALIAS_MAXIMUM);
    if (MQTTProperties_hasProperty(props, MQTTPROPERTY_CODE_SERVER_KEEP_ALIVE))
      l.server_keep_alive =
          MQTTProperties_getNumericValue(props, MQTTPROPERTY_CODE_SERVER_KEEP_ALIVE);
    MQTTProperty *id =
        MQTTProperties_getProperty(props, MQTTPROPERTY_CODE_ASSIGNED_CLIENT_IDENTIFER);
    if (id && id->value.data.len > 0) {
      size_t n = (size_t)id->value.data.len;
      if (n >= sizeof l.assigned_client_id) n = sizeof l.assigned_client_id - 1;
      memcpy(l.assigned_client_id, id->value.data.data, n);
    }
  }
  /* MQTT 5 (3.2.2.3.14): the client must use the broker's keep alive. paho
   * cannot change that of a live connection, so the next one uses it (a
   * broker that wants it shorter ends an idle connection sooner). */
  if (l.server_keep_alive > 0) p->keepalive_s = l.server_keep_alive;
  p->lim = l;
  size_t w = l.receive_maximum;
  if (w > cap_of(p)) w = cap_of(p);
  p->window = w;
}

/* A CONNACK that let us in. */
static void connected_locked(publisher *p, MQTTProperties *props, int version) {
  apply_limits_locked(p, props, version);
  p->connecting = false;
  p->acked = true;
  p->dying = false;
  p->lost_tag = 0;
  p->lost_tag_set = false;
  p->sent_in_conn = 0;
  clock_gettime(CLOCK_MONOTONIC, &p->acked_at);
  if (version == 5 && p->lim.receive_maximum == 0) {
    /* A Receive Maximum of 0 is a protocol error (MQTT 5, 3.2.2.3.3): the
     * broker would take nothing. Treat it as refused. */
    push_event_locked(p, PUB_EV_CONNECT_FAILED, 0, 0x82,
                      "the broker's CONNACK gives a Receive Maximum of 0, a protocol "
                      "error: nothing could be sent");
    return;
  }
  if (p->lim.maximum_qos < 1) {
    /* QoS 0 has no acknowledgement: delivery could not be confirmed, and a
     * reading must never be marked delivered on hope. */
    push_event_locked(p, PUB_EV_CONNECT_FAILED, 0, 0x9B,
                      "the broker grants QoS 0 only (Maximum QoS 0 in its CONNACK): "
                      "readings need QoS 1 to be confirmed delivered; allow QoS 1 on "
                      "the broker (mosquitto: max_qos)");
    return;
  }
  p->connected = true;
  push_event_locked(p, PUB_EV_CONNECTED, 0, version, p->url);
}

static void on_connect5(void *ctx, MQTTAsync_successData5 *resp) {
  publisher *p = ctx;
  pthread_mutex_lock(&p->mu);
  connected_locked(p, resp ? &resp->properties : NULL, 5);
  bool refuse = !p->connected;
  pthread_mutex_unlock(&p->mu);
  if (refuse) {
    MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer5;
    MQTTAsync_disconnect(p->client, &d);
  }
  pump(p);
}

static void on_connect(void *ctx, MQTTAsync_successData *resp) {
  publisher *p = ctx;
  (void)resp;
  pthread_mutex_lock(&p->mu);
  connected_locked(p, NULL, 4);
  pthread_mutex_unlock(&p->mu);
  pump(p);
}

/* A failed attempt under version auto: does it show that the broker does
 * not speak the version tried? A refusal for the protocol version (MQTT 5
 * reason 0x84, or a 3.1.1 CONNACK code 1 read as 0x01), or a connection
 * closed by the broker after our CONNECT without a CONNACK. A connection
 * that could not be made at all says nothing about the version. */
static bool says_wrong_version(int code, int reason, const char *message) {
  if (reason == 0x84 || reason == 0x01 || code == 0x84 || code == 1) return true;
  /* paho says "TCP connect completion failure" when the connection was
   * made and then closed before a CONNACK came; a refused or unreachable
   * port is "TCP/TLS connect failure" or a timeout. */
  return code == MQTTASYNC_FAILURE && message &&
         strstr(message, "connect completion failure") != NULL;
}

/* Under version auto, decide the next attempt's version from a failure.
 * Called with p->mu held; returns a note for the log, or "". */
static const char *fallback_locked(publisher *p, int version, int code, int reason,
                                   const char *message) {
  if (p->opt.version != 0 || !says_wrong_version(code, reason, message)) return "";
  if (version == 5) {
    p->next_version = 4;
    p->fell_back = true;
    return "; the broker does not take MQTT 5: trying MQTT 3.1.1";
  }
  p->next_version = 5;
  p->fell_back = false;
  return "; the broker does not take MQTT 3.1.1 either: trying MQTT 5 again";
}

static void on_connect_failure(void *ctx, MQTTAsync_failureData *resp) {
  publisher *p = ctx;
  char d[PUB_DETAIL_MAX];
  /* MQTT 3.1.1 CONNACK codes: 4 bad user name or password, 5 not authorized. */
  int code = resp ? resp->code : 0;
  pthread_mutex_lock(&p->mu);
  p->connecting = false;
  const char *fb = fallback_locked(p, 4, code, 0, resp ? resp->message : NULL);
  if (code == 4 || code == 5)
    snprintf(d, sizeof d, "the broker refused the connection: %s (CONNACK %d)",
             code == 4 ? "bad user name or password" : "not authorized", code);
  else
    snprintf(d, sizeof d, "%s (code %d)%s%s",
             resp && resp->message ? resp->message : "connection failed", code,
             *fb ? "" : tls_hint(p), fb);
  /* Report refusals like MQTT 5's, with a reason of 0x80 or more. */
  pub_event *ev =
      new_event(PUB_EV_CONNECT_FAILED, 0, code == 4 ? 0x86 : code == 5 ? 0x87 : code, d);
  if (ev) {
    ev->retry_now = *fb != '\0';
    post_locked(p, ev);
  }
  pthread_mutex_unlock(&p->mu);
}

static void on_connect_failure5(void *ctx, MQTTAsync_failureData5 *resp) {
  publisher *p = ctx;
  char d[PUB_DETAIL_MAX];
  /* A broker's refusal arrives as a CONNACK reason code, which paho puts in
   * "code" (the reason field stays 0); say it in words. */
  int reason = resp ? (int)resp->reasonCode : 0;
  if (resp && reason == 0 && resp->code >= 0x80) reason = resp->code;
  pthread_mutex_lock(&p->mu);
  p->connecting = false;
  const char *fb = fallback_locked(p, 5, resp ? resp->code : 0, reason,
                                   resp ? resp->message : NULL);
  if (reason == 0x9A && p->will_retained) {
    /* Retain Not Supported: our Last Will asks for retain. Without it the
     * gateway state is published unretained (publisher_get_limits). */
    p->will_retained = false;
    p->lim.retain_available = false;
    fb = "; the broker keeps no retained messages: connecting again with an "
         "unretained Last Will";
  }
  if (*fb && reason >= 0x80) reason = 0; /* retried at once, changed */
  if (reason == 0x9B)
    /* Our Last Will is QoS 1: a broker that grants QoS 0 only says so here. */
    snprintf(d, sizeof d,
             "the broker refused the connection: QoS not supported (0x9b): it grants "
             "QoS 0 only, and readings need QoS 1 to be confirmed delivered; allow QoS 1 "
             "on the broker (mosquitto: max_qos)");
  else if (reason >= 0x80)
    snprintf(d, sizeof d, "the broker refused the connection: %s (0x%02x)",
             MQTTReasonCode_toString((enum MQTTReasonCodes)reason), (unsigned)reason);
  else
    snprintf(d, sizeof d, "%s (code %d)%s%s",
             resp && resp->message ? resp->message : "connection failed",
             resp ? resp->code : 0, *fb ? "" : tls_hint(p), fb);
  pub_event *ev = new_event(PUB_EV_CONNECT_FAILED, 0, reason, d);
  if (ev) {
    ev->retry_now = *fb != '\0';
    post_locked(p, ev);
  }
  pthread_mutex_unlock(&p->mu);
}

static void on_sent(void *ctx, MQTTAsync_successData *resp) {
  settle(ctx, resp ? resp->token : 0, PUB_EV_DELIVERED, 0, NULL);
}

static void on_sent5(void *ctx, MQTTAsync_successData5 *resp) {
  int rc = resp ? (int)resp->reasonCode : 0;
  if (rc >= 0x80) {
    char d[160];
    snprintf(d, sizeof d, "broker refused the message: %s (0x%02x)",
             MQTTReasonCode_toString((enum MQTTReasonCodes)rc), (unsigned)rc);
    settle(ctx, resp->token, PUB_EV_FAILED, rc, d);
  } else {
    settle(ctx, resp ? resp->token : 0, PUB_EV_DELIVERED, rc, NULL);
  }
}

static void on_send_failure(void *ctx, MQTTAsync_failureData *resp) {
  char d[160];
  snprintf(d, sizeof d, "%s", resp && resp->message ? resp->message : "not delivered");
  settle(ctx, resp ? resp->token : 0, PUB_EV_FAILED, resp ? resp->code : 0, d);
}

static void on_send_failure5(void *ctx, MQTTAsync_failureData5 *resp) {
  char d[160];
  if (resp && resp->reasonCode >= 0x80)
    snprintf(d, sizeof d, "broker refused the message: %s (0x%02x)",
             MQTTReasonCode_toString(resp->reasonCode), (unsigned)resp->reasonCode);
  else
    snprintf(d, sizeof d, "%s", resp && resp->message ? resp->message : "not delivered");
  settle(ctx, resp ? resp->token : 0, PUB_EV_FAILED, resp ? (int)resp->reasonCode : 0, d);
}

/* A PUBACK arrived for packet id TOKEN (paho's receiving thread). */
static void on_delivery_complete(void *ctx, MQTTAsync_token token) {
  publisher *p = ctx;
  pthread_mutex_lock(&p->mu);
  if (p->ack_open && p->ack_token != token)
    push_event_locked(p, PUB_EV_STRAY_ACK, 0, p->ack_token,
                      "a PUBACK for a packet id with no message in flight");
  p->ack_open = token != 0 && token != p->settled_token;
  p->ack_token = token;
  p->settled_token = 0;
  pthread_mutex_unlock(&p->mu);
}

/* --- API (loop thread) ---------------------------------------------------- */

static char *dup_or_null(const char *s) { return s && *s ? strdup(s) : NULL; }

const char *publisher_strerror(int rc) {
  switch (rc) {
    case 0: return "ok";
    case PUB_EDISCONNECTED: return "not connected to the broker";
    case PUB_EFULL: return "too many messages awaiting acknowledgement";
    case PUB_ETOOBIG: return "larger than the broker's maximum packet size";
    case PUB_ENOMEM: return "out of memory";
    default: return "unknown error";
  }
}

/* Free what paho will never call back for (its client is gone). */
static void free_pending(publisher *p) {
  msg_ctx *c = p->pending.next;
  while (c != &p->pending) {
    msg_ctx *next = c->next;
    free(c);
    c = next;
  }
  p->pending.next = p->pending.prev = &p->pending;
}

/* (Re)create paho's client for VERSION. */
static int create_client(publisher *p, int version, char *err, size_t errlen) {
  if (p->created) {
    MQTTAsync_destroy(&p->client);
    p->created = false;
    free_pending(p);
  }
  MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
  co.MQTTVersion = version == 5 ? MQTTVERSION_5 : MQTTVERSION_3_1_1;
  co.sendWhileDisconnected = 0;
  /* paho bounds the commands queued for its sending thread by this even
   * while connected (default 100). The window keeps paho's share small, but
   * site messages and acknowledgements must never be refused behind it. */
  co.maxBufferedMessages = (int)cap_of(p);
  int rc = MQTTAsync_createWithOptions(&p->client, p->url, p->client_id,
                                       MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
  if (rc != MQTTASYNC_SUCCESS) {
    if (err)
      snprintf(err, errlen, "cannot create the MQTT client for %s: %s", p->opt.url,
               MQTTAsync_strerror(rc));
    return -1;
  }
  p->created = true;
  p->client_version = version;
  p->acked = false;
  MQTTAsync_setCallbacks(p->client, p, on_connection_lost, on_message, on_delivery_complete);
  return 0;
}

int publisher_new(publisher **out, const publisher_options *opt, char *err,
                  size_t errlen) {
  publisher *p = calloc(1, sizeof *p);
  if (!p) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  pthread_mutex_init(&p->mu, NULL);
  XQUEUE_INIT(&p->events, pub_event, next, opt->notify, opt->notify_ctx);
  p->pending.next = p->pending.prev = &p->pending;
  p->opt = *opt;
  /* paho names the schemes tcp:// and ssl://. */
  if (strncmp(opt->url, "mqtt://", 7) == 0)
    snprintf(p->url, sizeof p->url, "tcp://%s", opt->url + 7);
  else if (strncmp(opt->url, "mqtts://", 8) == 0)
    snprintf(p->url, sizeof p->url, "ssl://%s", opt->url + 8);
  else
    snprintf(p->url, sizeof p->url, "%s", opt->url);
  p->client_id = strdup(opt->client_id ? opt->client_id : "");
  p->username = dup_or_null(opt->username);
  p->password = dup_or_null(opt->password);
  p->ca = dup_or_null(opt->ca_file);
  p->cert = dup_or_null(opt->cert_file);
  p->key = dup_or_null(opt->key_file);
  p->will_topic = dup_or_null(opt->will_topic);
  p->will_payload = dup_or_null(opt->will_payload);
  p->will_retained = true;
  p->opt.url = p->url;
  p->next_version = opt->version == 4 ? 4 : 5;
  p->lim.retain_available = true;
  if (create_client(p, p->next_version, err, errlen) != 0) {
    publisher_free(p);
    return -1;
  }
  *out = p;
  return 0;
}

/* Start one connection attempt with the options for the next version. */
static int connect_now(publisher *p) {
  int version = p->next_version;
  if ((version != p->client_version || p->acked) && create_client(p, version, NULL, 0) != 0)
    return -1;
  MQTTAsync_connectOptions co;
  if (version == 5) {
    MQTTAsync_connectOptions init5 = MQTTAsync_connectOptions_initializer5;
    co = init5;
    co.cleanstart = 1;
    co.onSuccess5 = on_connect5;
    co.onFailure5 = on_connect_failure5;
  } else {
    MQTTAsync_connectOptions init = MQTTAsync_connectOptions_initializer;
    co = init;
    co.cleansession = 1;
    co.MQTTVersion = MQTTVERSION_3_1_1;
    co.onSuccess = on_connect;
    co.onFailure = on_connect_failure;
  }
  co.keepAliveInterval = p->keepalive_s > 0        ? p->keepalive_s
                         : p->opt.keepalive_s > 0 ? p->opt.keepalive_s
                                                  : 30;
  /* Our window keeps paho's in-flight count within the broker's Receive
   * Maximum; paho's own bound only has to stay out of the way. */
  co.maxInflight = (int)cap_of(p);
  co.connectTimeout = 10;
  co.automaticReconnect = 0; /* paced by the caller: see publisher.h */
  co.context = p;
  co.username = p->username;
  co.password = p->password;
  if (p->will_topic) {
    MQTTAsync_willOptions w = MQTTAsync_willOptions_initializer;
    p->will = w;
    /* co is copied into p->conn below; the will and TLS options it points
     * to live in the publisher too. */
    p->will.topicName = p->will_topic;
    p->will.message = p->will_payload ? p->will_payload : "";
    p->will.retained = p->will_retained;
    p->will.qos = 1;
    co.will = &p->will;
  }
  if (strncmp(p->url, "ssl://", 6) == 0) {
    MQTTAsync_SSLOptions s = MQTTAsync_SSLOptions_initializer;
    p->ssl = s;
    p->ssl.trustStore = p->ca;
    p->ssl.keyStore = p->cert;
    p->ssl.privateKey = p->key;
    p->ssl.enableServerCertAuth = 1;
    p->ssl.verify = 1; /* check the host name too: paho leaves it off */
    co.ssl = &p->ssl;
  }
  p->conn = co;
  pthread_mutex_lock(&p->mu);
  p->connecting = true;
  p->connecting_ns = mono_ns();
  pthread_mutex_unlock(&p->mu);
  int rc = MQTTAsync_connect(p->client, &p->conn);
  if (rc != MQTTASYNC_SUCCESS) {
    pthread_mutex_lock(&p->mu);
    p->connecting = false;
    pthread_mutex_unlock(&p->mu);
    return rc;
  }
  return 0;
}

int publisher_start(publisher *p, char *err, size_t errlen) {
  int rc = connect_now(p);
  if (rc != 0) {
    snprintf(err, errlen, "cannot start connecting to %s: %s", p->opt.url,
             MQTTAsync_strerror(rc));
    return -1;
  }
  return 0;
}

int publisher_reconnect(publisher *p) {
  pthread_mutex_lock(&p->mu);
  bool busy = p->connected || p->connecting;
  pthread_mutex_unlock(&p->mu);
  if (busy || MQTTAsync_isConnected(p->client)) return 0;
  return connect_now(p) == 0 ? 0 : -1;
}

bool publisher_progressing(publisher *p, int64_t grace_ms, char *why, size_t len) {
  int64_t now = mono_ns(), grace = grace_ms * 1000000;
  pthread_mutex_lock(&p->mu);
  bool ok = true;
  /* paho ends an attempt with a success or a failure within its connect
   * timeout. */
  int64_t attempt = (int64_t)p->conn.connectTimeout * 1000000000 + grace;
  if (p->connecting && now - p->connecting_ns > attempt) {
    ok = false;
    snprintf(why, len, "a connection attempt has had no outcome for %lld s",
             (long long)((now - p->connecting_ns) / 1000000000));
  }
  /* On a live connection a message is acknowledged, refused or failed with
   * the connection, which paho's keepalive declares lost when the broker
   * does not answer a ping within the interval. */
  int64_t acked = 2 * (int64_t)p->conn.keepAliveInterval * 1000000000 + grace;
  msg_ctx *c = p->pending.next;
  while (ok && p->connected && !p->dying && c != &p->pending && c->gen != p->gen) c = c->next;
  if (ok && p->connected && !p->dying && c != &p->pending && now - c->sent_ns > acked) {
    ok = false;
    snprintf(why, len, "a message handed to the MQTT client %lld s ago has had no outcome",
             (long long)((now - c->sent_ns) / 1000000000));
  }
  pthread_mutex_unlock(&p->mu);
  return ok;
}

/* Bytes of a variable byte integer. */
static size_t varint_len(size_t n) {
  return n < 128 ? 1 : n < 16384 ? 2 : n < 2097152 ? 3 : 4;
}

size_t publisher_packet_size(publisher *p, const char *topic, size_t len, int qos) {
  /* Topic with its length, the packet identifier, under MQTT 5 an empty
   * property list (one byte), then the payload; then the fixed header. */
  size_t rest = 2 + strlen(topic) + (qos > 0 ? 2 : 0) + (p->client_version == 5 ? 1 : 0) + len;
  return 1 + varint_len(rest) + rest;
}

int publisher_send(publisher *p, const char *topic, const void *payload,
                   size_t len, int qos, bool retained, uint64_t tag) {
  if (!p->created) return PUB_EDISCONNECTED;
  size_t tlen = strlen(topic);
  out_msg *m = malloc(sizeof *m + tlen + 1 + len);
  if (!m) return PUB_ENOMEM;
  m->next = NULL;
  m->tag = tag;
  m->qos = qos;
  m->retained = retained;
  m->len = len;
  memcpy(m->topic, topic, tlen + 1);
  m->payload = m->topic + tlen + 1;
  if (len) memcpy(m->payload, payload, len);
  size_t size = publisher_packet_size(p, topic, len, qos);
  pthread_mutex_lock(&p->mu);
  int rc = 0;
  if (!p->connected || p->dying)
    rc = PUB_EDISCONNECTED;
  else if (p->lim.maximum_packet_size && size > p->lim.maximum_packet_size)
    rc = PUB_ETOOBIG;
  else if (p->nqueued + p->outstanding >= cap_of(p))
    rc = PUB_EFULL;
  if (rc == 0) {
    occ_note(p);
    if (p->q_tail)
      p->q_tail->next = m;
    else
      p->q_head = m;
    p->q_tail = m;
    p->nqueued++;
  }
  pthread_mutex_unlock(&p->mu);
  if (rc != 0) {
    free(m);
    return rc;
  }
  pump(p);
  return 0;
}

bool publisher_is_connected(publisher *p) {
  if (!p->created) return false;
  pthread_mutex_lock(&p->mu);
  bool c = p->connected;
  pthread_mutex_unlock(&p->mu);
  return c && MQTTAsync_isConnected(p->client);
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

size_t publisher_rtt(publisher *p, double *p50_ms, double *p99_ms) {
  int64_t v[RTT_SAMPLES];
  pthread_mutex_lock(&p->mu);
  size_t n = p->nrtt < RTT_SAMPLES ? p->nrtt : RTT_SAMPLES;
  memcpy(v, p->rtt, n * sizeof v[0]);
  pthread_mutex_unlock(&p->mu);
  *p50_ms = *p99_ms = 0;
  if (!n) return 0;
  qsort(v, n, sizeof v[0], cmp_i64);
  *p50_ms = (double)v[n / 2] / 1e6;
  *p99_ms = (double)v[n * 99 / 100] / 1e6;
  return n;
}

void publisher_occupancy(publisher *p, bool restart, double *avg, double *starved) {
  pthread_mutex_lock(&p->mu);
  occ_note(p);
  double span = (double)(p->occ_last_ns - p->occ_since_ns);
  *avg = p->occ_since_ns && span > 0 ? p->occ_area / span : 0;
  *starved = p->occ_since_ns && span > 0 ? (double)p->occ_starved_ns / span : 0;
  if (restart) {
    p->occ_since_ns = p->occ_last_ns;
    p->occ_area = 0;
    p->occ_starved_ns = 0;
  }
  pthread_mutex_unlock(&p->mu);
}

bool publisher_get_limits(publisher *p, pub_limits *out) {
  pthread_mutex_lock(&p->mu);
  bool c = p->connected;
  *out = p->lim;
  pthread_mutex_unlock(&p->mu);
  return c;
}

pub_event *publisher_take_events(publisher *p) {
  pthread_mutex_lock(&p->mu);
  pub_event *ev = xqueue_take(&p->events);
  p->nmessages = 0;
  p->unheard = 0;
  pthread_mutex_unlock(&p->mu);
  return ev;
}

void pub_event_free(pub_event *ev) {
  while (ev) {
    pub_event *next = ev->next;
    free(ev->topic);
    free(ev->payload);
    free(ev);
    ev = next;
  }
}

/* A paho refusal of a request as one of ours: paho refuses one when its
 * client is not connected (or being taken down), so all say that. */
static int pub_code(int rc) { return rc == MQTTASYNC_SUCCESS ? 0 : PUB_EDISCONNECTED; }

int publisher_subscribe(publisher *p, const char *filter) {
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  return pub_code(MQTTAsync_subscribe(p->client, filter, 1, &ro));
}

int publisher_unsubscribe(publisher *p, const char *filter) {
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  return pub_code(MQTTAsync_unsubscribe(p->client, filter, &ro));
}

uint64_t publisher_dropped_messages(publisher *p) {
  pthread_mutex_lock(&p->mu);
  uint64_t n = p->dropped_messages;
  pthread_mutex_unlock(&p->mu);
  return n;
}

void publisher_stop(publisher *p, int timeout_ms) {
  if (!p || !p->created) return;
  if (!publisher_is_connected(p)) return;
  /* What waits for the broker's window goes first (a clean gateway state
   * among it), within the time granted. */
  struct timespec step = {0, 10 * 1000 * 1000};
  int waited = 0;
  for (;;) {
    pthread_mutex_lock(&p->mu);
    bool waiting = p->q_head != NULL && p->connected;
    pthread_mutex_unlock(&p->mu);
    if (!waiting || waited >= timeout_ms) break;
    nanosleep(&step, NULL);
    waited += 10;
  }
  MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
  d.timeout = timeout_ms;
  if (MQTTAsync_disconnect(p->client, &d) != MQTTASYNC_SUCCESS) return;
  /* The disconnect runs on paho's thread: give it the time it was granted to
   * flush what is in flight before the client is destroyed. */
  for (waited = 0; waited < timeout_ms + 100 && MQTTAsync_isConnected(p->client);
       waited += 10)
    nanosleep(&step, NULL);
}

void publisher_free(publisher *p) {
  if (!p) return;
  if (p->created) MQTTAsync_destroy(&p->client);
  /* paho's threads are gone: whatever it never answered is ours to free. */
  free_pending(p);
  free_queue_locked(p);
  pub_event_free(xqueue_take(&p->events));
  xqueue_destroy(&p->events);
  free(p->client_id);
  free(p->username);
  if (p->password) {
    memset(p->password, 0, strlen(p->password));
    free(p->password);
  }
  free(p->ca);
  free(p->cert);
  free(p->key);
  free(p->will_topic);
  free(p->will_payload);
  pthread_mutex_destroy(&p->mu);
  free(p);
}
