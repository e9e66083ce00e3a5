// The generic CPU driver: runs any rule over all tensors of a call. Element-wise rules get one
// parallel pass over the concatenated elements (a SIMD body of kLanes<T> and a one-lane tail, both
// calling Rule::apply). Rules with per-tensor (or per-row) sums get two passes: the sums, the
// rule's finish on the host, then the update (see rules/rule.h). Included only by the per-ISA
// kernel translation unit.
#pragma once
#include <algorithm>
#include <array>
#include <cassert>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "fastoptim/core/codes8.h"
#include "fastoptim/core/dtypes.h"
#include "fastoptim/kernels/isa.h"
#include "fastoptim/core/lanes.h"
#include "fastoptim/core/parallel.h"
#include "fastoptim/core/reduce.h"
#include "fastoptim/parts/philox.h"
#include "fastoptim/rules/rule.h"

namespace fastoptim::kernels {

using namespace fastoptim::core;  // (the primitives the driver is written in)
using fastoptim_isa::TensorSlots;

// The storage of a call: S for parameters, gradients and state alike, or StateIn<P, St>: parameters
// and gradients of P, state of St (float32 parameters with bf16 state: TensorSlots::bf16_state; or
// St = code8: the rule's 8-bit slots in code8, its others in P: TensorSlots::eight_bit_state).
// The compute type is P's (compute_t<StateIn<...>> is float).
template <class P, class St>
struct StateIn {};
template <class S>
struct storage_of {
  using param = S;
  using state = S;
};
template <class P, class St>
struct storage_of<StateIn<P, St>> {
  using param = P;
  using state = St;
};
template <class S>
using param_t = typename storage_of<S>::param;
template <class S>
using state_t = typename storage_of<S>::state;

// The loops over a range inline every call in them, the rule's apply included: GCC declines to
// inline most rules' apply<float, 16> once a rule has several callers (each dtype, the stochastic
// store), and the call then spills the lanes and reloads the coefficients every 16 elements (AdamW
// at half torch's speed on one thread). Not in the scalar reference and the opt-in SSE2 tables, which run
// in tests and on x86 CPUs without AVX2: there it would only add a minute to each one's compile.
#if defined(__GNUC__) && !defined(__clang__) && (FASTOPTIM_VECTOR_BYTES >= 32 || defined(__aarch64__))
#define FASTOPTIM_FLATTEN __attribute__((flatten))
#else
#define FASTOPTIM_FLATTEN
#endif

// Where update_lanes finds and leaves element state: here, the state arrays themselves, in the
// storage type of S (the 8-bit path below decodes and collects its slots instead).
template <class S>
struct StateArrays {
  template <int W, class T>
  FASTOPTIM_HD FASTOPTIM_ALWAYS_INLINE void load(const TensorSlots& t, int j, std::int64_t i, Vec<T, W>& out) const {
    out = core::load<W>(static_cast<const state_t<S>*>(t.state[j]) + i);
  }
  template <int W, class T>
  FASTOPTIM_HD FASTOPTIM_ALWAYS_INLINE void store(const TensorSlots& t, int j, std::int64_t i, Vec<T, W> value) const {
    core::store<W>(static_cast<state_t<S>*>(t.state[j]) + i, value);
  }
};

// Loads W elements of the parameter, the gradient (when load_grad) and the state (through
// `arrays`), runs the rule's apply, and stores the parameter (unless the rule says this step leaves
// it) and, when StoreState, the state. Element-wise rules and the second pass of two-pass rules
// both run it. With Rounded (bf16 parameters), the parameter is stored by stochastic rounding with
// lane w's random bits at bits[w].
template <class Rule, class S, int W, bool StoreState, bool Rounded = false, class T, class Arrays = StateArrays<S>>
FASTOPTIM_HD FASTOPTIM_ALWAYS_INLINE void update_lanes(const TensorSlots& t, const typename Rule::template Coeffs<T>& k, std::int64_t i,
                         bool load_grad, const std::uint16_t* bits = nullptr, const Arrays& arrays = {}) {
  constexpr int kSlots = Rule::kStateSlots;
  param_t<S>* param = static_cast<param_t<S>*>(t.param) + i;
  Vec<T, W> p = load<W>(param);
  Vec<T, W> g = {};
  if (load_grad) g = load<W>(static_cast<const param_t<S>*>(t.grad) + i);
  Vec<T, W> state[kSlots > 0 ? kSlots : 1] = {};
  for (int j = 0; j < kSlots; ++j)
    if (t.state[j]) arrays.load(t, j, i, state[j]);
  if constexpr (rules::uses_index<Rule>::value) Rule::apply(p, g, state, k, t.first_index + i);
  else Rule::apply(p, g, state, k);
  if (rules::writes_param<Rule>(k)) {
    if constexpr (Rounded) store_rounded<W>(param, p, bits);
    else store<W>(param, p);
  }
  if constexpr (StoreState)
    for (int j = 0; j < kSlots; ++j)
      if (t.state[j] && rules::stores_slot<Rule>(j)) arrays.store(t, j, i, state[j]);
}

// Asks for element i of every array of tensor t (parameter, gradient, state) to be brought into
// cache: one line per array at i.
template <class S>
FASTOPTIM_ALWAYS_INLINE void prefetch_at(const TensorSlots& t, std::int64_t i, int state_slots) {
#if defined(__GNUC__)
  __builtin_prefetch(static_cast<const param_t<S>*>(t.param) + i, 1);
  if (t.grad) __builtin_prefetch(static_cast<const param_t<S>*>(t.grad) + i, 0);
  for (int j = 0; j < state_slots; ++j)
    if (t.state[j]) __builtin_prefetch(static_cast<const state_t<S>*>(t.state[j]) + i, 1);
#endif
}

// body(lanes, i, bits) over [begin, end) of a float-computed tensor whose element i has index
// first_index + i, `lanes` a std::integral_constant of the width and bits[w] lane w's stochastic
// rounding bits: the bits of one group of kRoundingGroup elements at a time, from the group holding
// element `begin` on, so after the first span every span is a whole group of whole SIMD bodies.
template <class Body>
FASTOPTIM_ALWAYS_INLINE void over_rounding_groups(const parts::RoundingKey& key, std::int64_t first_index, std::int64_t begin,
                                                  std::int64_t end, Body&& body) {
  constexpr int W = kLanes<float>;
  constexpr std::int64_t kSpan = parts::kRoundingGroup;
  alignas(64) std::uint16_t bits[kSpan];
  for (std::int64_t i = begin; i < end;) {
    const std::int64_t group = (first_index + i) / kSpan;
    const std::int64_t span_first = group * kSpan;  // element index of bits[0]
    parts::rounding_bits_of_group(key, std::uint64_t(group), bits);
    const std::int64_t stop = std::min(end, span_first + kSpan - first_index);
    const std::int64_t offset = first_index - span_first;  // element i's bits are bits[i + offset]
    for (; i + W <= stop; i += W) body(std::integral_constant<int, W>{}, i, bits + i + offset);
    for (; i < stop; ++i) body(std::integral_constant<int, 1>{}, i, bits + i + offset);
  }
}

// update_range for a bf16 parameter stored by stochastic rounding.
template <class Rule, class S, bool StoreState, class Coeffs>
FASTOPTIM_FLATTEN inline void update_range_rounded(const TensorSlots& t, const Coeffs& k, std::int64_t begin, std::int64_t end,
                                 bool load_grad) {
  over_rounding_groups({t.rounding_seed, t.rounding_stream, t.rounding_step}, t.first_index, begin, end,
                       [&](auto lanes, std::int64_t i, const std::uint16_t* bits) {
                         update_lanes<Rule, S, decltype(lanes)::value, StoreState, true>(t, k, i, load_grad, bits);
                       });
}

// ---- 8-bit state: a block of core::kCodeBlock elements at a time ----

// StateArrays for one block of 8-bit state: the rule's 8-bit slots are decoded from their codes
// with the block's old scale, and their new values collected in `fresh` (the block's codes need its
// new largest magnitude first, gathered as they are stored); its other slots are read and written
// in place, in P. (The front ends give every 8-bit slot in use its scales.)
template <class Rule, class S>
struct BlockOfCodes {
  using P = param_t<S>;
  static constexpr int kW = kLanes<float>;
  static constexpr unsigned kCoded = rules::eight_bit_slots<Rule>::value;
  float (*fresh)[kCodeBlock];  // [slot][element - first]
  std::int64_t first;          // the block's first element
  BlockDecoding old[Rule::kStateSlots];  // from the block's scales before this step
  // (update_lanes sees the state arrays as const; what a store gathers is the block's, not theirs)
  mutable BlockExtent<kW> lanes[Rule::kStateSlots];
  mutable BlockExtent<1> extent[Rule::kStateSlots];

