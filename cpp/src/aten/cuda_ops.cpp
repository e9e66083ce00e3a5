// The element-wise steps (elementwise_step: the ops fastoptim::<name>_step_ and the direct entries)
// on a CUDA device: after the checks every step takes (check_step, on the device of params[0]),
// every tensor of one storage dtype in one call of the CUDA kernels (fastoptim/kernels/cuda.h) on
// the current stream. The step counters, a tensor lr and a grad scale stay on the device, where the
// kernels read them, and a rule with sums gets its workspace from torch's caching allocator:
// nothing is read back to the host, so a step can be captured in a CUDA graph. Built only against
// a torch with CUDA, linked with the CUDA kernels (FASTOPTIM_CUDA_OPS); it uses device-generic c10
// calls only, so it compiles against any torch's headers.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <algorithm>
#include <array>
#include <vector>

#include "checks.h"
#include "fastoptim/kernels/cuda.h"
#include "fastoptim/rules/registry.h"

namespace fastoptim::aten {

using fastoptim_cuda::DeviceTensor;
using fastoptim_isa::Dtype;

namespace {

// The arguments every launch of a call on `device` shares: its hyperparameters, a tensor lr, and the
// device's current stream.
fastoptim_cuda::StepArgs call_args(const at::Device& device, c10::ArrayRef<double> hyper, const std::optional<at::Tensor>& lr) {
  fastoptim_cuda::StepArgs args;
  args.hyper = hyper.data();
  args.lr = lr.has_value() ? lr->const_data_ptr<float>() : nullptr;
  args.stream = c10::impl::VirtualGuardImpl(device.type()).getStream(device).native_handle();
  return args;
}

// step(args) with `bytes` of workspace from torch's caching allocator, a CUDA error raised by name.
// (The workspace is held until the kernels on this stream have run: the allocator reuses it only after
// work queued on the stream, as it does for any tensor freed while kernels still use it.)
template <class Step>
void with_workspace(const char* op, const at::Tensor& like, std::size_t bytes, fastoptim_cuda::StepArgs& args, Step&& step) {
  const at::Tensor workspace = at::empty({std::int64_t(bytes)}, like.options().dtype(at::kByte));
  args.workspace = bytes > 0 ? workspace.data_ptr() : nullptr;
  args.workspace_bytes = bytes;
  const int error = step(args);
  TORCH_CHECK(error == 0, op, ": CUDA error: ", fastoptim_cuda::error_text(error));
}

}  // namespace

template <class Rule>
void step_on_cuda(const char* op, const StepCall& call, const CheckedStep<Rule>& checked, const at::Device& device) {
  const at::TensorList params = call.params, grads = call.grads, state = call.state, steps = call.steps;
  const fastoptim_cuda::RuleEntry* entry = fastoptim_cuda::find_rule(Rule::kName);
  TORCH_CHECK_VALUE(entry && entry->step, op, ": no CUDA kernel: ", entry ? entry->unsupported : "not in the CUDA table");
  const size_t n = params.size();

  // One call per storage dtype (and one for float32 params with bf16 state, and one per parameter
  // dtype with 8-bit state), each tensor with its state and its step counter on the device.
  constexpr size_t kBf16StateBatch = 4, kEightBitBatch = 5;  // (then float32, bfloat16)
  std::array<std::vector<DeviceTensor>, 7> batches;
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    DeviceTensor t;
    t.slots.param = p.data_ptr();
    t.slots.grad = rules::reads_grad<Rule>::value ? grads[i].const_data_ptr() : nullptr;
    for (size_t s = 0; s < checked.slots.size(); ++s) t.slots.state[checked.slots[s]] = state[s * n + i].data_ptr();
    t.slots.numel = p.numel();
    t.slots.rows = p.dim() > 1 ? p.size(0) : 1;
    t.step = Rule::kCountsSteps ? steps[i].data_ptr<float>() : nullptr;
    t.ndim = int(p.dim());
    t.fresh = call.fresh.size() == n && call.fresh[i];
    t.position = std::int64_t(i);
    t.whole_numel = call.whole_numels.empty() ? 0 : call.whole_numels[i];
    t.slots.first_index = call.first_indices.empty() ? 0 : call.first_indices[i];
    t.slots.bf16_state = checked.bf16_states[i].value_or(false);
    t.slots.eight_bit_state = checked.eight_bit;
    for (size_t c = 0; c < checked.coded_slots.size() && checked.eight_bit; ++c)  // (the scales' columns follow the slots')
      t.slots.state_scale[checked.slots[size_t(checked.coded_slots[c])]] =
          state[(checked.slots.size() + c) * n + i].template data_ptr<float>();
    if (!call.rounding.empty()) {  // (the key on the device: the kernels round with it and advance it)
      t.slots.stochastic_rounding = true;
      t.rounding_key = call.rounding[i].data_ptr<std::int64_t>();
    }
    const size_t batch = checked.eight_bit ? kEightBitBatch + (p.scalar_type() == at::kFloat ? 0 : 1)
                         : t.slots.bf16_state ? kBf16StateBatch
                                              : size_t(*storage_dtype(p.scalar_type()));
    batches[batch].push_back(t);
  }

