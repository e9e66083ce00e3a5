// The ATen layer for element-wise rules: one custom op per rule, fastoptim::<name>_step_, taking
// a param group's tensor lists. It checks everything (hyperparameters, list lengths, dtype, device,
// layout, shape, contiguity) before it touches any tensor, then computes each tensor's coefficients
// in double on the host and runs the CPU driver over all tensors of one storage dtype in one call.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "fastoptim/aten/elementwise_ops.h"
#include "checks.h"
#include "fastoptim/core/codes8.h"
#include "fastoptim/kernels/isa.h"
#include "fastoptim/rules/registry.h"

namespace fastoptim::aten {
namespace {

using fastoptim_isa::Dtype;
using fastoptim_isa::TensorSlots;

// Reads a one-element CPU floating tensor (a step counter or a tensor lr) as double.
double read_scalar(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return *static_cast<const float*>(t.const_data_ptr());
    case at::kDouble: return *static_cast<const double*>(t.const_data_ptr());
    default: TORCH_CHECK_TYPE(false, "expected a float32 or float64 scalar tensor, got ", t.scalar_type());
  }
}

void write_scalar(const at::Tensor& t, double value) {
  if (t.scalar_type() == at::kFloat) *static_cast<float*>(t.data_ptr()) = float(value);
  else *static_cast<double*>(t.data_ptr()) = value;
}

// Adds one to a step counter; returns the count as stored (float32 in torch.optim's state).
double advance_step(const at::Tensor& step) {
  write_scalar(step, read_scalar(step) + 1);
  return read_scalar(step);
}

double machine_epsilon(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return core::machine_epsilon<double>();
    case at::kBFloat16: return core::machine_epsilon<core::bf16>();
    case at::kHalf: return core::machine_epsilon<core::f16>();
    default: return core::machine_epsilon<float>();
  }
}

// A checked rounding key's count as Philox's step word.
std::uint32_t rounding_count(const at::Tensor& key) { return std::uint32_t(key.const_data_ptr<std::int64_t>()[2]); }

// Adds one to a checked rounding key's count (one per step, as a step counter); returns the new count.
std::uint32_t advance_rounding_count(const at::Tensor& key) {
  static_cast<std::int64_t*>(key.data_ptr())[2] += 1;
  return rounding_count(key);
}

// Keys slots' (a TensorSlots or FactoredSlots) stochastic rounding by a checked rounding key at `step`.
template <class Slots>
void set_rounding(Slots& slots, const at::Tensor& key, std::uint32_t step) {
  const auto* values = static_cast<const std::int64_t*>(key.const_data_ptr());
  slots.stochastic_rounding = true;
  slots.rounding_seed = std::uint64_t(values[0]);
  slots.rounding_stream = std::uint32_t(values[1]);
  slots.rounding_step = step;
}

// A step counter, tensor lr or grad scale of a call on `device`: on the CPU, a float32 or float64
// value the host reads; for a CUDA call, float32 on the call's device (torch.optim's capturable
// state), which the kernels read there.
template <class What>
void check_scalar_tensor(const at::Tensor& t, const What& what, const at::Device& device = at::kCPU) {
  TORCH_CHECK_VALUE(t.defined(), "fastoptim: ", what, " is undefined");
  check_plain(t, what, "fastoptim");
  TORCH_CHECK_VALUE(t.numel() == 1, "fastoptim: ", what, " must be a 1-element tensor");
  if (device.is_cpu()) {
    TORCH_CHECK_VALUE(t.device().is_cpu(), "fastoptim: ", what, " must be on the CPU, got ", t.device());
    TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "fastoptim: ", what,
                     " must be float32 or float64, got ", t.scalar_type());
  } else {
    TORCH_CHECK_VALUE(t.device() == device, "fastoptim: ", what, " must be on the params' device ", device,
                      " (as torch.optim's capturable state), got ", t.device());
    TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat, "fastoptim: ", what, " must be float32 on ", device, ", got ",
                     t.scalar_type());
  }
}

// Names a tensor of the call in messages: list[index], or "<state name> of params[index]". Built
// only when a check fails, so the happy path allocates no strings.
struct TensorName {
  const char* list;
  size_t index;
  const char* state = nullptr;
};

std::ostream& operator<<(std::ostream& out, const TensorName& n) {
  if (n.state) return out << n.state << " of params[" << n.index << "]";
  return out << n.list << "[" << n.index << "]";
}

// params[i] is a plain tensor on the call's device (the CPU, or the CUDA device of params[0]) of
// a dtype the kernels take.
void check_param(const at::Tensor& p, size_t i, const char* op, const at::Device& device = at::kCPU) {
  TORCH_CHECK_VALUE(p.defined(), op, ": params[", i, "] is undefined");
  check_plain(p, TensorName{"params", i}, op);
  TORCH_CHECK_TYPE(storage_dtype(p.scalar_type()).has_value(), op, ": params[", i, "] has dtype ", p.scalar_type(),
                   "; supported: float32, float64, bfloat16, float16");
  if (p.device() == device) return;
#if defined(FASTOPTIM_CUDA_OPS)
  TORCH_CHECK_VALUE(i != 0, op, ": params[0] is on ", p.device(), "; fastoptim steps CPU and CUDA tensors");
  TORCH_CHECK_VALUE(false, op, ": params[", i, "] is on ", p.device(), " but params[0] is on ", device,
                    " (one call steps the params of one device)");
#else
  TORCH_CHECK_VALUE(false, op, ": params[", i, "] is on ", p.device(), "; this build of fastoptim runs on the CPU only ",
                    "(CUDA needs a build against a torch with CUDA, with nvcc found)");
#endif
}

