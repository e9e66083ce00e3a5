// AdaBelief (Zhuang et al., 2020): Adam whose second moment tracks the "belief" (g - m)^2.
//   g <- g + wd theta (L2), or theta <- theta (1 - lr wd) (decoupled)
//   m <- b1 m + (1-b1) g;   s <- b2 s + (1-b2) (g - m)^2   (+ eps inside s when eps_inside, as the
//   paper and the official package do; holocron's code leaves it out)
//   amsgrad: s_max <- max(s_max, s), used below
//   theta <- theta - lr / (1-b1^t) * m / (sqrt(s) / sqrt(1-b2^t) + eps)
// rectify (the official package's RAdam rectification, s not maxed):
//   rho_inf = 2/(1-b2) - 1;  rho_t = rho_inf - 2 t b2^t / (1-b2^t)
//   rho_t >= 5: theta <- theta - lr r_t sqrt(1-b2^t) / (1-b1^t) * m / (sqrt(s) + eps),
//               r_t = sqrt((rho_t-4)(rho_t-2) rho_inf / ((rho_inf-4)(rho_inf-2) rho_t))
//   otherwise:  theta <- theta - lr / (1-b1^t) m  (degenerated_to_sgd), or theta unchanged
//   (a decoupled weight decay applies in every case)
#pragma once
#include <cmath>

#include "fastoptim/parts/rectification.h"
#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct AdaBelief {
  static constexpr const char* kName = "adabelief";
#define FASTOPTIM_FIELDS_adabelief(F)                                                                 \
  F(lr, 1e-3, non_negative) F(beta1, 0.9, unit_interval) F(beta2, 0.999, unit_interval)             \
  F(eps, 1e-8, non_negative) F(weight_decay, 0.0, non_negative) F(amsgrad, 0, flag)                \
  F(eps_inside, 1, flag) F(weight_decouple, 0, flag) F(maximize, 0, flag) F(rectify, 0, flag)           \
  F(degenerated_to_sgd, 1, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_adabelief)

  enum Slot { kExpAvg, kExpAvgSq, kMaxExpAvgSq };
  static constexpr core::StateSlot kState[] = {
      {"exp_avg", nullptr}, {"exp_avg_sq", nullptr}, {"max_exp_avg_sq", "amsgrad"}};
  static constexpr int kStateSlots = 3;
  static constexpr unsigned kEightBitSlots = (1u << kStateSlots) - 1;  // (its moments: every slot)
  static constexpr bool kCountsSteps = true;
  static constexpr double kRectifyThreshold = 5;  // the official package's (RAdam's) rho_t threshold
  FASTOPTIM_HD static const char* invalid_combination(const Hyper&) { return nullptr; }

  template <class T>
  struct Coeffs {
    // How the parameter moves: Adam's denominator (the default), the rectified one, along m
    // alone (rectify's SGD phase), or not at all (rectify's SGD phase without degenerated_to_sgd).
    enum Mode : unsigned char { kAdaptive, kRectified, kMomentum, kFrozen };
    T beta1, one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, neg_step_size, eps;
    parts::WeightDecay<T> decay;
    bool maximize, amsgrad, eps_inside;
    Mode mode;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo& s) {
    const double bias_correction1 = 1 - std::pow(h.beta1, s.step);
    const double bias_correction2 = 1 - std::pow(h.beta2, s.step);
    using Mode = typename Coeffs<T>::Mode;
    Mode mode = Coeffs<T>::kAdaptive;
    double step_size = 1 / bias_correction1;
    if (h.rectify != 0) {
      const auto r = parts::Rectification::at(h.beta2, s.step);
      if (r.rho_t >= kRectifyThreshold) {  // (the official package's comparison)
        mode = Coeffs<T>::kRectified;
        step_size = r.term_with_bias_correction(bias_correction2) / bias_correction1;
      } else {
        mode = h.degenerated_to_sgd != 0 ? Coeffs<T>::kMomentum : Coeffs<T>::kFrozen;
      }
    }
    return {T(h.beta1),
            T(1 - h.beta1),
            T(h.beta2),
            T(1 - h.beta2),
            T(std::sqrt(bias_correction2)),
            T(-(step_size * h.lr)),
            T(h.eps),
            parts::WeightDecay<T>::make(h.lr, h.weight_decay, h.weight_decouple != 0),
            h.maximize != 0,
            h.amsgrad != 0,
            h.eps_inside != 0,
            Mode(mode)};
  }

  template <class T>
  FASTOPTIM_HD static bool writes_param(const Coeffs<T>& k) { return k.mode != Coeffs<T>::kFrozen || (k.decay.active && k.decay.decoupled); }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
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
    switch (k.mode) {
      case Coeffs<T>::kAdaptive:
        p = p + (k.neg_step_size * exp_avg) / (sqrt(second_moment) / k.bias_correction2_sqrt + k.eps);
        break;
      case Coeffs<T>::kRectified:  // the official package divides by s itself here, not by its maximum
        p = p + (k.neg_step_size * exp_avg) / (sqrt(belief) + k.eps);
        break;
      case Coeffs<T>::kMomentum:
        p = core::mul_add(exp_avg, k.neg_step_size, p);
        break;
      case Coeffs<T>::kFrozen:
        break;
    }
  }
};

}  // namespace fastoptim::rules