  static constexpr bool coded(int j) { return kCoded >> j & 1u; }

  BlockOfCodes(const TensorSlots& t, std::int64_t block, float (*fresh_values)[kCodeBlock]) : fresh(fresh_values), first(block * kCodeBlock) {
    for (int j = 0; j < Rule::kStateSlots; ++j) old[j] = block_decoding(coded(j) && t.state[j] ? t.state_scale[j][block] : 0.0f);
  }
  template <int W>
  FASTOPTIM_ALWAYS_INLINE void load(const TensorSlots& t, int j, std::int64_t i, Vec<float, W>& out) const {
    if (coded(j)) out = decode_codes<W>(static_cast<const code8*>(t.state[j]) + i, old[j]);
    else out = core::load<W>(static_cast<const P*>(t.state[j]) + i);
  }
  template <int W>
  FASTOPTIM_ALWAYS_INLINE void store(const TensorSlots& t, int j, std::int64_t i, Vec<float, W> value) const {
    if (!coded(j)) return core::store<W>(static_cast<P*>(t.state[j]) + i, value);
    core::store<W>(fresh[j] + (i - first), value);
    if constexpr (W == kW) lanes[j].add(value);
    else extent[j].add(value);
  }

  // The block's new codes and scales, from the `count` fresh values of each 8-bit slot.
  void encode(const TensorSlots& t, std::int64_t count) const {
    for (int j = 0; j < Rule::kStateSlots; ++j) {
      if (!coded(j) || !t.state[j] || !rules::stores_slot<Rule>(j)) continue;  // (a slot only read keeps its codes)
      lanes[j].fold_into(extent[j]);
      t.state_scale[j][first / kCodeBlock] = encode_with_extent(fresh[j], count, extent[j], static_cast<code8*>(t.state[j]) + first);
    }
  }
};

// update_range for 8-bit state, block by block. A thread's range is first moved onto block edges
// (its start and end each down to one, but the tensor's end), so neighbouring ranges still meet and
// each block is done whole by one thread: the same bits for any thread count.
template <class Rule, class S, bool Rounded, class Coeffs>
FASTOPTIM_FLATTEN inline void update_range_coded(const TensorSlots& t, const Coeffs& k, std::int64_t begin, std::int64_t end,
                                                 bool load_grad) {
  constexpr int W = kLanes<float>;
  begin -= begin % kCodeBlock;
  if (end != t.numel) end -= end % kCodeBlock;
  alignas(64) float fresh[Rule::kStateSlots][kCodeBlock];
  for (std::int64_t first = begin; first < end; first += kCodeBlock) {
    const std::int64_t last = std::min(end, first + kCodeBlock);
    const BlockOfCodes<Rule, S> block(t, first / kCodeBlock, fresh);
    auto lanes_at = [&](auto lanes, std::int64_t i, const std::uint16_t* bits) {
      update_lanes<Rule, S, decltype(lanes)::value, true, Rounded>(t, k, i, load_grad, bits, block);
    };
    if constexpr (Rounded) {
      over_rounding_groups({t.rounding_seed, t.rounding_stream, t.rounding_step}, t.first_index, first, last, lanes_at);
    } else {
      std::int64_t i = first;
      for (; i + W <= last; i += W) lanes_at(std::integral_constant<int, W>{}, i, nullptr);
      for (; i < last; ++i) lanes_at(std::integral_constant<int, 1>{}, i, nullptr);
    }
    block.encode(t, last - first);
  }
}

// update_lanes over the elements [begin, end) of one tensor: a SIMD body and a one-lane tail.
// With `next`, each step also prefetches element next_offset + i of tensor `next`, so the next
// tensor's memory is read while this one is computed from cache (two-pass rules on small tensors).
template <class Rule, class S, bool StoreState, class Coeffs>
FASTOPTIM_FLATTEN inline void update_range(const TensorSlots& t, const Coeffs& k, std::int64_t begin, std::int64_t end, bool load_grad,
                         const TensorSlots* next = nullptr, std::int64_t next_offset = 0) {
  if constexpr (std::is_same_v<state_t<S>, code8>) {
    static_assert(StoreState, "8-bit state is stored block by block as the update goes (see StateInSecondPass)");
    if constexpr (std::is_same_v<param_t<S>, bf16>)
      if (t.stochastic_rounding) return update_range_coded<Rule, S, true>(t, k, begin, end, load_grad);
    update_range_coded<Rule, S, false>(t, k, begin, end, load_grad);
  } else {
    if constexpr (std::is_same_v<param_t<S>, bf16>)
      if (t.stochastic_rounding) return update_range_rounded<Rule, S, StoreState>(t, k, begin, end, load_grad);
    constexpr int W = kLanes<compute_t<S>>;
    std::int64_t i = begin;
    if (next) {
      const std::int64_t ahead = std::min(end, next->numel - next_offset);
      for (; i + W <= ahead; i += W) {
        prefetch_at<S>(*next, next_offset + i, Rule::kStateSlots);
        update_lanes<Rule, S, W, StoreState>(t, k, i, load_grad);
      }
    }
    for (; i + W <= end; i += W) update_lanes<Rule, S, W, StoreState>(t, k, i, load_grad);
    for (; i < end; ++i) update_lanes<Rule, S, 1, StoreState>(t, k, i, load_grad);
  }
}

// One parallel pass of update_lanes over every element of `count` units: unit k is the tensor
// tensors[index(k)] with coeffs[index(k)].
template <class Rule, class S, bool StoreState, class Coeffs, class Index, class LoadGrad>
void update_all(const TensorSlots* tensors, std::int64_t count, const Coeffs* coeffs, Index index, LoadGrad load_grad) {
  parallel_over_elements(
      count, [&](std::int64_t k) { return tensors[index(k)].numel; },
      [&](std::int64_t k, std::int64_t begin, std::int64_t end) {
        const std::int64_t t = index(k);
        update_range<Rule, S, StoreState>(tensors[t], coeffs[t], begin, end, load_grad(coeffs[t]));
      });
}

template <class Rule, class S>
void run_elementwise(const TensorSlots* tensors, std::int64_t count, const void* coeffs) {
  using Coeffs = typename Rule::template Coeffs<compute_t<S>>;
  update_all<Rule, S, true>(tensors, count, static_cast<const Coeffs*>(coeffs), [](std::int64_t t) { return t; },
                            [](const Coeffs&) { return rules::reads_grad<Rule>::value; });
}

// ---- rules with per-tensor sums: pass 1 (sums), finish on the host, pass 2 (update) ----

// Pass 1's term for per_tensor_sums (and, one element per thread, for the CUDA sums kernel). For
// a rule whose first pass updates the state, it runs advance and stores the state, then takes the
// contributions from the state as stored (for bf16/fp16, the rounded values pass 2 will read);
// otherwise it only reads (8-bit slots decoded with their block's scale: the blocks of the sums,
// kReduceBlock elements, are whole code blocks; a per-row rule's blocks restart at each row, which
// on the CPU is a tensor of its own, row_of, and on CUDA a unit of the whole tensor's). Never
// writes the parameter.
template <class Rule, class S, class T>
struct FirstPassTerm {
  const TensorSlots* t;
  const typename Rule::template Coeffs<T>* k;

