#include "base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile log_level g_level = LOGL_INFO;
static volatile int g_timestamps = 0;
static volatile bool g_prefix = false;

static const char *const level_names[] = {"error", "warn", "info", "debug"};
/* sd-daemon(3): SD_ERR, SD_WARNING, SD_INFO, SD_DEBUG. */
static const char *const level_prefix[] = {"<3>", "<4>", "<6>", "<7>"};

bool log_detect_journal(void) {
  const char *js = getenv("JOURNAL_STREAM");
  uintmax_t dev, ino;
  char end;
  struct stat st;
  g_prefix = js && sscanf(js, "%ju:%ju%c", &dev, &ino, &end) == 2 &&
             fstat(STDERR_FILENO, &st) == 0 && (uintmax_t)st.st_dev == dev &&
             (uintmax_t)st.st_ino == ino;
  return g_prefix;
}

void log_set_priority_prefix(bool on) { g_prefix = on; }

void log_set_level(log_level lvl) { g_level = lvl; }
log_level log_get_level(void) { return g_level; }
void log_set_timestamps(int on) { g_timestamps = on; }

int log_level_parse(const char *s, log_level *out) {
  for (int i = 0; i <= LOGL_DEBUG; i++) {
    if (strcmp(s, level_names[i]) == 0) {
      *out = (log_level)i;
      return 0;
    }
  }
  return -1;
}

static void vlog(log_level lvl, const char *fmt, va_list ap);

void log_msg(log_level lvl, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(lvl, fmt, ap);
  va_end(ap);
}

void log_once(bool *said, log_level lvl, const char *fmt, ...) {
  if (*said) return;
  *said = true;
  va_list ap;
  va_start(ap, fmt);
  vlog(lvl, fmt, ap);
  va_end(ap);
}

void log_changed(char *last, size_t len, const char *key, log_level lvl, const char *fmt,
                 ...) {
  bool again = len && last[0] && strncmp(last, key, len - 1) == 0;
  if (again && g_level < LOGL_DEBUG) return;
  char text[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  if (again) {
    log_msg(LOGL_DEBUG, "%s (again)", text);
    return;
  }
  if (len) snprintf(last, len, "%s", key);
  log_msg(lvl, "%s", text);
}

static void vlog(log_level lvl, const char *fmt, va_list ap) {
  if (lvl > g_level) return;
  char line[2048];
  size_t n = 0;
  if (g_prefix) {
    memcpy(line, level_prefix[lvl], 3);
    n = 3;
  }
  if (g_timestamps) {
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n += strftime(line + n, sizeof line - n, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n, ".%03ldZ ",
                          ts.tv_nsec / 1000000L);
  }
  n += (size_t)snprintf(line + n, sizeof line - n, "%-5s ", level_names[lvl]);
  int w = vsnprintf(line + n, sizeof line - n, fmt, ap);
  if (w < 0) w = 0;
  n += (size_t)w;
  if (n > sizeof line - 2) n = sizeof line - 2;
  line[n++] = '\n';
  /* One write per line so lines from several threads never interleave. */
  ssize_t r = write(STDERR_FILENO, line, n);
  (void)r;
}

void log_guard_std_fds(void) {
  for (int fd = 0; fd <= 2; fd++) {
    if (fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    /* open() takes the lowest free descriptor: this one. */
    int n = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
    if (n >= 0 && n != fd) {
      dup2(n, fd);
      close(n);
    }
  }
}
