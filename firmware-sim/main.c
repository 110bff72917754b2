/* intake-sim: simulated intake flow meters for tests, demos and benches. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "cfg.h"
#include "base/log.h"
#include "sim.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: intake-sim --config FILE [options]\n"
          "       intake-sim --check-config FILE\n"
          "       intake-sim ctl (--config FILE | --socket PATH) COMMAND...\n"
          "\n"
          "Serves every meter of a site file: Modbus TCP for tcp buses, a\n"
          "pseudo-terminal linked at the device path for rtu buses, RTU framing\n"
          "over TCP for rtu-over-tcp buses; for rtu-dtu buses a DTU that dials\n"
          "its DTU server. Prints one \"ready\" line when all of them listen.\n"
          "\n"
          "options:\n"
          "  -c, --config FILE       the site file (its meters and buses)\n"
          "      --check-config FILE validate FILE and exit\n"
          "      --profile-dir DIR   built-in profiles folder\n"
          "      --control PATH      control socket (default: sim.control)\n"
          "      --no-wire-time      never emulate serial wire time\n"
          "      --dtu-source ADDR   rtu-dtu buses' DTUs dial from this address\n"
          "  -v, --verbose           log every bad frame\n"
          "  -V, --version           print the version\n"
          "\n"
          "control commands (intake-sim ctl ... COMMAND):\n"
          "  fault METER none|offline|flaky|slow|crc|exception|garbage|reset\n"
          "  pin METER FIELD VALUE   pin a field; unpin METER FIELD\n"
          "  status                  one line per meter\n"
          "  dtu BUS status|drop|reconnect|off|on|garbage|heartbeat|inside on|off\n"
          "                          an rtu-dtu bus's DTU: its link, dropped, a new\n"
          "                          one with the old left half-open, kept off or\n"
          "                          let dial, noise or a heartbeat sent, answers cut\n"
          "                          by a heartbeat\n");
}

static void close_signal(uv_handle_t *h, void *arg) {
  (void)arg;
  if (h->type == UV_SIGNAL && !uv_is_closing(h)) uv_close(h, NULL);
}

/* Close every server and both signal watchers, so the loop runs out. */
static void on_signal(uv_signal_t *h, int signum) {
  sim *s = h->data;
  log_info("signal %d: stopping", signum);
  sim_stop(s);
  uv_walk(h->loop, close_signal, NULL);
}

/* The longest control reply ctl reads. */
#define CTL_REPLY_LIMIT (64u * 1024 * 1024)

/* A reply succeeds only when its last line starts with "ok": a cut reply, or
 * one that ends in an error, does not. */
static bool reply_ok(const char *reply) {
  size_t len = strlen(reply);
  if (len == 0 || reply[len - 1] != '\n') return false;
  size_t start = len - 1;
  while (start > 0 && reply[start - 1] != '\n') start--;
  return strncmp(reply + start, "ok", 2) == 0 &&
         (reply[start + 2] == ' ' || reply[start + 2] == '\n');
}

/* One command over the control socket; prints the reply. Exits 0 only when
 * the reply ends in an "ok" line. */