  template <int W>
  FASTOPTIM_HD FASTOPTIM_ALWAYS_INLINE Vec<T, W> load_state(int j, std::int64_t i) const {
    if constexpr (std::is_same_v<state_t<S>, code8>) {
      static_assert(!Rule::kStateInFirstPass, "8-bit state is stored in pass 2 (see StateInSecondPass)");
      if (rules::eight_bit_slots<Rule>::value >> j & 1u)
        return decode_codes<W>(static_cast<const code8*>(t->state[j]) + i,
                               block_decoding(t->state_scale[j][rules::code_grid<Rule>(t->numel, t->rows).block_of(i)]));
      return load<W>(static_cast<const param_t<S>*>(t->state[j]) + i);
    } else {
      return load<W>(static_cast<const state_t<S>*>(t->state[j]) + i);
    }
  }

  template <int W>
  FASTOPTIM_HD FASTOPTIM_ALWAYS_INLINE void at(std::int64_t i, Vec<T, W>* out) const {
    constexpr int kSlots = Rule::kStateSlots;
    using St = state_t<S>;
    const Vec<T, W> p = load<W>(static_cast<const param_t<S>*>(t->param) + i);
    const Vec<T, W> g = load<W>(static_cast<const param_t<S>*>(t->grad) + i);
    Vec<T, W> state[kSlots] = {};
    for (int j = 0; j < kSlots; ++j)
      if (t->state[j]) state[j] = load_state<W>(j, i);
    if constexpr (Rule::kStateInFirstPass) {
      Rule::advance(p, g, state, *k);
      for (int j = 0; j < kSlots; ++j) {
        if (!t->state[j] || !rules::stores_slot<Rule>(j)) continue;
        store<W>(static_cast<St*>(t->state[j]) + i, state[j]);
        if constexpr (!std::is_same_v<St, T>) state[j] = load<W>(static_cast<const St*>(t->state[j]) + i);
      }
    }
    Rule::contribute(p, g, state, *k, out);
  }
};

// Advanced state as a rule whose pass 1 stores it reads it back: through its storage type (bf16
// state rounded to nearest even). 8-bit codes are stored only as pass 2 goes: nothing to read back.
template <class S, int Slots, class T, int W>
FASTOPTIM_HD FASTOPTIM_ALWAYS_INLINE void as_stored(Vec<T, W>* state) {
  if constexpr (!std::is_same_v<state_t<S>, T> && !std::is_same_v<state_t<S>, code8>) {
    for (int j = 0; j < Slots; ++j) {
      state_t<S> stored[W];
      store<W>(stored, state[j]);
      state[j] = load<W>(stored);
    }
  }
}

// A two-pass rule's step in one pass, for tensors whose step needs no sums (rules::needs_sums):
// advance (for a rule that updates its state in pass 1) then apply, as an element-wise rule. The
// state advance wrote goes through the storage type before apply reads it, as it does in the two
// passes, so both give the same bits.
template <class Rule, class S>
struct OnePass : Rule {
  template <class T, int W, class... Index>
  static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const typename Rule::template Coeffs<T>& k,
                    Index... index) {
    if constexpr (Rule::kStateInFirstPass) {
      Rule::advance(p, g, state, k);
      as_stored<S, Rule::kStateSlots>(state);
    }
    Rule::apply(p, g, state, k, index...);
  }
};