// A tensor that travels with params[i] (its grad or a state tensor) must match it exactly.
// (`dtype`, when given, is the one it must have instead of the parameter's: bf16 state of float32 parameters.)
void check_matches_param(const at::Tensor& t, const at::Tensor& param, const TensorName& name, const char* op,
                         std::optional<at::ScalarType> dtype = std::nullopt) {
  const size_t i = name.index;
  TORCH_CHECK_VALUE(t.defined(), op, ": ", name, " is undefined");
  check_plain(t, name, op);
  TORCH_CHECK_TYPE(t.scalar_type() == dtype.value_or(param.scalar_type()), op, ": ", name, " has dtype ",
                   t.scalar_type(), " but params[", i, "] has dtype ", param.scalar_type());
  TORCH_CHECK_VALUE(t.device() == param.device(), op, ": ", name, " is on ", t.device(), " but params[", i,
                    "] is on ", param.device());
  TORCH_CHECK_VALUE(t.sizes() == param.sizes(), op, ": ", name, " has shape ", t.sizes(), " but params[", i,
                    "] has shape ", param.sizes());
  TORCH_CHECK_VALUE(same_layout(t, param), op, ": ", name, " has strides ", t.strides(), " but params[", i,
                    "] has strides ", param.strides(), " (it must have the parameter's memory layout)");
}

// An element state tensor of params[i] matches it as check_matches_param asks, except that float32
// parameters may keep their state in bf16 (state_dtype=torch.bfloat16): every element state of one
// parameter in one dtype, which bf16_state records (true: bf16 state of a float32 parameter).
void check_element_state(const at::Tensor& t, const at::Tensor& param, const TensorName& name, const char* op,
                         std::optional<bool>& bf16_state) {
  const bool in_bf16 = t.defined() && param.scalar_type() == at::kFloat && t.scalar_type() == at::kBFloat16;
  check_matches_param(t, param, name, op, in_bf16 ? std::optional<at::ScalarType>(at::kBFloat16) : std::nullopt);
  TORCH_CHECK_TYPE(!bf16_state.has_value() || *bf16_state == in_bf16, op, ": ", name, " has dtype ", t.scalar_type(),
                   " but another state tensor of params[", name.index, "] has dtype ",
                   in_bf16 ? param.scalar_type() : at::kBFloat16, " (a parameter's state is all in one dtype)");
  bf16_state = in_bf16;
}

// A rule's per-tensor scalar state (TAdam's W) is one value in the compute type of params[i]:
// float64 for float64 parameters, float32 otherwise.
void check_scalar_state(const at::Tensor& t, const at::Tensor& param, const TensorName& name, const char* op) {
  const auto expected = param.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK_VALUE(t.defined(), op, ": ", name, " is undefined");
  check_plain(t, name, op);
  TORCH_CHECK_VALUE(t.numel() == 1, op, ": ", name, " must be a 1-element tensor");
  TORCH_CHECK_TYPE(t.scalar_type() == expected, op, ": ", name, " has dtype ", t.scalar_type(), " but must be ",
                   expected, " for params[", name.index, "] of dtype ", param.scalar_type());
  TORCH_CHECK_VALUE(t.device() == param.device(), op, ": ", name, " is on ", t.device(), " but params[", name.index,
                    "] is on ", param.device());
}

// rounding[i], params[i]'s rounding key: an int64 CPU tensor (seed, stream, count), for a parameter
// whose dtype stochastic rounding serves.
void check_rounding_key(const at::Tensor& key, const at::Tensor& p, size_t i, const char* op) {
  TORCH_CHECK_TYPE(p.scalar_type() != at::kHalf, op, ": params[", i, "] is float16; stochastic rounding serves ",
                   "bfloat16 parameters (float32 and float64 ones are stored exactly as computed)");
  TORCH_CHECK_VALUE(key.defined(), op, ": the rounding key of params[", i, "] is undefined");
  check_plain(key, TensorName{"state", i, "rounding_key"}, op);
  TORCH_CHECK_TYPE(key.scalar_type() == at::kLong, op, ": rounding_key of params[", i, "] must be int64, got ",
                   key.scalar_type());
  // (where the step counter lives: on the CPU for a CPU parameter, on its device for a CUDA one, where
  // the kernels read and advance it)
  const at::Device device = p.is_cuda() ? p.device() : at::Device(at::kCPU);
  TORCH_CHECK_VALUE(key.numel() == 3 && key.device() == device && key.is_contiguous(), op, ": rounding_key of params[",
                    i, "] must be a contiguous tensor of 3 values (seed, stream, count) on ", device, ", got shape ",
                    key.sizes(), " on ", key.device());
}

// The block scales of an 8-bit state tensor of params[i]: float32, contiguous, one per block of
// the parameter's code grid (core::kCodeBlock elements, restarting at each row for a per-row rule),
// on the parameter's device.
void check_block_scales(const at::Tensor& t, const at::Tensor& param, const core::CodeGrid& grid, const TensorName& name,
                        const char* op) {
  TORCH_CHECK_VALUE(t.defined(), op, ": ", name, " is undefined");
  check_plain(t, name, op);
  const std::int64_t blocks = grid.blocks();
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat, op, ": ", name, " (block scales of 8-bit state) must be float32, got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.numel() == blocks && t.is_contiguous() && t.device() == param.device(), op, ": ", name,
                    " must be a contiguous tensor of ", blocks, " block scales (one per ", core::kCodeBlock, " elements",
                    grid.row_length < grid.numel ? " of each row" : "", " of params[", name.index, "]) on ",
                    param.device(), ", got shape ", t.sizes(), " on ", t.device());
}

// The hyperparameters, checked, with a tensor lr on the CPU in place (one on a CUDA device is read
// there, by the kernels).
template <class Rule>
typename Rule::Hyper checked_hyper(const char* op, c10::ArrayRef<double> values, const std::optional<at::Tensor>& lr,
                                   const at::Device& device = at::kCPU) {
  using Hyper = typename Rule::Hyper;
  if (values.size() != Hyper::kFieldCount) {
    std::string names;
    for (const auto& f : Hyper::kFields) names += std::string(names.empty() ? "" : ", ") + f.name;
    TORCH_CHECK_VALUE(false, op, ": hyper has ", values.size(), " values, expected ", Hyper::kFieldCount, " (",
                      names, ")");
  }
  const int bad = core::first_invalid_field<Hyper>(values.data());
  TORCH_CHECK_VALUE(bad < 0, op, ": invalid ", Hyper::kFields[bad].name, " value: ", values[size_t(bad)],
                    " (must be ", core::check_text(Hyper::kFields[bad].check), ")");
  Hyper h = Hyper::from(values.data());
  if (lr.has_value()) {
    // The tensor gives the learning rate, or for weight averaging (which has none) the weight,
    // so a value computed on the device (Scout's sync rate) needs no host round trip.
    check_scalar_tensor(*lr, std::string(op) + ": lr", device);
    TORCH_CHECK_VALUE(rules::has_lr_field<Hyper>::value || rules::has_weight_field<Hyper>::value, op,
                      ": this rule takes no tensor scalar, but one was given");
  }
  if (lr.has_value() && device.is_cpu()) {
    rules::set_tensor_scalar(h, read_scalar(*lr));
    if constexpr (rules::has_lr_field<Hyper>::value) {
      TORCH_CHECK_VALUE(h.lr >= 0.0, op, ": invalid learning rate: ", h.lr);
    } else if constexpr (rules::has_weight_field<Hyper>::value) {
      TORCH_CHECK_VALUE(h.weight >= 0.0 && h.weight <= 1.0, op, ": invalid weight: ", h.weight, " (must be in [0, 1])");
    }
  }
  const char* conflict = Rule::invalid_combination(h);
  TORCH_CHECK_VALUE(conflict == nullptr, op, ": ", conflict);
  return h;
}

