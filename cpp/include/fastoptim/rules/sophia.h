// Sophia (Liu et al., 2023): a sign-momentum step preconditioned by a clipped Hessian-diagonal
// estimate, with the official SophiaG's order and constants:
//   theta <- theta (1 - lr wd)                            (decoupled, before everything)
//   m <- lerp(m, g, 1 - b1)                               (bias_correction: m_hat = m / (1 - b1^t))
//   d = rho * bs * h + eps
//   theta <- theta - lr * sign(m) * min(|m| / d, c)      when d > 0
//   theta <- theta - lr * sign(m) * c                     when d <= 0 (a negative Hutchinson h)
// h is the Hessian EMA the front end refreshes every k steps (rule hessian_ema); this step only
// reads it, so a step between refreshes moves fewer bytes than AdamW's (g, m, h read; m, theta written).
// The official code divides by a negative d as it is, which turns a negative h into an unbounded
// step against the momentum; here it is the clipped sign step (levanter's and optax's max(gamma h, eps)).
#pragma once
#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct Sophia {
  static constexpr const char* kName = "sophia";
#define FASTOPTIM_FIELDS_sophia(F)                                                                  \
  F(lr, 1e-4, non_negative) F(beta1, 0.965, unit_interval) F(rho, 0.04, non_negative)            \
  F(weight_decay, 0.1, non_negative) F(eps, 1e-15, non_negative) F(clip_threshold, 1.0, non_negative) \
  F(bs, 1.0, non_negative) F(bias_correction, 0, flag) F(maximize, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_sophia)

  enum Slot { kExpAvg, kHessian };
  static constexpr core::StateSlot kState[] = {{"exp_avg", nullptr}, {"hessian", nullptr}};
  static constexpr int kStateSlots = 2;
  // (its momentum and the Hessian EMA, which the hessian_ema rule folds estimates into and this step only reads)
  static constexpr unsigned kEightBitSlots = (1u << kExpAvg) | (1u << kHessian);
  static constexpr unsigned kReadOnlySlots = 1u << kHessian;
  static constexpr bool kCountsSteps = true;
  FASTOPTIM_HD static const char* invalid_combination(const Hyper&) { return nullptr; }

  template <class T>
  struct Coeffs {
    T one_minus_beta1, bias_correction1, hessian_scale, eps, clip, neg_lr;
    parts::WeightDecay<T> decay;
    bool maximize, bias_correction;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo& s) {
    return {T(1 - h.beta1),
            T(1 - std::pow(h.beta1, s.step)),
            T(h.rho * h.bs),
            T(h.eps),
            T(h.clip_threshold),
            T(-h.lr),
            parts::WeightDecay<T>::make(h.lr, h.weight_decay, true),
            h.maximize != 0,
            h.bias_correction != 0};
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    using V = Vec<T, W>;
    if (k.maximize) g = -g;
    k.decay.apply(p, g);
    V& exp_avg = state[kExpAvg];
    exp_avg = core::lerp(exp_avg, g, k.one_minus_beta1);
    const V m = k.bias_correction ? exp_avg / k.bias_correction1 : exp_avg;
    const V denom = state[kHessian] * k.hessian_scale + k.eps;
    const V zero = V::broadcast(T(0)), clip = V::broadcast(k.clip);
    const V abs_m = core::select(core::less(m, zero), -m, m);
    const V ratio = abs_m / denom;
    // min(|m| / d, c) as torch.clamp(max=c) (NaN stays NaN); c where d <= 0
    const V clipped = core::select(core::greater(denom, zero), core::select(core::greater(ratio, clip), clip, ratio), clip);
    // sign(m) * clipped: 0 where m is 0, NaN where m is NaN
    const V update = core::select(core::greater(m, zero), clipped, core::select(core::less(m, zero), -clipped, m * zero));
    p = core::mul_add(update, k.neg_lr, p);
  }
};

}  // namespace fastoptim::rules
