#include "secret.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int secret_read_file(const char *path, char *buf, size_t len, bool *exposed) {
  buf[0] = '\0';
  *exposed = false;
  FILE *f = fopen(path, "re");
  if (!f) return -1;
  struct stat st;
  if (fstat(fileno(f), &st) == 0) *exposed = (st.st_mode & (S_IRWXG | S_IRWXO)) != 0;
  if (!fgets(buf, (int)len, f)) buf[0] = '\0';
  int saved = errno;
  fclose(f);
  errno = saved;
  buf[strcspn(buf, "\r\n")] = '\0';
  return 0;
}
