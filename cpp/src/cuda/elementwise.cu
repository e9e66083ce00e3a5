// The CUDA path of the element-wise rules (see fastoptim/kernels/cuda.h): a multi-tensor launch
// (the idea of torch's MultiTensorApply) whose blocks each take a chunk of one tensor, compute
// that tensor's coefficients on the device with the rule's prepare, and run the CPU driver's
// update_lanes, one element per thread, over the chunk: the rule's apply, written once.
// The rules with per-tensor (or per-row) sums take three launches per batch: the CPU driver's
// first-pass term per element, summed per block; each tensor's sums added up in a fixed order and
// its finish, on the device; then update_lanes with the finished coefficients.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "fastoptim/kernels/driver.h"
#include "fastoptim/kernels/cuda.h"
#include "fastoptim/rules/registry.h"

#include "block_sums.cuh"  // (beside this file)

namespace fastoptim_cuda {
namespace {

using namespace fastoptim;

constexpr int kThreads = 256;
constexpr std::int64_t kChunk = kThreads * 8;  // elements per block

// Up to kTensorsPerLaunch tensors as one kernel argument: block b works on tensor t for
// first_block[t] <= b < first_block[t + 1], on its chunk b - first_block[t]. Two-pass rules also
// number the units their sums run over (first_unit, as first_block) and find their sums and
// coefficients in `workspace` (TwoPassWorkspace).
template <class Rule>
struct Batch {
  DeviceTensor tensors[kTensorsPerLaunch];
  int first_block[kTensorsPerLaunch + 1];
  int first_unit[kTensorsPerLaunch + 1];
  int count;
  double hyper[Rule::Hyper::kFieldCount];
  const float* lr;
  const float* grad_scale;
  void* workspace;
  int sums_pass;       // (StepArgs')
  double* shard_sums;
};

// A tensor's share of a launch: `units` units (the tensor, or for a per-row rule each row of a
// matrix) of `length` elements, each cut into `chunks` chunks of kChunk elements, a block each.
struct Cut {
  std::int64_t units, length, chunks;
  FASTOPTIM_HD std::int64_t blocks() const { return units * chunks; }
};

template <class Rule>
__host__ __device__ Cut cut_of(const DeviceTensor& tensor) {
  if constexpr (rules::sums_of<Rule>::value == 0) {
    return {1, tensor.slots.numel, (tensor.slots.numel + kChunk - 1) / kChunk};
  } else {
    const bool by_rows = rules::sums_per_row<Rule>::value && tensor.ndim > 1 && tensor.slots.rows > 0;
    const std::int64_t units = by_rows ? tensor.slots.rows : 1;
    const std::int64_t length = tensor.slots.numel / units;
    return {units, length, (length + kChunk - 1) / kChunk};
  }
}

// Block b of a batch: its tensor, its unit (within the tensor), and its elements [begin, end).
struct BlockPlace {
  int tensor;
  std::int64_t unit, begin, end;
};

template <class Rule>
__device__ BlockPlace place_of_block(const Batch<Rule>& batch) {
  int t = 0;
  while (int(blockIdx.x) >= batch.first_block[t + 1]) ++t;
  const Cut cut = cut_of<Rule>(batch.tensors[t]);
  const std::int64_t local = std::int64_t(blockIdx.x) - batch.first_block[t];
  const std::int64_t unit = local / cut.chunks, chunk = local % cut.chunks;
  const std::int64_t begin = unit * cut.length + chunk * kChunk;
  return {t, unit, begin, begin + min(kChunk, cut.length - chunk * kChunk)};
}

// The hyperparameters, with a tensor lr in place of the field it replaces.
template <class Rule>
__device__ typename Rule::Hyper hyper_of(const Batch<Rule>& b) {
  typename Rule::Hyper h = Rule::Hyper::from(b.hyper);
  if (b.lr) rules::set_tensor_scalar(h, double(*b.lr));
  return h;
}

// What prepare knows about tensor t of the batch at this step: the step after this step's
// increment, as stored in float32 (what the CPU path computes with), the per-tensor scalars before
// the step (in the compute type) and, for rules that advance them, after it, and the epsilon of the
// storage type S.
template <class Rule, class S>
__device__ rules::StepInfo step_info(const Batch<Rule>& batch, const DeviceTensor& tensor, const typename Rule::Hyper& h) {
  using T = core::compute_t<S>;
  const double step = tensor.step ? double(*tensor.step + 1.0f) : 0.0;
  const std::int64_t rows = tensor.ndim > 1 ? tensor.slots.rows : 1;
  rules::StepInfo info{step, tensor.fresh, tensor.whole_numel ? tensor.whole_numel : tensor.slots.numel, tensor.ndim > 1, rows,
                       batch.grad_scale ? double(*batch.grad_scale) : 1.0, tensor.ndim};
  for (int j = 0; j < rules::scalar_slots_of<Rule>::value; ++j)
    if (const void* scalar = tensor.slots.state[Rule::kStateSlots + j]) info.scalar_state[j] = *static_cast<const T*>(scalar);
  info.dtype_eps = core::machine_epsilon<kernels::param_t<S>>();
  rules::advance_scalars<Rule>(h, info);
  return info;
}

// The tensor's coefficients at this step, prepared once (by thread 0) into `shared` for the block.
template <class Rule, class S, class T = core::compute_t<S>>
__device__ void prepare_for_block(const Batch<Rule>& batch, const DeviceTensor& tensor, typename Rule::template Coeffs<T>& shared) {
  if (threadIdx.x == 0) {
    const typename Rule::Hyper h = hyper_of(batch);
    shared = Rule::template prepare<T>(h, step_info<Rule, S>(batch, tensor, h));
  }
  __syncthreads();
}

// Element i's update (update_lanes, one lane): a bf16 parameter with a rounding key is stored by
// stochastic rounding with the element's bits, the CPU's (parts::rounding_bits: keyed by its index
// in the whole tensor and the key's count after this step's increment).
template <class Rule, class S, bool StoreState, class Coeffs, class Arrays = kernels::StateArrays<S>>
__device__ FASTOPTIM_ALWAYS_INLINE void update_element(const DeviceTensor& tensor, const Coeffs& coeffs, std::int64_t i,
                                                       bool load_grad, const Arrays& arrays = {}) {
  if constexpr (std::is_same_v<kernels::param_t<S>, core::bf16>) {
    if (tensor.rounding_key) {
      const parts::RoundingKey key{std::uint64_t(tensor.rounding_key[0]), std::uint32_t(tensor.rounding_key[1]),
                                   std::uint32_t(tensor.rounding_key[2] + 1)};
      const std::uint16_t bits = parts::rounding_bits(key, std::uint64_t(tensor.slots.first_index + i));
      kernels::update_lanes<Rule, S, 1, StoreState, true>(tensor.slots, coeffs, i, load_grad, &bits, arrays);
      return;
    }
  }
  kernels::update_lanes<Rule, S, 1, StoreState, false>(tensor.slots, coeffs, i, load_grad, nullptr, arrays);
}

// ---- 8-bit state (state_bits=8): a CUDA block codes one block of core::kCodeBlock elements at a
// time, a thread per element, as the CPU's update_range_coded codes it ----
static_assert(kThreads == core::kCodeBlock, "a CUDA block's threads take one code block's elements");
static_assert(kChunk % core::kCodeBlock == 0, "a CUDA block's chunk is whole code blocks");

template <class S>
constexpr bool kCoded = std::is_same_v<kernels::state_t<S>, core::code8>;

// update_lanes' state arrays for one thread's element of a code block (the CPU's BlockOfCodes, one
// lane): the rule's 8-bit slots decoded with the block's old scales and their new values kept for
// the block's encoding; its other slots read and written in place, in the parameter's dtype.
template <class Rule, class S>
struct ElementOfCodes {
  using P = kernels::param_t<S>;
  static constexpr int kSlots = Rule::kStateSlots > 0 ? Rule::kStateSlots : 1;
  core::BlockDecoding old[kSlots];
  mutable float fresh[kSlots];

