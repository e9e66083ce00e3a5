// Checks the ATen-layer entries share (internal to cpp/src/aten).
#pragma once
#include <ATen/core/Tensor.h>

#include <ATen/core/List.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "fastoptim/aten/elementwise_ops.h"  // (FactoredSplit)
#include "fastoptim/aten/layout.h"
#include "fastoptim/kernels/isa.h"

namespace fastoptim::aten {

// The kernels' storage dtype of a tensor dtype, if they take it.
inline std::optional<fastoptim_isa::Dtype> storage_dtype(at::ScalarType t) {
  using fastoptim_isa::Dtype;
  switch (t) {
    case at::kFloat: return Dtype::f32;
    case at::kDouble: return Dtype::f64;
    case at::kBFloat16: return Dtype::bf16;
    case at::kHalf: return Dtype::f16;
    default: return std::nullopt;
  }
}

// Every tensor the kernels read or write must be a plain tensor with memory of its own. A tensor
// subclass with its own dispatch (a DTensor, FSDP2's sharded parameters) or a tensor without
// storage has no memory here to read: refused before any pointer is taken.
template <class What>
void check_plain(const at::Tensor& t, const What& what, const char* op) {
  TORCH_CHECK_TYPE(!t.unsafeGetTensorImpl()->is_python_dispatch(), op, ": ", what,
                   " is a tensor subclass with its own dispatch (such as a DTensor from FSDP2's fully_shard or "
                   "distribute_tensor); the ops step plain tensors (fastoptim's Python optimizers step a DTensor "
                   "parameter by its local shard)");
  TORCH_CHECK_TYPE(t.layout() == at::kStrided, op, ": ", what, " has layout ", t.layout(),
                   "; only dense (strided) tensors are supported (sparse gradients are not)");
  // (a meta tensor has no memory either: the device check names it)
  TORCH_CHECK_VALUE(t.has_storage() && (t.is_meta() || t.numel() == 0 || t.const_data_ptr() != nullptr), op, ": ",
                    what, " has no storage of its own to update");
}

// The schema's bool[] (a c10::List) as the array of bools the steps take.
class FreshFlags {
 public:
  explicit FreshFlags(const c10::List<bool>& flags) : size_(flags.size()), values_(new bool[flags.size()]) {
    std::copy(flags.begin(), flags.end(), values_.get());
  }
  c10::ArrayRef<bool> ref() const { return c10::ArrayRef<bool>(values_.get(), size_); }

 private:
  std::size_t size_;
  std::unique_ptr<bool[]> values_;
};

// An element-wise step's arguments, as fastoptim::<name>_step_ takes them (see elementwise_step).
struct StepCall {
  at::TensorList params, grads, state, steps;
  c10::ArrayRef<bool> fresh;
  c10::ArrayRef<double> hyper;
  const std::optional<at::Tensor>& lr;
  const std::optional<at::Tensor>& grad_scale;
  at::TensorList rounding;
  const std::optional<at::Tensor>& shard_sums;
  std::int64_t sums_pass;
  c10::ArrayRef<std::int64_t> whole_numels;
  c10::ArrayRef<std::int64_t> first_indices;
};

// What the checks of a step found.
template <class Rule>
struct CheckedStep {
  typename Rule::Hyper hyper;                      // (with a CPU tensor lr in place)
  std::vector<int> slots;                          // the state slots in use: element-shaped ones, then per-tensor scalars
  std::vector<int> coded_slots;                    // with 8-bit state: which of `slots` (indices into it) hold codes
  bool eight_bit = false;                          // `state` carries 8-bit slots and their block scales
  std::vector<std::optional<bool>> bf16_states;    // per param: its element state is bf16 (none: it has none)
};

// Checks every argument of a step on `device` before any tensor is touched: the CPU, or for the
// CUDA ops the device of params[0], where every tensor of the call must be (the step counters, a
// tensor lr and grad scale too, float32, as torch.optim's capturable state keeps them), and what
// the CUDA kernels do not do yet (stochastic rounding, 8-bit state, split steps) is refused.
template <class Rule>
CheckedStep<Rule> check_step(const char* op, const StepCall& call, const at::Device& device);

// The step of a checked call on a CUDA device (cuda_ops.cpp, in a build with the CUDA kernels).
template <class Rule>
void step_on_cuda(const char* op, const StepCall& call, const CheckedStep<Rule>& checked, const at::Device& device);
// Adafactor's factored step of checked CUDA matrices (a split step's phase too), likewise.
void factored_step_on_cuda(const char* op, at::TensorList params, at::TensorList grads, at::TensorList row_factors,
                           at::TensorList column_factors, at::TensorList steps, c10::ArrayRef<double> hyper,
                           const std::optional<at::Tensor>& lr, at::TensorList rounding, const FactoredSplit& split);

}  // namespace fastoptim::aten
