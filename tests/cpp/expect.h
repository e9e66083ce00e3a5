// The C++ tests' one assertion: counts passes, prints each failure, and summarises at the end
// ("N passed, N failed"; the exit status is nonzero when any failed).
#pragma once
#include <cstdio>
#include <string>

namespace test {

inline int passed = 0, failed = 0;

inline void expect(bool ok, const std::string& what) {
  if (ok) {
    ++passed;
  } else {
    ++failed;
    std::printf("FAILED: %s\n", what.c_str());
  }
}

inline int summary() {
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}

}  // namespace test

using test::expect;
