/* cli: the collector's one-shot commands (everything but the daemon). */
#ifndef IC_CLI_H
#define IC_CLI_H

/* intake-collector --check-config FILE: 0 when valid, 1 with
 * "FILE:LINE:COL: message" on stderr otherwise. */
int cli_check_config(const char *path, const char *profile_dir);

/* intake-collector read --config FILE [--meter ID]... [--json]: poll meters
 * once and print their decoded fields. 0 when every meter answered. */
int cli_read(int argc, char **argv);

/* intake-collector report --config FILE --from DATE --to DATE [--period P]
 * [--format json|csv]: online-rate reports from the database. */
int cli_report(int argc, char **argv);

/* `intake-collector reload --config FILE`: check FILE, then SIGHUP the
 * gateway running on its database. */
int cli_reload(int argc, char **argv);

/* intake-collector uplink-decode HEX...: frames of the bureau's monitoring
 * protocol decoded, one JSON object a line. 0 when every frame is whole, 1
 * when one is not, 2 for text that is not hexadecimal. */
int cli_uplink_decode(int argc, char **argv);

#endif