// What a split step's shards add up: a contiguous float64 tensor of the given shape on the call's
// device (where the kernels write and read it: the CPU, or the CUDA device).
void check_sums_tensor(const at::Tensor& sums, c10::IntArrayRef shape, const char* name, const char* op,
                       const at::Device& device = at::kCPU) {
  TORCH_CHECK_TYPE(sums.scalar_type() == at::kDouble, op, ": ", name, " must be float64, got ", sums.scalar_type());
  TORCH_CHECK_VALUE(sums.device() == device && sums.is_contiguous() && sums.sizes() == shape, op, ": ", name,
                    " must be a contiguous ", device.is_cpu() ? std::string("CPU") : device.str(), " tensor of shape ",
                    shape, ", got ", sums.sizes(), " on ", sums.device());
}

// A split step's arguments (see elementwise_step): sums_pass 0, or 1/2 for a rule whose step
// splits, with shard_sums of (params, kSums) float64 on the call's device; whole_numels empty, or
// with a split, one count per param of at least its elements.
template <class Rule>
void check_split(const char* op, at::TensorList params, const std::optional<at::Tensor>& shard_sums,
                 std::int64_t sums_pass, c10::ArrayRef<std::int64_t> whole_numels, const at::Device& device) {
  TORCH_CHECK_VALUE(sums_pass >= 0 && sums_pass <= 2, op, ": sums_pass must be 0 (the whole step), 1 or 2, got ", sums_pass);
  TORCH_CHECK_VALUE(sums_pass == 0 || rules::splits_at_sums<Rule>(), op, ": ", Rule::kName,
                    " has no per-tensor sums to add up across shards, so its step does not split (sums_pass must be 0)");
  TORCH_CHECK_VALUE(sums_pass == 0 || shard_sums.has_value(), op, ": sums_pass ", sums_pass, " needs shard_sums");
  if (sums_pass != 0)
    check_sums_tensor(*shard_sums, {std::int64_t(params.size()), rules::split_sums_of<Rule>()}, "shard_sums", op, device);
  TORCH_CHECK_VALUE(whole_numels.empty() || (sums_pass != 0 && whole_numels.size() == params.size()), op,
                    ": whole_numels must be empty or, with sums_pass 1 or 2, have one count per param (", params.size(),
                    "), got ", whole_numels.size());
  for (size_t i = 0; i < whole_numels.size(); ++i)
    TORCH_CHECK_VALUE(whole_numels[i] >= params[i].numel(), op, ": whole_numels[", i, "] is ", whole_numels[i],
                      ", fewer than the ", params[i].numel(), " elements of params[", i, "]");
}

// The tensors and coefficients of one storage dtype, ready for one kernel call.
template <class Rule>
struct DtypeBatch {
  std::vector<TensorSlots> tensors;
  std::vector<typename Rule::template Coeffs<float>> coeffs_float;
  std::vector<typename Rule::template Coeffs<double>> coeffs_double;
  std::vector<size_t> param_index;  // (of each tensor, in params: where its row of shard_sums is)
};

}  // namespace

