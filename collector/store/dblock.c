#include "store/dblock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

int dblock_acquire(const char *db_path, char *err, size_t errlen) {
  char path[4200];
  if (snprintf(path, sizeof path, "%s.lock", db_path) >= (int)sizeof path) {
    snprintf(err, errlen, "%s: path too long", db_path);
    return -1;
  }
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
  if (fd < 0) {
    snprintf(err, errlen, "cannot open the lock file %s: %s", path, strerror(errno));
    return -1;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    char pid[32] = "";
    ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
    if (n > 0) pid[n] = '\0';
    pid[strcspn(pid, "\n")] = '\0';
    if (e == EWOULDBLOCK)
      snprintf(err, errlen,
               "database %s is in use by another process%s%s%s (it holds %s): one "
               "daemon per database",
               db_path, pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "", path);
    else
      snprintf(err, errlen, "cannot lock %s: %s", path, strerror(e));
    close(fd);
    return -1;
  }
  /* Who holds it, for the message above. */
  char pid[32];
  int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
  if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
    /* The lock holds without the note. */
  }
  return fd;
}

void dblock_release(int fd) {
  if (fd >= 0) close(fd);
}

long dblock_holder(const char *db_path, char *err, size_t errlen) {
  char path[4200];
  if (snprintf(path, sizeof path, "%s.lock", db_path) >= (int)sizeof path) {
    snprintf(err, errlen, "%s: path too long", db_path);
    return -1;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    snprintf(err, errlen, "no gateway runs on %s (%s: %s)", db_path, path,
             strerror(errno));
    return -1;
  }
  /* A shared lock is refused only while a writer holds its exclusive one. */
  if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
    close(fd);
    snprintf(err, errlen, "no gateway runs on %s (nothing holds %s)", db_path, path);
    return -1;
  }
  int e = errno;
  char pid[32] = "";
  ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
  close(fd);
  if (n > 0) pid[n] = '\0';
  char *end;
  long v = strtol(pid, &end, 10);
  if (e != EWOULDBLOCK || v <= 0 || (*end && *end != '\n')) {
    snprintf(err, errlen, "%s is held, but says by no process id", path);
    return -1;
  }
  return v;
}
