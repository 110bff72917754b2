/* report_html: a self-contained HTML page of a series of reports.
 *
 * One file, no network: inline CSS and SVG. It shows the online rate per
 * window as a chart with the baseline line, each meter's availability as a
 * strip over the windows, the repair list of the last window and the
 * volumes; labels in Chinese with English beside them. Elements carry
 * classes and data- attributes (rate-point, baseline, avail-cell,
 * repair-row, volume-row) so the page can be checked by machine.
 */
#ifndef IC_REPORT_HTML_H
#define IC_REPORT_HTML_H

#include <stdio.h>

#include <cjson/cJSON.h>

/* Write the page for REPORTS (a JSON array of reports, oldest first). */
void report_html(FILE *f, const cJSON *reports);

#endif
