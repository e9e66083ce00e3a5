// AdaBelief (Zhuang et al., 2020): Adam whose second moment tracks the "belief" (g - m)^2.
//   g <- g + wd theta (L2), or theta <- theta (1 - lr wd) (decoupled)
//   m <- b1 m + (1-b1) g;   s <- b2 s + (1-b2) (g - m)^2   (+ eps inside s when eps_inside, as the
//   paper and the official package do; holocron's code leaves it out)
//   amsgrad: s_max <- max(s_max, s), used below
//   theta <- theta - lr / (1-b1^t) * m / (sqrt(s) / sqrt(1-b2^t) + eps)
#pragma once
#include <cmath>

#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct AdaBelief {
  static constexpr const char* kName = "adabelief";
#define FASTOPTIM_ADABELIEF_FIELDS(F)                                                                 \
  F(lr, 1e-3, non_negative) F(beta1, 0.9, unit_interval) F(beta2, 0.999, unit_interval)             \
  F(eps, 1e-8, non_negative) F(weight_decay, 0.0, non_negative) F(amsgrad, 0, flag)                \
  F(eps_inside, 1, flag) F(weight_decouple, 0, flag) F(maximize, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_ADABELIEF_FIELDS)

  enum Slot { kExpAvg, kExpAvgSq, kMaxExpAvgSq };
  static constexpr core::StateSlot kState[] = {
      {"exp_avg", nullptr}, {"exp_avg_sq", nullptr}, {"max_exp_avg_sq", "amsgrad"}};
  static constexpr int kStateSlots = 3;
  static constexpr bool kCountsSteps = true;
  static const char* invalid_combination(const Hyper&) { return nullptr; }

  template <class T>
  struct Coeffs {
    T beta1, one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, neg_step_size, eps;
    parts::WeightDecay<T> decay;
    bool maximize, amsgrad, eps_inside;
  };

  template <class T>
  static Coeffs<T> prepare(const Hyper& h, const StepInfo& s) {
    const double bias_correction1 = 1 - std::pow(h.beta1, s.step);
    const double bias_correction2 = 1 - std::pow(h.beta2, s.step);
    return {T(h.beta1),
            T(1 - h.beta1),
            T(h.beta2),
            T(1 - h.beta2),
            T(std::sqrt(bias_correction2)),
            T(-(h.lr / bias_correction1)),
            T(h.eps),
            parts::WeightDecay<T>::make(h.lr, h.weight_decay, h.weight_decouple != 0),
            h.maximize != 0,
            h.amsgrad != 0,
            h.eps_inside != 0};
  }

  template <class T, int W>
  static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    if (k.maximize) g = -g;
    k.decay.apply(p, g);
    Vec<T, W>& exp_avg = state[kExpAvg];
    Vec<T, W>& belief = state[kExpAvgSq];
    exp_avg = core::mul_add(g, k.one_minus_beta1, exp_avg * k.beta1);
    const Vec<T, W> residual = g - exp_avg;
    belief = core::mul_add(k.one_minus_beta2 * residual, residual, belief * k.beta2);
    if (k.eps_inside) belief = belief + k.eps;
    Vec<T, W> second_moment = belief;
    if (k.amsgrad) second_moment = state[kMaxExpAvgSq] = core::maximum(state[kMaxExpAvgSq], belief);
    const Vec<T, W> denom = sqrt(second_moment) / k.bias_correction2_sqrt + k.eps;
    p = p + (k.neg_step_size * exp_avg) / denom;
  }
};

}  // namespace fastoptim::rules
