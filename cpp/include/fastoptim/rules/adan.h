// Adan (Xie et al., 2022), the official algorithm (sail-sg), in its code convention for the betas:
//   g <- s g  (s: the global gradient-norm clip factor, when the front end gives one: max_grad_norm)
//   diff = g - g_prev  (0 on the first step)
//   m <- b1 m + (1-b1) g;  d <- b2 d + (1-b2) diff;  n <- b3 n + (1-b3) (g + b2 diff)^2
//   u = (m / (1-b1^t) + b2 d / (1-b2^t)) / (sqrt(n) / sqrt(1-b3^t) + eps)
//   proximal (default): theta <- (theta - lr u) / (1 + lr wd);  no_prox: theta <- theta (1 - lr wd) - lr u
//   g_prev <- g
// amsgrad (holocron's option) keeps the running maximum of n and uses it for the denominator.
#pragma once
#include <cmath>

#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct Adan {
  static constexpr const char* kName = "adan";
#define FASTOPTIM_FIELDS_adan(F)                                                                       \
  F(lr, 1e-3, non_negative) F(beta1, 0.98, unit_interval) F(beta2, 0.92, unit_interval)              \
  F(beta3, 0.99, unit_interval) F(eps, 1e-8, non_negative) F(weight_decay, 0.0, non_negative)        \
  F(amsgrad, 0, flag) F(no_prox, 0, flag) F(maximize, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_adan)

  enum Slot { kExpAvg, kExpAvgDiff, kExpAvgSq, kPrevGrad, kMaxExpAvgSq };
  static constexpr core::StateSlot kState[] = {{"exp_avg", nullptr},
                                               {"exp_avg_diff", nullptr},
                                               {"exp_avg_sq", nullptr},
                                               {"prev_grad", nullptr},
                                               {"max_exp_avg_sq", "amsgrad"}};
  static constexpr int kStateSlots = 5;
  static constexpr unsigned kEightBitSlots =  // (its moments, not the previous gradient)
      (1u << kExpAvg) | (1u << kExpAvgDiff) | (1u << kExpAvgSq) | (1u << kMaxExpAvgSq);
  static constexpr bool kCountsSteps = true;
  static constexpr bool kScalesGrad = true;  // max_grad_norm
  FASTOPTIM_HD static const char* invalid_combination(const Hyper&) { return nullptr; }

  template <class T>
  struct Coeffs {
    T beta1, one_minus_beta1, beta2, one_minus_beta2, beta3, one_minus_beta3;
    T bias_correction1, bias_correction2, bias_correction3_sqrt, eps, neg_lr;
    T decay_factor, prox_divisor;  // 1 - lr wd (no_prox) and 1 + lr wd (proximal)
    T grad_scale;
    bool first, amsgrad, has_weight_decay, no_prox, maximize, scales_grad;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo& s) {
    return {T(h.beta1),
            T(1 - h.beta1),
            T(h.beta2),
            T(1 - h.beta2),
            T(h.beta3),
            T(1 - h.beta3),
            T(1 - std::pow(h.beta1, s.step)),
            T(1 - std::pow(h.beta2, s.step)),
            T(std::sqrt(1 - std::pow(h.beta3, s.step))),
            T(h.eps),
            T(-h.lr),
            T(1 - h.lr * h.weight_decay),
            T(1 + h.lr * h.weight_decay),
            T(s.grad_scale),
            s.fresh,
            h.amsgrad != 0,
            h.weight_decay != 0,
            h.no_prox != 0,
            h.maximize != 0,
            s.grad_scale != 1.0};
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    if (k.scales_grad) g = g * k.grad_scale;  // clipped before everything, the previous gradient too
    if (k.maximize) g = -g;
    // The previous gradient starts as the first one (official), so the first difference is 0.
    const Vec<T, W> diff = k.first ? Vec<T, W>::broadcast(T(0)) : g - state[kPrevGrad];
    Vec<T, W>& exp_avg = state[kExpAvg];
    Vec<T, W>& exp_avg_diff = state[kExpAvgDiff];
    Vec<T, W>& exp_avg_sq = state[kExpAvgSq];
    exp_avg = core::mul_add(g, k.one_minus_beta1, exp_avg * k.beta1);
    exp_avg_diff = core::mul_add(diff, k.one_minus_beta2, exp_avg_diff * k.beta2);
    const Vec<T, W> look_ahead = g + k.beta2 * diff;
    exp_avg_sq = core::mul_add(k.one_minus_beta3 * look_ahead, look_ahead, exp_avg_sq * k.beta3);
    Vec<T, W> second_moment = exp_avg_sq;
    if (k.amsgrad) second_moment = state[kMaxExpAvgSq] = core::maximum(state[kMaxExpAvgSq], exp_avg_sq);
    const Vec<T, W> denom = sqrt(second_moment) / k.bias_correction3_sqrt + k.eps;
    const Vec<T, W> update = (exp_avg / k.bias_correction1 + (k.beta2 * exp_avg_diff) / k.bias_correction2) / denom;
    if (k.has_weight_decay && k.no_prox) p = p * k.decay_factor;
    p = core::mul_add(update, k.neg_lr, p);
    if (k.has_weight_decay && !k.no_prox) p = p / k.prox_divisor;
    state[kPrevGrad] = g;
  }
};

}  // namespace fastoptim::rules
