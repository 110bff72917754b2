/* uplink: the `uplink:` section of the site configuration (the bureau's
 * monitoring centre, docs/uplink.md), read by cfg_load once the meters are. */
#ifndef IC_CFG_UPLINK_H
#define IC_CFG_UPLINK_H

#include <stddef.h>

#include "cfg.h"
#include "ydoc.h"

/* Parse ROOT's uplink section, if any, into C->uplink: 0, or -1 with
 * "FILE:LINE:COL: message" in ERR. The meters must be parsed already. */
int cfg_uplink_parse(const ydoc *d, const ydoc_node *root, cfg *c, char *err,
                     size_t errlen);

/* Free what cfg_uplink_parse allocated; a no-op when nothing was. */
void cfg_uplink_free(cfg_uplink *u);

#endif
