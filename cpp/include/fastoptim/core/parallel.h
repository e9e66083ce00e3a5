// The chunked parallel loop every element-wise driver uses: the elements of all tensors of a
// call are laid end to end, split into one contiguous range per thread (rounded to whole cache
// lines), and each thread walks the tensors its range covers. Many small tensors and one huge
// tensor are balanced alike, and no work list is allocated.
#pragma once
#include <algorithm>
#include <cstdint>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace fastoptim::core {

// Below this many elements in a call, forking threads costs more than it saves.
constexpr std::int64_t kParallelMinElements = 1 << 15;
// Thread ranges start on multiples of this many elements (a 64-byte line of floats).
constexpr std::int64_t kRangeGrain = 16;

inline int max_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Calls body(tensor_index, begin, end) for pieces of the global range [first, last) over tensors
// whose sizes are numel(i), i < count.
template <class Numel, class Body>
inline void for_each_piece(std::int64_t count, Numel numel, std::int64_t first, std::int64_t last, Body& body) {
  std::int64_t offset = 0;
  for (std::int64_t t = 0; t < count && offset < last; ++t) {
    const std::int64_t n = numel(t);
    const std::int64_t lo = std::max(first, offset), hi = std::min(last, offset + n);
    if (lo < hi) body(t, lo - offset, hi - offset);
    offset += n;
  }
}

template <class Numel, class Body>
inline void parallel_over_elements(std::int64_t count, Numel numel, Body body) {
  std::int64_t total = 0;
  for (std::int64_t t = 0; t < count; ++t) total += numel(t);
  if (total == 0) return;
  const int threads = int(std::min<std::int64_t>(max_threads(), (total + kParallelMinElements - 1) / kParallelMinElements));
  if (threads <= 1) {
    for_each_piece(count, numel, 0, total, body);
    return;
  }
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
  {
    const int nt = omp_get_num_threads(), tid = omp_get_thread_num();
    auto boundary = [&](int k) {
      if (k == nt) return total;
      return (total * k / nt) / kRangeGrain * kRangeGrain;
    };
    for_each_piece(count, numel, boundary(tid), boundary(tid + 1), body);
  }
#endif
}

}  // namespace fastoptim::core
