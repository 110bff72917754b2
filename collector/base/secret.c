#include "base/secret.h"

#include "cfg.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int secret_read_file(const char *path, char *buf, size_t len, bool *exposed, char *err,
                     size_t errlen) {
  buf[0] = '\0';
  *exposed = false;
  /* O_NONBLOCK: opening a FIFO without a writer would wait for one. */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    snprintf(err, errlen, "%s", strerror(errno));
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    snprintf(err, errlen, "%s", strerror(errno));
    close(fd);
    return -1;
  }
  const char *kind = cfg_file_kind(st.st_mode);
  if (kind) {
    snprintf(err, errlen, "%s, not a regular file", kind);
    close(fd);
    return -1;
  }
  *exposed = (st.st_mode & (S_IRWXG | S_IRWXO)) != 0;
  /* Read up to the first line end; a line that does not end within the
   * buffer is too long. */
  size_t n = 0;
  bool line_end = false;
  while (n < len) {
    ssize_t k = read(fd, buf + n, len - n);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) {
      snprintf(err, errlen, "%s", strerror(errno));
      close(fd);
      memset(buf, 0, len);
      return -1;
    }
    if (k == 0) break;
    size_t end = n + (size_t)k;
    for (size_t i = n; i < end; i++)
      if (buf[i] == '\n' || buf[i] == '\r') {
        line_end = true;
        end = i;
        break;
      }
    n = end;
    if (line_end) break;
  }
  close(fd);
  if (n >= len) {
    memset(buf, 0, len);
    snprintf(err, errlen, "the secret is longer than %zu bytes", len - 1);
    return -1;
  }
  buf[n] = '\0';
  return 0;
}
