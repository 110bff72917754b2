#include "publisher.h"

#include <MQTTAsync.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One message awaiting its callback. Kept on a list so that whatever paho
 * never calls back for is still freed at the end. */
typedef struct msg_ctx {
  struct msg_ctx *prev, *next;
  publisher *pub;
  uint64_t tag;
} msg_ctx;

struct publisher {
  MQTTAsync client;
  bool created;
  pthread_mutex_t mu;
  pub_event *ev_head, *ev_tail;
  msg_ctx pending; /* list head */
  publisher_options opt;
  char url[600];
  char *client_id, *username, *password, *ca, *cert, *key, *will_topic,
      *will_payload;
  MQTTAsync_willOptions will;
  MQTTAsync_SSLOptions ssl;
  MQTTAsync_connectOptions conn; /* kept for publisher_reconnect */
  size_t nmessages;   /* PUB_EV_MESSAGE events waiting */
  uint64_t dropped_messages;
};

static void push_event(publisher *p, pub_event_kind kind, uint64_t tag,
                       int reason, const char *detail) {
  size_t dlen = detail ? strnlen(detail, PUB_DETAIL_MAX - 1) : 0;
  pub_event *ev = calloc(1, sizeof *ev + dlen + 1);
  if (!ev) return;
  ev->kind = kind;
  ev->tag = tag;
  ev->reason = reason;
  if (dlen) memcpy(ev->detail, detail, dlen);
  pthread_mutex_lock(&p->mu);
  if (p->ev_tail)
    p->ev_tail->next = ev;
  else
    p->ev_head = ev;
  p->ev_tail = ev;
  pthread_mutex_unlock(&p->mu);
  if (p->opt.notify) p->opt.notify(p->opt.notify_ctx);
}

static void ctx_unlink(publisher *p, msg_ctx *c) {
  pthread_mutex_lock(&p->mu);
  c->prev->next = c->next;
  c->next->prev = c->prev;
  pthread_mutex_unlock(&p->mu);
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
      if (p->ev_tail)
        p->ev_tail->next = ev;
      else
        p->ev_head = ev;
      p->ev_tail = ev;
      pthread_mutex_unlock(&p->mu);
      if (p->opt.notify) p->opt.notify(p->opt.notify_ctx);
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
  push_event(p, PUB_EV_LOST, 0, 0, cause ? cause : "connection lost");
}

static void on_connected(void *ctx, char *cause) {
  publisher *p = ctx;
  (void)cause;
  push_event(p, PUB_EV_CONNECTED, 0, 0, p->url);
}

/* paho cannot tell a refused TCP connection from a failed TLS handshake. */
static const char *tls_hint(const publisher *p) {
  return strncmp(p->url, "ssl://", 6) == 0
             ? "; the broker is unreachable or the TLS handshake failed (check "
               "ca_file, the client certificate and that the host name in the url "
               "matches the broker's certificate)"
             : "";
}

static void on_connect_failure(void *ctx, MQTTAsync_failureData *resp) {
  publisher *p = ctx;
  char d[PUB_DETAIL_MAX];
  /* MQTT 3.1.1 CONNACK codes: 4 bad user name or password, 5 not authorized. */
  int code = resp ? resp->code : 0;
  if (code == 4 || code == 5)
    snprintf(d, sizeof d, "the broker refused the connection: %s (CONNACK %d)",
             code == 4 ? "bad user name or password" : "not authorized", code);
  else
    snprintf(d, sizeof d, "%s (code %d)%s",
             resp && resp->message ? resp->message : "connection failed", code,
             tls_hint(p));
  /* Report refusals like MQTT 5's, with a reason of 0x80 or more. */
  push_event(p, PUB_EV_CONNECT_FAILED, 0, code == 4 ? 0x86 : code == 5 ? 0x87 : code, d);
}

static void on_connect_failure5(void *ctx, MQTTAsync_failureData5 *resp) {
  publisher *p = ctx;
  char d[PUB_DETAIL_MAX];
  /* A broker's refusal arrives as a CONNACK reason code, which paho puts in
   * "code" (the reason field stays 0); say it in words. */
  int reason = resp ? (int)resp->reasonCode : 0;
  if (resp && reason == 0 && resp->code >= 0x80) reason = resp->code;
  if (reason >= 0x80)
    snprintf(d, sizeof d, "the broker refused the connection: %s (0x%02x)",
             MQTTReasonCode_toString((enum MQTTReasonCodes)reason), (unsigned)reason);
  else
    snprintf(d, sizeof d, "%s (code %d)%s",
             resp && resp->message ? resp->message : "connection failed",
             resp ? resp->code : 0, tls_hint(p));
  push_event(p, PUB_EV_CONNECT_FAILED, 0, reason, d);
}

