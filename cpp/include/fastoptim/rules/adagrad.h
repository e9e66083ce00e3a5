// Adagrad with lr_decay, L2 weight decay, initial_accumulator_value and maximize: torch.optim.Adagrad's math.
#pragma once
#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct Adagrad {
  static constexpr const char* kName = "adagrad";
#define FASTOPTIM_FIELDS_adagrad(F)                                                   \
  F(lr, 1e-2, non_negative) F(lr_decay, 0.0, non_negative)                           \
  F(weight_decay, 0.0, non_negative) F(initial_accumulator_value, 0.0, non_negative) \
  F(eps, 1e-10, non_negative) F(maximize, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_adagrad)

  static constexpr core::StateSlot kState[] = {{"sum", nullptr}};
  static constexpr int kStateSlots = 1;
  static constexpr unsigned kEightBitSlots = 1;  // (its sum, from initial_accumulator_value: core::constant_codes)
  static constexpr bool kCountsSteps = true;
  FASTOPTIM_HD static const char* invalid_combination(const Hyper&) { return nullptr; }
  FASTOPTIM_HD static double initial_value(const Hyper& h, int, std::int64_t) { return h.initial_accumulator_value; }

  template <class T>
  struct Coeffs {
    T neg_clr, eps, weight_decay;
    bool maximize, has_weight_decay;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo& s) {
    const double clr = h.lr / (1 + (s.step - 1) * h.lr_decay);
    return {T(-clr), T(h.eps), T(h.weight_decay), h.maximize != 0, h.weight_decay != 0};
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    if (k.maximize) g = -g;
    if (k.has_weight_decay) g = core::mul_add(p, k.weight_decay, g);
    Vec<T, W>& sum = state[0];
    sum = core::mul_add(g, g, sum);
    const Vec<T, W> std_dev = sqrt(sum) + k.eps;
    p = p + (k.neg_clr * g) / std_dev;
  }
};

}  // namespace fastoptim::rules