// A rule whose first pass updates its state (LAMB) run with its state updated in pass 2 instead:
// pass 1 advances a copy of each element's state for the contributions and stores nothing, pass 2
// advances it again, applies, and stores it. For 8-bit state, whose codes are stored a whole block
// at a time, as only pass 2 goes (update_range_coded); for a per-row rule's split step, whose halves
// both run pass 1 (the rows' sums are not kept between them). Both passes advance the same state,
// so the sums and the update see the values the storing passes would (read back as stored: a
// split step of bf16 state has the whole step's bits); the price is the gradient read twice.
template <class Rule, class S>
struct StateInSecondPass : Rule {
  static_assert(Rule::kStateInFirstPass, "for rules whose pass 1 stores state");
  static constexpr bool kStateInFirstPass = false;

  template <class T, int W>
  FASTOPTIM_HD static void contribute(const Vec<T, W>& p, const Vec<T, W>& g, const Vec<T, W>* state,
                                      const typename Rule::template Coeffs<T>& k, Vec<T, W>* out) {
    Vec<T, W> advanced[Rule::kStateSlots];
    for (int j = 0; j < Rule::kStateSlots; ++j) advanced[j] = state[j];
    Rule::advance(p, g, advanced, k);
    as_stored<S, Rule::kStateSlots>(advanced);
    Rule::contribute(p, g, advanced, k, out);
  }
  template <class T, int W, class... Index>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const typename Rule::template Coeffs<T>& k,
                                 Index... index) {
    Rule::advance(p, g, state, k);
    as_stored<S, Rule::kStateSlots>(state);
    Rule::apply(p, g, state, k, index...);
  }
};