static int run_ctl(const char *path, int argc, char **argv) {
  char line[512];
  size_t used = 0;
  for (int i = 0; i < argc; i++) {
    int w = snprintf(line + used, sizeof line - used, "%s%s", i ? " " : "",
                     argv[i]);
    if (w < 0 || (size_t)w >= sizeof line - used) {
      fprintf(stderr, "intake-sim ctl: command too long\n");
      return 2;
    }
    used += (size_t)w;
  }
  if (used + 1 >= sizeof line) return 2;
  line[used++] = '\n';
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path) {
    fprintf(stderr, "intake-sim ctl: socket path too long: %s\n", path);
    return 2;
  }
  strcpy(sa.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    fprintf(stderr, "intake-sim ctl: cannot connect to %s: %m\n", path);
    if (fd >= 0) close(fd);
    return 1;
  }
  if (write(fd, line, used) != (ssize_t)used) {
    fprintf(stderr, "intake-sim ctl: write: %m\n");
    close(fd);
    return 1;
  }
  /* The reply grows with the site (status is a line per meter); read it
   * whole, up to a bound no real site comes near. */
  size_t cap = 8192, got = 0;
  char *reply = malloc(cap);
  if (!reply) {
    close(fd);
    return 1;
  }
  for (;;) {
    if (got == cap - 1) {
      if (cap >= CTL_REPLY_LIMIT) break;
      char *bigger = realloc(reply, cap * 2);
      if (!bigger) break;
      reply = bigger;
      cap *= 2;
    }
    ssize_t r = read(fd, reply + got, cap - 1 - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  close(fd);
  reply[got] = '\0';
  fputs(reply, stdout);
  int rc = reply_ok(reply) ? 0 : 1;
  if (rc != 0 && got == 0)
    fprintf(stderr, "intake-sim ctl: no reply from %s\n", path);
  free(reply);
  return rc;
}

int main(int argc, char **argv) {
  log_guard_std_fds();
  log_detect_journal(); /* under systemd: priorities for journalctl -p */
  const char *config = NULL, *check = NULL, *profile_dir = NULL;
  const char *socket_path = NULL;
  sim_options opt = {0};
  bool ctl = false;
  if (argc > 1 && strcmp(argv[1], "ctl") == 0) {
    ctl = true;
    argv++;
    argc--;
  }
  static const struct option longopts[] = {
      {"config", required_argument, 0, 'c'},
      {"check-config", required_argument, 0, 'k'},
      {"profile-dir", required_argument, 0, 'p'},
      {"control", required_argument, 0, 'C'},
      {"socket", required_argument, 0, 's'},
      {"no-wire-time", no_argument, 0, 'w'},
      {"dtu-source", required_argument, 0, 'D'},
      {"verbose", no_argument, 0, 'v'},
      {"version", no_argument, 0, 'V'},
      {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  int ch;
  /* "+" stops at the first non-option, so ctl's command keeps its words. */
  while ((ch = getopt_long(argc, argv, "+c:vVh", longopts, NULL)) != -1) {
    switch (ch) {
      case 'c': config = optarg; break;
      case 'k': check = optarg; break;
      case 'p': profile_dir = optarg; break;
      case 'C': opt.control_path = optarg; break;
      case 's': socket_path = optarg; break;
      case 'w': opt.no_wire_time = true; break;
      case 'D': opt.dtu_source = optarg; break;
      case 'v': log_set_level(LOGL_DEBUG); break;
      case 'V': printf("intake-sim %s\n", IC_VERSION); return 0;
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 2;
    }
  }

  char err[CFG_ERR_MAX];
  cfg *c = NULL;
  if (ctl) {
    if (optind >= argc || (!config && !socket_path)) {
      usage(stderr);
      return 2;
    }
    if (!socket_path) {
      if (cfg_load(config, profile_dir, &c, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
      }
      if (!c->sim.control[0]) {
        fprintf(stderr, "intake-sim ctl: %s sets no sim.control socket\n", config);
        cfg_free(c);
        return 2;
      }
      socket_path = c->sim.control;
    }
    int rc = run_ctl(socket_path, argc - optind, argv + optind);
    cfg_free(c);
    return rc;
  }
  if (check) {
    if (cfg_load(check, profile_dir, &c, err, sizeof err) != 0) {
      fprintf(stderr, "%s\n", err);
      return 1;
    }
    printf("%s: ok (%zu meters on %zu buses)\n", check, c->nmeters, c->nbuses);
    cfg_free(c);
    return 0;
  }
  if (!config || optind != argc) {
    usage(stderr);
    return 2;
  }
  if (cfg_load(config, profile_dir, &c, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);

  uv_loop_t loop;
  uv_loop_init(&loop);
  sim *s = NULL;
  if (sim_start(&s, c, &loop, &opt, err, sizeof err) != 0) {
    log_error("%s", err);
    uv_loop_close(&loop);
    cfg_free(c);
    return 1;
  }
  uv_signal_t sigterm, sigint;
  uv_signal_init(&loop, &sigterm);
  uv_signal_init(&loop, &sigint);
  sigterm.data = sigint.data = s;
  uv_signal_start(&sigterm, on_signal, SIGTERM);
  uv_signal_start(&sigint, on_signal, SIGINT);

  char desc[2048];
  sim_describe(s, desc, sizeof desc);
  log_info("serving %s", desc);
  printf("ready: %zu meters\n", c->nmeters);
  fflush(stdout);

  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  sim_free(s);
  cfg_free(c);
  return 0;
}
