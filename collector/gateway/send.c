/* A reading as an MQTT message, its sequence reservation announced first. */
#include "gateway/gw_impl.h"

/* A reading's message: in BUF (LEN bytes) when it fits, which it does for
 * all but profiles of many fields, else in a heap block left in *HEAP. */
static int reading_message(const store_reading *r, int64_t seq, bool historical, char *buf,
                           size_t len, char **heap, const char **out) {
  *heap = NULL;
  *out = buf;
  /* ts, seq, quality and the flags take well under 256 bytes. */
  size_t need = strlen(r->fields) + 256;
  if (need > len) {
    if (!(*heap = malloc(need))) return -1;
    *out = buf = *heap;
    len = need;
  }
  return reading_payload(buf, len, r->ts_ms, seq, r->fields, r->quality != 0, historical,
                         r->clock_step_ms);
}

/* Announce meter M's reservation (retained) before a reading numbered
 * within it goes out on this connection: the broker then knows every number
 * published, also after the database is replaced by an older copy. */
static int announce_seq(gw *d, meter_rt *m, int64_t reserved) {
  char body[128], ts[CLOCK_RFC3339_LEN + 8];
  int n = snprintf(body, sizeof body, "{\"reserved\":%lld,\"ts\":\"%s\"}",
                   (long long)reserved, clock_format_rfc3339(clock_wall_ms(), ts, sizeof ts));
  int rc = publisher_send(d->pub, m->topic_seq, body, (size_t)n, 1, true,
                          make_tag(0, (int)m->key));
  if (rc == 0) m->seq_announced = reserved;
  return rc;
}

/* Send reading R as the message PAYLOAD (N bytes, or N < 0: it could not be
 * written). */
static send_result send_reading_text(gw *d, const store_reading *r, const char *payload,
                                     int n) {
  if (n < 0) {
    log_warn("reading %lld of meter %s cannot be written as a message; left in the "
             "outbox", (long long)r->id, r->meter);
    return SEND_NEVER;
  }
  char topic[256];
  const char *t = topic;
  meter_rt *m = gw__meter_by_key(d, r->meter_index);
  if (!m) {
    /* Read back from the database, or taken before a reload: by its id. */
    int ci = cfg_meter_index(d->cfg, r->meter);
    if (ci >= 0) m = d->meters[ci];
  }
  if (m && m->refused) return SEND_LATER;
  if (m && r->seq > m->seq_announced && d->lim.retain_available) {
    int64_t h = m->seq_reserved;
    if (r->seq_reserved > h) h = r->seq_reserved;
    if (r->seq > h) h = r->seq; /* not expected: the store reserves first */
    if (announce_seq(d, m, h) != 0) return SEND_LATER;
  }
  if (m) {
    t = m->topic_reading;
  } else {
    snprintf(topic, sizeof topic, "%s/%s/%s/reading", d->cfg->mqtt.topic_prefix,
             d->cfg->site.id, r->meter);
  }
  int rc = publisher_send(d->pub, t, payload, (size_t)n, 1, false,
                          make_tag(r->id, m ? (int)m->key : -1));
  if (rc == PUB_ETOOBIG) {
    /* Kept in the outbox: a broker with a larger limit takes it later. */
    d->too_large++;
    if (m)
      log_once(&m->too_big_told, LOGL_WARN,
               "mqtt: a reading of meter %s is %d bytes, larger than the broker "
               "takes (Maximum Packet Size %u): such readings stay in the outbox",
               r->meter, n, (unsigned)d->lim.maximum_packet_size);
    return SEND_NEVER;
  }
  if (rc != 0) return SEND_LATER;
  d->inflight++;
  d->published++;
  if (r->historical) d->historical++;
  return SEND_OK;
}

send_result gw__send_reading(gw *d, const store_reading *r) {
  char buf[4096], *heap;
  const char *payload;
  int n = reading_message(r, r->seq, r->historical, buf, sizeof buf, &heap, &payload);
  send_result res = send_reading_text(d, r, payload, n);
  free(heap);
  return res;
}

/* Send a reading the database could not take: no sequence number, marked
 * unstored, not counted in flight (its delivery marks no row). */
void gw__send_unstored(gw *d, const store_reading *r) {
  char buf[4096], *heap;
  const char *payload;
  int n = reading_message(r, 0, false, buf, sizeof buf, &heap, &payload);
  meter_rt *m = gw__meter_by_key(d, r->meter_index);
  if (n >= 0 && m && !m->refused &&
      publisher_send(d->pub, m->topic_reading, payload, (size_t)n, 1, false,
                     make_tag(0, (int)m->key)) == 0) {
    d->published++;
    d->unstored++;
  }
  free(heap);
}
