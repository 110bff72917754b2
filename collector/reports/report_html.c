#include "reports/report_html.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "cfg.h"

static void esc(FILE *f, const char *s) {
  for (; s && *s; s++) {
    switch (*s) {
      case '<': fputs("&lt;", f); break;
      case '>': fputs("&gt;", f); break;
      case '&': fputs("&amp;", f); break;
      case '"': fputs("&quot;", f); break;
      default: fputc(*s, f);
    }
  }
}

static const char *str(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsString(v) ? v->valuestring : "";
}

static double num(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* Colour of an availability cell: red (0) through amber to green (1). */
static void avail_colour(double a, char *buf, size_t len) {
  if (isnan(a)) {
    snprintf(buf, len, "#dddddd");
    return;
  }
  int r = a < 0.5 ? 214 : (int)(214 - (a - 0.5) * 2 * (214 - 44));
  int g = a < 0.5 ? (int)(39 + a * 2 * (160 - 39)) : 160;
  int b = a < 0.5 ? 40 : 44;
  snprintf(buf, len, "#%02x%02x%02x", r, g, b);
}

void report_html(FILE *f, const cJSON *reports) {
  int n = cJSON_GetArraySize(reports);
  const cJSON *first = cJSON_GetArrayItem(reports, 0);
  const cJSON *last = cJSON_GetArrayItem(reports, n - 1);
  const cJSON *site = cJSON_GetObjectItemCaseSensitive(first, "site");
  double baseline = first ? num(first, "baseline") : CFG_DEFAULT_BASELINE;
  if (isnan(baseline)) baseline = CFG_DEFAULT_BASELINE;

  fputs("<!DOCTYPE html>\n<html lang=\"zh-CN\">\n<head>\n<meta charset=\"utf-8\">\n", f);
  fputs("<title>取水口计量在线率报告 Online-rate report — ", f);
  esc(f, str(site, "name"));
  fputs("</title>\n<style>\n"
        "body{font-family:'Noto Sans CJK SC','Noto Sans',sans-serif;margin:24px;color:#222}\n"
        "h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:24px 0 8px}\n"
        ".en{color:#666;font-weight:normal}\n"
        "table{border-collapse:collapse;font-size:13px}\n"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}\n"
        "th{background:#f3f3f3}.bad{color:#b00020}.ok{color:#1b7a2b}\n"
        "</style>\n</head>\n<body>\n", f);
  fputs("<h1>取水口计量在线率报告 <span class=\"en\">Intake metering online-rate report</span></h1>\n", f);
  fputs("<p id=\"site\">", f);
  esc(f, str(site, "name"));
  fputs(" (", f);
  esc(f, str(site, "id"));
  fputs(") · 周期 <span class=\"en\">period</span> ", f);
  esc(f, first ? str(first, "period") : "");
  if (n > 0) {
    fputs(" · ", f);
    esc(f, str(cJSON_GetObjectItemCaseSensitive(first, "window"), "start"));
    fputs(" — ", f);
    const cJSON *lw = cJSON_GetObjectItemCaseSensitive(last, "window");
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(lw, "partial"))) {
      /* The last window is in progress: say how far it was measured. */
      esc(f, str(lw, "measured_to"));
      fputs(" (最后一个窗口进行中 <span class=\"en\" id=\"partial\">last window in progress, "
            "measured to now</span>)",
            f);
    } else {
      esc(f, str(lw, "end"));
    }
  }
  fprintf(f, " · 基线 <span class=\"en\">baseline</span> %.2f %%</p>\n", baseline * 100);

  /* The chart: one point per window, the baseline as a dashed line. */
  const int W = 760, H = 260, L = 56, R = 16, T = 16, B = 40;
  double pw = W - L - R, ph = H - T - B;
  fputs("<h2>在线率 <span class=\"en\">Online rate per window</span></h2>\n", f);
  fprintf(f, "<svg id=\"rate-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
             "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"online rate\">\n", W, H, W, H);
  fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"#fafafa\" stroke=\"#999\"/>\n",
          L, T, pw, ph);
  for (int pct = 0; pct <= 100; pct += 25) {
    double y = T + ph * (1 - pct / 100.0);
    fprintf(f, "<line x1=\"%d\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>"
               "<text x=\"%d\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">%d%%</text>\n",
            L, L + pw, y, y, L - 6, y + 4, pct);
  }
  double by = T + ph * (1 - baseline);
  fprintf(f, "<line class=\"baseline\" data-baseline=\"%.4f\" x1=\"%d\" x2=\"%.1f\" y1=\"%.2f\" "
             "y2=\"%.2f\" stroke=\"#d62728\" stroke-width=\"2\" stroke-dasharray=\"6 4\"/>\n",
          baseline, L, L + pw, by, by);
  fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#d62728\" text-anchor=\"end\">"
             "基线 Baseline %.2f %%</text>\n", L + pw - 4, by - 5, baseline * 100);
  char points[65536];
  size_t used = 0;
  points[0] = '\0';
  for (int i = 0; i < n; i++) {
    const cJSON *rep = cJSON_GetArrayItem(reports, i);
    double rate = num(rep, "online_rate");
    if (isnan(rate)) rate = 0;
    double x = L + (n > 1 ? pw * i / (n - 1) : pw / 2);
    double y = T + ph * (1 - rate);
    if (used + 32 < sizeof points)
      used += (size_t)snprintf(points + used, sizeof points - used, "%.1f,%.1f ", x, y);
  }
  fprintf(f, "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"3\" points=\"%s\"/>\n", points);
  for (int i = 0; i < n; i++) {
    const cJSON *rep = cJSON_GetArrayItem(reports, i);
    double rate = num(rep, "online_rate");
    if (isnan(rate)) rate = 0;
    double x = L + (n > 1 ? pw * i / (n - 1) : pw / 2);
    double y = T + ph * (1 - rate);
    fprintf(f, "<circle class=\"rate-point\" data-window=\"");
    esc(f, str(cJSON_GetObjectItemCaseSensitive(rep, "window"), "start"));
    fprintf(f, "\" data-rate=\"%.6f\" cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"#1f77b4\"><title>", rate, x, y);
    esc(f, str(cJSON_GetObjectItemCaseSensitive(rep, "window"), "start"));
    fprintf(f, ": %.2f %%</title></circle>\n", rate * 100);
  }
  fputs("</svg>\n", f);

  /* Availability strips: a row per meter, a cell per window. */
  fputs("<h2>可用率 <span class=\"en\">Availability per meter and window</span></h2>\n", f);
  const cJSON *meters0 = cJSON_GetObjectItemCaseSensitive(last, "meters");
  int nm = cJSON_GetArraySize(meters0);
  int cw = n > 0 ? (int)fmax(2, fmin(24, 600.0 / n)) : 10;
  fprintf(f, "<svg id=\"availability\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\">\n",
          160 + cw * n + 10, 22 * nm + 10);
  for (int m = 0; m < nm; m++) {
    const char *id = str(cJSON_GetArrayItem(meters0, m), "id");
    fprintf(f, "<text x=\"0\" y=\"%d\" font-size=\"12\">", 22 * m + 16);
    esc(f, id);
    fputs("</text>\n", f);
    for (int i = 0; i < n; i++) {
      const cJSON *rep = cJSON_GetArrayItem(reports, i);
      double a = NAN;
      const cJSON *mo;
      cJSON_ArrayForEach(mo, cJSON_GetObjectItemCaseSensitive(rep, "meters")) {
        if (strcmp(str(mo, "id"), id) == 0) a = num(mo, "availability");
      }
      char col[16];
      avail_colour(a, col, sizeof col);
      fprintf(f, "<rect class=\"avail-cell\" data-meter=\"");
      esc(f, id);
      fprintf(f, "\" data-availability=\"%.4f\" x=\"%d\" y=\"%d\" width=\"%d\" height=\"18\" fill=\"%s\"/>\n",
              isnan(a) ? -1.0 : a, 160 + cw * i, 22 * m + 3, cw > 3 ? cw - 1 : cw, col);
    }
  }
  fputs("</svg>\n", f);

  /* The repair list of the last window. */
  fputs("<h2>待修计量设施 <span class=\"en\">Meters to repair (last window)</span></h2>\n", f);
  fputs("<table id=\"repair\"><tr><th>编号 ID</th><th>名称 Name</th><th>离线起 Since</th>"
        "<th>时长 Outage</th><th>原因 Last error</th></tr>\n", f);
  const cJSON *rp;
  cJSON_ArrayForEach(rp, cJSON_GetObjectItemCaseSensitive(last, "repair")) {
    double s = num(rp, "outage_s");
    fputs("<tr class=\"repair-row\" data-meter=\"", f);
    esc(f, str(rp, "id"));
    fputs("\"><td>", f);
    esc(f, str(rp, "id"));
    fputs("</td><td>", f);
    esc(f, str(rp, "name"));
    fputs("</td><td>", f);
    esc(f, str(rp, "since"));
    fprintf(f, "</td><td>%.0f h %02.0f min</td><td class=\"bad\">", floor(s / 3600),
            fmod(floor(s / 60), 60));
    esc(f, str(rp, "last_error"));
    fputs("</td></tr>\n", f);
  }
  fputs("</table>\n", f);

  /* Volumes over the whole range. */
  fputs("<h2>取水量 <span class=\"en\">Water volume (m³)</span></h2>\n", f);
  fputs("<table id=\"volumes\"><tr><th>编号 ID</th><th>名称 Name</th><th>水量 Volume m³</th>"
        "<th>标记 Flags</th></tr>\n", f);
  for (int m = 0; m < nm; m++) {
    const cJSON *mo0 = cJSON_GetArrayItem(meters0, m);
    const char *id = str(mo0, "id");
    double total = 0;
    bool any = false;
    char flags[128] = "";
    for (int i = 0; i < n; i++) {
      const cJSON *mo;
      cJSON_ArrayForEach(mo, cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(reports, i), "meters")) {
        if (strcmp(str(mo, "id"), id) != 0) continue;
        double v = num(mo, "volume_m3");
        if (!isnan(v)) {
          total += v;
          any = true;
        }
        const cJSON *fl;
        cJSON_ArrayForEach(fl, cJSON_GetObjectItemCaseSensitive(mo, "volume_flags")) {
          if (cJSON_IsString(fl) && !strstr(flags, fl->valuestring) &&
              strlen(flags) + strlen(fl->valuestring) + 2 < sizeof flags) {
            if (flags[0]) strcat(flags, ", ");
            strcat(flags, fl->valuestring);
          }
        }
      }
    }
    fputs("<tr class=\"volume-row\" data-meter=\"", f);
    esc(f, id);
    fprintf(f, "\" data-volume=\"%.6f\"><td>", any ? total : -1.0);
    esc(f, id);
    fputs("</td><td>", f);
    esc(f, str(mo0, "name"));
    if (any)
      fprintf(f, "</td><td>%.3f</td><td>", total);
    else
      fputs("</td><td>—</td><td>", f);
    esc(f, flags);
    fputs("</td></tr>\n", f);
  }
  fputs("</table>\n", f);
  fputs("<p class=\"en\">Definitions: online for a window = at least min_readings valid "
        "readings and completeness ≥ min_completeness; rate = meters online / meters "
        "configured; see each report's definitions.</p>\n</body>\n</html>\n", f);
}
