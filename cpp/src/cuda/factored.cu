// The CUDA path of Adafactor's factored matrices (the step of kernels/factored.h on the device),
// from the same rule functions (rules/adafactor.h: prepare, moment, floored_row_mean, factored_row,
// column_rsqrt, factored_scaled, finish, descend). A tensor is `batches` slices of rows x columns;
// its step is a few launches on the call's stream:
//   prepare        (one thread)           the coefficients, from the step counter on the device
//   row sums       (a block per row)      each row's sum of g^2
//   column runs    (a thread per column)  each column's sum of g^2 over a run of kRowsPerRun rows
//   factors        (a block per slice)    the factors moved toward their means, the slice's floored
//                                         row mean and its columns' rsqrt
//   update sums    (a block per chunk)    each chunk's sums of u^2 and theta^2
//   finish         (one block)            the tensor's sums (the chunks' in a fixed tree) and finish
//   descend        (a block per chunk)    the update (stochastic rounding as the element-wise kernels)
//   counters       (one thread)           the step counter and the rounding key advance
// A sharded matrix (a DTensor's local shard) steps in three calls, as on the CPU (FactoredSlots'
// phase, cut and sums, on the device), the front end adding up its shards' sums between them.
// Every sum is taken in a fixed order, so a step gives the same bits run to run (not the CPU's: it
// adds in another order). Nothing is read back to the host: a step can be captured in a CUDA graph.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "fastoptim/core/lanes.h"
#include "fastoptim/kernels/cuda.h"
#include "fastoptim/kernels/factored_split.h"
#include "fastoptim/parts/philox.h"
#include "fastoptim/rules/adafactor.h"

#include "block_sums.cuh"  // (beside this file)

namespace fastoptim_cuda {
namespace {

using namespace fastoptim;
using Rule = rules::Adafactor;

constexpr int kThreads = 256;
constexpr std::int64_t kChunk = kThreads * 8;  // elements per block of the element-wise launches
constexpr std::int64_t kRowsPerRun = 64;       // rows a column's thread adds before its run is stored

struct Hyper {
  double values[Rule::Hyper::kFieldCount];
};

// Where a tensor's intermediate values live in the call's workspace (its tensors run one after
// another on the stream, each from the workspace's start), in the compute type T.
template <class T>
struct Layout {
  std::int64_t batches, rows, columns, runs, chunks;
  std::size_t row_sums, column_runs, floored, column_rsqrt, chunk_sums, coeffs, bytes;

