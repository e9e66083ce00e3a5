// Torch-free tests of the core: every SIMD kernel table against the one-lane scalar table, bit for
// bit, for every rule, storage dtype and flag combination, at sizes around the vector width; the
// parallel loop's coverage; hyperparameter validation. Closes with "N passed, N failed".
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "fastoptim/core/dtypes.h"
#include "fastoptim/kernels/isa.h"
#include "fastoptim/core/parallel.h"
#include "fastoptim/core/reduce.h"
#include "fastoptim/parts/philox.h"
#include "fastoptim/rules/registry.h"

#include "expect.h"
#include "rule_problems.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

using namespace fastoptim;
using fastoptim_isa::Dtype;
using fastoptim_isa::TensorSlots;


// The large size of the sweeps: 40009 is five reduction blocks with a ragged last one, and brings a
// call over the size at which the driver splits it between threads. FASTOPTIM_TEST_LARGE replaces
// it (the aarch64 run under qemu takes 8219: a full block and a ragged one, in a fifth of the emulated time).
static std::int64_t large_test_size() {
  const char* large = std::getenv("FASTOPTIM_TEST_LARGE");
  return large ? std::atoll(large) : 40009;
}

// Every k-th hyperparameter configuration: k = 5 by default (each configuration in one storage
// variant), FASTOPTIM_TEST_CONFIG_STRIDE=k sets it, FASTOPTIM_TEST_FULL=1 runs every configuration.
static std::size_t config_stride() {
  const char* stride_text = std::getenv("FASTOPTIM_TEST_CONFIG_STRIDE");
  const char* full = std::getenv("FASTOPTIM_TEST_FULL");
  return full && std::string(full) == "1" ? 1 : stride_text ? std::size_t(std::max(1, std::atoi(stride_text))) : 5;
}

template <class Rule>
static void test_simd_matches_scalar() {
  constexpr auto entry = kernels::KernelEntry<Rule>::member;
  const auto& scalar = fastoptim_isa::table(0);
  // the last two are matrices (33 x 65, 6 x 9): per-row rules see rows shorter and longer than a vector
  const std::vector<std::int64_t> sizes = {0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, large_test_size(), 33 * 65, 6 * 9};
  std::vector<std::int64_t> rows(sizes.size(), 1);
  rows[rows.size() - 2] = 33;
  rows[rows.size() - 1] = 6;
  constexpr int kScalars = rules::scalar_slots_of<Rule>::value;
  const auto configs = configurations<Rule>();
  std::vector<int> simd_tables;
  for (int ti = 1; ti < fastoptim_isa::table_count(); ++ti)
    if (fastoptim_isa::cpu_supports(fastoptim_isa::table(ti).isa)) simd_tables.push_back(ti);
  // Each storage variant (four dtypes, float32 with bf16 state and, for a rule with 8-bit slots,
  // float32 with 8-bit state) runs every k-th configuration,
  // shifted by variant, so each configuration still meets every SIMD path in some variant: k = 5 by
  // default (each configuration in one variant), FASTOPTIM_TEST_CONFIG_STRIDE=k sets it,
  // FASTOPTIM_TEST_FULL=1 runs every configuration in every variant.
  const std::size_t stride = config_stride();
  std::size_t dtype_index = 0;
  struct Variant {
    Dtype d;
    bool bf16_state = false, eight_bit = false;
  };
  std::vector<Variant> variants = {{Dtype::f32}, {Dtype::f64}, {Dtype::bf16}, {Dtype::f16}, {Dtype::f32, true}};
  constexpr unsigned kCoded = rules::eight_bit_slots<Rule>::value;
  if (kCoded != 0) variants.push_back({Dtype::f32, false, true});
  for (const auto [d, bf16_state, eight_bit] : variants) {
    std::vector<int> mismatches(simd_tables.size(), 0);
    const std::size_t shift = dtype_index++ % stride;
    std::size_t rounded = 0;
    bool scales_written = false;
    for (std::size_t c = shift; c < configs.size(); c += stride) {
      // (every other bf16 configuration stores its parameters by stochastic rounding)
      const bool stochastic = d == Dtype::bf16 && (c / stride) % 2 == 1;
      rounded += stochastic;
      Problem start(d, sizes, Rule::kStateSlots, 7u + unsigned(c), kScalars, rows, bf16_state);
      if (eight_bit) start.keep_eight_bit<Rule>();
      Problem reference = start;  // the scalar path, run once and compared with every SIMD table
      run_steps<Rule>(scalar.*entry, reference, configs[c], 4, stochastic);
      for (std::size_t i = 0; i < simd_tables.size(); ++i) {
        Problem a = start;
        run_steps<Rule>(fastoptim_isa::table(simd_tables[i]).*entry, a, configs[c], 4, stochastic);
        for (std::size_t t = 0; t < sizes.size(); ++t) {
          mismatches[i] += a.params[t] != reference.params[t];
          for (int j = 0; j < Rule::kStateSlots + kScalars; ++j)
            mismatches[i] += a.state[t][std::size_t(j)] != reference.state[t][std::size_t(j)];
          if (eight_bit) mismatches[i] += a.scales[t] != reference.scales[t];
        }
      }
      for (std::size_t t = 0; t < sizes.size() && eight_bit; ++t)
        for (const auto& slot_scales : reference.scales[t])
          scales_written = scales_written || std::any_of(slot_scales.begin(), slot_scales.end(), [](float x) { return x != 0; });
    }
    if (eight_bit) expect(scales_written, std::string(Rule::kName) + ": the 8-bit variant wrote block scales");
    for (std::size_t i = 0; i < simd_tables.size(); ++i)
      expect(mismatches[i] == 0, std::string(Rule::kName) + " " + fastoptim_isa::table(simd_tables[i]).isa + " " +
                                     dtype_label(d) + (bf16_state ? " with bf16 state" : "") +
                                     (eight_bit ? " with 8-bit state" : "") + " equals scalar bit for bit (" +
                                     std::to_string((configs.size() - shift + stride - 1) / stride) + " configurations" +
                                     (rounded ? ", " + std::to_string(rounded) + " with stochastic rounding)" : ")"));
  }
}

