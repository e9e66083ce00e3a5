// The CUDA kernels' host interface (cpp/src/cuda/, built when CMake finds nvcc): every element-wise
// rule's step on the device (the rules with per-tensor sums too: their sums are added up on the
// device in a fixed order, so a step gives the same bits run to run), from the same rule headers as the CPU kernels (their prepare and apply
// compile for the device too), over raw device pointers and a raw stream. Includes no CUDA header,
// so any C++ front end can call it; it links the CUDA runtime only.
//
// Nothing is read back to the host inside a step: the step counters, a tensor lr and a grad scale
// are device pointers, and each block computes its tensor's coefficients (prepare) on the device
// from them, so a step can be captured in a CUDA graph (torch.optim's capturable=True).
#pragma once
#include <cstddef>
#include <cstdint>

#include "fastoptim/kernels/isa.h"

namespace fastoptim_cuda {

using fastoptim_isa::Dtype;
using fastoptim_isa::TensorSlots;

// One tensor of a call: its memory (TensorSlots: device pointers, as the CPU kernels take host
// ones), its step counter, and what prepare() knows of its shape.
struct DeviceTensor {
  TensorSlots slots;
  float* step = nullptr;  // device: the tensor's step count (float32, as torch.optim keeps it); null if the rule counts none
  // device: a bf16 parameter's rounding key (int64 seed, stream, count; slots.stochastic_rounding):
  // the step rounds with count + 1, then the count advances, as the step counter; null without
  std::int64_t* rounding_key = nullptr;
  int ndim = 1;
  bool fresh = false;     // the state was created for this step
  // A sharded tensor's (a DTensor's local shard): the whole tensor's elements (what prepare counts;
  // 0: the shard's own), and its row in a split step's sums (StepArgs::shard_sums).
  std::int64_t whole_numel = 0, position = 0;
};

// What a call needs besides its tensors.
struct StepArgs {
  const double* hyper = nullptr;       // host: the rule's hyperparameters, flat, in field order (checked by the caller)
  const float* lr = nullptr;           // device: replaces the lr field (a tensor lr), or null
  const float* grad_scale = nullptr;   // device: a factor on every gradient (rules with kScalesGrad), or null
  void* stream = nullptr;              // cudaStream_t; null is the default stream
  // device memory of at least RuleEntry::workspace bytes for these tensors (the sums and
  // coefficients of a rule with per-tensor sums; the caller allocates it, so a step allocates
  // nothing and can be captured in a CUDA graph); null where that is 0
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  // A step split at its sums (sharded tensors): `sums_pass` 1 runs pass 1 and writes each tensor's
  // sums, or a per-row rule's summary of its rows, at shard_sums[position] (device, float64,
  // rules::split_sums_of values per row), which the caller combines across the shards; 2 takes them
  // and runs finish and pass 2 (a per-row rule sums its rows again first). 0: the whole step.
  int sums_pass = 0;
  double* shard_sums = nullptr;
};

// Steps `count` tensors of one storage dtype: a handful of launches whatever the count (a launch
// takes up to kTensorsPerLaunch tensors, then their step counters are advanced in one more; a rule
// with sums takes three per batch: sums, finish, update). Returns 0, or the CUDA error code of the
// first failed launch (cudaErrorInvalidValue for a workspace short of what `workspace` says).
using StepFunction = int (*)(const DeviceTensor* tensors, std::int64_t count, Dtype dtype, const StepArgs& args);
// The workspace bytes a step of these tensors needs (0 for a rule without sums).
using WorkspaceFunction = std::size_t (*)(const DeviceTensor* tensors, std::int64_t count, Dtype dtype);

constexpr int kTensorsPerLaunch = 24;

struct RuleEntry {
  const char* name;             // the rule's kName
  StepFunction step;            // null when the rule has no CUDA path
  WorkspaceFunction workspace;
  const char* unsupported;      // why not, or null
};

// Adafactor's factored matrices (kernels/factored.h's step, cpp/src/cuda/factored.cu): one tensor
// of a call (a sharded one in phases, FactoredSlots', its sums on the device), its step counter and
// rounding key as DeviceTensor's.
struct DeviceFactored {
  fastoptim_isa::FactoredSlots slots;
  float* step = nullptr;
  std::int64_t* rounding_key = nullptr;
  int ndim = 2;
  std::int64_t whole_numel = 0;  // a shard's whole tensor's elements (0: its own)
};
// Steps `count` tensors of one storage dtype (`args`: hyper, lr, stream and workspace; a few
// launches per tensor); returns 0 or the CUDA error code of the first failed launch.
int adafactor_factored(const DeviceFactored* tensors, std::int64_t count, Dtype dtype, const StepArgs& args);
// The workspace bytes such a step needs (the largest tensor's: they run one after another).
std::size_t adafactor_factored_workspace(const DeviceFactored* tensors, std::int64_t count, Dtype dtype);

// Every element-wise rule, in FASTOPTIM_ELEMENTWISE_RULES order.
const RuleEntry* rules(int* count);
const RuleEntry* find_rule(const char* name);

// Devices the CUDA runtime sees (0 without a driver or a GPU), and an error code's text.
int device_count();
const char* error_text(int code);

}  // namespace fastoptim_cuda