  static constexpr std::size_t aligned(std::size_t bytes) { return (bytes + 255) / 256 * 256; }
  static Layout of(const fastoptim_isa::FactoredSlots& x) {
    Layout l{x.batches, x.rows, x.columns, (x.rows + kRowsPerRun - 1) / kRowsPerRun, 0, 0, 0, 0, 0, 0, 0, 0};
    l.chunks = (x.batches * x.rows * x.columns + kChunk - 1) / kChunk;
    std::size_t at = 0;
    auto take = [&](std::size_t count, std::size_t size) {
      const std::size_t start = at;
      at += aligned(count * size);
      return start;
    };
    l.row_sums = take(std::size_t(l.batches * l.rows), sizeof(T));
    l.column_runs = take(std::size_t(l.batches * l.runs * l.columns), sizeof(T));
    l.floored = take(std::size_t(l.batches), sizeof(T));
    l.column_rsqrt = take(std::size_t(l.batches * l.columns), sizeof(T));
    l.chunk_sums = take(std::size_t(l.chunks) * 2, sizeof(T));
    l.coeffs = take(1, sizeof(typename Rule::template Coeffs<T>));
    l.bytes = at;
    return l;
  }
  template <class V>
  FASTOPTIM_HD V* at(void* base, std::size_t offset) const {
    return reinterpret_cast<V*>(static_cast<char*>(base) + offset);
  }
};

template <class S, class T = core::compute_t<S>>
__global__ void prepare_kernel(const DeviceFactored tensor, const Hyper hyper, const float* lr, Layout<T> layout,
                               void* workspace) {
  typename Rule::Hyper h = Rule::Hyper::from(hyper.values);
  if (lr) rules::set_tensor_scalar(h, double(*lr));
  const fastoptim_isa::FactoredSlots& x = tensor.slots;
  const std::int64_t numel = tensor.whole_numel ? tensor.whole_numel : x.batches * x.rows * x.columns;
  rules::StepInfo info{double(*tensor.step + 1.0f), false, numel, true, x.rows, 1.0, tensor.ndim};
  info.dtype_eps = core::machine_epsilon<S>();
  *layout.template at<typename Rule::template Coeffs<T>>(workspace, layout.coeffs) = Rule::template prepare<T>(h, info);
}

template <class S, class T = core::compute_t<S>>
__global__ void __launch_bounds__(kThreads) row_sums_kernel(const DeviceFactored tensor, Layout<T> layout, void* workspace) {
  const fastoptim_isa::FactoredSlots& x = tensor.slots;
  const std::int64_t row = blockIdx.x;  // (slice * rows + row)
  const S* g = static_cast<const S*>(x.grad) + row * x.columns;
  __shared__ T values[1][kThreads];
  T sum = 0;
  for (std::int64_t c = threadIdx.x; c < x.columns; c += kThreads) {
    const T gc = core::load<1>(g + c).v[0];
    sum += gc * gc;
  }
  values[0][threadIdx.x] = sum;
  add_up_block<T, 1>(values);
  if (threadIdx.x == 0) layout.template at<T>(workspace, layout.row_sums)[row] = values[0][0];
}

// grid: (slices x column blocks, runs): a thread per column of a slice, over one run of its rows.
template <class S, class T = core::compute_t<S>>
__global__ void __launch_bounds__(kThreads) column_runs_kernel(const DeviceFactored tensor, Layout<T> layout, void* workspace) {
  const fastoptim_isa::FactoredSlots& x = tensor.slots;
  const std::int64_t column_blocks = (x.columns + kThreads - 1) / kThreads;
  const std::int64_t slice = blockIdx.x / column_blocks, run = blockIdx.y;
  const std::int64_t c = std::int64_t(blockIdx.x % column_blocks) * kThreads + threadIdx.x;
  if (c >= x.columns) return;
  const S* g = static_cast<const S*>(x.grad) + slice * x.rows * x.columns;
  T sum = 0;
  for (std::int64_t r = run * kRowsPerRun; r < std::min(x.rows, (run + 1) * kRowsPerRun); ++r) {
    const T gc = core::load<1>(g + r * x.columns + c).v[0];
    sum += gc * gc;
  }
  layout.template at<T>(workspace, layout.column_runs)[(slice * layout.runs + run) * x.columns + c] = sum;
}

// A block per slice: its row factors moved (and their total, as stored), its column factors moved
// (their runs added in order) and their rsqrt, and its floored row mean. In a split step (the
// slots' phase; see FactoredSlots), as the CPU's FactoredStep::prepare_slice: phase 1 moves the
// factors the shard has whole and leaves in factor_sums what the shards add up (cutting rows: the
// row factors' total and each column's sum of g^2; cutting columns: each row's sum of g^2), phase 2
// moves the other factors from the added-up sums, phase 3 moves none. The means divide by the whole
// tensor's rows and columns.
template <class S, class T = core::compute_t<S>>
__global__ void __launch_bounds__(kThreads) factors_kernel(const DeviceFactored tensor, Layout<T> layout, void* workspace) {
  const fastoptim_isa::FactoredSlots& x = tensor.slots;
  const auto& k = *layout.template at<typename Rule::template Coeffs<T>>(workspace, layout.coeffs);
  const std::int64_t slice = blockIdx.x;
  const int phase = x.phase, cut = kernels::cut_of(x);
  const T whole_rows = T(kernels::whole_rows(x)), whole_columns = T(kernels::whole_columns(x));
  double* exchange = kernels::exchanged(x, slice);
  S* rows = static_cast<S*>(x.row_factor) + slice * x.rows;
  S* columns = static_cast<S*>(x.column_factor) + slice * x.columns;
  const T* row_sums = layout.template at<T>(workspace, layout.row_sums) + slice * x.rows;
  const bool move_rows = kernels::moves_rows(x);
  __shared__ T values[1][kThreads];
  T total = 0;
  for (std::int64_t r = threadIdx.x; r < x.rows; r += kThreads) {
    if (phase == 1 && cut == 2) exchange[r] = double(row_sums[r]);
    if (move_rows) {
      const T sum = phase == 2 ? T(exchange[r]) : row_sums[r];
      core::store<1>(rows + r, Rule::moment(core::load<1>(rows + r), core::Vec<T, 1>::broadcast(sum / whole_columns), k));
    }
    total += core::load<1>(rows + r).v[0];  // (the factor as stored)
  }
  values[0][threadIdx.x] = total;
  add_up_block<T, 1>(values);
  if (threadIdx.x == 0) {
    if (phase == 1 && cut == 1) exchange[0] = double(values[0][0]);
    const T row_total = cut == 1 && phase >= 2 ? T(exchange[0]) : values[0][0];
    layout.template at<T>(workspace, layout.floored)[slice] = Rule::floored_row_mean(row_total, std::int64_t(whole_rows), k);
  }
  const T* runs = layout.template at<T>(workspace, layout.column_runs) + slice * layout.runs * x.columns;
  T* rsqrt = layout.template at<T>(workspace, layout.column_rsqrt) + slice * x.columns;
  const bool move_columns = kernels::moves_columns(x);
  for (std::int64_t c = threadIdx.x; c < x.columns; c += kThreads) {
    T sum = 0;
    if (kernels::sums_squares(x))
      for (std::int64_t run = 0; run < layout.runs; ++run) sum += runs[run * x.columns + c];
    else if (cut == 1 && phase == 2)
      sum = T(exchange[1 + c]);
    if (phase == 1 && cut == 1) exchange[1 + c] = double(sum);
    if (move_columns)
      core::store<1>(columns + c, Rule::moment(core::load<1>(columns + c), core::Vec<T, 1>::broadcast(sum / whole_rows), k));
    rsqrt[c] = Rule::column_rsqrt(core::load<1>(columns + c).v[0]);
  }
}

// Element i's u (the factored estimate's scaling of its gradient).
template <class S, class T>
__device__ core::Vec<T, 1> update_at(const fastoptim_isa::FactoredSlots& x, const Layout<T>& layout, void* workspace,
                                     const typename Rule::template Coeffs<T>& k, std::int64_t i) {
  const std::int64_t c = i % x.columns, row = i / x.columns, slice = row / x.rows;
  const auto factored_row = Rule::factored_row(core::load<1>(static_cast<const S*>(x.row_factor) + row).v[0],
                                               layout.template at<T>(workspace, layout.floored)[slice]);
  const T* rsqrt = layout.template at<T>(workspace, layout.column_rsqrt) + slice * x.columns;
  const S* columns = static_cast<const S*>(x.column_factor) + slice * x.columns;
  return Rule::factored_scaled(Rule::gradient(core::load<1>(static_cast<const S*>(x.grad) + i), k), factored_row,
                               core::load<1>(columns + c), core::Vec<T, 1>::broadcast(rsqrt[c]), k);
}

template <class S, class T = core::compute_t<S>>
__global__ void __launch_bounds__(kThreads) update_sums_kernel(const DeviceFactored tensor, Layout<T> layout, void* workspace) {
  const fastoptim_isa::FactoredSlots& x = tensor.slots;
  const auto& k = *layout.template at<typename Rule::template Coeffs<T>>(workspace, layout.coeffs);
  const std::int64_t begin = std::int64_t(blockIdx.x) * kChunk, end = std::min(begin + kChunk, x.batches * x.rows * x.columns);
  __shared__ T values[2][kThreads];
  T sums[2] = {};
  for (std::int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const T u = update_at<S>(x, layout, workspace, k, i).v[0];
    const T p = core::load<1>(static_cast<const S*>(x.param) + i).v[0];
    sums[0] += u * u;
    sums[1] += p * p;
  }
  values[0][threadIdx.x] = sums[0];
  values[1][threadIdx.x] = sums[1];
  add_up_block<T, 2>(values);
  if (threadIdx.x == 0)
    for (int j = 0; j < 2; ++j) layout.template at<T>(workspace, layout.chunk_sums)[blockIdx.x * 2 + j] = values[j][0];
}

// The tensor's sums of u^2 and theta^2 (its chunks' in a fixed tree) and the rule's finish; in a split
// step, those sums are left in update_sums for the shards to add up (phases 1 and 2), or taken from
// there, added up (phase 3).
template <class S, class T = core::compute_t<S>>
__global__ void __launch_bounds__(kThreads) finish_kernel(const DeviceFactored tensor, Layout<T> layout, void* workspace) {
  const fastoptim_isa::FactoredSlots& x = tensor.slots;
  const T* chunk_sums = layout.template at<T>(workspace, layout.chunk_sums);
  __shared__ T values[2][kThreads];
  T sums[2] = {};
  for (std::int64_t b = threadIdx.x; b < layout.chunks && x.phase != 3; b += kThreads)
    for (int j = 0; j < 2; ++j) sums[j] += chunk_sums[b * 2 + j];
  for (int j = 0; j < 2; ++j) values[j][threadIdx.x] = sums[j];
  add_up_block<T, 2>(values);
  if (threadIdx.x != 0) return;
  if (x.phase == 1 || x.phase == 2) {
    for (int j = 0; j < 2; ++j) x.update_sums[j] = double(values[j][0]);
    return;
  }
  const T total[2] = {x.phase == 3 ? T(x.update_sums[0]) : values[0][0], x.phase == 3 ? T(x.update_sums[1]) : values[1][0]};
  Rule::finish(*layout.template at<typename Rule::template Coeffs<T>>(workspace, layout.coeffs), total);
}

template <class S, class T = core::compute_t<S>>
__global__ void __launch_bounds__(kThreads) descend_kernel(const DeviceFactored tensor, Layout<T> layout, void* workspace) {
  const fastoptim_isa::FactoredSlots& x = tensor.slots;
  const auto& k = *layout.template at<typename Rule::template Coeffs<T>>(workspace, layout.coeffs);
  const std::int64_t begin = std::int64_t(blockIdx.x) * kChunk, end = std::min(begin + kChunk, x.batches * x.rows * x.columns);
  S* param = static_cast<S*>(x.param);
  for (std::int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    core::Vec<T, 1> p = core::load<1>(param + i);
    Rule::descend(p, update_at<S>(x, layout, workspace, k, i), k);
    if constexpr (std::is_same_v<S, core::bf16>) {
      if (tensor.rounding_key) {  // (the element-wise kernels' bits: parts::rounding_bits at the key's next count)
        const parts::RoundingKey key{std::uint64_t(tensor.rounding_key[0]), std::uint32_t(tensor.rounding_key[1]),
                                     std::uint32_t(tensor.rounding_key[2] + 1)};
        const std::uint16_t bits = parts::rounding_bits(key, std::uint64_t(x.first_index + i));
        core::store_rounded<1>(param + i, p, &bits);
        continue;
      }
    }
    core::store<1>(param + i, p);
  }
}

__global__ void counters_kernel(const DeviceFactored tensor) {
  *tensor.step += 1.0f;
  if (tensor.rounding_key) tensor.rounding_key[2] += 1;
}

template <class S>
int step_tensors(const DeviceFactored* tensors, std::int64_t count, const StepArgs& args) {
  using T = core::compute_t<S>;
  const cudaStream_t stream = static_cast<cudaStream_t>(args.stream);
  Hyper hyper;
  std::copy(args.hyper, args.hyper + Rule::Hyper::kFieldCount, hyper.values);
  for (std::int64_t t = 0; t < count; ++t) {
    const DeviceFactored& tensor = tensors[t];
    const fastoptim_isa::FactoredSlots& x = tensor.slots;
    const Layout<T> layout = Layout<T>::of(x);
    if (layout.bytes > args.workspace_bytes || !args.workspace) return int(cudaErrorInvalidValue);
    void* workspace = args.workspace;
    // (a split step's phases, as the CPU's: which sums this call takes and gives; a shard with no
    // elements still moves the factors its slices keep and gives zero sums)
    const bool sums_due = kernels::sums_due(x), update_due = kernels::update_due(x);
    const bool whole = tensor.whole_numel ? tensor.whole_numel > 0 : x.batches * x.rows * x.columns > 0;
    prepare_kernel<S><<<1, 1, 0, stream>>>(tensor, hyper, args.lr, layout, workspace);
    if (whole && x.batches > 0) {
      if (kernels::sums_squares(x) && x.rows * x.columns > 0) {
        row_sums_kernel<S><<<unsigned(x.batches * x.rows), kThreads, 0, stream>>>(tensor, layout, workspace);
        const dim3 runs(unsigned(x.batches * ((x.columns + kThreads - 1) / kThreads)), unsigned(layout.runs));
        column_runs_kernel<S><<<runs, kThreads, 0, stream>>>(tensor, layout, workspace);
      }
      factors_kernel<S><<<unsigned(x.batches), kThreads, 0, stream>>>(tensor, layout, workspace);
      if (sums_due && layout.chunks > 0) update_sums_kernel<S><<<unsigned(layout.chunks), kThreads, 0, stream>>>(tensor, layout, workspace);
      if (sums_due || update_due) finish_kernel<S><<<1, kThreads, 0, stream>>>(tensor, layout, workspace);
      if (update_due && layout.chunks > 0) descend_kernel<S><<<unsigned(layout.chunks), kThreads, 0, stream>>>(tensor, layout, workspace);
    }
    if (update_due) counters_kernel<<<1, 1, 0, stream>>>(tensor);
    if (const cudaError_t error = cudaGetLastError(); error != cudaSuccess) return int(error);
  }
  return 0;
}

}  // namespace

int adafactor_factored(const DeviceFactored* tensors, std::int64_t count, Dtype dtype, const StepArgs& args) {
  switch (dtype) {
    case Dtype::f32: return step_tensors<float>(tensors, count, args);
    case Dtype::f64: return step_tensors<double>(tensors, count, args);
    case Dtype::bf16: return step_tensors<core::bf16>(tensors, count, args);
    case Dtype::f16: return step_tensors<core::f16>(tensors, count, args);
  }
  return int(cudaErrorInvalidValue);
}

std::size_t adafactor_factored_workspace(const DeviceFactored* tensors, std::int64_t count, Dtype dtype) {
  std::size_t most = 0;
  for (std::int64_t t = 0; t < count; ++t)
    most = std::max(most, dtype == Dtype::f64 ? Layout<double>::of(tensors[t].slots).bytes : Layout<float>::of(tensors[t].slots).bytes);
  return most;
}

}  // namespace fastoptim_cuda