// Row r of a tensor as a tensor of its own: every element-shaped pointer moved to the row (and
// 8-bit state's block scales to the row's, whose blocks restart at each row: rules::code_grid).
template <class S>
TensorSlots row_of(const TensorSlots& t, std::int64_t r, int element_slots) {
  const std::int64_t length = t.numel / t.rows;
  TensorSlots row = t;
  row.param = static_cast<param_t<S>*>(t.param) + r * length;
  if (t.grad) row.grad = static_cast<const param_t<S>*>(t.grad) + r * length;
  for (int j = 0; j < element_slots; ++j) {
    if (t.state[j]) row.state[j] = static_cast<state_t<S>*>(t.state[j]) + r * length;
    if (t.state_scale[j]) row.state_scale[j] = t.state_scale[j] + r * core::code_blocks(length);
  }
  row.numel = length;
  row.rows = 1;
  row.first_index = t.first_index + r * length;
  return row;
}

// A two-pass rule's step over the tensors of a call, in named steps: lay out the units the sums
// run over (the tensors, or the rows of each for per-row rules), sort the tensors (no sums needed,
// one reduction block, more), step those without sums in one pass, the one-block ones each whole
// while in cache, then sum the others' blocks in parallel, finish each, and update them in one
// parallel pass. A step split at the sums (fastoptim_isa::SumsExchange) stops after the sums (the
// first half, which gives them) or starts from them (the second half, which takes them added up).
// One instance per thread keeps its buffers' capacity between calls, so a steady-state step
// allocates nothing (a per-row rule has one entry per row of every tensor).
template <class Rule, class S>
class TwoPassStep {
  using T = compute_t<S>;
  using Coeffs = typename Rule::template Coeffs<T>;
  static constexpr int W = kLanes<T>;
  static constexpr int N = rules::sums_of<Rule>::value;
  static constexpr bool kPerRow = rules::sums_per_row<Rule>::value;
  using Sums = std::array<T, N>;

