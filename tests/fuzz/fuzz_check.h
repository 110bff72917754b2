/* CHECK for the fuzz targets: a broken invariant aborts, naming the target
 * (FUZZ_TARGET, defined before this is included), the line and the
 * condition, with printf-style details, so that libFuzzer and the replay
 * of the corpus report it as a crash. */
#ifndef IC_FUZZ_CHECK_H
#define IC_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond, ...)                                                     \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, FUZZ_TARGET ": invariant broken at line %d: %s\n  ",   \
              __LINE__, #cond);                                              \
      fprintf(stderr, __VA_ARGS__);                                          \
      fputc('\n', stderr);                                                   \
      abort();                                                               \
    }                                                                        \
  } while (0)

#endif