static void on_sent(void *ctx, MQTTAsync_successData *resp) {
  (void)resp;
  msg_ctx *c = ctx;
  publisher *p = c->pub;
  ctx_unlink(p, c);
  push_event(p, PUB_EV_DELIVERED, c->tag, 0, NULL);
  free(c);
}

static void on_sent5(void *ctx, MQTTAsync_successData5 *resp) {
  msg_ctx *c = ctx;
  publisher *p = c->pub;
  ctx_unlink(p, c);
  int rc = resp ? (int)resp->reasonCode : 0;
  if (rc >= 0x80) {
    char d[160];
    snprintf(d, sizeof d, "broker refused the message: %s (0x%02x)",
             MQTTReasonCode_toString((enum MQTTReasonCodes)rc), (unsigned)rc);
    push_event(p, PUB_EV_FAILED, c->tag, rc, d);
  } else {
    push_event(p, PUB_EV_DELIVERED, c->tag, rc, NULL);
  }
  free(c);
}

static void on_send_failure(void *ctx, MQTTAsync_failureData *resp) {
  msg_ctx *c = ctx;
  publisher *p = c->pub;
  ctx_unlink(p, c);
  char d[160];
  snprintf(d, sizeof d, "%s", resp && resp->message ? resp->message : "not delivered");
  push_event(p, PUB_EV_FAILED, c->tag, resp ? resp->code : 0, d);
  free(c);
}

static void on_send_failure5(void *ctx, MQTTAsync_failureData5 *resp) {
  msg_ctx *c = ctx;
  publisher *p = c->pub;
  ctx_unlink(p, c);
  char d[160];
  if (resp && resp->reasonCode >= 0x80)
    snprintf(d, sizeof d, "broker refused the message: %s (0x%02x)",
             MQTTReasonCode_toString(resp->reasonCode), (unsigned)resp->reasonCode);
  else
    snprintf(d, sizeof d, "%s", resp && resp->message ? resp->message : "not delivered");
  push_event(p, PUB_EV_FAILED, c->tag, resp ? (int)resp->reasonCode : 0, d);
  free(c);
}

/* --- API (loop thread) ---------------------------------------------------- */

static char *dup_or_null(const char *s) { return s && *s ? strdup(s) : NULL; }