 public:
  static TwoPassStep& of_this_thread() {
    static thread_local TwoPassStep step;
    return step;
  }

  // `exchange` (null: the whole step) splits the step at the sums.
  void run(const TensorSlots* tensors, std::int64_t count, const Coeffs* given,
           const fastoptim_isa::SumsExchange* exchange) {
    using fastoptim_isa::SumsPass;
    assert(!(kPerRow && exchange && (Rule::kStateInFirstPass || rules::row_summary_of<Rule>::value == 0)) &&
           "a per-row split step runs as StateInSecondPass, for rules with a row summary (run_rule)");
    const bool first_half = exchange && exchange->pass == SumsPass::first;
    const bool second_half = exchange && exchange->pass == SumsPass::second;
    tensors_ = tensors;
    lay_out_units(count, given);
    sort_tensors(count, given, exchange != nullptr, second_half);
    step_tensors_without_sums();
    step_local_tensors();
    if (blocked_.empty()) return;
    list_blocked_units();
    // (a per-row split step sums its rows in both halves and exchanges a summary of each tensor's)
    if (second_half && !kPerRow) take_sums(exchange->sums);
    else sum_blocked_units();
    if (first_half) return give_sums(exchange->sums);
    for (std::int64_t t : blocked_) finish(t, second_half ? exchange->sums : nullptr);
    update_all<Rule, S, !Rule::kStateInFirstPass>(units_, std::int64_t(blocked_units_.size()), coeffs_.data(),
                                                  [this](std::int64_t k) { return blocked_units_[std::size_t(k)]; },
                                                  [](const Coeffs& k) { return rules::second_pass_reads_grad<Rule>(k); });
  }

 private:
  // The units the sums run over: the tensors, or for per-row rules the rows of each tensor, each
  // with its own copy of the tensor's coefficients (finish adds the per-unit scalars).
  void lay_out_units(std::int64_t count, const Coeffs* given) {
    units_ = tensors_;
    std::int64_t unit_count = count;
    if constexpr (kPerRow) {
      row_units_.clear();
      coeffs_.clear();
      first_unit_.assign(std::size_t(count) + 1, 0);
      for (std::int64_t t = 0; t < count; ++t) {
        for (std::int64_t r = 0; r < tensors_[t].rows; ++r) {
          row_units_.push_back(row_of<S>(tensors_[t], r, Rule::kStateSlots));
          coeffs_.push_back(given[t]);
        }
        first_unit_[std::size_t(t) + 1] = std::int64_t(row_units_.size());
      }
      units_ = row_units_.data();
      unit_count = std::int64_t(row_units_.size());
    } else {
      coeffs_.assign(given, given + count);
    }
    sums_.resize(std::size_t(unit_count));
  }

  // Tensor t's units: [first, last).
  std::pair<std::int64_t, std::int64_t> units_of(std::int64_t t) const {
    if constexpr (kPerRow) return {first_unit_[std::size_t(t)], first_unit_[std::size_t(t) + 1]};
    else return {t, t + 1};
  }

