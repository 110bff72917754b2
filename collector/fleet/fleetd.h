/* fleetd: the bureau's view across gateways.
 *
 * Subscribes to every gateway's state topics under the prefix, holds them
 * against the register and publishes the fleet's online rate (overall and
 * per county or district) with the fleet-wide repair list, retained on
 * {prefix}/fleet/{fleet id}/online-rate. A registered meter is online only
 * while its own state says so and its gateway's state is online: a gateway
 * that is down (its Last Will fired) speaks for none of its meters, and a
 * meter never heard of is offline. Meters heard of but not registered are
 * listed apart.
 */
#ifndef IC_FLEETD_H
#define IC_FLEETD_H

#include "fleet.h"

/* Run until SIGTERM or SIGINT; the process exit code. */
int fleetd_run(const fleet_cfg *f);

#endif
