/* fleet: the bureau's register of first-level intake meters.
 *
 * `intake-collector fleet --config FLEET.yaml` holds what every gateway
 * publishes against this register. The file names the broker to read, the
 * baseline, and for each registered meter its site (the gateway's site id),
 * meter id, name and county or district. Errors are "FILE:LINE:COL: message"
 * like the site file's. See docs/fleet.md.
 */
#ifndef IC_FLEET_H
#define IC_FLEET_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"

typedef struct {
  char site[CFG_ID_MAX];
  char meter[CFG_ID_MAX];
  char name[CFG_NAME_MAX];
  char county[CFG_NAME_MAX];
} fleet_member;

typedef struct {
  char path[CFG_PATH_MAX];
  char id[CFG_ID_MAX];
  char name[CFG_NAME_MAX];
  struct {
    char url[512];
    char client_id[CFG_ID_MAX * 2]; /* default "fleet-<id>" */
    char topic_prefix[CFG_ID_MAX];  /* default "water" */
    int version;                    /* 0 auto, 5, or 4 (3.1.1) */
  } mqtt;
  char timezone[64];      /* default Asia/Shanghai: windows are local */
  size_t nperiods;        /* report periods, as for a gateway; default none */
  char periods[CFG_PERIODS_MAX][CFG_PERIOD_NAME_MAX];
  double baseline;        /* default CFG_DEFAULT_BASELINE */
  char storage_path[CFG_PATH_MAX]; /* SQLite outbox of reports to push */
  char push_url[512];              /* "" no push */
  char ca_file[CFG_PATH_MAX];
  char token_file[CFG_PATH_MAX];
  int64_t push_timeout_ms;         /* default 30s */
  int64_t report_grace_ms; /* default 1h: late gateway reports still count */
  size_t nmembers;
  fleet_member *members;
} fleet_cfg;

/* Load FILE. 0, or -1 with "FILE:LINE:COL: message" in err. */
int fleet_cfg_load(const char *path, fleet_cfg **out, char *err, size_t errlen);
void fleet_cfg_free(fleet_cfg *f);

#endif