  __device__ static constexpr bool coded(int j) { return rules::eight_bit_slots<Rule>::value >> j & 1u; }
  template <int W, class T>
  __device__ void load(const TensorSlots& t, int j, std::int64_t i, core::Vec<T, W>& out) const {
    if (coded(j)) out = core::decode_codes<W>(static_cast<const core::code8*>(t.state[j]) + i, old[j]);
    else out = core::load<W>(static_cast<const P*>(t.state[j]) + i);
  }
  template <int W, class T>
  __device__ void store(const TensorSlots& t, int j, std::int64_t i, core::Vec<T, W> value) const {
    if (coded(j)) fresh[j] = value.v[0];
    else core::store<W>(static_cast<P*>(t.state[j]) + i, value);
  }
};

// The largest of the block's threads' `magnitude` bits and the OR of their `signs` (warp
// shuffles, then the warps' results through shared memory): exact, so any order agrees.
__device__ void block_extent(std::uint32_t magnitude, std::uint32_t signs, std::uint32_t& largest, std::uint32_t& all_signs) {
  __shared__ std::uint32_t warp_largest[kThreads / 32], warp_signs[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) {
    magnitude = max(magnitude, __shfl_xor_sync(0xFFFFFFFFu, magnitude, offset));
    signs |= __shfl_xor_sync(0xFFFFFFFFu, signs, offset);
  }
  if (threadIdx.x % 32 == 0) {
    warp_largest[threadIdx.x / 32] = magnitude;
    warp_signs[threadIdx.x / 32] = signs;
  }
  __syncthreads();
  largest = all_signs = 0;
  for (int w = 0; w < kThreads / 32; ++w) {
    largest = max(largest, warp_largest[w]);
    all_signs |= warp_signs[w];
  }
  __syncthreads();  // (before the next call writes them)
}

// The code block of elements [first, first + kCodeBlock) (those below `end`): each thread decodes,
// updates and stores its element (update_element), then each 8-bit slot's block is encoded from its
// largest magnitude and sign bits (core::encode_code8 of value / M, as encode_with_extent does) and
// its scale stored by thread 0, after every thread has read the old one.
template <class Rule, class S, class Coeffs>
__device__ void update_code_block(const DeviceTensor& tensor, const Coeffs& coeffs, std::int64_t first, std::int64_t end,
                                  bool load_grad) {
  const TensorSlots& t = tensor.slots;
  const std::int64_t i = first + threadIdx.x;
  const std::int64_t block = rules::code_grid<Rule>(t.numel, tensor.ndim > 1 ? t.rows : 1).block_of(first);
  const bool mine = i < end;
  ElementOfCodes<Rule, S> arrays;
  for (int j = 0; j < Rule::kStateSlots; ++j) {
    arrays.old[j] = core::block_decoding(arrays.coded(j) && t.state[j] ? t.state_scale[j][block] : 0.0f);
    arrays.fresh[j] = 0.0f;
  }
  if (mine) update_element<Rule, S, true>(tensor, coeffs, i, load_grad, arrays);
  for (int j = 0; j < Rule::kStateSlots; ++j) {
    if (!arrays.coded(j) || !t.state[j] || !rules::stores_slot<Rule>(j)) continue;  // (a slot only read keeps its codes)
    std::uint32_t u = 0, largest, signs;
    if (mine) std::memcpy(&u, &arrays.fresh[j], sizeof u);
    block_extent(u & 0x7FFFFFFFu, u, largest, signs);
    float top;
    std::memcpy(&top, &largest, sizeof top);
    const bool is_signed = (signs >> 31) != 0;
    const float inverse = top > 0.0f ? 1.0f / top : 0.0f;
    if (mine)
      static_cast<core::code8*>(t.state[j])[i].bits = core::encode_code8(arrays.fresh[j] * inverse, core::code_layout(is_signed));
    if (threadIdx.x == 0) t.state_scale[j][block] = core::block_scale(top, is_signed);
  }
}

// A block's elements [begin, end) updated: update_element each, or code block by code block.
template <class Rule, class S, bool StoreState, class Coeffs>
__device__ void update_elements(const DeviceTensor& tensor, const Coeffs& coeffs, std::int64_t begin, std::int64_t end,
                                bool load_grad) {
  if constexpr (kCoded<S>) {
    static_assert(StoreState, "8-bit state is stored code block by code block as the update goes");
    for (std::int64_t first = begin; first < end; first += core::kCodeBlock)
      update_code_block<Rule, S>(tensor, coeffs, first, end, load_grad);
  } else {
    for (std::int64_t i = begin + threadIdx.x; i < end; i += kThreads)
      update_element<Rule, S, StoreState>(tensor, coeffs, i, load_grad);
  }
}

template <class Rule, class S>
__global__ void __launch_bounds__(kThreads) step_kernel(const Batch<Rule> batch) {
  using T = core::compute_t<S>;
  const BlockPlace place = place_of_block(batch);
  const DeviceTensor& tensor = batch.tensors[place.tensor];
  __shared__ typename Rule::template Coeffs<T> coeffs;
  prepare_for_block<Rule, S>(batch, tensor, coeffs);
  update_elements<Rule, S, true>(tensor, coeffs, place.begin, place.end, rules::reads_grad<Rule>::value);
}

// After the batch's step (every block of a tensor has read the values before it): each tensor's
// advancing scalars are stored, and its counters advance (the step as the CPU path's float32
// increment; a two-pass rule's finish advanced it already: `steps` false) and its rounding key's.
template <class Rule, class S>
__global__ void advance_counters(const Batch<Rule> batch, bool steps) {
  using T = core::compute_t<S>;
  const int t = int(threadIdx.x);
  if (t >= batch.count) return;
  const DeviceTensor& tensor = batch.tensors[t];
  if constexpr (rules::has_next_scalars<Rule>::value && rules::sums_of<Rule>::value == 0) {
    const rules::StepInfo info = step_info<Rule, S>(batch, tensor, hyper_of(batch));
    for (int j = 0; j < rules::scalar_slots_of<Rule>::value; ++j)
      if (void* scalar = tensor.slots.state[Rule::kStateSlots + j]) *static_cast<T*>(scalar) = T(info.scalar_next[j]);
  }
  if (steps && tensor.step) *tensor.step += 1.0f;
  if (tensor.rounding_key) tensor.rounding_key[2] += 1;
}

// Whether a batch's step has counters to advance after it (advance_counters).
template <class Rule>
bool advances_counters(const Batch<Rule>& batch, bool steps) {
  if (steps && (Rule::kCountsSteps || rules::has_next_scalars<Rule>::value)) return true;
  return std::any_of(batch.tensors, batch.tensors + batch.count, [](const DeviceTensor& t) { return t.rounding_key != nullptr; });
}

// The launches of a call, batch by batch: launch(batch, blocks, units) for each batch of up to
// kTensorsPerLaunch tensors, its first_block and first_unit filled in. Stops at the first nonzero
// return.
template <class Rule, class Launch>
int for_each_batch(const DeviceTensor* tensors, std::int64_t count, Batch<Rule>& batch, Launch&& launch) {
  for (std::int64_t first = 0; first < count; first += kTensorsPerLaunch) {
    batch.count = int(std::min<std::int64_t>(kTensorsPerLaunch, count - first));
    batch.first_block[0] = batch.first_unit[0] = 0;
    for (int t = 0; t < kTensorsPerLaunch; ++t) {
      const bool in_batch = t < batch.count;
      if (in_batch) batch.tensors[t] = tensors[first + t];
      const Cut cut = in_batch ? cut_of<Rule>(batch.tensors[t]) : Cut{0, 0, 0};
      batch.first_block[t + 1] = batch.first_block[t] + int(cut.blocks());
      batch.first_unit[t + 1] = batch.first_unit[t] + int(cut.units);
    }
    if (const int error = launch(batch, batch.first_block[batch.count], batch.first_unit[batch.count])) return error;
  }
  return 0;
}

template <class Rule>
Batch<Rule> batch_for(const StepArgs& args) {
  Batch<Rule> batch{};
  std::copy(args.hyper, args.hyper + Rule::Hyper::kFieldCount, batch.hyper);
  batch.lr = args.lr;
  batch.grad_scale = args.grad_scale;
  batch.workspace = args.workspace;
  batch.sums_pass = args.sums_pass;
  batch.shard_sums = args.shard_sums;
  return batch;
}

template <class Rule, class S>
int elementwise_step(const DeviceTensor* tensors, std::int64_t count, const StepArgs& args) {
  const cudaStream_t stream = static_cast<cudaStream_t>(args.stream);
  Batch<Rule> batch = batch_for<Rule>(args);
  return for_each_batch(tensors, count, batch, [&](const Batch<Rule>& b, int blocks, int) {
    if (blocks > 0) step_kernel<Rule, S><<<blocks, kThreads, 0, stream>>>(b);
    if (advances_counters(b, true)) advance_counters<Rule, S><<<1, kTensorsPerLaunch, 0, stream>>>(b, true);
    return int(cudaGetLastError());
  });
}

// ---- rules with per-tensor (or per-row) sums ----

// Where a batch's sums and coefficients live, in the caller's workspace (one batch at a time, so
// every batch starts at its beginning): each block's sums, each unit's sums, each unit's coefficients.
template <class Rule, class T>
struct TwoPassWorkspace {
  static constexpr int N = rules::sums_of<Rule>::value;
  using Coeffs = typename Rule::template Coeffs<T>;
  struct UnitSums {  // finish_rows reads sums[unit][j]
    T value[N];
    FASTOPTIM_HD T operator[](int j) const { return value[j]; }
  };
  T* block_sums;        // [block][N]
  UnitSums* unit_sums;  // [unit]
  Coeffs* coeffs;       // [unit]

