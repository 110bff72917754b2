/* A small HTTP/1.1 responder on a libuv loop, for the metrics endpoint: GET
 * (and HEAD) requests answered from a handler, one request a connection
 * (Connection: close). Bounded: at most HTTPD_MAX_CONNS connections, a
 * request head of at most HTTPD_MAX_HEAD bytes (431 otherwise),
 * HTTPD_TIMEOUT_MS for a connection from accept to its answer. When every
 * slot is taken, a new connection takes the slot of the oldest one still
 * without its request, if that one has had HTTPD_GRACE_MS to send it; else
 * the new one is on probation: it has HTTPD_PROBATION_MS to send its whole
 * request, and at most HTTPD_MAX_PROBATION are on probation at a time (a
 * newer one closes the oldest). So connections that hold slots without
 * asking (slowloris, a stream of new connections) cannot lock out a
 * scraper: a client that asks at once is answered, also when its request
 * comes a moment after its connection is accepted. Runs on the loop's
 * thread only. */
#ifndef IC_HTTP_H
#define IC_HTTP_H

#include <stddef.h>
#include <uv.h>

#include "metrics/metrics.h"

#define HTTPD_MAX_CONNS 64
#define HTTPD_MAX_HEAD 8192
#define HTTPD_TIMEOUT_MS 5000
#define HTTPD_GRACE_MS 200
#define HTTPD_MAX_PROBATION 64
#define HTTPD_PROBATION_MS 50

/* The handler's answer for PATH (without its query): the status (200, 404),
 * the body into BODY and its content type into *CTYPE. */
typedef int (*httpd_handler)(void *ctx, const char *path, mtext *body, const char **ctype);

typedef struct httpd httpd;

/* Listen on HOST (an IPv4 or IPv6 literal) and PORT. 0, or -1 with ERR. */
int httpd_start(httpd **out, uv_loop_t *loop, const char *host, int port,
                httpd_handler handler, void *ctx, char *err, size_t errlen);

/* Connections open now (those on probation included), those closed on
 * probation without a request so far, and those closed to make room for a
 * newer one. */
size_t httpd_connections(const httpd *h);
unsigned long long httpd_refused(const httpd *h);
unsigned long long httpd_evicted(const httpd *h);

/* Close the listener and every connection; the memory goes when libuv has
 * closed them (the loop must run). NULL is a no-op. */
void httpd_close(httpd *h);

#endif
