// AdEMAMix (Pagliardini et al., 2024): Adam with a second, slow EMA of the gradient mixed in.
//   m1 <- b1 m1 + (1-b1) g;  m2 <- b3(t) m2 + (1-b3(t)) g;  v <- b2 v + (1-b2) g^2
//   u  = (m1 / (1-b1^t) + alpha(t) m2) / (sqrt(v) / sqrt(1-b2^t) + eps)        (m2 not bias-corrected)
//   decoupled decay (official):  theta <- theta - lr (u + wd theta);   else (holocron): g <- g + wd theta first
// alpha(t) and b3(t) are the official warm-up schedulers (apple/ml-ademamix): alpha rises linearly to
// alpha over t_alpha steps; b3's half-life rises linearly from b1's to b3's over t_beta3 steps. 0 = off.
// b1 = 0 keeps no m1 and uses g in its place.
#pragma once
#include <cmath>

#include "fastoptim/parts/moments.h"
#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct AdEMAMix {
  static constexpr const char* kName = "ademamix";
#define FASTOPTIM_FIELDS_ademamix(F)                                                                          \
  F(lr, 1e-3, non_negative) F(beta1, 0.9, unit_interval) F(beta2, 0.999, unit_interval)                     \
  F(beta3, 0.9999, unit_interval) F(alpha, 5.0, non_negative) F(eps, 1e-8, non_negative)                   \
  F(weight_decay, 0.0, non_negative) F(t_alpha, 0.0, non_negative) F(t_beta3, 0.0, non_negative)           \
  F(weight_decouple, 1, flag) F(maximize, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_ademamix)

  enum Slot { kExpAvg, kExpAvgSlow, kExpAvgSq };
  static constexpr core::StateSlot kState[] = {
      {"exp_avg", "beta1"}, {"exp_avg_slow", nullptr}, {"exp_avg_sq", nullptr}};
  static constexpr int kStateSlots = 3;
  static constexpr unsigned kEightBitSlots = (1u << kStateSlots) - 1;  // (its moments: every slot)
  static constexpr bool kCountsSteps = true;
  FASTOPTIM_HD static const char* invalid_combination(const Hyper&) { return nullptr; }

  // The official schedulers, in double on the host.
  FASTOPTIM_HD static double alpha_at(const Hyper& h, double step) {
    return h.t_alpha > 0 && step < h.t_alpha ? (step / h.t_alpha) * h.alpha : h.alpha;
  }
  FASTOPTIM_HD static double beta3_at(const Hyper& h, double step) {
    if (!(h.t_beta3 > 0 && step < h.t_beta3)) return h.beta3;
    auto half_life = [](double beta) { return std::log(0.5) / std::log(beta + 1e-8) - 1; };
    const double a = step / h.t_beta3;
    return std::pow(0.5, 1 / ((1 - a) * half_life(h.beta1) + a * half_life(h.beta3) + 1));
  }

  template <class T>
  struct Coeffs {
    T beta1, one_minus_beta1, bias_correction1, beta2, one_minus_beta2, bias_correction2_sqrt;
    T beta3, one_minus_beta3, alpha, eps, weight_decay, neg_lr;
    bool has_fast_ema, maximize, has_weight_decay, decoupled;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo& s) {
    const double beta3 = beta3_at(h, s.step);
    return {T(h.beta1),
            T(1 - h.beta1),
            T(1 - std::pow(h.beta1, s.step)),
            T(h.beta2),
            T(1 - h.beta2),
            T(std::sqrt(1 - std::pow(h.beta2, s.step))),
            T(beta3),
            T(1 - beta3),
            T(alpha_at(h, s.step)),
            T(h.eps),
            T(h.weight_decay),
            T(-h.lr),
            h.beta1 != 0,
            h.maximize != 0,
            h.weight_decay != 0,
            h.weight_decouple != 0};
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    if (k.maximize) g = -g;
    if (k.has_weight_decay && !k.decoupled) g = core::mul_add(p, k.weight_decay, g);
    Vec<T, W> fast = g;
    if (k.has_fast_ema) {
      Vec<T, W>& exp_avg = state[kExpAvg];
      exp_avg = core::mul_add(g, k.one_minus_beta1, exp_avg * k.beta1);
      fast = exp_avg / k.bias_correction1;
    }
    Vec<T, W>& slow = state[kExpAvgSlow];
    slow = core::mul_add(g, k.one_minus_beta3, slow * k.beta3);
    Vec<T, W>& exp_avg_sq = state[kExpAvgSq];
    parts::ema_of_square(exp_avg_sq, g, k.beta2, k.one_minus_beta2);
    const Vec<T, W> denom = sqrt(exp_avg_sq) / k.bias_correction2_sqrt + k.eps;
    const Vec<T, W> mixed = fast + k.alpha * slow;
    if (k.has_weight_decay && k.decoupled) {  // the official order: u + wd theta, then theta - lr (...)
      p = p + k.neg_lr * core::mul_add(p, k.weight_decay, mixed / denom);
    } else {  // holocron's addcdiv: theta + (-lr mixed) / denom
      p = p + (k.neg_lr * mixed) / denom;
    }
  }
};

}  // namespace fastoptim::rules