template <class Rule>
CheckedStep<Rule> check_step(const char* op, const StepCall& call, const at::Device& device) {
  const auto& [params, grads, state, steps, fresh, hyper, lr, grad_scale, rounding, shard_sums, sums_pass, whole_numels,
                first_indices] = call;
  CheckedStep<Rule> checked;
  checked.hyper = checked_hyper<Rule>(op, hyper, lr, device);
  check_split<Rule>(op, params, shard_sums, sums_pass, whole_numels, device);
  if (grad_scale.has_value()) {
    TORCH_CHECK_VALUE(rules::scales_grad<Rule>::value, op, ": this rule takes no grad_scale, but one was given");
    check_scalar_tensor(*grad_scale, std::string(op) + ": grad_scale", device);
  }
  TORCH_CHECK_VALUE(first_indices.empty() || first_indices.size() == params.size(), op,
                    ": first_indices must be empty or have one index per param (", params.size(), "), got ",
                    first_indices.size());
  for (size_t i = 0; i < first_indices.size(); ++i)
    TORCH_CHECK_VALUE(first_indices[i] >= 0, op, ": first_indices[", i, "] is ", first_indices[i], "; it must be >= 0");
  const size_t n = params.size();

  // The state slots this configuration uses: element-shaped ones, then per-tensor scalars.
  constexpr int kAllSlots = Rule::kStateSlots + rules::scalar_slots_of<Rule>::value;
  std::vector<int>& slots = checked.slots;
  for (int j = 0; j < kAllSlots; ++j)
    if (core::uses_state<Rule>(hyper.data(), j)) slots.push_back(j);
  const size_t expected_grads = rules::reads_grad<Rule>::value ? n : 0;
  TORCH_CHECK_VALUE(grads.size() == expected_grads, op, ": expected ", expected_grads, " grads for ", n, " params",
                    rules::reads_grad<Rule>::value ? "" : " (this rule takes no gradient)", ", got ", grads.size());
  const size_t expected_steps = Rule::kCountsSteps ? n : 0;
  TORCH_CHECK_VALUE(steps.size() == expected_steps, op, ": expected ", expected_steps, " step tensors, got ",
                    steps.size());
  TORCH_CHECK_VALUE(fresh.size() == 0 || fresh.size() == n, op, ": fresh must be empty or have one flag per param");
  TORCH_CHECK_VALUE(rounding.empty() || rounding.size() == n, op, ": rounding must be empty or have one key per param (",
                    n, "), got ", rounding.size());

  // With 8-bit state, `state` continues with one column of block scales per 8-bit slot in use
  // (rules::eight_bit_slots), in slot order; those slots hold uint8 codes.
  std::vector<int>& coded_slots = checked.coded_slots;
  for (size_t s = 0; s < slots.size(); ++s)
    if (slots[s] < Rule::kStateSlots && (rules::eight_bit_slots<Rule>::value >> slots[s] & 1u)) coded_slots.push_back(int(s));
  const bool eight_bit = checked.eight_bit =
      !coded_slots.empty() && state.size() == (slots.size() + coded_slots.size()) * n && n > 0;
  TORCH_CHECK_VALUE(eight_bit || state.size() == slots.size() * n, op, ": expected ", slots.size(),
                    " state tensors per param (", slots.size() * n, " in all) but got ", state.size(),
                    coded_slots.empty() ? "" : " (with 8-bit state: those, then a block-scale tensor per 8-bit slot)");
  const auto is_coded = [&](size_t s) {
    return eight_bit && std::find(coded_slots.begin(), coded_slots.end(), int(s)) != coded_slots.end();
  };

  std::vector<std::optional<bool>>& bf16_states = checked.bf16_states;
  bf16_states.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    check_param(p, i, op, device);
    if constexpr (needs_row_major<Rule>()) {
      TORCH_CHECK_VALUE(p.is_contiguous(), op, ": params[", i, "] has strides ", p.strides(), "; ", Rule::kName,
                        " sums over (or indexes) a tensor's elements in row-major order, so it steps contiguous "
                        "parameters only (the Python classes step a contiguous copy of such a parameter)");
    } else {
      TORCH_CHECK_VALUE(p.is_non_overlapping_and_dense(), op, ": params[", i, "] has strides ", p.strides(),
                        " that do not cover its memory densely (a strided view); step a contiguous parameter");
    }
    if (rules::reads_grad<Rule>::value) check_matches_param(grads[i], p, TensorName{"grads", i}, op);
    std::optional<bool>& bf16_state = bf16_states[i];
    if (eight_bit)
      TORCH_CHECK_TYPE(p.scalar_type() == at::kFloat || p.scalar_type() == at::kBFloat16, op, ": params[", i,
                       "] has dtype ", p.scalar_type(), "; 8-bit state serves float32 and bfloat16 parameters");
    for (size_t s = 0; s < slots.size(); ++s) {
      const TensorName name{"state", i, Rule::kState[slots[s]].name};
      if (is_coded(s)) check_matches_param(state[s * n + i], p, name, op, at::kByte);
      else if (eight_bit && slots[s] < Rule::kStateSlots) check_matches_param(state[s * n + i], p, name, op);
      else if (slots[s] < Rule::kStateSlots) check_element_state(state[s * n + i], p, name, op, bf16_state);
      else check_scalar_state(state[s * n + i], p, name, op);
    }
    for (size_t c = 0; c < coded_slots.size() && eight_bit; ++c)
      check_block_scales(state[(slots.size() + c) * n + i], p, rules::code_grid<Rule>(p.numel(), p.dim() > 1 ? p.size(0) : 1),
                         TensorName{"state", i, "block scales"}, op);
    if (Rule::kCountsSteps) check_scalar_tensor(steps[i], TensorName{"steps", i}, device);
    if (!rounding.empty()) check_rounding_key(rounding[i], p, i, op);
  }

  return checked;
}

#define FASTOPTIM_INSTANTIATE(Type, name) \
  template CheckedStep<rules::Type> check_step<rules::Type>(const char*, const StepCall&, const at::Device&);
FASTOPTIM_ELEMENTWISE_RULES(FASTOPTIM_INSTANTIATE)
#undef FASTOPTIM_INSTANTIATE

namespace {

// One kernel call's tensors per storage variant: the four dtypes, float32 parameters with bf16
// state, and with 8-bit state float32 and bf16 parameters.
template <class Rule>
using Batches = std::array<DtypeBatch<Rule>, 7>;

// Each parameter's step: its step count and per-tensor scalars advanced, its coefficients
// prepared, its tensors listed in the batch of its storage variant (an empty one is counted, not listed).
template <class Rule>
Batches<Rule> prepare_batches(const StepCall& call, const CheckedStep<Rule>& checked) {
  const auto& [params, grads, state, steps, fresh, hyper, lr, grad_scale, rounding, shard_sums, sums_pass, whole_numels,
                first_indices] = call;
  const auto& h = checked.hyper;
  const std::vector<int>& slots = checked.slots;
  const std::vector<int>& coded_slots = checked.coded_slots;
  const bool eight_bit = checked.eight_bit;
  const size_t n = params.size();
  const double scale = grad_scale.has_value() ? read_scalar(*grad_scale) : 1.0;
  Batches<Rule> batches;
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    const std::int64_t rows = p.dim() > 1 ? p.size(0) : 1;
    const std::int64_t numel = whole_numels.empty() ? p.numel() : whole_numels[i];
    // (a shard of whole rows, a per-row rule's: the whole tensor's rows, of the shard's length)
    const std::int64_t whole_rows = whole_numels.empty() || p.numel() == 0 ? rows : numel / (p.numel() / rows);
    rules::StepInfo info{0.0, fresh.size() == n && fresh[i], numel, p.dim() > 1, whole_rows, scale, int(p.dim())};
    info.dtype_eps = machine_epsilon(p.scalar_type());
    static_assert(rules::scalar_slots_of<Rule>::value <= 2, "StepInfo::scalar_state holds two values");
    for (size_t s = 0; s < slots.size(); ++s)
      if (slots[s] >= Rule::kStateSlots) info.scalar_state[slots[s] - Rule::kStateSlots] = read_scalar(state[s * n + i]);
    // (the second half of a split step prepares from the step count and state the first left)
    if (Rule::kCountsSteps) info.step = sums_pass == 2 ? read_scalar(steps[i]) : advance_step(steps[i]);
    if (rules::advance_scalars<Rule>(h, info))
      for (size_t s = 0; s < slots.size(); ++s)
        if (slots[s] >= Rule::kStateSlots) write_scalar(state[s * n + i], info.scalar_next[slots[s] - Rule::kStateSlots]);
    const auto rounding_step = rounding.empty()  ? 0
                               : sums_pass == 2 ? rounding_count(rounding[i])
                                                : advance_rounding_count(rounding[i]);
    if (p.numel() == 0) continue;
    const bool bf16_state = checked.bf16_states[i].value_or(false);
    auto& batch = batches[eight_bit ? (p.scalar_type() == at::kFloat ? 5 : 6)
                                    : bf16_state ? 4 : size_t(*storage_dtype(p.scalar_type()))];
    TensorSlots t{};
    t.bf16_state = bf16_state;
    t.eight_bit_state = eight_bit;
    t.param = p.data_ptr();
    t.grad = rules::reads_grad<Rule>::value ? grads[i].const_data_ptr() : nullptr;
    for (size_t s = 0; s < slots.size(); ++s) t.state[slots[s]] = state[s * n + i].data_ptr();
    for (size_t c = 0; c < coded_slots.size() && eight_bit; ++c)
      t.state_scale[slots[size_t(coded_slots[c])]] = state[(slots.size() + c) * n + i].data_ptr<float>();
    t.numel = p.numel();
    t.rows = rows;
    t.first_index = first_indices.empty() ? 0 : first_indices[i];
    if (!rounding.empty()) set_rounding(t, rounding[i], rounding_step);
    batch.tensors.push_back(t);
    batch.param_index.push_back(i);
    if (p.scalar_type() == at::kDouble) batch.coeffs_double.push_back(Rule::template prepare<double>(h, info));
    else batch.coeffs_float.push_back(Rule::template prepare<float>(h, info));
  }
  return batches;
}

