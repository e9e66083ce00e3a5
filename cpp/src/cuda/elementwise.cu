// The CUDA path of the element-wise rules (see fastoptim/kernels/cuda.h): a multi-tensor launch
// (the idea of torch's MultiTensorApply) whose blocks each take a chunk of one tensor, compute
// that tensor's coefficients on the device with the rule's prepare, and run the CPU driver's
// update_lanes, one element per thread, over the chunk: the rule's apply, written once.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "fastoptim/kernels/driver.h"
#include "fastoptim/kernels/cuda.h"
#include "fastoptim/rules/registry.h"

namespace fastoptim_cuda {
namespace {

using namespace fastoptim;

constexpr int kThreads = 256;
constexpr std::int64_t kChunk = kThreads * 8;  // elements per block

// Up to kTensorsPerLaunch tensors as one kernel argument: block b works on tensor t for
// first_block[t] <= b < first_block[t + 1], on its chunk b - first_block[t].
template <class Rule>
struct Batch {
  DeviceTensor tensors[kTensorsPerLaunch];
  int first_block[kTensorsPerLaunch + 1];
  int count;
  double hyper[Rule::Hyper::kFieldCount];
  const float* lr;
  const float* grad_scale;
};

// The hyperparameters, with a tensor lr in place of the field it replaces.
template <class Rule>
__device__ typename Rule::Hyper hyper_of(const Batch<Rule>& b) {
  typename Rule::Hyper h = Rule::Hyper::from(b.hyper);
  if (b.lr) rules::set_tensor_scalar(h, double(*b.lr));
  return h;
}

// What prepare knows about tensor t of the batch at this step: the step after this step's
// increment, as stored in float32 (what the CPU path computes with), and the per-tensor scalars
// before the step (in the compute type T) and, for rules that advance them, after it.
template <class Rule, class T>
__device__ rules::StepInfo step_info(const Batch<Rule>& batch, const DeviceTensor& tensor, const typename Rule::Hyper& h) {
  const double step = tensor.step ? double(*tensor.step + 1.0f) : 0.0;
  const std::int64_t rows = tensor.ndim > 1 ? tensor.slots.rows : 1;
  rules::StepInfo info{step, tensor.fresh, tensor.slots.numel, tensor.ndim > 1, rows,
                       batch.grad_scale ? double(*batch.grad_scale) : 1.0, tensor.ndim};
  for (int j = 0; j < rules::scalar_slots_of<Rule>::value; ++j)
    if (const void* scalar = tensor.slots.state[Rule::kStateSlots + j]) info.scalar_state[j] = *static_cast<const T*>(scalar);
  rules::advance_scalars<Rule>(h, info);
  return info;
}

template <class Rule, class S>
__global__ void __launch_bounds__(kThreads) step_kernel(const Batch<Rule> batch) {
  using T = core::compute_t<S>;
  int t = 0;
  while (int(blockIdx.x) >= batch.first_block[t + 1]) ++t;
  const DeviceTensor& tensor = batch.tensors[t];
  __shared__ typename Rule::template Coeffs<T> coeffs;
  if (threadIdx.x == 0) {
    const typename Rule::Hyper h = hyper_of(batch);
    coeffs = Rule::template prepare<T>(h, step_info<Rule, T>(batch, tensor, h));
  }
  __syncthreads();
  const std::int64_t begin = (std::int64_t(blockIdx.x) - batch.first_block[t]) * kChunk;
  const std::int64_t end = begin + kChunk < tensor.slots.numel ? begin + kChunk : tensor.slots.numel;
  for (std::int64_t i = begin + threadIdx.x; i < end; i += kThreads)
    kernels::update_lanes<Rule, S, 1, true>(tensor.slots, coeffs, i, rules::reads_grad<Rule>::value);
}

// After the batch's step (every block of a tensor has read the values before it): each tensor's
// advancing scalars are stored, and its counter advances (as the CPU path's float32 increment).
template <class Rule, class S>
__global__ void advance_steps(const Batch<Rule> batch) {
  using T = core::compute_t<S>;
  const int t = int(threadIdx.x);
  if (t >= batch.count) return;
  const DeviceTensor& tensor = batch.tensors[t];
  if constexpr (rules::has_next_scalars<Rule>::value) {
    const rules::StepInfo info = step_info<Rule, T>(batch, tensor, hyper_of(batch));
    for (int j = 0; j < rules::scalar_slots_of<Rule>::value; ++j)
      if (void* scalar = tensor.slots.state[Rule::kStateSlots + j]) *static_cast<T*>(scalar) = T(info.scalar_next[j]);
  }
  if (tensor.step) *tensor.step += 1.0f;
}

template <class Rule, class S>
int step_dtype(const DeviceTensor* tensors, std::int64_t count, const StepArgs& args) {
  const cudaStream_t stream = static_cast<cudaStream_t>(args.stream);
  Batch<Rule> batch{};
  std::copy(args.hyper, args.hyper + Rule::Hyper::kFieldCount, batch.hyper);
  batch.lr = args.lr;
  batch.grad_scale = args.grad_scale;
  for (std::int64_t first = 0; first < count; first += kTensorsPerLaunch) {
    batch.count = int(std::min<std::int64_t>(kTensorsPerLaunch, count - first));
    batch.first_block[0] = 0;
    for (int t = 0; t < batch.count; ++t) {
      batch.tensors[t] = tensors[first + t];
      const std::int64_t blocks = (batch.tensors[t].slots.numel + kChunk - 1) / kChunk;
      batch.first_block[t + 1] = batch.first_block[t] + int(blocks);
    }
    for (int t = batch.count; t < kTensorsPerLaunch; ++t) batch.first_block[t + 1] = batch.first_block[t];
    if (batch.first_block[batch.count] > 0)
      step_kernel<Rule, S><<<batch.first_block[batch.count], kThreads, 0, stream>>>(batch);
    if (Rule::kCountsSteps || rules::has_next_scalars<Rule>::value)
      advance_steps<Rule, S><<<1, kTensorsPerLaunch, 0, stream>>>(batch);
    if (const cudaError_t error = cudaGetLastError(); error != cudaSuccess) return int(error);
  }
  return 0;
}

template <class Rule>
int step(const DeviceTensor* tensors, std::int64_t count, Dtype dtype, const StepArgs& args) {
  switch (dtype) {
    case Dtype::f32: return step_dtype<Rule, float>(tensors, count, args);
    case Dtype::f64: return step_dtype<Rule, double>(tensors, count, args);
    case Dtype::bf16: return step_dtype<Rule, core::bf16>(tensors, count, args);
    case Dtype::f16: return step_dtype<Rule, core::f16>(tensors, count, args);
  }
  return int(cudaErrorInvalidValue);
}

// A rule's entry: its step, or why it has none yet. The rules with per-tensor sums need the
// two-pass driver (a deterministic per-tensor reduction on the device, then finish there).
template <class Rule>
constexpr RuleEntry entry() {
  if constexpr (rules::sums_of<Rule>::value > 0)
    return {Rule::kName, nullptr, "needs per-tensor sums before its update: the CUDA two-pass driver is not built yet"};
  else
    return {Rule::kName, &step<Rule>, nullptr};
}

#define FASTOPTIM_CUDA_ENTRY(Type, name) entry<rules::Type>(),
constexpr RuleEntry kRules[] = {FASTOPTIM_ELEMENTWISE_RULES(FASTOPTIM_CUDA_ENTRY)};
#undef FASTOPTIM_CUDA_ENTRY

}  // namespace

const RuleEntry* rules(int* count) {
  *count = int(sizeof(kRules) / sizeof(kRules[0]));
  return kRules;
}

const RuleEntry* find_rule(const char* name) {
  for (const auto& rule : kRules)
    if (std::strcmp(rule.name, name) == 0) return &rule;
  return nullptr;
}

int device_count() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

const char* error_text(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

}  // namespace fastoptim_cuda
