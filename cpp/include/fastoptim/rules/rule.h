// What every rule header provides (see sgd.h for a short complete example):
//   kName                     snake_case name; the op is fastoptim::<kName>_step_
//   Hyper                     FASTOPTIM_HYPER(field list): names, defaults and checks of the hyperparameters
//   kState, kStateSlots       the state tensors under torch.optim's names, each with the field
//                             that must be nonzero for it to exist (core::StateSlot)
//   kCountsSteps              whether the state holds a per-parameter `step` counter
// and, optionally (see reads_grad / writes_param below):
//   kReadsGrad = false        the rule takes no gradient (weight averaging)
//   writes_param(k)           false when this step leaves the parameter as it is
// A rule that needs per-tensor sums before it can update (a trust ratio: LAMB, LARS) says
// kSums = N and, instead of apply(p, g, state, k), provides the two passes the driver runs:
//   advance<T, W>(p, g, state, k)           pass 1: updates the state
//   contribute<T, W>(p, state, k, out)      pass 1: the N contributions, from the state as stored
//   finish(k, sums)                         on the host, per tensor: scalars from the N sums
//   apply<T, W>(p, state, k)                pass 2: updates the parameter (no gradient, state read only)
// (contribute sees the state as it was stored, rounded for bf16/fp16, so both passes use the same values)
//   invalid_combination(h)    a message when fields are valid alone but not together, else nullptr
//   Coeffs<T>, prepare<T>()   per-tensor scalars, computed in double on the host and stored as T
//   apply<T, W>()             the per-element update over lanes; the SIMD body and the scalar tail
//                             (and later CUDA and edge loops) all run this one function
#pragma once
#include <cmath>
#include <type_traits>
#include <utility>

#include "fastoptim/core/hyper.h"
#include "fastoptim/core/lanes.h"
#include "fastoptim/parts/weight_decay.h"

namespace fastoptim::rules {

using core::Vec;

// What prepare() knows about one tensor at this step.
struct StepInfo {
  double step;  // the step count after this step's increment (1 on the first step)
  bool fresh;   // the state tensors were created for this step (never updated before)
};

// How many per-tensor sums a rule needs before its update (0: a single element-wise pass).
template <class Rule, class = void>
struct sums_of : std::integral_constant<int, 0> {};
template <class Rule>
struct sums_of<Rule, std::void_t<decltype(Rule::kSums)>> : std::integral_constant<int, Rule::kSums> {};

// Whether a rule reads a gradient (true unless it says kReadsGrad = false).
template <class Rule, class = void>
struct reads_grad : std::true_type {};
template <class Rule>
struct reads_grad<Rule, std::void_t<decltype(Rule::kReadsGrad)>> : std::bool_constant<Rule::kReadsGrad> {};

// Whether a step with coefficients k writes the parameter (true unless the rule says otherwise).
template <class Rule, class Coeffs, class = void>
struct has_writes_param : std::false_type {};
template <class Rule, class Coeffs>
struct has_writes_param<Rule, Coeffs, std::void_t<decltype(Rule::writes_param(std::declval<const Coeffs&>()))>>
    : std::true_type {};

template <class Rule, class Coeffs>
inline bool writes_param(const Coeffs& k) {
  if constexpr (has_writes_param<Rule, Coeffs>::value) return Rule::writes_param(k);
  else return true;
}

}  // namespace fastoptim::rules