// Each batch through the active ISA's kernel, one call each; a split step (sums_pass 1 or 2) hands
// the kernel the batch's rows of shard_sums, and after its first half writes them back.
template <class Rule>
void run_batches(Batches<Rule>& batches, const StepCall& call) {
  const std::int64_t sums_pass = call.sums_pass;
  const fastoptim_isa::ElementwiseKernel kernel = fastoptim_isa::active().*kernels::KernelEntry<Rule>::member;
  for (size_t d = 0; d < batches.size(); ++d) {
    auto& b = batches[d];
    if (b.tensors.empty()) continue;
    const Dtype dtype = d == 4 || d == 5 ? Dtype::f32 : d == 6 ? Dtype::bf16 : Dtype(d);
    const void* coeffs = dtype == Dtype::f64 ? static_cast<const void*>(b.coeffs_double.data())
                                             : static_cast<const void*>(b.coeffs_float.data());
    if (sums_pass == 0) {
      kernel(b.tensors.data(), std::int64_t(b.tensors.size()), coeffs, dtype, nullptr);
      continue;
    }
    constexpr int kSums = rules::split_sums_of<Rule>();
    auto* all_sums = call.shard_sums->data_ptr<double>();
    std::vector<double> batch_sums(b.tensors.size() * size_t(kSums));
    for (size_t k = 0; k < b.tensors.size(); ++k)
      std::copy_n(all_sums + b.param_index[k] * kSums, kSums, batch_sums.begin() + std::ptrdiff_t(k * kSums));
    const fastoptim_isa::SumsExchange exchange{sums_pass == 1 ? fastoptim_isa::SumsPass::first : fastoptim_isa::SumsPass::second,
                                               batch_sums.data()};
    kernel(b.tensors.data(), std::int64_t(b.tensors.size()), coeffs, dtype, &exchange);
    for (size_t k = 0; k < b.tensors.size() && sums_pass == 1; ++k)
      std::copy_n(batch_sums.begin() + std::ptrdiff_t(k * kSums), kSums, all_sums + b.param_index[k] * kSums);
  }
}

}  // namespace

template <class Rule>
void elementwise_step(at::TensorList params, at::TensorList grads, at::TensorList state, at::TensorList steps,
                      c10::ArrayRef<bool> fresh, c10::ArrayRef<double> hyper, const std::optional<at::Tensor>& lr,
                      const std::optional<at::Tensor>& grad_scale, bool check_only, at::TensorList rounding,
                      const std::optional<at::Tensor>& shard_sums, std::int64_t sums_pass,
                      c10::ArrayRef<std::int64_t> whole_numels, c10::ArrayRef<std::int64_t> first_indices) {
  const std::string op_name = std::string("fastoptim::") + Rule::kName + "_step_";
  const char* op = op_name.c_str();
  const StepCall call{params, grads,      state,      steps,     fresh,        hyper,
                      lr,     grad_scale, rounding, shard_sums, sums_pass, whole_numels, first_indices};
  // The call's device: the CPU, or in a build with the CUDA kernels (cuda_ops.cpp), the CUDA device
  // of params[0], whose step runs there.
#if defined(FASTOPTIM_CUDA_OPS)
  const at::Device device = !params.empty() && params[0].is_cuda() ? params[0].device() : at::Device(at::kCPU);
#else
  const at::Device device = at::kCPU;
#endif
  const CheckedStep<Rule> checked = check_step<Rule>(op, call, device);
  if (check_only) return;
#if defined(FASTOPTIM_CUDA_OPS)
  if (device.is_cuda()) return step_on_cuda<Rule>(op, call, checked, device);
#endif
  // Every check has passed: from here on, tensors change.
  Batches<Rule> batches = prepare_batches<Rule>(call, checked);
  run_batches<Rule>(batches, call);
}

namespace {
// The code grid of `numel` elements in `rows` rows, checked (rows divide them).
core::CodeGrid grid_of_rows(std::int64_t numel, std::int64_t rows, const char* op) {
  TORCH_CHECK_VALUE(rows >= 1 && numel % rows == 0, op, ": rows must be a positive divisor of the ", numel,
                    " elements, got ", rows);
  return {numel, numel / rows};
}
}  // namespace

