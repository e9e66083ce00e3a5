// The ATen-layer step of an element-wise rule, shared by the custom op fastoptim::<name>_step_ and
// the direct pybind11 entry the Python classes use outside torch.compile (half the call cost).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <utility>

namespace fastoptim::aten {

// Checks every argument before touching any tensor, then (unless check_only) steps all tensors of
// the group. `state` holds, slot by slot, one tensor per param for each state slot the
// hyperparameters use (with 8-bit state: uint8 codes in the rule's 8-bit slots, and after the
// slots one column of float32 block scales per 8-bit slot, as encode_eight_bit gives them); `steps` one counter per param when the rule counts steps; `fresh` is empty
// or one flag per param. `lr` (a one-element CPU tensor) replaces the lr of `hyper`; `grad_scale`
// (likewise, for rules with kScalesGrad) multiplies every gradient. `rounding` is empty (every
// parameter stored rounded to nearest even) or one rounding key per param: an int64 CPU tensor
// (seed, stream, count) whose count the step advances; a bf16 parameter is then stored by stochastic
// rounding keyed by (seed, stream, count, element), a float32/float64 one as always (it has nothing
// to round), and a float16 one is refused. check_only lets a multi-group step validate every group
// before it changes any. sums_pass 1 and 2 split the step of a rule with per-tensor sums
// (rules::splits_at_sums) at its sums, for sharded tensors: 1 advances the counts, runs pass 1 and
// writes each param's sums (a per-row rule's summary of its rows: rules::split_sums_of values) into
// its row of `shard_sums` (float64), 2 takes them (combined across the shards by the caller) and runs
// finish and pass 2 from the same arguments;
// `whole_numels` then gives each param's whole tensor's element count (a shard's step sees the
// tensor's size: TAdam's d), or is empty (each param is whole). `first_indices` is empty, or gives
// each param's index of its element 0 in the whole tensor (a shard's), which keys stochastic
// rounding and the rules keyed by element index as the whole tensor's elements.
template <class Rule>
void elementwise_step(at::TensorList params, at::TensorList grads, at::TensorList state, at::TensorList steps,
                      c10::ArrayRef<bool> fresh, c10::ArrayRef<double> hyper, const std::optional<at::Tensor>& lr,
                      const std::optional<at::Tensor>& grad_scale, bool check_only = false,
                      at::TensorList rounding = {}, const std::optional<at::Tensor>& shard_sums = std::nullopt,
                      std::int64_t sums_pass = 0, c10::ArrayRef<std::int64_t> whole_numels = {},
                      c10::ArrayRef<std::int64_t> first_indices = {});

// Adafactor's step of its matrices (ndim >= 2, contiguous): torch.optim.Adafactor's row and column
// factors of the second moment beside each, `steps` one counter per param; `hyper` and `lr` as
// for the rule's vector step (fastoptim::adafactor_step_), which takes the other parameters;
// `rounding` as for elementwise_step.
// A step of sharded tensors (DTensors' local shards) runs in three calls, `split.phase` 1, 2 and 3
// (kernels/isa.h's FactoredSlots), the caller adding up across the shards between the calls the
// float64 `factor_sums` (one per param: (slices, 1 + columns) where the shards cut rows, (slices,
// rows) where they cut columns, empty otherwise) and `update_sums` ((params, 2)); `cuts` says per
// param what they cut (0 nothing or whole slices, 1 rows, 2 columns), `whole_sizes` per param the
// whole tensor's rows, columns and numel, `first_indices` its element 0's index in the whole tensor.
struct FactoredSplit {
  std::int64_t phase = 0;
  c10::ArrayRef<std::int64_t> cuts, whole_sizes, first_indices;
  at::TensorList factor_sums;
  std::optional<at::Tensor> update_sums;
};
void adafactor_factored_step(at::TensorList params, at::TensorList grads, at::TensorList row_factors,
                             at::TensorList column_factors, at::TensorList steps, c10::ArrayRef<double> hyper,
                             const std::optional<at::Tensor>& lr, bool check_only = false,
                             at::TensorList rounding = {}, const FactoredSplit& split = {});

// 8-bit state (core/codes8.h) to and from float32, for state dicts that change precision: the
// codes of a dense float tensor (walked in memory order, as the kernels walk its parameter), in
// its layout, and the block scales; and back. `rows`: the rows the blocks restart at (core::CodeGrid;
// a per-row rule's rows of dim 0; 1: the whole tensor).
std::pair<at::Tensor, at::Tensor> encode_eight_bit(const at::Tensor& values, std::int64_t rows = 1);
at::Tensor decode_eight_bit(const at::Tensor& codes, const at::Tensor& scales, std::int64_t rows = 1);

}  // namespace fastoptim::aten
