// The CUDA kernels against the CPU kernels: every rule with a CUDA path, every storage dtype and
// every hyperparameter configuration of test_kernels, 20 steps over tensors of the sizes around a
// block and a chunk (more tensors than one launch takes); fp32 within 1e-6 relative, fp64 within
// 1e-12, bf16/fp16 within one unit of their last place (the rules with sums add them in another
// order than the CPU: the same tolerances hold). A step captured in a CUDA graph and replayed
// equals eager steps, for an element-wise rule and one with sums; a rule with sums gives the same
// bits run to run. Without a CUDA device it says so and exits 77 (ctest: skipped).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "fastoptim/kernels/cuda.h"

#include "expect.h"
#include "rule_problems.h"

namespace {

constexpr int kSteps = 20;

#define CUDA_OK(call)                                                                             \
  do {                                                                                            \
    const cudaError_t error_ = (call);                                                            \
    if (error_ != cudaSuccess) {                                                                  \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(error_), __FILE__, __LINE__);    \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

// A Problem's buffers on the device, with a step counter per tensor.
struct DeviceProblem {
  std::vector<void*> params, grads;
  std::vector<std::vector<void*>> state;
  float* steps = nullptr;
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;

  explicit DeviceProblem(const Problem& pr) {
    auto upload = [](const std::vector<unsigned char>& host) {
      void* device = nullptr;
      CUDA_OK(cudaMalloc(&device, host.size()));
      CUDA_OK(cudaMemcpy(device, host.data(), host.size(), cudaMemcpyHostToDevice));
      return device;
    };
    for (std::size_t t = 0; t < pr.sizes.size(); ++t) {
      params.push_back(upload(pr.params[t]));
      grads.push_back(upload(pr.grads[t]));
      std::vector<void*> slots;
      for (const auto& s : pr.state[t]) slots.push_back(upload(s));
      state.push_back(slots);
    }
    CUDA_OK(cudaMalloc(&steps, pr.sizes.size() * sizeof(float)));
    CUDA_OK(cudaMemset(steps, 0, pr.sizes.size() * sizeof(float)));
  }
  DeviceProblem(const DeviceProblem&) = delete;
  ~DeviceProblem() {
    for (auto* p : params) cudaFree(p);
    for (auto* g : grads) cudaFree(g);
    for (auto& slots : state)
      for (auto* s : slots) cudaFree(s);
    cudaFree(steps);
    cudaFree(workspace);
  }

  // args with the workspace this rule's step of these tensors needs (allocated once, here).
  fastoptim_cuda::StepArgs args_for(const fastoptim_cuda::RuleEntry& entry, const std::vector<fastoptim_cuda::DeviceTensor>& tensors,
                                    Dtype dtype, const std::vector<double>& values, void* stream = nullptr) {
    const std::size_t needed = entry.workspace(tensors.data(), std::int64_t(tensors.size()), dtype);
    if (needed > workspace_bytes) {
      cudaFree(workspace);
      CUDA_OK(cudaMalloc(&workspace, needed));
      workspace_bytes = needed;
    }
    fastoptim_cuda::StepArgs args;
    args.hyper = values.data();
    args.stream = stream;
    args.workspace = workspace;
    args.workspace_bytes = workspace_bytes;
    return args;
  }

  void upload_grads(const Problem& pr) const {
    for (std::size_t t = 0; t < pr.sizes.size(); ++t)
      CUDA_OK(cudaMemcpy(grads[t], pr.grads[t].data(), pr.grads[t].size(), cudaMemcpyHostToDevice));
  }
  void download(Problem& pr) const {
    CUDA_OK(cudaDeviceSynchronize());
    for (std::size_t t = 0; t < pr.sizes.size(); ++t) {
      CUDA_OK(cudaMemcpy(pr.params[t].data(), params[t], pr.params[t].size(), cudaMemcpyDeviceToHost));
      for (std::size_t j = 0; j < pr.state[t].size(); ++j)
        CUDA_OK(cudaMemcpy(pr.state[t][j].data(), state[t][j], pr.state[t][j].size(), cudaMemcpyDeviceToHost));
    }
  }

  template <class Rule>
  std::vector<fastoptim_cuda::DeviceTensor> tensors(const Problem& pr, const std::vector<double>& values, bool fresh) const {
    std::vector<fastoptim_cuda::DeviceTensor> out;
    for (std::size_t t = 0; t < pr.sizes.size(); ++t) {
      fastoptim_cuda::DeviceTensor d;
      d.slots.param = params[t];
      d.slots.grad = grads[t];
      for (int j = 0; j < Rule::kStateSlots + rules::scalar_slots_of<Rule>::value; ++j)
        d.slots.state[j] = core::uses_state<Rule>(values.data(), j) ? state[t][std::size_t(j)] : nullptr;
      d.slots.numel = pr.sizes[t];
      d.slots.rows = pr.rows[t];
      d.step = Rule::kCountsSteps ? steps + t : nullptr;
      d.ndim = pr.rows[t] > 1 ? 2 : 1;  // (as run_steps says)
      d.fresh = fresh;
      out.push_back(d);
    }
    return out;
  }
};

// run_steps' steps on the device: the same gradients, the step counters on the device.
template <class Rule>
void run_cuda_steps(const fastoptim_cuda::RuleEntry& entry, Problem& pr, const std::vector<double>& values) {
  DeviceProblem device(pr);
  for (int step = 1; step <= kSteps; ++step) {
    pr.regrad(1000u + unsigned(step));
    device.upload_grads(pr);
    const auto tensors = device.tensors<Rule>(pr, values, step == 1);
    const auto args = device.args_for(entry, tensors, pr.dtype, values);
    const int error = entry.step(tensors.data(), std::int64_t(tensors.size()), pr.dtype, args);
    if (error) {
      std::printf("%s: CUDA error %s\n", Rule::kName, fastoptim_cuda::error_text(error));
      std::exit(1);
    }
  }
  device.download(pr);
}

bool close(Dtype d, double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  const double rtol = d == Dtype::f64 ? 1e-12 : d == Dtype::f32 ? 1e-6 : d == Dtype::bf16 ? 1.0 / 128 : 1.0 / 1024;
  return std::fabs(a - b) <= rtol * std::fabs(b) + (d == Dtype::f64 ? 1e-15 : 1e-7);
}

int mismatches(const Problem& a, const Problem& b) {
  int bad = 0;
  for (std::size_t t = 0; t < a.sizes.size(); ++t) {
    const std::size_t n = std::size_t(a.sizes[t]);
    for (std::size_t i = 0; i < n; ++i) bad += !close(a.dtype, load_value(a.dtype, a.params[t], i), load_value(b.dtype, b.params[t], i));
    for (std::size_t j = 0; j < a.state[t].size(); ++j) {
      const bool scalar = a.state[t][j].size() == 8;  // a per-tensor scalar in the compute type
      const Dtype d = scalar ? (a.dtype == Dtype::f64 ? Dtype::f64 : Dtype::f32) : a.dtype;
      for (std::size_t i = 0; i < (scalar ? 1 : n); ++i)
        bad += !close(d, load_value(d, a.state[t][j], i), load_value(d, b.state[t][j], i));
    }
  }
  return bad;
}

template <class Rule>
void test_rule_on_device() {
  const auto* entry = fastoptim_cuda::find_rule(Rule::kName);
  expect(entry != nullptr, std::string(Rule::kName) + " is in the CUDA table");
  if (!entry || !entry->step) {
    std::printf("%s: no CUDA path (%s)\n", Rule::kName, entry ? entry->unsupported : "missing");
    return;
  }
  // around a block (256 threads) and a chunk (2048 elements), two matrices, and more tensors
  // than one launch takes (kTensorsPerLaunch)
  std::vector<std::int64_t> sizes = {0, 1, 255, 256, 257, 2047, 2048, 2049, 100003, 33 * 65, 6 * 9};
  while (sizes.size() <= std::size_t(fastoptim_cuda::kTensorsPerLaunch) + 2) sizes.push_back(5);
  std::vector<std::int64_t> rows(sizes.size(), 1);
  rows[9] = 33;
  rows[10] = 6;
  const auto configs = configurations<Rule>();
  const auto& scalar = fastoptim_isa::table(0);
  for (Dtype d : {Dtype::f32, Dtype::f64, Dtype::bf16, Dtype::f16}) {
    int bad = 0;
    for (std::size_t c = 0; c < configs.size(); ++c) {
      const Problem start(d, sizes, Rule::kStateSlots, 7u + unsigned(c), rules::scalar_slots_of<Rule>::value, rows);
      Problem cpu = start, gpu = start;
      run_steps<Rule>(scalar.*kernels::KernelEntry<Rule>::member, cpu, configs[c], kSteps);
      run_cuda_steps<Rule>(*entry, gpu, configs[c]);
      bad += mismatches(gpu, cpu);
      if (rules::sums_of<Rule>::value > 0 && c == 0) {
        Problem again = start;
        run_cuda_steps<Rule>(*entry, again, configs[c]);
        expect(again.params == gpu.params && again.state == gpu.state,
               std::string(Rule::kName) + " " + dtype_label(d) + ": the same bits run to run");
      }
    }
    expect(bad == 0, std::string(Rule::kName) + " " + dtype_label(d) + ": CUDA equals the CPU over " +
                         std::to_string(kSteps) + " steps (" + std::to_string(configs.size()) + " configurations, " +
                         std::to_string(bad) + " elements apart)");
  }
}

// No host synchronisation inside a step: a step captured in a CUDA graph and replayed five times
// equals five eager steps, bit for bit (`values`: the rule's hyperparameters).
template <class Rule>
void test_graph_capture(const char* label, const std::vector<double>& values) {
  const std::vector<std::int64_t> sizes = {1, 4099, 100003};
  Problem eager(Dtype::f32, sizes, Rule::kStateSlots, 11u, rules::scalar_slots_of<Rule>::value), replayed = eager;
  const auto* entry = fastoptim_cuda::find_rule(Rule::kName);
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  {
    DeviceProblem device(eager);
    const auto tensors = device.tensors<Rule>(eager, values, false);
    const auto args = device.args_for(*entry, tensors, Dtype::f32, values, stream);
    for (int i = 0; i < 5; ++i) expect(entry->step(tensors.data(), std::int64_t(tensors.size()), Dtype::f32, args) == 0, "eager step");
    CUDA_OK(cudaStreamSynchronize(stream));
    device.download(eager);
  }
  {
    DeviceProblem device(replayed);
    const auto tensors = device.tensors<Rule>(replayed, values, false);
    const auto args = device.args_for(*entry, tensors, Dtype::f32, values, stream);
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    const int error = entry->step(tensors.data(), std::int64_t(tensors.size()), Dtype::f32, args);
    CUDA_OK(cudaStreamEndCapture(stream, &graph));
    expect(error == 0, std::string("a ") + label + " step is captured in a CUDA graph");
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    for (int i = 0; i < 5; ++i) CUDA_OK(cudaGraphLaunch(exec, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    device.download(replayed);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
  cudaStreamDestroy(stream);
  expect(eager.params == replayed.params && eager.state == replayed.state,
         std::string("five replays of a captured ") + label + " step equal five eager steps bit for bit");
}

template <class Rule>
std::vector<double> defaults_with(std::initializer_list<std::pair<const char*, double>> changes) {
  std::vector<double> values;
  for (const auto& f : Rule::Hyper::kFields) values.push_back(f.default_value);
  for (const auto& [name, value] : changes) values[core::field_index<typename Rule::Hyper>(name)] = value;
  return values;
}

// A call without the workspace its rule needs is refused, and changes nothing.
void test_missing_workspace() {
  using Rule = rules::LAMB;
  const auto values = defaults_with<Rule>({});
  Problem pr(Dtype::f32, {4099}, Rule::kStateSlots, 5u), after = pr;
  DeviceProblem device(pr);
  const auto tensors = device.tensors<Rule>(pr, values, true);
  const auto* entry = fastoptim_cuda::find_rule(Rule::kName);
  expect(entry->workspace(tensors.data(), 1, Dtype::f32) > 0, "LAMB's step needs a workspace");
  fastoptim_cuda::StepArgs args;
  args.hyper = values.data();
  expect(entry->step(tensors.data(), 1, Dtype::f32, args) == int(cudaErrorInvalidValue), "a LAMB step without its workspace is refused");
  device.download(after);
  expect(after.params == pr.params && after.state == pr.state, "and changes nothing");
}

}  // namespace

int main() {
  if (fastoptim_cuda::device_count() == 0) {
    std::printf("no CUDA device: the CUDA tests are skipped\n");
    return 77;
  }
  cudaDeviceProp properties{};
  cudaGetDeviceProperties(&properties, 0);
  std::printf("device: %s\n", properties.name);
#define FASTOPTIM_TEST_RULE(Type, name) test_rule_on_device<rules::Type>();
  FASTOPTIM_ELEMENTWISE_RULES(FASTOPTIM_TEST_RULE)
#undef FASTOPTIM_TEST_RULE
  test_graph_capture<rules::Adam>("AdamW", defaults_with<rules::Adam>({{"decoupled_weight_decay", 1}, {"weight_decay", 1e-2}}));
  test_graph_capture<rules::LAMB>("LAMB", defaults_with<rules::LAMB>({{"weight_decay", 1e-2}}));
  test_missing_workspace();
  return test::summary();
}