  static constexpr std::size_t aligned(std::size_t bytes) { return (bytes + 255) / 256 * 256; }
  static std::size_t bytes(std::int64_t blocks, std::int64_t units) {
    return aligned(std::size_t(blocks) * N * sizeof(T)) + aligned(std::size_t(units) * sizeof(UnitSums)) +
           aligned(std::size_t(units) * sizeof(Coeffs));
  }
  FASTOPTIM_HD static TwoPassWorkspace at(void* base, std::int64_t blocks, std::int64_t units) {
    char* bytes_at = static_cast<char*>(base);
    T* block_sums = reinterpret_cast<T*>(bytes_at);
    bytes_at += aligned(std::size_t(blocks) * N * sizeof(T));
    UnitSums* unit_sums = reinterpret_cast<UnitSums*>(bytes_at);
    bytes_at += aligned(std::size_t(units) * sizeof(UnitSums));
    return {block_sums, unit_sums, reinterpret_cast<Coeffs*>(bytes_at)};
  }
};

// Pass 1: each block runs the CPU driver's FirstPassTerm over its elements (advance and store the
// state first, for a rule whose first pass updates it) and writes its sums; a tensor whose step
// needs no sums contributes zeros, as on the CPU.
template <class Rule, class S>
__global__ void __launch_bounds__(kThreads) sums_kernel(const Batch<Rule> batch) {
  using T = core::compute_t<S>;
  constexpr int N = rules::sums_of<Rule>::value;
  using Coeffs = typename Rule::template Coeffs<T>;
  const BlockPlace place = place_of_block(batch);
  const DeviceTensor& tensor = batch.tensors[place.tensor];
  __shared__ Coeffs coeffs;
  __shared__ T values[N][kThreads];
  prepare_for_block<Rule, S>(batch, tensor, coeffs);
  T sums[N] = {};
  const bool summed = rules::needs_sums<Rule>(coeffs);
  if (summed || Rule::kStateInFirstPass) {
    const kernels::FirstPassTerm<Rule, S, T> term{&tensor.slots, &coeffs};
    for (std::int64_t i = place.begin + threadIdx.x; i < place.end; i += kThreads) {
      core::Vec<T, 1> out[N];
      term.template at<1>(i, out);
      if (summed)
        for (int j = 0; j < N; ++j) sums[j] += out[j].v[0];
    }
  }
  for (int j = 0; j < N; ++j) values[j][threadIdx.x] = sums[j];
  add_up_block<T, N>(values);
  if (threadIdx.x == 0) {
    const auto workspace = TwoPassWorkspace<Rule, T>::at(batch.workspace, batch.first_block[batch.count], batch.first_unit[batch.count]);
    for (int j = 0; j < N; ++j) workspace.block_sums[std::int64_t(blockIdx.x) * N + j] = values[j][0];
  }
}

// Then one block per tensor: its units' sums from their blocks' sums (a single unit: strided over
// the threads and added in the fixed tree; several units (rows): a thread per unit, its blocks in
// order), its coefficients (prepare, then the rule's finish with its per-tensor scalars, or
// finish_rows over all its rows), and its step counter advanced. In a split step (a single unit), the
// first half writes the unit's sums to shard_sums and stops; the second takes them from there.
template <class Rule, class S>
__global__ void __launch_bounds__(kThreads) finish_kernel(const Batch<Rule> batch) {
  using T = core::compute_t<S>;
  constexpr int N = rules::sums_of<Rule>::value;
  using Workspace = TwoPassWorkspace<Rule, T>;
  const int t = int(blockIdx.x);
  const DeviceTensor& tensor = batch.tensors[t];
  const Cut cut = cut_of<Rule>(tensor);
  const Workspace workspace = Workspace::at(batch.workspace, batch.first_block[batch.count], batch.first_unit[batch.count]);
  const T* block_sums = workspace.block_sums + std::int64_t(batch.first_block[t]) * N;
  typename Workspace::UnitSums* unit_sums = workspace.unit_sums + batch.first_unit[t];
  typename Workspace::Coeffs* coeffs = workspace.coeffs + batch.first_unit[t];
  constexpr bool kPerRow = rules::sums_per_row<Rule>::value;
  // (what a split step exchanges per tensor: its sums, or a per-row rule's summary of its rows)
  double* shard_sums = batch.shard_sums ? batch.shard_sums + tensor.position * rules::split_sums_of<Rule>() : nullptr;
  if (batch.sums_pass == 2 && !kPerRow) {
    if (threadIdx.x == 0)
      for (int j = 0; j < N; ++j) unit_sums[0].value[j] = T(shard_sums[j]);
  } else if (cut.units == 1) {
    __shared__ T values[N][kThreads];
    T sums[N] = {};
    for (std::int64_t c = threadIdx.x; c < cut.chunks; c += kThreads)
      for (int j = 0; j < N; ++j) sums[j] += block_sums[c * N + j];
    for (int j = 0; j < N; ++j) values[j][threadIdx.x] = sums[j];
    add_up_block<T, N>(values);
    if (threadIdx.x == 0)
      for (int j = 0; j < N; ++j) unit_sums[0].value[j] = values[j][0];
    if (batch.sums_pass == 1 && !kPerRow) {
      if (threadIdx.x == 0)
        for (int j = 0; j < N; ++j) shard_sums[j] = double(values[j][0]);
      return;
    }
  } else {
    for (std::int64_t u = threadIdx.x; u < cut.units; u += kThreads)
      for (int j = 0; j < N; ++j) {
        T sum = 0;
        for (std::int64_t c = 0; c < cut.chunks; ++c) sum += block_sums[(u * cut.chunks + c) * N + j];
        unit_sums[u].value[j] = sum;
      }
  }
  __shared__ typename Workspace::Coeffs prepared;
  prepare_for_block<Rule, S>(batch, tensor, prepared);
  for (std::int64_t u = threadIdx.x; u < cut.units; u += kThreads) coeffs[u] = prepared;
  __syncthreads();
  if (threadIdx.x != 0) return;
  if constexpr (kPerRow && rules::row_summary_of<Rule>::value > 0) {
    // (a split step: the first half gives the tensor's summary of its rows, the second projects them
    // by the whole tensor's, combined across the shards)
    if (batch.sums_pass == 1) return Rule::summarize_rows(coeffs, unit_sums, cut.units, shard_sums);
    Rule::finish_rows(coeffs, unit_sums, cut.units, batch.sums_pass == 2 ? shard_sums : nullptr);
  } else if constexpr (kPerRow) {
    Rule::finish_rows(coeffs, unit_sums, cut.units);
  } else if constexpr (rules::scalar_slots_of<Rule>::value > 0) {
    T* scalars[rules::scalar_slots_of<Rule>::value];
    for (int j = 0; j < rules::scalar_slots_of<Rule>::value; ++j)
      scalars[j] = static_cast<T*>(tensor.slots.state[Rule::kStateSlots + j]);
    Rule::finish(coeffs[0], unit_sums[0].value, scalars);
  } else {
    Rule::finish(coeffs[0], unit_sums[0].value);
  }
  if (tensor.step) *tensor.step += 1.0f;
}

// Pass 2: update_lanes with the unit's finished coefficients (storing the state too for a rule
// whose first pass left it).
template <class Rule, class S>
__global__ void __launch_bounds__(kThreads) update_kernel(const Batch<Rule> batch) {
  using T = core::compute_t<S>;
  const BlockPlace place = place_of_block(batch);
  const auto workspace = TwoPassWorkspace<Rule, T>::at(batch.workspace, batch.first_block[batch.count], batch.first_unit[batch.count]);
  const typename Rule::template Coeffs<T> coeffs = workspace.coeffs[batch.first_unit[place.tensor] + place.unit];
  const DeviceTensor& tensor = batch.tensors[place.tensor];
  update_elements<Rule, S, !Rule::kStateInFirstPass>(tensor, coeffs, place.begin, place.end,
                                                     rules::second_pass_reads_grad<Rule>(coeffs));
}

template <class Rule, class S>
int two_pass_step(const DeviceTensor* tensors, std::int64_t count, const StepArgs& args) {
  using Workspace = TwoPassWorkspace<Rule, core::compute_t<S>>;
  const cudaStream_t stream = static_cast<cudaStream_t>(args.stream);
  Batch<Rule> batch = batch_for<Rule>(args);
  return for_each_batch(tensors, count, batch, [&](const Batch<Rule>& b, int blocks, int units) {
    if (Workspace::bytes(blocks, units) > args.workspace_bytes || (blocks + units > 0 && !args.workspace))
      return int(cudaErrorInvalidValue);  // (the caller sizes it with workspace_bytes)
    // (a split step: pass 1 and the sums in its first half; finish and pass 2 in its second, which for
    // a per-row rule sums the rows again, as on the CPU)
    if (blocks > 0 && (b.sums_pass != 2 || rules::sums_per_row<Rule>::value))
      sums_kernel<Rule, S><<<blocks, kThreads, 0, stream>>>(b);
    finish_kernel<Rule, S><<<b.count, kThreads, 0, stream>>>(b);
    if (b.sums_pass == 1) return int(cudaGetLastError());
    if (blocks > 0) update_kernel<Rule, S><<<blocks, kThreads, 0, stream>>>(b);
    if (advances_counters(b, false)) advance_counters<Rule, S><<<1, kTensorsPerLaunch, 0, stream>>>(b, false);
    return int(cudaGetLastError());
  });
}

// The workspace a two-pass call needs: its largest batch's.
template <class Rule, class S>
std::size_t two_pass_workspace(const DeviceTensor* tensors, std::int64_t count) {
  std::size_t most = 0;
  Batch<Rule> batch{};
  for_each_batch(tensors, count, batch, [&](const Batch<Rule>&, int blocks, int units) {
    most = std::max(most, TwoPassWorkspace<Rule, core::compute_t<S>>::bytes(blocks, units));
    return 0;
  });
  return most;
}

// The rule a call of storage S runs: a rule whose pass 1 stores its state runs it in pass 2 with
// 8-bit state (whose codes are stored a code block at a time as pass 2 goes), as on the CPU.
template <class Rule, class S>
using RuleFor = std::conditional_t<kCoded<S> && kernels::stores_state_in_first_pass<Rule>(),
                                   kernels::StateInSecondPass<Rule, S>, Rule>;

template <class Rule, class S>
int step_dtype(const DeviceTensor* tensors, std::int64_t count, const StepArgs& args) {
  if constexpr (rules::sums_of<Rule>::value > 0) {
    using Stepped = RuleFor<Rule, S>;
    // (a per-row rule's split step: both halves sum the rows, so neither may store state in pass 1)
    if constexpr (rules::sums_per_row<Rule>::value && rules::splits_at_sums<Rule>() &&
                  kernels::stores_state_in_first_pass<Stepped>())
      if (args.sums_pass != 0) return two_pass_step<kernels::StateInSecondPass<Rule, S>, S>(tensors, count, args);
    return two_pass_step<Stepped, S>(tensors, count, args);
  } else {
    return elementwise_step<Rule, S>(tensors, count, args);
  }
}

// Calls f with the storage type of a call (a value of that type's pointer, null): `dtype`'s, or for
// float32 parameters with bf16 state (TensorSlots::bf16_state) StateIn<float, bf16>, or with 8-bit
// state (TensorSlots::eight_bit_state; a rule with 8-bit slots) StateIn<float or bf16, code8>.
template <class Rule, class F>
auto with_storage(Dtype dtype, const DeviceTensor* tensors, std::int64_t count, F&& f) {
  const bool eight_bit = count > 0 && tensors[0].slots.eight_bit_state;
  if constexpr (rules::eight_bit_slots<Rule>::value != 0) {
    if (eight_bit && dtype == Dtype::f32) return f(static_cast<kernels::StateIn<float, core::code8>*>(nullptr));
    if (eight_bit && dtype == Dtype::bf16) return f(static_cast<kernels::StateIn<core::bf16, core::code8>*>(nullptr));
  }
  switch (dtype) {
    case Dtype::f64: return f(static_cast<double*>(nullptr));
    case Dtype::bf16: return f(static_cast<core::bf16*>(nullptr));
    case Dtype::f16: return f(static_cast<core::f16*>(nullptr));
    case Dtype::f32: break;
  }
  if (count > 0 && tensors[0].slots.bf16_state) return f(static_cast<kernels::StateIn<float, core::bf16>*>(nullptr));
  return f(static_cast<float*>(nullptr));
}

template <class Rule>
int step(const DeviceTensor* tensors, std::int64_t count, Dtype dtype, const StepArgs& args) {
  if (count > 0 && tensors[0].slots.eight_bit_state && rules::eight_bit_slots<Rule>::value == 0)
    return int(cudaErrorInvalidValue);  // (the front ends give 8-bit state to rules with 8-bit slots only)
  return with_storage<Rule>(dtype, tensors, count, [&](auto* storage) {
    return step_dtype<Rule, std::remove_pointer_t<decltype(storage)>>(tensors, count, args);
  });
}

template <class Rule>
std::size_t workspace_bytes(const DeviceTensor* tensors, std::int64_t count, Dtype dtype) {
  if constexpr (rules::sums_of<Rule>::value == 0) {
    return 0;
  } else {
    return with_storage<Rule>(dtype, tensors, count, [&](auto* storage) {
      using S = std::remove_pointer_t<decltype(storage)>;
      return two_pass_workspace<RuleFor<Rule, S>, S>(tensors, count);
    });
  }
}

// A rule's entry: its step and the workspace the step needs.
template <class Rule>
constexpr RuleEntry entry() {
  return {Rule::kName, &step<Rule>, &workspace_bytes<Rule>, nullptr};
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