// A step split at its sums (the halves a front end runs around adding up a sharded tensor's sums),
// with the sums handed on as they are, is the whole step bit for bit: every rule with per-tensor
// sums, on the active table, in each storage dtype, at sizes around the driver's edges, every
// config_stride()-th configuration.
template <class Rule>
static void test_split_step_is_the_whole_step() {
  if constexpr (rules::sums_of<Rule>::value > 0 && !rules::sums_per_row<Rule>::value) {
    constexpr auto entry = kernels::KernelEntry<Rule>::member;
    const auto kernel = fastoptim_isa::active().*entry;
    const std::vector<std::int64_t> sizes = {0, 1, 7, 17, 33, large_test_size(), 33 * 65};
    std::vector<std::int64_t> rows(sizes.size(), 1);
    rows.back() = 33;
    const auto configs = configurations<Rule>();
    for (Dtype d : {Dtype::f32, Dtype::f64, Dtype::bf16, Dtype::f16}) {
      int mismatches = 0;
      for (std::size_t c = 0; c < configs.size(); c += config_stride()) {
        const Problem start(d, sizes, Rule::kStateSlots, 11u + unsigned(c), rules::scalar_slots_of<Rule>::value, rows);
        Problem whole = start, split = start;
        run_steps<Rule>(kernel, whole, configs[c], 3);
        run_steps<Rule>(kernel, split, configs[c], 3, false, true);
        for (std::size_t t = 0; t < sizes.size(); ++t) {
          mismatches += split.params[t] != whole.params[t];
          mismatches += split.state[t] != whole.state[t];
        }
      }
      expect(mismatches == 0, std::string(Rule::kName) + " " + dtype_label(d) + ": the step split at its sums is the whole step");
    }
  }
}

// Every element of every tensor is visited exactly once, whatever the thread count.
static void test_parallel_coverage() {
  const std::vector<std::vector<std::int64_t>> cases = {
      {}, {0}, {1}, {0, 0, 5}, {100003}, {1 << 20, 0, 17, 1 << 16}, std::vector<std::int64_t>(2000, 4096)};
  for (int threads : {1, 2, 3, 7}) {
#if defined(_OPENMP)
    omp_set_num_threads(threads);
#endif
    for (const auto& sizes : cases) {
      std::vector<std::vector<int>> seen;
      for (auto n : sizes) seen.emplace_back(std::size_t(n), 0);
      core::parallel_over_elements(
          std::int64_t(sizes.size()), [&](std::int64_t t) { return sizes[std::size_t(t)]; },
          [&](std::int64_t t, std::int64_t b, std::int64_t e) {
            for (auto i = b; i < e; ++i) seen[std::size_t(t)][std::size_t(i)] += 1;
          });
      bool ok = true;
      for (auto& s : seen)
        for (int x : s) ok &= x == 1;
      expect(ok, "parallel loop covers each element once (" + std::to_string(sizes.size()) + " tensors, " +
                     std::to_string(threads) + " threads)");
    }
  }
}

