/* ic-httpsink: a small HTTP server standing in for the bureau in tests.
 *
 *   ic-httpsink PORT DIR
 *
 * Listens on 127.0.0.1:PORT and prints "ready" when it does. Each POST gets
 * one answer and the connection is closed: while the file DIR/refuse exists
 * the answer is 503 and nothing is kept; otherwise the body is written to
 * DIR/req-NNNNNN.json, the Authorization header to DIR/req-NNNNNN.auth, and
 * the answer is 200. Requests are bounded (16 KiB of headers, 4 MiB of body);
 * anything else gets 400. SIGTERM ends it. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define HDR_MAX 16384
#define BODY_MAX (4 * 1024 * 1024)

static volatile sig_atomic_t stop;
static void on_term(int s) { (void)s; stop = 1; }

static void answer(int fd, int code, const char *text) {
  char buf[256];
  int n = snprintf(buf, sizeof buf,
                   "HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                   code, text);
  ssize_t w = write(fd, buf, (size_t)n);
  (void)w;
}

static const char *header(const char *hdrs, const char *name, char *out, size_t len) {
  size_t nl = strlen(name);
  for (const char *p = hdrs; (p = strstr(p, "\r\n")) != NULL;) {
    p += 2;
    if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
      const char *v = p + nl + 1;
      while (*v == ' ') v++;
      size_t n = strcspn(v, "\r\n");
      if (n >= len) n = len - 1;
      memcpy(out, v, n);
      out[n] = '\0';
      return out;
    }
  }
  return NULL;
}

static void serve(int fd, const char *dir, unsigned *count) {
  char *buf = malloc(HDR_MAX + 1);
  if (!buf) return;
  size_t have = 0;
  char *end = NULL;
  while (have < HDR_MAX) {
    ssize_t r = read(fd, buf + have, HDR_MAX - have);
    if (r <= 0) goto done;
    have += (size_t)r;
    buf[have] = '\0';
    if ((end = strstr(buf, "\r\n\r\n")) != NULL) break;
  }
  if (!end) {
    answer(fd, 400, "Bad Request");
    goto done;
  }
  char v[512];
  long clen = header(buf, "Content-Length", v, sizeof v) ? atol(v) : -1;
  if (strncmp(buf, "POST ", 5) != 0 || clen < 0 || clen > BODY_MAX) {
    answer(fd, 400, "Bad Request");
    goto done;
  }
  size_t hlen = (size_t)(end - buf) + 4;
  char *body = malloc((size_t)clen + 1);
  if (!body) goto done;
  size_t got = have - hlen;
  if (got > (size_t)clen) got = (size_t)clen;
  memcpy(body, buf + hlen, got);
  while (got < (size_t)clen) {
    ssize_t r = read(fd, body + got, (size_t)clen - got);
    if (r <= 0) {
      free(body);
      goto done;
    }
    got += (size_t)r;
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/refuse", dir);
  if (access(path, F_OK) == 0) {
    answer(fd, 503, "Service Unavailable");
    free(body);
    goto done;
  }
  ++*count;
  snprintf(path, sizeof path, "%s/req-%06u.auth", dir, *count);
  FILE *f = fopen(path, "w");
  if (f) {
    fprintf(f, "%s\n", header(buf, "Authorization", v, sizeof v) ? v : "");
    fclose(f);
  }
  snprintf(path, sizeof path, "%s/req-%06u.json", dir, *count);
  f = fopen(path, "w");
  if (f) {
    fwrite(body, 1, (size_t)clen, f);
    fclose(f);
  }
  free(body);
  answer(fd, 200, "OK");
done:
  free(buf);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: ic-httpsink PORT DIR\n");
    return 2;
  }
  struct sigaction sa = {.sa_handler = on_term};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 16) != 0) {
    perror("ic-httpsink");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  unsigned count = 0;
  while (!stop) {
    int c = accept(s, NULL, NULL);
    if (c < 0) {
      if (errno == EINTR) continue;
      break;
    }
    struct timeval tv = {5, 0};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    serve(c, argv[2], &count);
    close(c);
  }
  close(s);
  return 0;
}