  const c10::DeviceGuard guard(device);
  fastoptim_cuda::StepArgs args = call_args(device, call.hyper, call.lr);
  args.grad_scale = call.grad_scale.has_value() ? call.grad_scale->const_data_ptr<float>() : nullptr;
  args.sums_pass = int(call.sums_pass);
  args.shard_sums = call.sums_pass != 0 ? call.shard_sums->data_ptr<double>() : nullptr;
  for (size_t d = 0; d < batches.size(); ++d) {
    const std::vector<DeviceTensor>& tensors = batches[d];
    if (tensors.empty()) continue;
    const auto count = std::int64_t(tensors.size());
    const Dtype dtype = d == kBf16StateBatch || d == kEightBitBatch ? Dtype::f32 : d == kEightBitBatch + 1 ? Dtype::bf16 : Dtype(d);
    with_workspace(op, params[0], entry->workspace(tensors.data(), count, dtype), args,
                   [&](const fastoptim_cuda::StepArgs& a) { return entry->step(tensors.data(), count, dtype, a); });
  }
}

void factored_step_on_cuda(const char* op, at::TensorList params, at::TensorList grads, at::TensorList row_factors,
                           at::TensorList column_factors, at::TensorList steps, c10::ArrayRef<double> hyper,
                           const std::optional<at::Tensor>& lr, at::TensorList rounding, const FactoredSplit& split) {
  const size_t n = params.size();
  std::array<std::vector<fastoptim_cuda::DeviceFactored>, 4> batches;  // (per storage dtype)
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    fastoptim_cuda::DeviceFactored t;
    t.slots.param = p.data_ptr();
    t.slots.grad = grads[i].const_data_ptr();
    t.slots.row_factor = row_factors[i].data_ptr();
    t.slots.column_factor = column_factors[i].data_ptr();
    t.slots.batches = c10::multiply_integers(p.sizes().begin(), p.sizes().end() - 2);
    t.slots.rows = p.size(-2);
    t.slots.columns = p.size(-1);
    t.step = steps[i].data_ptr<float>();
    t.ndim = int(p.dim());
    if (!rounding.empty()) {  // (as the element-wise steps': the key on the device)
      t.slots.stochastic_rounding = true;
      t.rounding_key = rounding[i].data_ptr<std::int64_t>();
    }
    if (!split.first_indices.empty()) t.slots.first_index = split.first_indices[i];
    if (split.phase) {  // (a shard's phase, as the CPU op's: the sums on the device)
      t.slots.phase = int(split.phase);
      t.slots.split = int(split.cuts[i]);
      t.slots.whole_rows = split.whole_sizes[3 * i];
      t.slots.whole_columns = split.whole_sizes[3 * i + 1];
      t.whole_numel = split.whole_sizes[3 * i + 2];
      t.slots.factor_sums = split.factor_sums[i].numel() ? split.factor_sums[i].data_ptr<double>() : nullptr;
      t.slots.update_sums = split.update_sums->data_ptr<double>() + 2 * i;
    }
    batches[size_t(*storage_dtype(p.scalar_type()))].push_back(t);
  }
  const at::Device device = params[0].device();
  const c10::DeviceGuard guard(device);
  fastoptim_cuda::StepArgs args = call_args(device, hyper, lr);
  for (size_t d = 0; d < batches.size(); ++d) {
    const std::vector<fastoptim_cuda::DeviceFactored>& tensors = batches[d];
    if (tensors.empty()) continue;
    const auto count = std::int64_t(tensors.size());
    with_workspace(op, params[0], fastoptim_cuda::adafactor_factored_workspace(tensors.data(), count, Dtype(d)), args,
                   [&](const fastoptim_cuda::StepArgs& a) { return fastoptim_cuda::adafactor_factored(tensors.data(), count, Dtype(d), a); });
  }
}

#define FASTOPTIM_INSTANTIATE(Type, name)                                                        \
  template void step_on_cuda<rules::Type>(const char*, const StepCall&, const CheckedStep<rules::Type>&, \
                                          const at::Device&);
FASTOPTIM_ELEMENTWISE_RULES(FASTOPTIM_INSTANTIATE)
#undef FASTOPTIM_INSTANTIATE

}  // namespace fastoptim::aten