std::pair<at::Tensor, at::Tensor> encode_eight_bit(const at::Tensor& values, std::int64_t rows) {
  TORCH_CHECK_TYPE(values.is_floating_point(), "encode_eight_bit: expected a floating-point tensor, got ",
                   values.scalar_type());
  TORCH_CHECK_VALUE(values.device().is_cpu() && values.is_non_overlapping_and_dense(),
                    "encode_eight_bit: expected a dense CPU tensor");
  const core::CodeGrid grid = grid_of_rows(values.numel(), rows, "encode_eight_bit");
  const at::Tensor floats = values.to(at::kFloat);  // (keeps a dense layout)
  at::Tensor codes = at::empty_like(floats, floats.options().dtype(at::kByte));
  at::Tensor scales = at::empty({grid.blocks()}, floats.options());
  const auto* from = floats.const_data_ptr<float>();
  auto* to = static_cast<core::code8*>(codes.data_ptr());
  for (std::int64_t b = 0; b < grid.blocks(); ++b)
    scales.data_ptr<float>()[b] = core::encode_block(from + grid.first(b), grid.count(b), to + grid.first(b));
  return {codes, scales};
}

at::Tensor decode_eight_bit(const at::Tensor& codes, const at::Tensor& scales, std::int64_t rows) {
  TORCH_CHECK_TYPE(codes.scalar_type() == at::kByte && scales.scalar_type() == at::kFloat,
                   "decode_eight_bit: expected uint8 codes and float32 scales, got ", codes.scalar_type(), " and ",
                   scales.scalar_type());
  TORCH_CHECK_VALUE(codes.device().is_cpu() && codes.is_non_overlapping_and_dense(), "decode_eight_bit: expected dense CPU codes");
  const core::CodeGrid grid = grid_of_rows(codes.numel(), rows, "decode_eight_bit");
  TORCH_CHECK_VALUE(scales.numel() == grid.blocks(), "decode_eight_bit: ", grid.numel, " codes in ", rows, " rows need ",
                    grid.blocks(), " block scales, got ", scales.numel());
  const at::Tensor scale = scales.to(at::kFloat).contiguous().cpu();
  at::Tensor values = at::empty_like(codes, codes.options().dtype(at::kFloat));
  const auto* from = static_cast<const core::code8*>(codes.const_data_ptr());
  for (std::int64_t b = 0; b < grid.blocks(); ++b)
    core::decode_block(from + grid.first(b), scale.const_data_ptr<float>()[b], grid.count(b),
                       values.data_ptr<float>() + grid.first(b));
  return values;
}

#define FASTOPTIM_INSTANTIATE(Type, name)                                                                      \
  template void elementwise_step<rules::Type>(at::TensorList, at::TensorList, at::TensorList, at::TensorList,     \
                                              c10::ArrayRef<bool>, c10::ArrayRef<double>,                        \
                                              const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, \
                                              bool, at::TensorList, const std::optional<at::Tensor>&, std::int64_t, \
                                              c10::ArrayRef<std::int64_t>, c10::ArrayRef<std::int64_t>);
FASTOPTIM_ELEMENTWISE_RULES(FASTOPTIM_INSTANTIATE)
#undef FASTOPTIM_INSTANTIATE

namespace {

// A split factored step's arguments (see FactoredSplit), checked before anything is touched.
void check_factored_split(const char* op, at::TensorList params, const FactoredSplit& split, const at::Device& device) {
  const size_t n = params.size();
  TORCH_CHECK_VALUE(split.phase >= 0 && split.phase <= 3, op, ": phase must be 0 (the whole step), 1, 2 or 3, got ",
                    split.phase);
  if (split.phase == 0) {
    TORCH_CHECK_VALUE(split.cuts.empty() && split.whole_sizes.empty() && split.factor_sums.empty() &&
                          !split.update_sums.has_value(),
                      op, ": cuts, whole_sizes, factor_sums and update_sums are for a split step (phase 1, 2 or 3)");
  } else {
    TORCH_CHECK_VALUE(split.cuts.size() == n && split.whole_sizes.size() == 3 * n && split.factor_sums.size() == n, op,
                      ": a split step takes one cut, three whole sizes and one factor_sums per param (", n, "), got ",
                      split.cuts.size(), ", ", split.whole_sizes.size(), " and ", split.factor_sums.size());
    TORCH_CHECK_VALUE(split.update_sums.has_value(), op, ": a split step needs update_sums");
    check_sums_tensor(*split.update_sums, {std::int64_t(n), 2}, "update_sums", op, device);
  }
  TORCH_CHECK_VALUE(split.first_indices.empty() || split.first_indices.size() == n, op,
                    ": first_indices must be empty or have one index per param (", n, "), got ", split.first_indices.size());
  for (size_t i = 0; i < split.cuts.size(); ++i) {
    const at::Tensor& p = params[i];
    const std::int64_t cut = split.cuts[i], batches = c10::multiply_integers(p.sizes().begin(), p.sizes().end() - 2);
    const std::int64_t whole_rows = split.whole_sizes[3 * i], whole_columns = split.whole_sizes[3 * i + 1];
    TORCH_CHECK_VALUE(cut >= 0 && cut <= 2, op, ": cuts[", i, "] is ", cut, "; it must be 0, 1 (rows) or 2 (columns)");
    TORCH_CHECK_VALUE(whole_rows >= p.size(-2) && whole_columns >= p.size(-1) &&
                          split.whole_sizes[3 * i + 2] >= p.numel() && (cut == 1 || whole_rows == p.size(-2)) &&
                          (cut == 2 || whole_columns == p.size(-1)),
                      op, ": whole_sizes of params[", i, "] (", whole_rows, ", ", whole_columns, ", ",
                      split.whole_sizes[3 * i + 2], ") do not hold its shape ", p.sizes(), " cut ", cut);
    const std::vector<std::int64_t> shape = cut == 1   ? std::vector<std::int64_t>{batches, 1 + p.size(-1)}
                                            : cut == 2 ? std::vector<std::int64_t>{batches, p.size(-2)}
                                                       : std::vector<std::int64_t>{0};
    check_sums_tensor(split.factor_sums[i], shape, "factor_sums", op, device);
  }
}

}  // namespace

