/* log: the daemon's one logging module.
 *
 * Lines go to stderr as "LEVEL message", which journald stamps and stores;
 * with log_set_timestamps() they carry an RFC 3339 UTC time too (for a
 * terminal). When stderr is the journal's stream (log_detect_journal), each
 * line starts with its sd-daemon priority ("<3>" error, "<4>" warn, "<6>"
 * info, "<7>" debug), which journald takes as the line's priority. Library-style modules do not log: they return errors, and the
 * daemon's wiring logs them here. Thread-safe: one write(2) per line.
 */
#ifndef IC_LOG_H
#define IC_LOG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum { LOGL_ERROR = 0, LOGL_WARN, LOGL_INFO, LOGL_DEBUG } log_level;

/* Open /dev/null on each of descriptors 0, 1 and 2 that is closed, so that
 * no descriptor the program opens later (libuv's epoll, a socket) lands
 * there and gets log lines or stdout written into it, as happens when a
 * supervisor starts a program with them closed. Call first thing in main. */
void log_guard_std_fds(void);

/* Whether stderr is connected to the journal: JOURNAL_STREAM holds
 * "DEV:INODE" and they are fstat(STDERR_FILENO)'s (systemd.exec(5)). Then
 * every line carries its priority prefix; otherwise lines are as they were.
 * Call once at start, after log_guard_std_fds. Returns whether it is. */
bool log_detect_journal(void);
/* The prefix on or off, whatever the environment says (tests). */
void log_set_priority_prefix(bool on);

void log_set_level(log_level lvl);
log_level log_get_level(void);
/* Parse "error", "warn", "info", "debug"; -1 when unknown. */
int log_level_parse(const char *s, log_level *out);
void log_set_timestamps(int on);

void log_msg(log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A problem worth one line until it is over: log at LVL unless *SAID is
 * set, and set it (the caller clears it when the problem ends, so that the
 * next one is said). */
void log_once(bool *said, log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A problem said again only when its cause changes: log at LVL unless KEY
 * (the cause) is the one last said through LAST (LEN bytes; clear LAST[0]
 * when the problem ends), else at debug with " (again)" appended. */
void log_changed(char *last, size_t len, const char *key, log_level lvl, const char *fmt,
                 ...) __attribute__((format(printf, 5, 6)));

#define log_error(...) log_msg(LOGL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOGL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOGL_INFO, __VA_ARGS__)
#define log_debug(...)                                                       \
  do {                                                                       \
    if (log_get_level() >= LOGL_DEBUG) log_msg(LOGL_DEBUG, __VA_ARGS__);       \
  } while (0)

#endif
