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
#include "fastoptim/core/reduce.h"
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

// ---- rules with per-tensor sums: accumulate (updating the state), finish on the host, apply ----

// Pass 1's term for per_tensor_sums: loads an element range, lets the rule update the state, stores
// it, and takes the rule's contributions from the state as stored (for bf16/fp16, the rounded values
// pass 2 will read). The parameter is not written.
template <class Rule, class S, class T>
struct AccumulateTerm {
  const TensorSlots* t;
  const typename Rule::template Coeffs<T>* k;

  template <int W>
  void at(std::int64_t i, Vec<T, W>* out) const {
    constexpr int kSlots = Rule::kStateSlots;
    const Vec<T, W> p = load<W>(static_cast<const S*>(t->param) + i);
    const Vec<T, W> g = load<W>(static_cast<const S*>(t->grad) + i);
    Vec<T, W> state[kSlots] = {};
    for (int j = 0; j < kSlots; ++j)
      if (t->state[j]) state[j] = load<W>(static_cast<const S*>(t->state[j]) + i);
    Rule::advance(p, g, state, *k);
    for (int j = 0; j < kSlots; ++j) {
      if (!t->state[j]) continue;
      store<W>(static_cast<S*>(t->state[j]) + i, state[j]);
      if constexpr (!std::is_same_v<S, T>) state[j] = load<W>(static_cast<const S*>(t->state[j]) + i);
    }
    Rule::contribute(p, state, *k, out);
  }
};

// Pass 2 over W elements: reads the parameter and the state, writes only the parameter.
template <class Rule, class S, int W, class T>
inline void apply_lanes(const TensorSlots& t, const typename Rule::template Coeffs<T>& k, std::int64_t i) {
  constexpr int kSlots = Rule::kStateSlots;
  S* param = static_cast<S*>(t.param) + i;
  Vec<T, W> p = load<W>(param);
  Vec<T, W> state[kSlots] = {};
  for (int j = 0; j < kSlots; ++j)
    if (t.state[j]) state[j] = load<W>(static_cast<const S*>(t.state[j]) + i);
  Rule::apply(p, state, k);
  store<W>(param, p);
}

template <class Rule, class S>
void run_two_pass(const TensorSlots* tensors, std::int64_t count, const void* coeffs_ptr) {
  using T = compute_t<S>;
  using Coeffs = typename Rule::template Coeffs<T>;
  constexpr int W = kLanes<T>;
  constexpr int N = rules::sums_of<Rule>::value;
  const Coeffs* given = static_cast<const Coeffs*>(coeffs_ptr);
  std::vector<Coeffs> coeffs(given, given + count);  // finish() adds the per-tensor scalars
  std::vector<std::array<T, N>> sums(static_cast<std::size_t>(count));
  auto numel = [tensors](std::int64_t t) { return tensors[t].numel; };
  per_tensor_sums<T, W, N>(
      count, numel, [&](std::int64_t t) { return AccumulateTerm<Rule, S, T>{&tensors[t], &coeffs[std::size_t(t)]}; },
      sums.data());
  for (std::int64_t t = 0; t < count; ++t) Rule::finish(coeffs[std::size_t(t)], sums[std::size_t(t)].data());
  parallel_over_elements(count, numel, [&](std::int64_t t, std::int64_t begin, std::int64_t end) {
    std::int64_t i = begin;
    for (; i + W <= end; i += W) apply_lanes<Rule, S, W>(tensors[t], coeffs[std::size_t(t)], i);
    for (; i < end; ++i) apply_lanes<Rule, S, 1>(tensors[t], coeffs[std::size_t(t)], i);
  });
}

template <class Rule, class S>
void run_rule(const TensorSlots* tensors, std::int64_t count, const void* coeffs) {
  if constexpr (rules::sums_of<Rule>::value > 0) run_two_pass<Rule, S>(tensors, count, coeffs);
  else run_elementwise<Rule, S>(tensors, count, coeffs);
}

template <class Rule>
void elementwise_kernel(const TensorSlots* tensors, std::int64_t count, const void* coeffs, fastoptim_isa::Dtype dtype) {
  switch (dtype) {
    case fastoptim_isa::Dtype::f32: return run_rule<Rule, float>(tensors, count, coeffs);
    case fastoptim_isa::Dtype::f64: return run_rule<Rule, double>(tensors, count, coeffs);
    case fastoptim_isa::Dtype::bf16: return run_rule<Rule, bf16>(tensors, count, coeffs);
    case fastoptim_isa::Dtype::f16: return run_rule<Rule, f16>(tensors, count, coeffs);
  }
}

}  // namespace fastoptim::core
