/* `intake-collector reload`: check a site file, then ask the gateway
 * running on its database to read it again (SIGHUP). */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "cli/cli.h"
#include "store/dblock.h"

static void reload_usage(FILE *f) {
  fprintf(f,
          "usage: intake-collector reload --config FILE [--profile-dir DIR]\n"
          "\n"
          "Checks FILE as --check-config does, then tells the gateway that runs\n"
          "on its database (storage.path) to read it again (SIGHUP). The gateway\n"
          "applies what changed and logs one line per change; a file it cannot\n"
          "use is refused there and the running configuration goes on. FILE must\n"
          "be the file the gateway was started with.\n");
}

/* The --config argument of process PID, resolved against its working
 * folder, into OUT; false when it cannot be read. */
static bool daemon_config(long pid, char *out, size_t len) {
  char p[64], args[8192];
  snprintf(p, sizeof p, "/proc/%ld/cmdline", pid);
  FILE *f = fopen(p, "rb");
  if (!f) return false;
  size_t n = fread(args, 1, sizeof args - 1, f);
  fclose(f);
  args[n] = '\0';
  const char *cfgarg = NULL;
  for (size_t i = 0; i < n; i += strlen(args + i) + 1) {
    if (strcmp(args + i, "--config") == 0 && i + strlen(args + i) + 1 < n)
      cfgarg = args + i + strlen(args + i) + 1;
    else if (strncmp(args + i, "--config=", 9) == 0)
      cfgarg = args + i + 9;
  }
  if (!cfgarg) return false;
  char full[PATH_MAX * 2];
  if (cfgarg[0] == '/')
    snprintf(full, sizeof full, "%s", cfgarg);
  else
    snprintf(full, sizeof full, "/proc/%ld/cwd/%s", pid, cfgarg);
  return realpath(full, out) != NULL && strlen(out) < len;
}

int cli_reload(int argc, char **argv) {
  const char *config = NULL, *profile_dir = NULL;
  static const struct option opts[] = {{"config", required_argument, 0, 'c'},
                                       {"profile-dir", required_argument, 0, 'p'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int o;
  optind = 1;
  while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (o) {
    case 'c': config = optarg; break;
    case 'p': profile_dir = optarg; break;
    case 'h': reload_usage(stdout); return 0;
    default: reload_usage(stderr); return 2;
    }
  }
  if (!config || optind != argc) {
    reload_usage(stderr);
    return 2;
  }
  char err[CFG_ERR_MAX];
  cfg *c = NULL;
  if (cfg_load(config, profile_dir, &c, err, sizeof err) != 0) {
    fprintf(stderr, "%s\nnot reloaded: the running configuration is kept\n", err);
    return 1;
  }
  long pid = dblock_holder(c->storage.path, err, sizeof err);
  cfg_free(c);
  if (pid < 0) {
    fprintf(stderr, "intake-collector reload: %s\n", err);
    return 1;
  }
  char mine[PATH_MAX], theirs[PATH_MAX];
  if (realpath(config, mine) && daemon_config(pid, theirs, sizeof theirs) &&
      strcmp(mine, theirs) != 0) {
    fprintf(stderr,
            "intake-collector reload: the gateway on this database (pid %ld) runs on "
            "%s, not %s: it would read its own file\n",
            pid, theirs, mine);
    return 1;
  }
  if (kill((pid_t)pid, SIGHUP) != 0) {
    fprintf(stderr, "intake-collector reload: cannot signal pid %ld: %s\n", pid,
            strerror(errno));
    return 1;
  }
  printf("%s: ok: the gateway (pid %ld) reads it again; its log says what changed\n",
         config, pid);
  return 0;
}
