// Adam and AdamW (one rule; decoupled_weight_decay is the flag) with amsgrad and maximize:
// torch.optim.Adam's math, bias corrections in double on the host as torch computes them.
#pragma once
#include "fastoptim/parts/moments.h"
#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct Adam {
  static constexpr const char* kName = "adam";
#define FASTOPTIM_FIELDS_adam(F)                                                                   \
  F(lr, 1e-3, non_negative) F(beta1, 0.9, unit_interval) F(beta2, 0.999, unit_interval)           \
  F(eps, 1e-8, non_negative) F(weight_decay, 0.0, non_negative) F(amsgrad, 0, flag)              \
  F(maximize, 0, flag) F(decoupled_weight_decay, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_adam)

  enum Slot { kExpAvg, kExpAvgSq, kMaxExpAvgSq };
  static constexpr core::StateSlot kState[] = {{"exp_avg", nullptr}, {"exp_avg_sq", nullptr}, {"max_exp_avg_sq", "amsgrad"}};
  static constexpr int kStateSlots = 3;
  static constexpr unsigned kEightBitSlots = (1u << kStateSlots) - 1;  // (its moments: every slot)
  static constexpr bool kCountsSteps = true;
  FASTOPTIM_HD static const char* invalid_combination(const Hyper&) { return nullptr; }

  // AdamW, as every front end presets it: this rule with decoupled decay and torch.optim.AdamW's
  // decay of 1e-2 (the Python class's signature says the same, held to it by a test).
  static Hyper adamw_preset() {
    Hyper h;
    h.decoupled_weight_decay = 1;
    h.weight_decay = 1e-2;
    return h;
  }

  template <class T>
  struct Coeffs {
    parts::AdamMoments<T> moments;
    T bias_correction2_sqrt, neg_step_size, eps;
    parts::WeightDecay<T> decay;
    bool maximize, amsgrad;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo& s) {
    const double bias_correction1 = 1 - std::pow(h.beta1, s.step);
    const double bias_correction2 = 1 - std::pow(h.beta2, s.step);
    const double step_size = h.lr / bias_correction1;
    return {parts::AdamMoments<T>::make(h.beta1, h.beta2),
            T(std::pow(bias_correction2, 0.5)),
            T(-step_size),
            T(h.eps),
            parts::WeightDecay<T>::make(h.lr, h.weight_decay, h.decoupled_weight_decay != 0),
            h.maximize != 0,
            h.amsgrad != 0};
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    if (k.maximize) g = -g;
    k.decay.apply(p, g);
    Vec<T, W>& exp_avg = state[kExpAvg];
    Vec<T, W>& exp_avg_sq = state[kExpAvgSq];
    k.moments.update(exp_avg, exp_avg_sq, g);
    Vec<T, W> second_moment = exp_avg_sq;
    if (k.amsgrad) second_moment = state[kMaxExpAvgSq] = core::maximum(state[kMaxExpAvgSq], exp_avg_sq);
    const Vec<T, W> denom = sqrt(second_moment) / k.bias_correction2_sqrt + k.eps;
    p = p + (k.neg_step_size * exp_avg) / denom;
  }
};

}  // namespace fastoptim::rules
