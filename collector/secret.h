/* secret: reading a password or token from a file.
 *
 * The first line of the file, without its line end. Secrets are never
 * logged; the caller is told whether the file can be read by others than
 * its owner so it can warn. */
#ifndef IC_SECRET_H
#define IC_SECRET_H

#include <stdbool.h>
#include <stddef.h>

/* 0 and the secret in BUF, or -1 with errno set. *EXPOSED is set when group
 * or others may read the file. */
int secret_read_file(const char *path, char *buf, size_t len, bool *exposed);

#endif