void adafactor_factored_step(at::TensorList params, at::TensorList grads, at::TensorList row_factors,
                             at::TensorList column_factors, at::TensorList steps, c10::ArrayRef<double> hyper,
                             const std::optional<at::Tensor>& lr, bool check_only, at::TensorList rounding,
                             const FactoredSplit& split) {
  using Rule = rules::Adafactor;
  const char* op = "fastoptim::adafactor_factored_step_";
  const size_t n = params.size();
  // The call's device: the CPU, or in a build with the CUDA kernels, the CUDA device of params[0].
#if defined(FASTOPTIM_CUDA_OPS)
  const at::Device device = n > 0 && params[0].is_cuda() ? params[0].device() : at::Device(at::kCPU);
#else
  const at::Device device = at::kCPU;
#endif
  const auto h = checked_hyper<Rule>(op, hyper, lr, device);
  TORCH_CHECK_VALUE(grads.size() == n && row_factors.size() == n && column_factors.size() == n && steps.size() == n,
                    op, ": expected one gradient, row factor, column factor and step per param (", n, "), got ",
                    grads.size(), ", ", row_factors.size(), ", ", column_factors.size(), " and ", steps.size());
  TORCH_CHECK_VALUE(rounding.empty() || rounding.size() == n, op, ": rounding must be empty or have one key per param (",
                    n, "), got ", rounding.size());
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    check_param(p, i, op, device);
    TORCH_CHECK_VALUE(p.dim() >= 2, op, ": params[", i, "] has shape ", p.sizes(),
                      "; the factored step takes tensors of two or more dims");
    TORCH_CHECK_VALUE(p.is_contiguous(), op, ": params[", i, "] has strides ", p.strides(),
                      "; the factored step walks rows of contiguous tensors");
    check_matches_param(grads[i], p, TensorName{"grads", i}, op);
    // (torch's shapes: the parameter's, with the last dim 1 for the rows' factor, the one before for the columns')
    const std::pair<const at::Tensor*, const char*> factors[] = {{&row_factors[i], "row_var"}, {&column_factors[i], "col_var"}};
    for (int f = 0; f < 2; ++f) {
      const at::Tensor& factor = *factors[f].first;
      const TensorName name{"state", i, factors[f].second};
      std::vector<std::int64_t> shape(p.sizes().begin(), p.sizes().end());
      shape[shape.size() - 1 - size_t(f)] = 1;
      TORCH_CHECK_VALUE(factor.defined(), op, ": ", name, " is undefined");
      check_plain(factor, name, op);
      TORCH_CHECK_TYPE(factor.scalar_type() == p.scalar_type(), op, ": ", name, " has dtype ", factor.scalar_type(),
                       " but params[", i, "] has dtype ", p.scalar_type());
      TORCH_CHECK_VALUE(factor.device() == p.device(), op, ": ", name, " is on ", factor.device(), " but params[", i,
                        "] is on ", p.device());
      TORCH_CHECK_VALUE(factor.sizes() == c10::IntArrayRef(shape), op, ": ", name, " has shape ", factor.sizes(),
                        " but must have shape ", c10::IntArrayRef(shape), " for params[", i, "] of shape ", p.sizes());
      TORCH_CHECK_VALUE(factor.is_contiguous(), op, ": ", name, " has strides ", factor.strides(), "; it must be contiguous");
    }
    check_scalar_tensor(steps[i], TensorName{"steps", i}, device);
    if (!rounding.empty()) check_rounding_key(rounding[i], p, i, op);
  }
  check_factored_split(op, params, split, device);
  if (check_only) return;
#if defined(FASTOPTIM_CUDA_OPS)
  if (device.is_cuda())
    return factored_step_on_cuda(op, params, grads, row_factors, column_factors, steps, hyper, lr, rounding, split);
#endif

  struct Batch {
    std::vector<fastoptim_isa::FactoredSlots> tensors;
    std::vector<Rule::Coeffs<float>> coeffs_float;
    std::vector<Rule::Coeffs<double>> coeffs_double;
  };
  std::array<Batch, 4> batches;
  const bool first_call = split.phase <= 1;  // (the call that counts the step; the others read it)
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    const std::int64_t numel = split.phase ? split.whole_sizes[3 * i + 2] : p.numel();
    rules::StepInfo info{first_call ? advance_step(steps[i]) : read_scalar(steps[i]), false, numel, true, p.size(0), 1.0,
                         int(p.dim())};
    info.dtype_eps = machine_epsilon(p.scalar_type());
    const auto rounding_step = rounding.empty() ? 0
                               : first_call     ? advance_rounding_count(rounding[i])
                                                : rounding_count(rounding[i]);
    if (numel == 0) continue;  // (a shard may be empty while others are not: its factors still move)
    const std::int64_t rows = p.size(-2), columns = p.size(-1);
    Batch& batch = batches[size_t(*storage_dtype(p.scalar_type()))];
    batch.tensors.push_back({p.data_ptr(), grads[i].const_data_ptr(), row_factors[i].data_ptr(),
                             column_factors[i].data_ptr(), c10::multiply_integers(p.sizes().begin(), p.sizes().end() - 2),
                             rows, columns});
    fastoptim_isa::FactoredSlots& slots = batch.tensors.back();
    if (!rounding.empty()) set_rounding(slots, rounding[i], rounding_step);
    if (!split.first_indices.empty()) slots.first_index = split.first_indices[i];
    if (split.phase) {
      slots.phase = int(split.phase);
      slots.split = int(split.cuts[i]);
      slots.whole_rows = split.whole_sizes[3 * i];
      slots.whole_columns = split.whole_sizes[3 * i + 1];
      slots.factor_sums = split.factor_sums[i].numel() ? split.factor_sums[i].data_ptr<double>() : nullptr;
      slots.update_sums = split.update_sums->data_ptr<double>() + 2 * i;
    }
    if (p.scalar_type() == at::kDouble) batch.coeffs_double.push_back(Rule::prepare<double>(h, info));
    else batch.coeffs_float.push_back(Rule::prepare<float>(h, info));
  }
  for (size_t d = 0; d < batches.size(); ++d) {
    const Batch& b = batches[d];
    if (b.tensors.empty()) continue;
    const void* coeffs = Dtype(d) == Dtype::f64 ? static_cast<const void*>(b.coeffs_double.data())
                                                : static_cast<const void*>(b.coeffs_float.data());
    fastoptim_isa::active().adafactor_factored(b.tensors.data(), std::int64_t(b.tensors.size()), coeffs, Dtype(d));
  }
}

