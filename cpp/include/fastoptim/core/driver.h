// The generic CPU driver for element-wise rules: parallel over all elements of all tensors of a
// call, a SIMD body of kLanes<T> and a one-lane tail, both calling Rule::apply. Included only by
// the per-ISA kernel translation unit.
#pragma once
#include <algorithm>
#include <cstdint>

#include "fastoptim/core/dtypes.h"
#include "fastoptim/core/isa.h"
#include "fastoptim/core/lanes.h"
#include "fastoptim/core/parallel.h"
#include "fastoptim/rules/rule.h"

namespace fastoptim::core {

using fastoptim_isa::TensorSlots;

template <class Rule, class S, int W, class T>
inline void update_lanes(const TensorSlots& t, const typename Rule::template Coeffs<T>& k, std::int64_t i) {
  constexpr int kSlots = Rule::kStateSlots;
  S* param = static_cast<S*>(t.param) + i;
  Vec<T, W> p = load<W>(param);
  Vec<T, W> g = {};
  if constexpr (rules::reads_grad<Rule>::value) g = load<W>(static_cast<const S*>(t.grad) + i);
  Vec<T, W> state[kSlots] = {};
  for (int j = 0; j < kSlots; ++j)
    if (t.state[j]) state[j] = load<W>(static_cast<const S*>(t.state[j]) + i);
  Rule::apply(p, g, state, k);
  if (rules::writes_param<Rule>(k)) store<W>(param, p);
  for (int j = 0; j < kSlots; ++j)
    if (t.state[j]) store<W>(static_cast<S*>(t.state[j]) + i, state[j]);
}

template <class Rule, class S>
void run_elementwise(const TensorSlots* tensors, std::int64_t count, const void* coeffs_ptr) {
  using T = compute_t<S>;
  using Coeffs = typename Rule::template Coeffs<T>;
  constexpr int W = kLanes<T>;
  const Coeffs* coeffs = static_cast<const Coeffs*>(coeffs_ptr);
  parallel_over_elements(
      count, [tensors](std::int64_t t) { return tensors[t].numel; },
      [&](std::int64_t t, std::int64_t begin, std::int64_t end) {
        std::int64_t i = begin;
        for (; i + W <= end; i += W) update_lanes<Rule, S, W>(tensors[t], coeffs[t], i);
        for (; i < end; ++i) update_lanes<Rule, S, 1>(tensors[t], coeffs[t], i);
      });
}

template <class Rule>
void elementwise_kernel(const TensorSlots* tensors, std::int64_t count, const void* coeffs, fastoptim_isa::Dtype dtype) {
  switch (dtype) {
    case fastoptim_isa::Dtype::f32: return run_elementwise<Rule, float>(tensors, count, coeffs);
    case fastoptim_isa::Dtype::f64: return run_elementwise<Rule, double>(tensors, count, coeffs);
    case fastoptim_isa::Dtype::bf16: return run_elementwise<Rule, bf16>(tensors, count, coeffs);
    case fastoptim_isa::Dtype::f16: return run_elementwise<Rule, f16>(tensors, count, coeffs);
  }
}

}  // namespace fastoptim::core
