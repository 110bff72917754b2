/* secret: reading a password or token from a file.
 *
 * The first line of the file, without its line end, whole: a secret longer
 * than the caller's buffer is an error, never cut. Only a regular file is
 * read (a directory, a device or a FIFO is refused without waiting on it).
 * Secrets are never logged; the caller is told whether the file can be read
 * by others than its owner so it can warn. */
#ifndef IC_SECRET_H
#define IC_SECRET_H

#include <stdbool.h>
#include <stddef.h>

/* The longest secret read (a password or a bearer token), in bytes. */
#define SECRET_MAX 4095

/* 0 and the secret in BUF (LEN bytes, at most LEN - 1 of secret), or -1 with
 * ERR saying why (the file's errno words, not a regular file, too long).
 * *EXPOSED is set when group or others may read the file. */
int secret_read_file(const char *path, char *buf, size_t len, bool *exposed, char *err,
                     size_t errlen);

#endif