  // (`summaries`: a per-row split step's second half, the whole tensors' summaries of their rows)
  void finish(std::int64_t t, const double* summaries = nullptr) {
    const auto first = std::size_t(units_of(t).first);
    if constexpr (kPerRow && rules::row_summary_of<Rule>::value > 0) {
      Rule::finish_rows(&coeffs_[first], &sums_[first], tensors_[t].rows,
                        summaries ? summaries + t * rules::row_summary_of<Rule>::value : nullptr);
    } else if constexpr (kPerRow) {
      Rule::finish_rows(&coeffs_[first], &sums_[first], tensors_[t].rows);
    } else if constexpr (rules::scalar_slots_of<Rule>::value > 0) {
      T* scalars[rules::scalar_slots_of<Rule>::value];
      for (int j = 0; j < rules::scalar_slots_of<Rule>::value; ++j)
        scalars[j] = static_cast<T*>(tensors_[t].state[Rule::kStateSlots + j]);
      Rule::finish(coeffs_[first], sums_[first].data(), scalars);
    } else {
      Rule::finish(coeffs_[first], sums_[first].data());
    }
  }

  // Three kinds of tensors: those whose step needs no sums (one pass, see OnePass; finish sees
  // zero sums, and is run here), those of at most one reduction block (local), and the others
  // (blocked). A split step takes every tensor with sums by the blocked path, which can stop
  // between its sums and its update; its first half steps the tensors without sums in full, so
  // its second half (`second_half`) leaves them out.
  void sort_tensors(std::int64_t count, const Coeffs* given, bool split, bool second_half) {
    one_pass_units_.clear();
    local_.clear();
    blocked_.clear();
    for (std::int64_t t = 0; t < count; ++t) {
      if (rules::needs_sums<Rule>(given[t])) {
        (tensors_[t].numel <= kReduceBlock && !split ? local_ : blocked_).push_back(t);
        continue;
      }
      if (second_half) continue;
      const auto [first, last] = units_of(t);
      for (std::int64_t u = first; u < last; ++u) {
        sums_[std::size_t(u)] = {};
        one_pass_units_.push_back(u);
      }
      finish(t);
    }
  }

  void step_tensors_without_sums() {
    if (one_pass_units_.empty()) return;
    update_all<OnePass<Rule, S>, S, true>(
        units_, std::int64_t(one_pass_units_.size()), coeffs_.data(),
        [this](std::int64_t k) { return one_pass_units_[std::size_t(k)]; }, [](const Coeffs&) { return true; });
  }

  // A local tensor is done whole by one thread: its sums, its finish and its update back to back,
  // while it is still in cache (pass 2 then reads it from cache, not from memory). Its sums are one
  // block, so they are the same bits the blocked path gives.
  void step_local_tensors() {
    const auto local_count = std::int64_t(local_.size());
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (local_count > 1 && max_threads() > 1)
#endif
    for (std::int64_t k = 0; k < local_count; ++k) {
      const std::int64_t t = local_[std::size_t(k)];
      const TensorSlots* next = k + 1 < local_count ? &tensors_[local_[std::size_t(k) + 1]] : nullptr;
      const auto [first, last] = units_of(t);
      for (std::int64_t u = first; u < last; ++u) {
        FirstPassTerm<Rule, S, T> term{&units_[u], &coeffs_[std::size_t(u)]};
        sums_[std::size_t(u)] = block_sums<T, W, N>(0, units_[u].numel, term);
      }
      finish(t);
      for (std::int64_t u = first; u < last; ++u) {
        const Coeffs& k_u = coeffs_[std::size_t(u)];
        update_range<Rule, S, !Rule::kStateInFirstPass>(units_[u], k_u, 0, units_[u].numel,
                                                        rules::second_pass_reads_grad<Rule>(k_u), next,
                                                        units_[u].first_index - tensors_[t].first_index);
      }
    }
  }

  void list_blocked_units() {
    blocked_units_.clear();
    for (std::int64_t t : blocked_)
      for (std::int64_t u = units_of(t).first; u < units_of(t).second; ++u) blocked_units_.push_back(u);
  }

  // Pass 1 over the blocked units: their blocks summed in parallel, written straight into
  // sums_[unit] (per_tensor_sums' k-th result is the k-th blocked unit's).
  void sum_blocked_units() {
    struct Scatter {
      std::vector<Sums>& all;
      const std::vector<std::int64_t>& index;
      Sums& operator[](std::int64_t k) const { return all[std::size_t(index[std::size_t(k)])]; }
    };
    per_tensor_sums<T, W, N>(
        std::int64_t(blocked_units_.size()), [this](std::int64_t k) { return units_[blocked_units_[std::size_t(k)]].numel; },
        [this](std::int64_t k) {
          const std::int64_t u = blocked_units_[std::size_t(k)];
          return FirstPassTerm<Rule, S, T>{&units_[u], &coeffs_[std::size_t(u)]};
        },
        Scatter{sums_, blocked_units_});
  }