int publisher_new(publisher **out, const publisher_options *opt, char *err,
                  size_t errlen) {
  publisher *p = calloc(1, sizeof *p);
  if (!p) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  pthread_mutex_init(&p->mu, NULL);
  p->pending.next = p->pending.prev = &p->pending;
  p->opt = *opt;
  /* paho names the schemes tcp:// and ssl://. */
  if (strncmp(opt->url, "mqtt://", 7) == 0)
    snprintf(p->url, sizeof p->url, "tcp://%s", opt->url + 7);
  else if (strncmp(opt->url, "mqtts://", 8) == 0)
    snprintf(p->url, sizeof p->url, "ssl://%s", opt->url + 8);
  else
    snprintf(p->url, sizeof p->url, "%s", opt->url);
  p->client_id = strdup(opt->client_id);
  p->username = dup_or_null(opt->username);
  p->password = dup_or_null(opt->password);
  p->ca = dup_or_null(opt->ca_file);
  p->cert = dup_or_null(opt->cert_file);
  p->key = dup_or_null(opt->key_file);
  p->will_topic = dup_or_null(opt->will_topic);
  p->will_payload = dup_or_null(opt->will_payload);
  p->opt.url = p->url;

  MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
  if (opt->version == 5) co.MQTTVersion = MQTTVERSION_5;
  else co.MQTTVersion = MQTTVERSION_3_1_1;
  co.sendWhileDisconnected = 0;
  /* paho bounds the messages queued for its sending thread by this even
   * while connected (default 100): a burst of committed readings would have
   * site messages refused behind it. Allow the whole in-flight window. */
  co.maxBufferedMessages = opt->max_inflight > 0 ? opt->max_inflight : 1024;
  int rc = MQTTAsync_createWithOptions(&p->client, p->url, p->client_id,
                                       MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
  if (rc != MQTTASYNC_SUCCESS) {
    snprintf(err, errlen, "cannot create the MQTT client for %s: %s", opt->url,
             MQTTAsync_strerror(rc));
    publisher_free(p);
    return -1;
  }
  p->created = true;
  MQTTAsync_setCallbacks(p->client, p, on_connection_lost, on_message, NULL);
  MQTTAsync_setConnected(p->client, p, on_connected);
  *out = p;
  return 0;
}

int publisher_start(publisher *p, char *err, size_t errlen) {
  MQTTAsync_connectOptions co;
  if (p->opt.version == 5) {
    MQTTAsync_connectOptions init5 = MQTTAsync_connectOptions_initializer5;
    co = init5;
    co.cleanstart = 1;
    co.onFailure5 = on_connect_failure5;
  } else {
    MQTTAsync_connectOptions init = MQTTAsync_connectOptions_initializer;
    co = init;
    co.cleansession = 1;
    co.MQTTVersion = MQTTVERSION_3_1_1;
    co.onFailure = on_connect_failure;
  }
  co.keepAliveInterval = p->opt.keepalive_s > 0 ? p->opt.keepalive_s : 30;
  co.maxInflight = p->opt.max_inflight > 0 ? p->opt.max_inflight : 1024;
  co.connectTimeout = 10;
  co.automaticReconnect = 1;
  co.minRetryInterval = 1;
  co.maxRetryInterval = 30;
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
    p->will.retained = 1;
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
  int rc = MQTTAsync_connect(p->client, &p->conn);
  if (rc != MQTTASYNC_SUCCESS) {
    snprintf(err, errlen, "cannot start connecting to %s: %s", p->opt.url,
             MQTTAsync_strerror(rc));
    return -1;
  }
  return 0;
}

int publisher_reconnect(publisher *p) {
  if (!p->created || MQTTAsync_isConnected(p->client)) return 0;
  return MQTTAsync_connect(p->client, &p->conn) == MQTTASYNC_SUCCESS ? 0 : -1;
}

int publisher_send(publisher *p, const char *topic, const void *payload,
                   size_t len, int qos, bool retained, uint64_t tag) {
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  msg_ctx *c = NULL;
  if (tag) {
    c = calloc(1, sizeof *c);
    if (!c) return MQTTASYNC_FAILURE;
    c->pub = p;
    c->tag = tag;
    pthread_mutex_lock(&p->mu);
    c->next = p->pending.next;
    c->prev = &p->pending;
    p->pending.next->prev = c;
    p->pending.next = c;
    pthread_mutex_unlock(&p->mu);
    ro.context = c;
    if (p->opt.version == 5) {
      ro.onSuccess5 = on_sent5;
      ro.onFailure5 = on_send_failure5;
    } else {
      ro.onSuccess = on_sent;
      ro.onFailure = on_send_failure;
    }
  }
  MQTTAsync_message m = MQTTAsync_message_initializer;
  m.payload = (void *)payload;
  m.payloadlen = (int)len;
  m.qos = qos;
  m.retained = retained;
  int rc = MQTTAsync_sendMessage(p->client, topic, &m, &ro);
  if (rc != MQTTASYNC_SUCCESS && c) {
    ctx_unlink(p, c);
    free(c);
  }
  return rc == MQTTASYNC_SUCCESS ? 0 : (rc < 0 ? rc : -rc);
}

bool publisher_is_connected(publisher *p) {
  return p->created && MQTTAsync_isConnected(p->client);
}

pub_event *publisher_take_events(publisher *p) {
  pthread_mutex_lock(&p->mu);
  pub_event *ev = p->ev_head;
  p->ev_head = p->ev_tail = NULL;
  p->nmessages = 0;
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

int publisher_subscribe(publisher *p, const char *filter) {
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  int rc = MQTTAsync_subscribe(p->client, filter, 1, &ro);
  return rc == MQTTASYNC_SUCCESS ? 0 : -1;
}

uint64_t publisher_dropped_messages(publisher *p) {
  pthread_mutex_lock(&p->mu);
  uint64_t n = p->dropped_messages;
  pthread_mutex_unlock(&p->mu);
  return n;
}

void publisher_stop(publisher *p, int timeout_ms) {
  if (!p || !p->created) return;
  if (!MQTTAsync_isConnected(p->client)) return;
  MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
  d.timeout = timeout_ms;
  if (MQTTAsync_disconnect(p->client, &d) != MQTTASYNC_SUCCESS) return;
  /* The disconnect runs on paho's thread: give it the time it was granted to
   * flush what is in flight (a clean gateway state among it) before the
   * client is destroyed. */
  struct timespec step = {0, 10 * 1000 * 1000};
  for (int waited = 0; waited < timeout_ms + 100 && MQTTAsync_isConnected(p->client);
       waited += 10)
    nanosleep(&step, NULL);
}

void publisher_free(publisher *p) {
  if (!p) return;
  if (p->created) MQTTAsync_destroy(&p->client);
  /* paho's threads are gone: whatever it never answered is ours to free. */
  msg_ctx *c = p->pending.next;
  while (c != &p->pending) {
    msg_ctx *next = c->next;
    free(c);
    c = next;
  }
  pub_event_free(p->ev_head);
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
