// Per-tensor reductions (sums of f(x) over a tensor's elements) for rules that need a norm or a dot
// product before their element-wise pass. The result does not depend on the thread count: every
// tensor is cut into fixed blocks of kReduceBlock elements, each block is summed in a fixed order
// (W lane accumulators, then lanes folded left to right), and a tensor's block sums are added in
// block order. Different ISAs (different W) may differ in the last bits; one ISA always agrees with itself.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "fastoptim/core/lanes.h"
#include "fastoptim/core/parallel.h"

namespace fastoptim::core {

constexpr std::int64_t kReduceBlock = 8192;

template <class T, int W>
inline T horizontal_sum(Vec<T, W> v) {
  T sum = v.v[0];
  for (int i = 1; i < W; ++i) sum += v.v[i];
  return sum;
}

// Sum of term(i) for i in [begin, end), where term(i) returns Vec<T, W> for W elements starting
// at i (and Vec<T, 1> for one): the SIMD body and the tail use the same term.
template <class T, int W, class Term>
inline T block_sum(std::int64_t begin, std::int64_t end, Term term) {
  Vec<T, W> acc = Vec<T, W>::broadcast(T(0));
  std::int64_t i = begin;
  for (; i + W <= end; i += W) acc = acc + term.template at<W>(i);
  T sum = horizontal_sum(acc);
  for (; i < end; ++i) sum += term.template at<1>(i).v[0];
  return sum;
}

// out[t] = sum over the elements of tensor t, for `count` tensors of sizes numel(t); make_term(t)
// gives tensor t's term object (see block_sum). The blocks of all tensors are summed in parallel,
// then each tensor's block sums are added in order.
template <class T, int W, class Numel, class MakeTerm>
void per_tensor_sums(std::int64_t count, Numel numel, MakeTerm make_term, T* out) {
  std::vector<std::int64_t> first_block(std::size_t(count) + 1, 0);
  for (std::int64_t t = 0; t < count; ++t)
    first_block[std::size_t(t) + 1] = first_block[std::size_t(t)] + (numel(t) + kReduceBlock - 1) / kReduceBlock;
  const std::int64_t blocks = first_block[std::size_t(count)];
  std::vector<T> block_sums(std::size_t(blocks), T(0));
  auto tensor_of_block = [&](std::int64_t b) {
    std::int64_t lo = 0, hi = count;  // the last t with first_block[t] <= b
    while (hi - lo > 1) {
      const std::int64_t mid = (lo + hi) / 2;
      (first_block[std::size_t(mid)] <= b ? lo : hi) = mid;
    }
    return lo;
  };
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (blocks > 1 && max_threads() > 1)
#endif
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::int64_t t = tensor_of_block(b);
    const std::int64_t begin = (b - first_block[std::size_t(t)]) * kReduceBlock;
    const std::int64_t end = std::min(begin + kReduceBlock, numel(t));
    block_sums[std::size_t(b)] = block_sum<T, W>(begin, end, make_term(t));
  }
  for (std::int64_t t = 0; t < count; ++t) {
    T sum = T(0);
    for (std::int64_t b = first_block[std::size_t(t)]; b < first_block[std::size_t(t) + 1]; ++b)
      sum += block_sums[std::size_t(b)];
    out[t] = sum;
  }
}

// The term for a squared norm of a tensor of storage type S.
template <class S>
struct SquaredNorm {
  const S* x;
  template <int W>
  Vec<compute_t<S>, W> at(std::int64_t i) const {
    const Vec<compute_t<S>, W> v = load<W>(x + i);
    return v * v;
  }
};

}  // namespace fastoptim::core