  // The split step's hand-over: tensor t's sums at sums[t * N ...], or a per-row rule's summary of
  // tensor t's rows at sums[t * kRowSummary ...].
  void give_sums(double* sums) const {
    if constexpr (kPerRow && rules::row_summary_of<Rule>::value > 0) {
      constexpr int kSummary = rules::row_summary_of<Rule>::value;
      for (std::int64_t t : blocked_) {
        const auto first = std::size_t(units_of(t).first);
        Rule::summarize_rows(&coeffs_[first], &sums_[first], tensors_[t].rows, sums + t * kSummary);
      }
    } else {
      for (std::int64_t t : blocked_)
        for (int j = 0; j < N; ++j) sums[t * N + j] = double(sums_[std::size_t(t)][std::size_t(j)]);
    }
  }
  void take_sums(const double* sums) {
    for (std::int64_t t : blocked_)
      for (int j = 0; j < N; ++j) sums_[std::size_t(t)][std::size_t(j)] = T(sums[t * N + j]);
  }

  const TensorSlots* tensors_ = nullptr;
  const TensorSlots* units_ = nullptr;
  std::vector<TensorSlots> row_units_;
  std::vector<std::int64_t> first_unit_;  // per-row rules: tensor t's rows are units [first_unit_[t], first_unit_[t+1])
  std::vector<Coeffs> coeffs_;
  std::vector<Sums> sums_;
  std::vector<std::int64_t> one_pass_units_, local_, blocked_, blocked_units_;
};

// Whether a rule's pass 1 stores its state (what 8-bit state cannot do: see StateInSecondPass).
template <class Rule>
constexpr bool stores_state_in_first_pass() {
  if constexpr (rules::sums_of<Rule>::value > 0) return Rule::kStateInFirstPass;
  else return false;
}

template <class Rule, class S>
void run_rule(const TensorSlots* tensors, std::int64_t count, const void* coeffs,
              const fastoptim_isa::SumsExchange* exchange) {
  if constexpr (std::is_same_v<state_t<S>, code8> && stores_state_in_first_pass<Rule>()) {
    run_rule<StateInSecondPass<Rule, S>, S>(tensors, count, coeffs, exchange);
  } else if constexpr (rules::sums_of<Rule>::value > 0) {
    // (a per-row rule's split step: both halves sum the rows, so neither may store state in pass 1)
    if constexpr (rules::sums_per_row<Rule>::value && rules::splits_at_sums<Rule>() && stores_state_in_first_pass<Rule>())
      if (exchange) return run_rule<StateInSecondPass<Rule, S>, S>(tensors, count, coeffs, exchange);
    TwoPassStep<Rule, S>::of_this_thread().run(tensors, count,
                                               static_cast<const typename Rule::template Coeffs<compute_t<S>>*>(coeffs),
                                               exchange);
  } else {
    run_elementwise<Rule, S>(tensors, count, coeffs);  // (the front ends split only two-pass steps)
  }
}

template <class Rule>
void elementwise_kernel(const TensorSlots* tensors, std::int64_t count, const void* coeffs, fastoptim_isa::Dtype dtype,
                        const fastoptim_isa::SumsExchange* exchange) {
  // (8-bit state only where the rule keeps some; the front ends refuse it elsewhere)
  constexpr bool kEightBit = rules::eight_bit_slots<Rule>::value != 0;
  switch (dtype) {
    case fastoptim_isa::Dtype::f32:
      if (count > 0 && tensors[0].bf16_state) return run_rule<Rule, StateIn<float, bf16>>(tensors, count, coeffs, exchange);
      if constexpr (kEightBit)
        if (count > 0 && tensors[0].eight_bit_state) return run_rule<Rule, StateIn<float, code8>>(tensors, count, coeffs, exchange);
      return run_rule<Rule, float>(tensors, count, coeffs, exchange);
    case fastoptim_isa::Dtype::f64: return run_rule<Rule, double>(tensors, count, coeffs, exchange);
    case fastoptim_isa::Dtype::bf16:
      if constexpr (kEightBit)
        if (count > 0 && tensors[0].eight_bit_state) return run_rule<Rule, StateIn<bf16, code8>>(tensors, count, coeffs, exchange);
      return run_rule<Rule, bf16>(tensors, count, coeffs, exchange);
    case fastoptim_isa::Dtype::f16: return run_rule<Rule, f16>(tensors, count, coeffs, exchange);
  }
}

}  // namespace fastoptim::kernels
