/* failfs: an LD_PRELOAD library that makes a directory's files refuse writes,
 * as a file system remounted read-only does, while a flag file exists.
 *
 *   IC_FAILFS_DIR=/path/to/dir   files whose path starts with this
 *   IC_FAILFS_FLAG=/path/to/flag while this file exists...
 *   IC_FAILFS_ERRNO=30           ...writes, syncs and truncations of them
 *                                fail with this errno (default EROFS)
 *   IC_FAILFS_MODE=block         ...or wait instead, until the flag file is
 *                                gone, as on a disk that stops answering (a
 *                                dead USB stick, a hung NFS server): the
 *                                thread that writes is stuck, not failed
 *
 * A real file system cannot be remounted read-only while the daemon holds
 * its database open for writing (the kernel answers EBUSY), so the tests use
 * this to see what the daemon does when its writes start failing and stop
 * failing again. Reads, and everything outside the directory, pass through.
 */

/* Each call that takes a file offset comes in two symbols: the plain one
 * with the C library's native off_t, and the one with a 64-bit offset
 * (pwrite64, ftruncate64), which a program built with 64-bit file offsets
 * calls, as SQLite is, on a 32-bit target always. Both are defined here,
 * each with its own offset type, so this file is built with the native
 * off_t whatever the build asks for: with _FILE_OFFSET_BITS=64 the headers
 * would rename the plain declarations to the 64-bit symbols (and
 * _TIME_BITS=64 needs _FILE_OFFSET_BITS=64). On a 64-bit target the two
 * are the same function. */
#undef _FILE_OFFSET_BITS
#undef _TIME_BITS
#ifndef _LARGEFILE64_SOURCE
#define _LARGEFILE64_SOURCE 1
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static bool flagged(void) {
  const char *flag = getenv("IC_FAILFS_FLAG");
  return flag && access(flag, F_OK) == 0;
}

static bool refused(int fd) {
  const char *dir = getenv("IC_FAILFS_DIR"), *flag = getenv("IC_FAILFS_FLAG");
  if (!dir || !*dir || !flag || access(flag, F_OK) != 0) return false;
  char link[64], path[4096];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n < 0) return false;
  path[n] = '\0';
  if (strncmp(path, dir, strlen(dir)) != 0) return false;
  const char *mode = getenv("IC_FAILFS_MODE");
  if (mode && strcmp(mode, "block") == 0) {
    struct timespec tick = {0, 10 * 1000000L};
    while (flagged()) nanosleep(&tick, NULL);
    return false;
  }
  const char *e = getenv("IC_FAILFS_ERRNO");
  errno = e ? atoi(e) : EROFS;
  return true;
}

#define NEXT(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

ssize_t write(int fd, const void *buf, size_t n) {
  return refused(fd) ? -1 : NEXT(write)(fd, buf, n);
}
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
  return refused(fd) ? -1 : NEXT(pwrite)(fd, buf, n, off);
}
ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off) {
  return refused(fd) ? -1 : NEXT(pwrite64)(fd, buf, n, off);
}
int fsync(int fd) { return refused(fd) ? -1 : NEXT(fsync)(fd); }
int fdatasync(int fd) { return refused(fd) ? -1 : NEXT(fdatasync)(fd); }
int ftruncate(int fd, off_t len) { return refused(fd) ? -1 : NEXT(ftruncate)(fd, len); }
int ftruncate64(int fd, off64_t len) {
  return refused(fd) ? -1 : NEXT(ftruncate64)(fd, len);
}
