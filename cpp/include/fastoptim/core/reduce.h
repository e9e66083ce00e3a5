// Per-tensor reductions (sums of terms over a tensor's elements) for rules that need a norm or a
// dot product before their element-wise pass. The result is the same bits for any thread count and
// any ISA: every tensor is cut into fixed blocks of kReduceBlock elements; within a block, element
// i is added to virtual lane i % kReduceLanes (16, a multiple of every vector width), the lanes are
// folded left to right, and a tensor's block sums are added in block order.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "fastoptim/core/lanes.h"
#include "fastoptim/core/parallel.h"

namespace fastoptim::core {

constexpr std::int64_t kReduceBlock = 8192;
constexpr int kReduceLanes = 16;

// Sums over i in [begin, end) of the N contributions term.at<W>(i, out) writes (out[0..N) are
// Vec<T, W> for W elements from i, Vec<T, 1> for one). The SIMD body and the tail use the same term.
template <class T, int W, int N, class Term>
inline std::array<T, N> block_sums(std::int64_t begin, std::int64_t end, Term& term) {
  static_assert(kReduceLanes % W == 0, "the vector width must divide the virtual lane count");
  constexpr int kAccumulators = kReduceLanes / W;
  Vec<T, W> acc[N][kAccumulators];
  for (auto& row : acc)
    for (auto& a : row) a = Vec<T, W>::broadcast(T(0));
  std::int64_t i = begin;
  for (; i + kReduceLanes <= end; i += kReduceLanes) {
    for (int a = 0; a < kAccumulators; ++a) {
      Vec<T, W> out[N];
      term.template at<W>(i + a * W, out);
      for (int n = 0; n < N; ++n) acc[n][a] = acc[n][a] + out[n];
    }
  }
  T lanes[N][kReduceLanes];
  for (int n = 0; n < N; ++n)
    for (int a = 0; a < kAccumulators; ++a)
      for (int w = 0; w < W; ++w) lanes[n][a * W + w] = acc[n][a].v[w];
  for (int lane = 0; i < end; ++i, ++lane) {  // the tail: element i is in lane (i - begin) % 16
    Vec<T, 1> out[N];
    term.template at<1>(i, out);
    for (int n = 0; n < N; ++n) lanes[n][lane] = lanes[n][lane] + out[n].v[0];
  }
  std::array<T, N> sums;
  for (int n = 0; n < N; ++n) {
    sums[n] = lanes[n][0];
    for (int lane = 1; lane < kReduceLanes; ++lane) sums[n] += lanes[n][lane];
  }
  return sums;
}

// out[t] = the N sums over the elements of tensor t, for `count` tensors of sizes numel(t) (out is
// a pointer, or anything indexable that gives a std::array<T, N>&);
// make_term(t) gives tensor t's term object (see block_sums). The blocks of all tensors are summed
// in parallel, then each tensor's block sums are added in order. Its bookkeeping lives in
// per-thread buffers that keep their capacity, so steady-state steps allocate nothing.
template <class T, int W, int N, class Numel, class MakeTerm, class Out>
void per_tensor_sums(std::int64_t count, Numel numel, MakeTerm make_term, Out&& out) {
  // (References, so the OpenMP threads below see the calling thread's buffers, not their own.)
  static thread_local std::vector<std::int64_t> first_block_buffer;
  static thread_local std::vector<std::array<T, N>> block_results_buffer;
  std::vector<std::int64_t>& first_block = first_block_buffer;
  std::vector<std::array<T, N>>& block_results = block_results_buffer;
  first_block.assign(std::size_t(count) + 1, 0);
  for (std::int64_t t = 0; t < count; ++t)
    first_block[std::size_t(t) + 1] = first_block[std::size_t(t)] + (numel(t) + kReduceBlock - 1) / kReduceBlock;
  const std::int64_t blocks = first_block[std::size_t(count)];
  block_results.resize(static_cast<std::size_t>(blocks));
  // Sums the blocks of the elements [first, last) of all tensors laid end to end, a block to
  // whoever holds its first element: the threads split the elements, not the blocks, since the
  // blocks of short tensors (a per-row rule's rows) are shorter than kReduceBlock.
  auto sum_blocks = [&](std::int64_t t, std::int64_t begin, std::int64_t end) {
    auto term = make_term(t);
    const std::int64_t first = (begin + kReduceBlock - 1) / kReduceBlock * kReduceBlock;
    for (std::int64_t b = first; b < end; b += kReduceBlock)
      block_results[std::size_t(first_block[std::size_t(t)] + b / kReduceBlock)] =
          block_sums<T, W, N>(b, std::min(b + kReduceBlock, numel(t)), term);
  };
  parallel_over_elements(count, numel, sum_blocks);
  for (std::int64_t t = 0; t < count; ++t) {
    std::array<T, N> sums{};
    for (std::int64_t b = first_block[std::size_t(t)]; b < first_block[std::size_t(t) + 1]; ++b)
      for (int n = 0; n < N; ++n) sums[std::size_t(n)] += block_results[std::size_t(b)][std::size_t(n)];
    out[t] = sums;
  }
}

// The term for a squared norm of a tensor of storage type S.
template <class S>
struct SquaredNorm {
  const S* x;
  template <int W>
  void at(std::int64_t i, Vec<compute_t<S>, W>* out) const {
    const Vec<compute_t<S>, W> v = load<W>(x + i);
    out[0] = v * v;
  }
};

}  // namespace fastoptim::core
