// Adamax (Kingma & Ba, 2015, section 7.1), torch.optim.Adamax's math: the second moment is an
// exponentially weighted infinity norm, u <- max(b2 u, |g| + eps), and p -= lr / (1 - b1^t) m / u.
#pragma once
#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct Adamax {
  static constexpr const char* kName = "adamax";
#define FASTOPTIM_FIELDS_adamax(F)                                                                  \
  F(lr, 2e-3, non_negative) F(beta1, 0.9, unit_interval) F(beta2, 0.999, unit_interval)            \
  F(eps, 1e-8, non_negative) F(weight_decay, 0.0, non_negative) F(maximize, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_adamax)

  enum Slot { kExpAvg, kExpInf };
  static constexpr core::StateSlot kState[] = {{"exp_avg", nullptr}, {"exp_inf", nullptr}};
  static constexpr int kStateSlots = 2;
  static constexpr unsigned kEightBitSlots = (1u << kStateSlots) - 1;  // (its moments: every slot)
  static constexpr bool kCountsSteps = true;
  FASTOPTIM_HD static const char* invalid_combination(const Hyper&) { return nullptr; }

  template <class T>
  struct Coeffs {
    T one_minus_beta1, beta2, eps, neg_clr;
    parts::WeightDecay<T> decay;
    bool maximize;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo& s) {
    const double clr = h.lr / (1 - std::pow(h.beta1, s.step));
    return {T(1 - h.beta1), T(h.beta2), T(h.eps), T(-clr), parts::WeightDecay<T>::make(h.lr, h.weight_decay, false),
            h.maximize != 0};
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    if (k.maximize) g = -g;
    k.decay.apply(p, g);
    Vec<T, W>& exp_avg = state[kExpAvg];
    Vec<T, W>& exp_inf = state[kExpInf];
    exp_avg = core::lerp(exp_avg, g, k.one_minus_beta1);
    exp_inf = core::maximum(exp_inf * k.beta2, core::abs(g) + k.eps);
    p = p + (k.neg_clr * exp_avg) / exp_inf;
  }
};

}  // namespace fastoptim::rules