// Per-tensor squared norms: close to a long-double reference, and the same bits for any thread count.
template <class T>
static void test_reductions() {
  constexpr int W = core::kLanes<T>;
  const std::vector<std::int64_t> sizes = {0, 1, W - 1, W, W + 1, core::kReduceBlock - 1, core::kReduceBlock + 1, 100003, 1 << 20};
  std::mt19937 rng(3);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<std::vector<T>> data;
  for (auto n : sizes) {
    std::vector<T> x(static_cast<std::size_t>(n));
    for (auto& v : x) v = T(normal(rng));
    data.push_back(std::move(x));
  }
  auto numel = [&](std::int64_t t) { return sizes[std::size_t(t)]; };
  auto term = [&](std::int64_t t) { return core::SquaredNorm<T>{data[std::size_t(t)].data()}; };
  // The same sums through one-lane terms: what any other ISA computes must be these bits.
  {
#if defined(_OPENMP)
    omp_set_num_threads(3);
#endif
    std::vector<std::array<T, 1>> wide(sizes.size()), narrow(sizes.size());
    core::per_tensor_sums<T, W, 1>(std::int64_t(sizes.size()), numel, term, wide.data());
    core::per_tensor_sums<T, 1, 1>(std::int64_t(sizes.size()), numel, term, narrow.data());
    expect(wide == narrow, std::string("squared norms (") + (std::is_same_v<T, float> ? "float" : "double") +
                               ") are the same bits with " + std::to_string(W) + " lanes and with 1");
  }
  std::vector<std::vector<T>> results;
  for (int threads : {1, 2, 5}) {
#if defined(_OPENMP)
    omp_set_num_threads(threads);
#endif
    std::vector<std::array<T, 1>> sums(sizes.size());
    core::per_tensor_sums<T, W, 1>(std::int64_t(sizes.size()), numel, term, sums.data());
    std::vector<T> out;
    for (auto& s : sums) out.push_back(s[0]);
    results.push_back(out);
  }
  bool close = true;
  for (std::size_t t = 0; t < sizes.size(); ++t) {
    long double ref = 0;
    for (T v : data[t]) ref += (long double)v * v;
    const long double tol = (std::is_same_v<T, float> ? 1e-5L : 1e-13L) * (ref + 1);
    close &= std::fabs((long double)results[0][t] - ref) <= tol;
  }
  const char* label = std::is_same_v<T, float> ? "float" : "double";
  expect(close, std::string("squared norms (") + label + ") match a long double reference");
  expect(results[0] == results[1] && results[0] == results[2], std::string("squared norms (") + label + ") do not depend on the thread count");
}

static void test_validation() {
  using H = rules::Adam::Hyper;
  std::vector<double> v;
  for (const auto& f : H::kFields) v.push_back(f.default_value);
  expect(core::first_invalid_field<H>(v.data()) == -1, "Adam defaults are valid");
  auto rejects = [&](const char* name, double x) {
    std::vector<double> w = v;
    int idx = -1;
    for (std::size_t i = 0; i < H::kFieldCount; ++i)
      if (std::string(H::kFields[i].name) == name) idx = int(i);
    w[std::size_t(idx)] = x;
    expect(core::first_invalid_field<H>(w.data()) == idx, std::string("Adam rejects ") + name + " = " + std::to_string(x));
  };
  rejects("lr", -1e-3);
  rejects("beta1", 1.0);
  rejects("beta2", -0.1);
  rejects("eps", std::nan(""));
  rejects("amsgrad", 2.0);
  rules::SGD::Hyper sgd;
  sgd.nesterov = 1;
  expect(rules::SGD::invalid_combination(sgd) != nullptr, "SGD rejects nesterov without momentum");
}

