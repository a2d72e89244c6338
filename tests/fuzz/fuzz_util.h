// Shared by the fuzz targets: a check that reports and aborts, so libFuzzer
// (and the corpus replay test) record the input as a failure.

#ifndef MOE_TESTS_FUZZ_FUZZ_UTIL_H_
#define MOE_TESTS_FUZZ_FUZZ_UTIL_H_

#include <cstdio>
#include <cstdlib>
#include <string>

#define MOE_FUZZ_CHECK(cond, what)                                                  \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: fuzz property failed: %s\n", __FILE__, __LINE__, \
                   std::string(what).c_str());                                      \
      std::abort();                                                                 \
    }                                                                               \
  } while (0)

#endif  // MOE_TESTS_FUZZ_FUZZ_UTIL_H_