namespace {

// The op's entry: the schema's bool[] arrives as a c10::List.
template <class Rule>
void elementwise_step_op(at::TensorList params, at::TensorList grads, at::TensorList state, at::TensorList steps,
                         const c10::List<bool>& fresh, c10::ArrayRef<double> hyper,
                         const std::optional<at::Tensor>& lr, const std::optional<at::Tensor>& grad_scale,
                         std::optional<at::TensorList> rounding, const std::optional<at::Tensor>& shard_sums,
                         std::int64_t sums_pass, c10::IntArrayRef whole_numels, c10::IntArrayRef first_indices) {
  const FreshFlags flags(fresh);
  elementwise_step<Rule>(params, grads, state, steps, flags.ref(), hyper, lr, grad_scale, false,
                         rounding.value_or(at::TensorList()), shard_sums, sums_pass, whole_numels, first_indices);
}

// Shape inference for torch.compile: the ops mutate their inputs in place and return nothing. The
// dispatcher also lands here when any one tensor is on the meta device, so every tensor must be.
void elementwise_step_meta(at::TensorList params, at::TensorList grads, at::TensorList state, at::TensorList steps,
                           const c10::List<bool>&, c10::ArrayRef<double>, const std::optional<at::Tensor>& lr,
                           const std::optional<at::Tensor>& grad_scale, std::optional<at::TensorList> rounding,
                           const std::optional<at::Tensor>& shard_sums, std::int64_t, c10::IntArrayRef, c10::IntArrayRef) {
  auto check = [](at::TensorList list, const char* name) {
    for (size_t i = 0; i < list.size(); ++i)
      TORCH_CHECK_VALUE(list[i].is_meta(), "fastoptim: ", name, "[", i, "] is on ", list[i].device(),
                        " while other tensors of the call are on the meta device");
  };
  check(params, "params");
  check(grads, "grads");
  check(state, "state");
  (void)steps;  // step counters live on the CPU, as torch.optim keeps them
  (void)lr;  // lr and grad_scale are CPU scalars, as a tensor lr is in torch.optim
  (void)grad_scale;
  (void)rounding;  // rounding keys live on the CPU too
  (void)shard_sums;  // and a split step's sums
}

void factored_step_op(at::TensorList params, at::TensorList grads, at::TensorList row_factors,
                      at::TensorList column_factors, at::TensorList steps, c10::ArrayRef<double> hyper,
                      const std::optional<at::Tensor>& lr, std::optional<at::TensorList> rounding, bool check_only,
                      std::int64_t phase, c10::IntArrayRef cuts, c10::IntArrayRef whole_sizes,
                      std::optional<at::TensorList> factor_sums, const std::optional<at::Tensor>& update_sums,
                      c10::IntArrayRef first_indices) {
  adafactor_factored_step(params, grads, row_factors, column_factors, steps, hyper, lr, check_only,
                          rounding.value_or(at::TensorList()),
                          {phase, cuts, whole_sizes, first_indices, factor_sums.value_or(at::TensorList()), update_sums});
}

void factored_step_meta(at::TensorList params, at::TensorList grads, at::TensorList row_factors,
                        at::TensorList column_factors, at::TensorList steps, c10::ArrayRef<double> hyper,
                        const std::optional<at::Tensor>& lr, std::optional<at::TensorList>, bool, std::int64_t,
                        c10::IntArrayRef, c10::IntArrayRef, std::optional<at::TensorList>,
                        const std::optional<at::Tensor>&, c10::IntArrayRef) {
  std::vector<at::Tensor> factors(row_factors.begin(), row_factors.end());
  factors.insert(factors.end(), column_factors.begin(), column_factors.end());
  elementwise_step_meta(params, grads, factors, steps, c10::List<bool>(), hyper, lr, std::nullopt, std::nullopt,
                        std::nullopt, 0, {}, {});
}

}  // namespace

#define FASTOPTIM_OP_SCHEMA(name)                                                                      \
  #name "_step_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] state, Tensor(c!)[] steps, bool[] fresh, " \
        "float[] hyper, Tensor? lr=None, Tensor? grad_scale=None, Tensor(d!)[]? rounding=None, "                  \
        "Tensor(e!)? shard_sums=None, int sums_pass=0, int[] whole_numels=[], int[] first_indices=[]) -> ()"

#define FASTOPTIM_FACTORED_SCHEMA                                                                          \
  "adafactor_factored_step_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] row_factors, "               \
  "Tensor(c!)[] column_factors, Tensor(d!)[] steps, float[] hyper, Tensor? lr=None, Tensor(e!)[]? rounding=None, " \
  "bool check_only=False, int phase=0, int[] cuts=[], int[] whole_sizes=[], Tensor(f!)[]? factor_sums=None, "    \
  "Tensor(g!)? update_sums=None, int[] first_indices=[]) -> ()"

TORCH_LIBRARY(fastoptim, m) {
#define FASTOPTIM_DEF(Type, name) m.def(FASTOPTIM_OP_SCHEMA(name));
  FASTOPTIM_ELEMENTWISE_RULES(FASTOPTIM_DEF)
#undef FASTOPTIM_DEF
  m.def(FASTOPTIM_FACTORED_SCHEMA);
}

// Registered for every backend, not just CPU: CUDA tensors step on their device in a build with the
// CUDA kernels (cuda_ops.cpp), and otherwise, like a sparse tensor, reach the checks above and get a
// clear TypeError/ValueError instead of the dispatcher's "could not run".
TORCH_LIBRARY_IMPL(fastoptim, CompositeExplicitAutograd, m) {
#define FASTOPTIM_IMPL(Type, name) m.impl(#name "_step_", &elementwise_step_op<rules::Type>);
  FASTOPTIM_ELEMENTWISE_RULES(FASTOPTIM_IMPL)
#undef FASTOPTIM_IMPL
  m.impl("adafactor_factored_step_", &factored_step_op);
}

TORCH_LIBRARY_IMPL(fastoptim, Meta, m) {
#define FASTOPTIM_IMPL_META(Type, name) m.impl(#name "_step_", &elementwise_step_meta);
  FASTOPTIM_ELEMENTWISE_RULES(FASTOPTIM_IMPL_META)
#undef FASTOPTIM_IMPL_META
  m.impl("adafactor_factored_step_", &factored_step_meta);
}

}  // namespace fastoptim::aten
