// What every rule header provides (see sgd.h for a short complete example). Its field list is the
// macro FASTOPTIM_FIELDS_<kName>(F), so a front end can expand it field by field (libtorch options).
//   kName                     snake_case name; the op is fastoptim::<kName>_step_
//   Hyper                     FASTOPTIM_HYPER(field list): names, defaults and checks of the hyperparameters
//   kState, kStateSlots       the state tensors under torch.optim's names, each with the field
//                             that must be nonzero for it to exist (core::StateSlot)
//   kCountsSteps              whether the state holds a per-parameter `step` counter
// and, optionally (see reads_grad / writes_param below):
//   kReadsGrad = false        the rule takes no gradient (weight averaging)
//   writes_param(k)           false when this step leaves the parameter as it is
// A rule that needs per-tensor sums before it can update (a trust ratio: LAMB, LARS) says
// kSums = N, and the driver runs two passes over each tensor:
//   pass 1   contribute<T, W>(p, g, state, k, out)   the N per-element contributions to the sums
//   host     finish(k, sums)                         per tensor: scalars from the N sums
//   pass 2   apply<T, W>(p, g, state, k)             the update, as for an element-wise rule
// Which pass updates the state is the rule's choice, kStateInFirstPass:
//   true   (LAMB: the sums need the new moments) pass 1 first runs advance<T, W>(p, g, state, k)
//          and stores the state; contribute then sees it as stored (rounded for bf16/fp16), and
//          pass 2 reads it without storing it, and reads the gradient only if apply_reads_grad(k).
//   false  (LARS, TAdam: the sums come before the update) pass 1 only reads; pass 2 updates the
//          state and the parameter.
// Options of the two-pass shape:
//   kSumsPerRow = true       the sums are per row of dim 0 (a channel) for tensors of ndim > 1,
//                            and finish_rows(k, sums, rows) sees all rows of a tensor at once;
//                            pass 2 then runs row by row with each row's coefficients (AdamP)
//   needs_sums(k)            false when this tensor's step does not use the sums (AdamP's vectors,
//                            LARS's excluded ones, AMaC without centralization): the driver skips
//                            pass 1 and runs one pass, advance (if any) then apply; finish then
//                            sees sums of zero
//   kScalarSlots = N         the last N of kState are one-element per-tensor state in the compute
//                            type (float32, or float64 for float64 params), which finish(k, sums,
//                            scalars) reads and writes on the host (TAdam's W)
//   kUsesIndex = true         apply(p, g, state, k, index) also gets the index (within the whole
//                            tensor) of the first of its W elements (counter-based noise)
//   kScalesGrad = true        the op may be given a grad_scale (a global gradient-norm clip factor,
//                            computed by the front end), which prepare() finds in StepInfo
//   next_scalars(h, s, next)  an element-wise rule's per-tensor scalars after this step (NAdam's
//                             mu_product, ASGD's eta and mu), from those before it (s.scalar_state);
//                             the front end stores them, and prepare sees them in s.scalar_next
//   kReadOnlySlots = mask     element slots the step only reads (Sophia's and AdaHessian's Hessian
//                             EMA, which the hessian_ema rule folds estimates into): the drivers do
//                             not store them back (nor encode them again, in 8 bits)
//   initial_value(h, slot, position)  what state slot `slot` of the parameter at `position` (its
//                             index among all parameters of the optimizer) starts at; default 0
//                             (Adagrad's sum, TAdam's W, AMaC's noise key)
//   invalid_combination(h)    a message when fields are valid alone but not together, else nullptr
//   Coeffs<T>, prepare<T>()   per-tensor scalars, computed in double on the host and stored as T
//   apply<T, W>()             the per-element update over lanes; the SIMD body and the scalar tail
//                             (and later CUDA and edge loops) all run this one function
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "fastoptim/core/codes8.h"
#include "fastoptim/core/hyper.h"
#include "fastoptim/core/lanes.h"
#include "fastoptim/parts/weight_decay.h"

