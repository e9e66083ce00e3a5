// AdaHessian (Yao et al., 2021): Adam with the EMA of the squared Hessian-diagonal estimate in
// place of the squared gradient, as the official code and pytorch_optimizer compute it:
//   decoupled: theta <- theta (1 - lr wd);  else g <- g + wd theta
//   m <- lerp(m, g, 1 - b1)
//   denom = (v / (1 - b2^r))^(k/2) + eps       r = hessian_step, the number of refreshes of v
//   theta <- theta - lr / (1 - b1^t) * m / denom
// v (exp_hessian_diag_sq) is refreshed by the front end (rule hessian_ema, squared); this step only
// reads it. Its bias correction counts refreshes, not steps (pytorch_optimizer uses the step count,
// which differs once update_period > 1).
#pragma once
#include <cmath>

#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct AdaHessian {
  static constexpr const char* kName = "adahessian";
#define FASTOPTIM_FIELDS_adahessian(F)                                                              \
  F(lr, 0.15, non_negative) F(beta1, 0.9, unit_interval) F(beta2, 0.999, unit_interval)          \
  F(eps, 1e-4, non_negative) F(weight_decay, 0.0, non_negative) F(hessian_power, 1.0, unit_closed) \
  F(weight_decouple, 1, flag) F(maximize, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_adahessian)

  enum Slot { kExpAvg, kExpHessianDiagSq };
  static constexpr core::StateSlot kState[] = {
      {"exp_avg", nullptr}, {"exp_hessian_diag_sq", nullptr}, {"hessian_step", nullptr}};
  static constexpr int kStateSlots = 2;
  // (its momentum and the EMA of squared estimates, which the hessian_ema rule folds into and this step only reads)
  static constexpr unsigned kEightBitSlots = (1u << kExpAvg) | (1u << kExpHessianDiagSq);
  static constexpr unsigned kReadOnlySlots = 1u << kExpHessianDiagSq;
  static constexpr int kScalarSlots = 1;  // hessian_step: refreshes so far (read here, counted by the front end)
  static constexpr bool kCountsSteps = true;
  FASTOPTIM_HD static const char* invalid_combination(const Hyper&) { return nullptr; }

  template <class T>
  struct Coeffs {
    T one_minus_beta1, bias_correction2, neg_step_size, eps, half_power;
    parts::WeightDecay<T> decay;
    bool maximize;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo& s) {
    const double refreshes = s.scalar_state[0];
    // Before the first refresh v is 0 and the denominator is eps; no correction to divide by zero.
    const double bias_correction2 = refreshes > 0 ? 1 - std::pow(h.beta2, refreshes) : 1.0;
    return {T(1 - h.beta1),
            T(bias_correction2),
            T(-h.lr / (1 - std::pow(h.beta1, s.step))),
            T(h.eps),
            T(h.hessian_power / 2),
            parts::WeightDecay<T>::make(h.lr, h.weight_decay, h.weight_decouple != 0),
            h.maximize != 0};
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    if (k.maximize) g = -g;
    k.decay.apply(p, g);
    Vec<T, W>& exp_avg = state[kExpAvg];
    exp_avg = core::lerp(exp_avg, g, k.one_minus_beta1);
    const Vec<T, W> corrected = state[kExpHessianDiagSq] / k.bias_correction2;
    Vec<T, W> root;
    if (k.half_power == T(0.5)) {
      root = sqrt(corrected);  // torch's pow(x, 0.5) is its sqrt
    } else {
      for (int i = 0; i < W; ++i) root.v[i] = std::pow(corrected.v[i], k.half_power);
    }
    p = p + (k.neg_step_size * exp_avg) / (root + k.eps);
  }
};

}  // namespace fastoptim::rules