static void test_bf16_rounding() {
  // Ties round to even, NaN becomes the canonical quiet NaN, as c10::BFloat16 does.
  auto bits = [](std::uint32_t u) { float f; std::memcpy(&f, &u, 4); return core::float_to_bf16(f).bits; };
  expect(bits(0x3F808000u) == 0x3F80, "bf16 tie rounds down to even");
  expect(bits(0x3F818000u) == 0x3F82, "bf16 tie rounds up to even");
  expect(bits(0x3F808001u) == 0x3F81, "bf16 above tie rounds up");
  expect(bits(0x7FC12345u) == 0x7FC0, "bf16 NaN is canonical");
}

// Stochastic rounding to bf16: exact values and infinities stay, NaN is canonical, the carry into
// the kept bits happens exactly when r reaches 2^16 minus the dropped bits, and the mean over every
// r is the value itself; the lane-parallel draws equal the one-draw function from any first block.
static void test_stochastic_rounding() {
  auto rounded = [](std::uint32_t u, std::uint16_t r) { float f; std::memcpy(&f, &u, 4); return core::float_to_bf16_stochastic(f, r).bits; };
  expect(rounded(0x3F800000u, 0xFFFF) == 0x3F80, "a bf16 value stays whatever the bits");
  expect(rounded(0x7F800000u, 0xFFFF) == 0x7F80 && rounded(0xFF800000u, 0xFFFF) == 0xFF80, "infinities stay");
  expect(rounded(0x7FC12345u, 0) == 0x7FC0, "NaN is canonical");
  expect(rounded(0x3F80C000u, 0x3FFF) == 0x3F80 && rounded(0x3F80C000u, 0x4000) == 0x3F81, "carry at 2^16 - dropped");
  expect(rounded(0xBF80C000u, 0x4000) == 0xBF81, "negative values round away from zero alike");
  for (std::uint32_t u : {0x3F80C000u, 0x3F801234u, 0xC0A0FFFFu, 0x00012345u}) {
    float f;
    std::memcpy(&f, &u, 4);
    double sum = 0;
    for (std::uint32_t r = 0; r < 65536; ++r) sum += core::bf16_to_float(core::float_to_bf16_stochastic(f, std::uint16_t(r)));
    expect(sum / 65536 == double(f), "the mean over all random bits is the value (" + std::to_string(f) + ")");
  }
  const parts::RoundingKey key{0x123456789ABCDEFull, 7, 3};
  std::uint16_t bits[parts::kRoundingGroup];
  for (std::uint64_t group : {std::uint64_t(0), std::uint64_t(5), (std::uint64_t(1) << 28) - 1, std::uint64_t(1) << 28}) {
    parts::rounding_bits_of_group(key, group, bits);
    bool same = true;
    for (int q = 0; q < parts::kRoundingGroup; ++q)
      same &= bits[q] == parts::rounding_bits(key, std::uint64_t(parts::kRoundingGroup) * group + std::uint64_t(q));
    expect(same, "rounding bits drawn side by side equal one draw at a time (group " + std::to_string(group) + ")");
  }
}

// Philox4x32-10 gives Random123's known answers (kat_vectors: zeros, all ones, digits of pi).
static void test_philox_known_answers() {
  using Words = std::array<std::uint32_t, 4>;
  expect(parts::philox4x32_10({0, 0, 0, 0}, {0, 0}) == Words{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
         "philox4x32-10 of zeros");
  expect(parts::philox4x32_10({~0u, ~0u, ~0u, ~0u}, {~0u, ~0u}) == Words{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
         "philox4x32-10 of all ones");
  expect(parts::philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}) ==
             Words{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1},
         "philox4x32-10 of the digits of pi");
}

int main() {
  test_philox_known_answers();
  std::printf("kernel tables:");
  for (int i = 0; i < fastoptim_isa::table_count(); ++i)
    std::printf(" %s%s", fastoptim_isa::table(i).isa, fastoptim_isa::cpu_supports(fastoptim_isa::table(i).isa) ? "" : "(unsupported here)");
  std::printf("; active: %s\n", fastoptim_isa::active().isa);
#define FASTOPTIM_TEST_RULE(Type, name) \
  test_simd_matches_scalar<rules::Type>(); \
  test_split_step_is_the_whole_step<rules::Type>();
  FASTOPTIM_ELEMENTWISE_RULES(FASTOPTIM_TEST_RULE)
#undef FASTOPTIM_TEST_RULE
  test_parallel_coverage();
  test_reductions<float>();
  test_reductions<double>();
  test_validation();
  test_bf16_rounding();
  test_stochastic_rounding();
  return test::summary();
}
