/* dblock: one process writing a database at a time.
 *
 * Two daemons on one database would each advance the sequence numbers from
 * what they last read and publish the same (meter, seq) for two readings,
 * and fight over the broker's client id. The writer of a database holds an
 * exclusive flock(2) on a lock file beside it, DATABASE.lock, for as long as
 * it runs; the kernel lets go of it when the process ends, however it ends.
 * (Not on the database file itself: closing any descriptor of that file
 * would drop SQLite's own POSIX locks.) Readers (`report`) take none.
 */
#ifndef IC_DBLOCK_H
#define IC_DBLOCK_H

#include <stddef.h>

/* Lock DB_PATH for this process. Returns the lock's descriptor (keep it
 * open), or -1 with ERR saying who holds it or why the lock file cannot be
 * made. */
int dblock_acquire(const char *db_path, char *err, size_t errlen);

/* The process id of the writer holding DB_PATH's lock now, or -1 with
 * ERR saying that none does (or why it cannot be told). Takes no lock. */
long dblock_holder(const char *db_path, char *err, size_t errlen);

/* Let go (a no-op for -1). */
void dblock_release(int fd);

#endif
