// ADOPT (Taniguchi et al., 2024, "ADOPT: Modified Adam Can Converge with Any beta2"), as
// pytorch_optimizer and the official code compute it: the gradient is normalised by the second
// moment of the steps *before* it, then clipped, then averaged.
//   decay as Lion's (decoupled: theta <- theta (1 - wd lr), fixed_decay: 1 - wd; else g <- g + wd theta)
//   step 1:  v <- v + g^2                          (and nothing else)
//   after:   n = clamp(g / max(sqrt(v), eps), -c_t, c_t),  c_t = t^clip_exponent (inf: no clipping)
//            m <- lerp(m, n, 1 - b1);  theta <- theta - lr m;  v <- b2 v + (1 - b2) g^2
#pragma once
#include "fastoptim/parts/moments.h"
#include "fastoptim/parts/weight_decay.h"
#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct ADOPT {
  static constexpr const char* kName = "adopt";
#define FASTOPTIM_FIELDS_adopt(F)                                                                   \
  F(lr, 1e-3, non_negative) F(beta1, 0.9, unit_interval) F(beta2, 0.9999, unit_interval)           \
  F(eps, 1e-6, non_negative) F(weight_decay, 0.0, non_negative) F(weight_decouple, 0, flag)        \
  F(fixed_decay, 0, flag) F(clip_exponent, 0.25, bound) F(maximize, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_adopt)

  enum Slot { kExpAvg, kExpAvgSq };
  static constexpr core::StateSlot kState[] = {{"exp_avg", nullptr}, {"exp_avg_sq", nullptr}};
  static constexpr int kStateSlots = 2;
  static constexpr unsigned kEightBitSlots = (1u << kStateSlots) - 1;  // (its moments: every slot)
  static constexpr bool kCountsSteps = true;
  FASTOPTIM_HD static const char* invalid_combination(const Hyper&) { return nullptr; }

  template <class T>
  struct Coeffs {
    T one_minus_beta1, beta2, one_minus_beta2, eps, clip, neg_lr;
    parts::WeightDecay<T> decay;
    bool first, maximize;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo& s) {
    return {T(1 - h.beta1), T(h.beta2), T(1 - h.beta2), T(h.eps), T(std::pow(s.step, h.clip_exponent)), T(-h.lr),
            parts::WeightDecay<T>::make(h.fixed_decay != 0 ? 1.0 : h.lr, h.weight_decay, h.weight_decouple != 0),
            s.step == 1, h.maximize != 0};
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    if (k.maximize) g = -g;
    k.decay.apply(p, g);
    Vec<T, W>& exp_avg = state[kExpAvg];
    Vec<T, W>& exp_avg_sq = state[kExpAvgSq];
    if (k.first) {  // the first step only measures: there is no earlier second moment to normalise by
      exp_avg_sq = core::mul_add(g, g, exp_avg_sq);
      return;
    }
    const Vec<T, W> denom = core::maximum(sqrt(exp_avg_sq), Vec<T, W>::broadcast(k.eps));
    exp_avg = core::lerp(exp_avg, core::clamp(g / denom, -k.clip, k.clip), k.one_minus_beta1);
    p = core::mul_add(exp_avg, k.neg_lr, p);
    parts::ema_of_square(exp_avg_sq, g, k.beta2, k.one_minus_beta2);
  }
};

}  // namespace fastoptim::rules
