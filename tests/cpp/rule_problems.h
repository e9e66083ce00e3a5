// What the kernel tests share: a rule's buffers for a list of tensors (Problem), the steps of a
// rule over them through a CPU kernel table (run_steps), and hyperparameter sets that exercise
// every branch of a rule (configurations).
#pragma once
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "fastoptim/core/codes8.h"
#include "fastoptim/core/dtypes.h"
#include "fastoptim/kernels/isa.h"
#include "fastoptim/rules/registry.h"

using namespace fastoptim;
using fastoptim_isa::Dtype;
using fastoptim_isa::TensorSlots;

// ---- storage helpers ------------------------------------------------------------------------
inline std::size_t dtype_size(Dtype d) { return d == Dtype::f64 ? 8 : d == Dtype::f32 ? 4 : 2; }
inline const char* dtype_label(Dtype d) {
  switch (d) {
    case Dtype::f32: return "f32";
    case Dtype::f64: return "f64";
    case Dtype::bf16: return "bf16";
    case Dtype::f16: return "f16";
  }
  return "?";
}

// The epsilon of the storage type, as the ops give prepare it (StepInfo::dtype_eps).
inline double epsilon_of(Dtype d) {
  switch (d) {
    case Dtype::f64: return core::machine_epsilon<double>();
    case Dtype::bf16: return core::machine_epsilon<core::bf16>();
    case Dtype::f16: return core::machine_epsilon<core::f16>();
    case Dtype::f32: break;
  }
  return core::machine_epsilon<float>();
}

inline void store_value(Dtype d, std::vector<unsigned char>& buf, std::size_t i, double x) {
  switch (d) {
    case Dtype::f32: { float f = float(x); std::memcpy(&buf[i * 4], &f, 4); break; }
    case Dtype::f64: std::memcpy(&buf[i * 8], &x, 8); break;
    case Dtype::bf16: { core::bf16 h = core::float_to_bf16(float(x)); std::memcpy(&buf[i * 2], &h, 2); break; }
    case Dtype::f16: { core::f16 h = core::float_to_f16(float(x)); std::memcpy(&buf[i * 2], &h, 2); break; }
  }
}

// One optimizer's buffers: a tensor list with params, grads and every state slot (element state
// of dtype, or bf16 with bf16_state: float32 parameters with bf16 state).
struct Problem {
  Dtype dtype;
  bool bf16_state = false;
  std::vector<std::int64_t> sizes;
  std::vector<std::vector<unsigned char>> params, grads;
  std::vector<std::vector<std::vector<unsigned char>>> state;  // [tensor][slot]: element slots, then scalars
  std::vector<std::int64_t> rows;  // per tensor: rows of dim 0 (1 for a vector)
  // With 8-bit state (keep_eight_bit): the slots kept as codes (a mask), and per tensor and slot
  // their block scales. (The codes live in the slots' buffers, which start as zero bytes: code 0.)
  unsigned eight_bit = 0;
  std::vector<std::vector<std::vector<float>>> scales;

  // `slots` element-shaped state slots and `scalars` per-tensor scalars (8 bytes, starting at 0.5).
  Problem(Dtype d, std::vector<std::int64_t> n, int slots, unsigned seed, int scalars = 0, std::vector<std::int64_t> r = {},
          bool state_in_bf16 = false)
      : dtype(d), bf16_state(state_in_bf16), sizes(std::move(n)), rows(std::move(r)) {
    rows.resize(sizes.size(), 1);
    std::mt19937 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    for (std::int64_t numel : sizes) {
      auto make = [&](double scale, Dtype as) {
        std::vector<unsigned char> b(std::size_t(numel) * dtype_size(as) + 1);
        for (std::int64_t i = 0; i < numel; ++i) store_value(as, b, std::size_t(i), scale * normal(rng));
        return b;
      };
      params.push_back(make(1.0, d));
      grads.push_back(make(1.0, d));
      std::vector<std::vector<unsigned char>> s;
      for (int j = 0; j < slots; ++j) s.push_back(make(0.0, bf16_state ? Dtype::bf16 : d));
      for (int j = 0; j < scalars; ++j) {
        std::vector<unsigned char> b(8);
        store_value(d == Dtype::f64 ? Dtype::f64 : Dtype::f32, b, 0, 0.5);
        s.push_back(std::move(b));
      }
      state.push_back(std::move(s));
    }
  }

  // Keeps Rule's 8-bit state slots in 8 bits (codes 0 under scales 0: the zero state), a scale per
  // block of its code grid (and one past the last, which no step may write).
  template <class Rule>
  void keep_eight_bit() {
    eight_bit = rules::eight_bit_slots<Rule>::value;
    scales.assign(sizes.size(), {});
    for (std::size_t t = 0; t < sizes.size(); ++t)
      for (int j = 0; j < int(state[t].size()); ++j)
        scales[t].emplace_back(std::size_t(eight_bit >> j & 1u ? rules::code_grid<Rule>(sizes[t], rows[t]).blocks() + 1 : 0), 0.0f);
  }

  void regrad(unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    for (std::size_t t = 0; t < sizes.size(); ++t)
      for (std::int64_t i = 0; i < sizes[t]; ++i) store_value(dtype, grads[t], std::size_t(i), normal(rng));
  }
};