namespace fastoptim::rules {

using core::Vec;

// What prepare() knows about one tensor at this step.
struct StepInfo {
  double step;              // the step count after this step's increment (1 on the first step)
  bool fresh;               // the state tensors were created for this step (never updated before)
  std::int64_t numel = 0;   // elements of the tensor
  bool matrix = false;      // ndim > 1
  std::int64_t rows = 1;    // size of dim 0 when ndim > 1, else 1 (the rows of per-row sums)
  double grad_scale = 1.0;  // factor on every gradient this step (rules with kScalesGrad)
  int ndim = 0;
  double scalar_state[2] = {0, 0};  // the rule's per-tensor scalar state as it was before this step
  double scalar_next[2] = {0, 0};   // and after it (rules with next_scalars; see advance_scalars)
  double dtype_eps = 1.1920928955078125e-07;  // the machine epsilon of the parameter's storage dtype (float32's unless set)
};

// Whether a rule's apply takes the index of its first element in the tensor (kUsesIndex = true).
template <class Rule, class = void>
struct uses_index : std::false_type {};
template <class Rule>
struct uses_index<Rule, std::void_t<decltype(Rule::kUsesIndex)>> : std::bool_constant<Rule::kUsesIndex> {};

// The field a tensor scalar given with a step replaces (a tensor lr): lr, or for weight averaging,
// which has none, its weight. set_tensor_scalar is false for a rule with neither.
template <class Hyper, class = void>
struct has_lr_field : std::false_type {};
template <class Hyper>
struct has_lr_field<Hyper, std::void_t<decltype(std::declval<Hyper&>().lr)>> : std::true_type {};
template <class Hyper, class = void>
struct has_weight_field : std::false_type {};
template <class Hyper>
struct has_weight_field<Hyper, std::void_t<decltype(std::declval<Hyper&>().weight)>> : std::true_type {};

template <class Hyper>
FASTOPTIM_HD inline bool set_tensor_scalar(Hyper& h, double value) {
  if constexpr (has_lr_field<Hyper>::value) h.lr = value;
  else if constexpr (has_weight_field<Hyper>::value) h.weight = value;
  return has_lr_field<Hyper>::value || has_weight_field<Hyper>::value;
}

// Whether a rule takes a grad_scale (kScalesGrad = true).
template <class Rule, class = void>
struct scales_grad : std::false_type {};
template <class Rule>
struct scales_grad<Rule, std::void_t<decltype(Rule::kScalesGrad)>> : std::bool_constant<Rule::kScalesGrad> {};

// How many per-tensor sums a rule needs before its update (0: a single element-wise pass).
template <class Rule, class = void>
struct sums_of : std::integral_constant<int, 0> {};
template <class Rule>
struct sums_of<Rule, std::void_t<decltype(Rule::kSums)>> : std::integral_constant<int, Rule::kSums> {};

// Two-pass options (see the top of this file), with their defaults.
template <class Rule, class = void>
struct sums_per_row : std::false_type {};
template <class Rule>
struct sums_per_row<Rule, std::void_t<decltype(Rule::kSumsPerRow)>> : std::bool_constant<Rule::kSumsPerRow> {};

template <class Rule, class = void>
struct scalar_slots_of : std::integral_constant<int, 0> {};
template <class Rule>
struct scalar_slots_of<Rule, std::void_t<decltype(Rule::kScalarSlots)>>
    : std::integral_constant<int, Rule::kScalarSlots> {};

template <class Rule, class Coeffs, class = void>
struct has_apply_reads_grad : std::false_type {};
template <class Rule, class Coeffs>
struct has_apply_reads_grad<Rule, Coeffs, std::void_t<decltype(Rule::apply_reads_grad(std::declval<const Coeffs&>()))>>
    : std::true_type {};

// Whether pass 2 of a two-pass rule loads the gradient: always when it updates the state.
template <class Rule, class Coeffs>
FASTOPTIM_HD inline bool second_pass_reads_grad(const Coeffs& k) {
  if constexpr (!Rule::kStateInFirstPass) return true;
  else if constexpr (has_apply_reads_grad<Rule, Coeffs>::value) return Rule::apply_reads_grad(k);
  else return false;
}

// The value state slot `slot` of the parameter at `position` starts at: Rule::initial_value(h,
// slot, position) where a rule has it, else 0.
template <class Rule, class = void>
struct has_initial_value : std::false_type {};
template <class Rule>
struct has_initial_value<
    Rule, std::void_t<decltype(Rule::initial_value(std::declval<const typename Rule::Hyper&>(), 0, std::int64_t(0)))>>
    : std::true_type {};

template <class Rule>
FASTOPTIM_HD inline double initial_value(const typename Rule::Hyper& h, int slot, std::int64_t position) {
  if constexpr (has_initial_value<Rule>::value) return Rule::initial_value(h, slot, position);
  else return 0.0;
}

// Whether a rule advances its per-tensor scalars itself (next_scalars), on the host before prepare.
template <class Rule, class = void>
struct has_next_scalars : std::false_type {};
template <class Rule>
struct has_next_scalars<Rule, std::void_t<decltype(Rule::next_scalars(std::declval<const typename Rule::Hyper&>(),
                                                                       std::declval<const StepInfo&>(),
                                                                       std::declval<double*>()))>> : std::true_type {};

// Runs the rule's next_scalars into s.scalar_next; true when the front end must store them (the
// value it stores must be the one prepare saw: the rule keeps them exact in float32).
template <class Rule>
FASTOPTIM_HD inline bool advance_scalars(const typename Rule::Hyper& h, StepInfo& s) {
  if constexpr (has_next_scalars<Rule>::value) {
    Rule::next_scalars(h, s, s.scalar_next);
    return true;
  } else {
    return false;
  }
}

// A per-row rule whose rows' sums reduce to a summary of the tensor (AdamP: the largest row cosine
// and the totals) says how: Rule::kRowSummary values (Rule::summarize_rows), the first
// Rule::kRowSummaryMax of them combined across shards by their maximum, the others added up; its
// finish_rows then takes the whole tensor's summary. 0: none.
template <class Rule, class = void>
struct row_summary_of : std::integral_constant<int, 0> {};
template <class Rule>
struct row_summary_of<Rule, std::void_t<decltype(Rule::kRowSummary)>> : std::integral_constant<int, Rule::kRowSummary> {};
template <class Rule, class = void>
struct row_summary_max_of : std::integral_constant<int, 0> {};
template <class Rule>
struct row_summary_max_of<Rule, std::void_t<decltype(Rule::kRowSummaryMax)>>
    : std::integral_constant<int, Rule::kRowSummaryMax> {};

// Whether a step of the rule can be split at its sums (fastoptim_isa::SumsExchange), so that a front
// end combines the sums of a sharded tensor's shards between the halves: sums per tensor, or per row
// with a summary of the tensor (for shards of whole rows: a shard holding parts of rows is refused by
// the front ends); no noise keyed by element position, and no per-tensor scalars advanced before
// prepare (the second half prepares again from the state as the first left it).
template <class Rule>
constexpr bool splits_at_sums() {
  return sums_of<Rule>::value > 0 && (!sums_per_row<Rule>::value || row_summary_of<Rule>::value > 0) &&
         !uses_index<Rule>::value && !has_next_scalars<Rule>::value;
}

// The values a split step exchanges per tensor: its sums, or a per-row rule's summary of its rows.
template <class Rule>
constexpr int split_sums_of() {
  return sums_per_row<Rule>::value ? row_summary_of<Rule>::value : sums_of<Rule>::value;
}

// The state slots a rule may keep in 8 bits (state_bits=8), as a bit mask over its slots: its
// moments (kEightBitSlots), each starting at its start value, encoded (core::constant_codes). Not
// copies of the parameter or of the gradient (Schedule-Free's z, Adan's previous gradient), whose
// 8-bit error would not average out; 0 (none) unless the rule says so. A two-pass rule may say so too: its first pass decodes the codes, and
// its second stores them (the driver's StateInSecondPass).
template <class Rule, class = void>
struct eight_bit_slots : std::integral_constant<unsigned, 0> {};
template <class Rule>
struct eight_bit_slots<Rule, std::void_t<decltype(Rule::kEightBitSlots)>>
    : std::integral_constant<unsigned, Rule::kEightBitSlots> {};

// Whether the step stores state slot j back (every element slot but those the rule only reads).
template <class Rule, class = void>
struct read_only_slots : std::integral_constant<unsigned, 0> {};
template <class Rule>
struct read_only_slots<Rule, std::void_t<decltype(Rule::kReadOnlySlots)>>
    : std::integral_constant<unsigned, Rule::kReadOnlySlots> {};
template <class Rule>
FASTOPTIM_HD constexpr bool stores_slot(int j) {
  return !(read_only_slots<Rule>::value >> j & 1u);
}

// The code grid of a tensor's 8-bit state (numel elements, `rows` rows of dim 0, 1 unless ndim > 1):
// blocks restart at each row for a per-row rule, whose rows the driver steps as tensors of their
// own (row_of); one row, the whole tensor, for the others.
template <class Rule>
FASTOPTIM_HD constexpr core::CodeGrid code_grid(std::int64_t numel, std::int64_t rows) {
  return {numel, sums_per_row<Rule>::value && rows > 1 ? numel / rows : numel};
}

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
FASTOPTIM_HD inline bool writes_param(const Coeffs& k) {
  if constexpr (has_writes_param<Rule, Coeffs>::value) return Rule::writes_param(k);
  else return true;
}

// Whether a two-pass rule's step of the tensor with coefficients k uses its sums (true unless the
// rule says otherwise).
template <class Rule, class Coeffs, class = void>
struct has_needs_sums : std::false_type {};
template <class Rule, class Coeffs>
struct has_needs_sums<Rule, Coeffs, std::void_t<decltype(Rule::needs_sums(std::declval<const Coeffs&>()))>>
    : std::true_type {};

template <class Rule, class Coeffs>
FASTOPTIM_HD inline bool needs_sums(const Coeffs& k) {
  if constexpr (has_needs_sums<Rule, Coeffs>::value) return Rule::needs_sums(k);
  else return true;
}

}  // namespace fastoptim::rules
