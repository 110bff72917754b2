/* intake-collector: gateway daemon for first-level water intake meters. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: intake-collector --check-config FILE [--profile-dir DIR]\n"
          "       intake-collector read --config FILE [--meter ID]... [--json]\n"
          "       intake-collector --version\n"
          "\n"

          "  --check-config FILE  validate a site file and exit: 0 when valid,\n"
          "                       1 with FILE:LINE:COL: message when not\n"
          "  read                 poll meters once and print their values\n");
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "read") == 0) return cli_read(argc - 1, argv + 1);

  const char *check = NULL, *profile_dir = NULL;
  static const struct option longopts[] = {
      {"check-config", required_argument, 0, 'k'},
      {"profile-dir", required_argument, 0, 'p'},
      {"version", no_argument, 0, 'V'},
      {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "Vh", longopts, NULL)) != -1) {
    switch (ch) {
      case 'k': check = optarg; break;
      case 'p': profile_dir = optarg; break;
      case 'V': printf("intake-collector %s\n", IC_VERSION); return 0;
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 2;
    }
  }
  if (check && optind == argc) return cli_check_config(check, profile_dir);
  usage(stderr);
  return 2;
}
