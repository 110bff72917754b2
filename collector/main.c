/* intake-collector: gateway daemon for first-level water intake meters. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <signal.h>
#include <stdlib.h>

#include "cfg.h"
#include "cli/cli.h"
#include "gateway/daemon.h"
#include "fleet.h"
#include "fleet/fleetd.h"
#include "base/log.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: intake-collector --config FILE [--log-level LEVEL] [--log-time]\n"
          "       intake-collector --check-config FILE [--profile-dir DIR]\n"
          "       intake-collector read --config FILE [--meter ID]... [--json]\n"
          "       intake-collector report --config FILE --from DATE --to DATE\n"
          "                        [--period day|hour|month|DURATION] [--format json|csv|html]\n"
          "       intake-collector reload --config FILE\n"
          "       intake-collector fleet --config FLEET.yaml [--check-config]\n"
          "       intake-collector uplink-decode HEX...\n"
          "       intake-collector --version\n"
          "\n"
          "  --config FILE        run the daemon: poll, store, publish, until\n"
          "                       SIGTERM or SIGINT; SIGHUP reloads FILE\n"
          "  --log-level LEVEL    error, warn, info (default) or debug\n"
          "  --log-time           stamp log lines (journald stamps them itself)\n"
          "  --check-config FILE  validate a site file and exit: 0 when valid,\n"
          "                       1 with FILE:LINE:COL: message when not\n"
          "  read                 poll meters once and print their values\n"
          "  report               online-rate reports from the database\n"
          "  reload               check FILE and have the running gateway apply it\n"
          "  fleet                the bureau's online rate across gateways\n"
          "  uplink-decode        decode frames of the bureau's monitoring protocol\n");
}

int main(int argc, char **argv) {
  log_guard_std_fds();
  log_detect_journal(); /* under systemd: priorities for journalctl -p */
  if (argc > 1 && strcmp(argv[1], "read") == 0) return cli_read(argc - 1, argv + 1);
  if (argc > 1 && strcmp(argv[1], "report") == 0) return cli_report(argc - 1, argv + 1);
  if (argc > 1 && strcmp(argv[1], "reload") == 0) return cli_reload(argc - 1, argv + 1);
  if (argc > 1 && strcmp(argv[1], "uplink-decode") == 0)
    return cli_uplink_decode(argc - 1, argv + 1);
  if (argc > 1 && strcmp(argv[1], "fleet") == 0) {
    const char *fpath = NULL;
    bool check_only = false;
    for (int i = 2; i < argc; i++) {
      if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
        fpath = argv[++i];
      else if (strcmp(argv[i], "--check-config") == 0)
        check_only = true;
      else {
        fpath = NULL;
        break;
      }
    }
    if (!fpath) {
      fprintf(stderr, "usage: intake-collector fleet --config FLEET.yaml [--check-config]\n");
      return 2;
    }
    char ferr[CFG_ERR_MAX];
    fleet_cfg *fc = NULL;
    if (fleet_cfg_load(fpath, &fc, ferr, sizeof ferr) != 0) {
      fprintf(stderr, "%s\n", ferr);
      return 1;
    }
    if (check_only) {
      printf("%s: ok: fleet %s, %zu registered meters\n", fpath, fc->id, fc->nmembers);
      fleet_cfg_free(fc);
      return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    int frc = fleetd_run(fc);
    fleet_cfg_free(fc);
    return frc;
  }

  const char *check = NULL, *profile_dir = NULL, *config = NULL;
  static const struct option longopts[] = {
      {"config", required_argument, 0, 'c'},
      {"log-level", required_argument, 0, 'l'},
      {"log-time", no_argument, 0, 't'},
      {"check-config", required_argument, 0, 'k'},
      {"profile-dir", required_argument, 0, 'p'},
      {"version", no_argument, 0, 'V'},
      {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "c:Vh", longopts, NULL)) != -1) {
    switch (ch) {
      case 'c': config = optarg; break;
      case 'l': {
        log_level lvl;
        if (log_level_parse(optarg, &lvl) != 0) {
          fprintf(stderr, "intake-collector: unknown log level \"%s\" "
                          "(expected error, warn, info or debug)\n", optarg);
          return 2;
        }
        log_set_level(lvl);
        break;
      }
      case 't': log_set_timestamps(1); break;
      case 'k': check = optarg; break;
      case 'p': profile_dir = optarg; break;
      case 'V': printf("intake-collector %s\n", IC_VERSION); return 0;
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 2;
    }
  }
  if (check && !config && optind == argc) return cli_check_config(check, profile_dir);
  if (config && !check && optind == argc) {
    char err[CFG_ERR_MAX];
    cfg *c = NULL;
    if (cfg_load(config, profile_dir, &c, err, sizeof err) != 0) {
      fprintf(stderr, "%s\n", err);
      return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    return daemon_run(c, profile_dir);
  }
  usage(stderr);
  return 2;
}