// With stochastic_rounding, bf16 parameters are stored by stochastic rounding keyed by (seed 99,
// tensor index, step). split_at_sums (rules with per-tensor sums) runs each step as the two halves
// of a split step (fastoptim_isa::SumsExchange), handing the first half's sums to the second as they are.
template <class Rule>
inline void run_steps(fastoptim_isa::ElementwiseKernel kernel, Problem& pr, const std::vector<double>& values, int steps,
                      bool stochastic_rounding = false, bool split_at_sums = false) {
  const auto h = Rule::Hyper::from(values.data());
  for (int step = 1; step <= steps; ++step) {
    pr.regrad(1000u + unsigned(step));
    std::vector<TensorSlots> slots;
    std::vector<typename Rule::template Coeffs<float>> cf;
    std::vector<typename Rule::template Coeffs<double>> cd;
    for (std::size_t t = 0; t < pr.sizes.size(); ++t) {
      TensorSlots s{};
      s.param = pr.params[t].data();
      s.grad = pr.grads[t].data();
      for (int j = 0; j < Rule::kStateSlots + rules::scalar_slots_of<Rule>::value; ++j)
        s.state[j] = core::uses_state<Rule>(values.data(), j) ? pr.state[t][std::size_t(j)].data() : nullptr;
      s.numel = pr.sizes[t];
      s.rows = pr.rows[t];
      s.bf16_state = pr.bf16_state;
      s.eight_bit_state = pr.eight_bit != 0;
      for (int j = 0; j < Rule::kStateSlots && pr.eight_bit; ++j)
        if (pr.eight_bit >> j & 1u) s.state_scale[j] = pr.scales[t][std::size_t(j)].data();
      s.stochastic_rounding = stochastic_rounding;
      s.rounding_seed = 99;
      s.rounding_stream = std::uint32_t(t);
      s.rounding_step = std::uint32_t(step);
      slots.push_back(s);
      rules::StepInfo info{double(step), step == 1, pr.sizes[t], pr.rows[t] > 1, pr.rows[t]};
      info.ndim = pr.rows[t] > 1 ? 2 : 1;  // the matrices are 2-D (AMaC centralizes their rows)
      info.dtype_eps = epsilon_of(pr.dtype);
      cf.push_back(Rule::template prepare<float>(h, info));
      cd.push_back(Rule::template prepare<double>(h, info));
    }
    const void* coeffs = pr.dtype == Dtype::f64 ? static_cast<const void*>(cd.data()) : static_cast<const void*>(cf.data());
    if (!split_at_sums) {
      kernel(slots.data(), std::int64_t(slots.size()), coeffs, pr.dtype, nullptr);
      continue;
    }
    std::vector<double> sums(slots.size() * std::size_t(rules::sums_of<Rule>::value), -1.0);
    for (auto pass : {fastoptim_isa::SumsPass::first, fastoptim_isa::SumsPass::second}) {
      const fastoptim_isa::SumsExchange exchange{pass, sums.data()};
      kernel(slots.data(), std::int64_t(slots.size()), coeffs, pr.dtype, &exchange);
    }
  }
}

// Hyperparameter sets exercising every branch: each flag combination, with the fields that
// default to zero left at zero, all set, or all set but the unchecked ones (dampening).
template <class Rule>
inline std::vector<std::vector<double>> configurations() {
  using H = typename Rule::Hyper;
  std::vector<int> flags;
  for (std::size_t i = 0; i < H::kFieldCount; ++i)
    if (H::kFields[i].check == core::Check::flag) flags.push_back(int(i));
  std::vector<std::vector<double>> out;
  for (int fill = 0; fill < 3; ++fill) {
    for (unsigned mask = 0; mask < (1u << flags.size()); ++mask) {
      std::vector<double> v(H::kFieldCount);
      for (std::size_t i = 0; i < H::kFieldCount; ++i) {
        const auto& f = H::kFields[i];
        v[i] = f.default_value;
        if (f.default_value == 0 && f.check != core::Check::flag && fill > 0 && !(fill == 2 && f.check == core::Check::any))
          v[i] = std::string(f.name) == "momentum" ? 0.9 : 0.05;
      }
      for (std::size_t b = 0; b < flags.size(); ++b) v[std::size_t(flags[b])] = (mask >> b) & 1u;
      if (std::string(Rule::kName) != "sgd") v[0] = 0.1;  // larger lr: more of the update is visible in low precision
      if (core::first_invalid_field<H>(v.data()) < 0 && !Rule::invalid_combination(H::from(v.data()))) out.push_back(v);
    }
  }
  return out;
}

inline double load_value(Dtype d, const std::vector<unsigned char>& buf, std::size_t i) {
  switch (d) {
    case Dtype::f32: { float f; std::memcpy(&f, &buf[i * 4], 4); return f; }
    case Dtype::f64: { double x; std::memcpy(&x, &buf[i * 8], 8); return x; }
    case Dtype::bf16: { core::bf16 h; std::memcpy(&h, &buf[i * 2], 2); return core::bf16_to_float(h); }
    case Dtype::f16: { core::f16 h; std::memcpy(&h, &buf[i * 2], 2); return core::f16_to_float(h); }
  }
  return 0;
}
