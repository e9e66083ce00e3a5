// LAMB (You et al., 2019), as holocron.optim documents it:
//   g <- s g  (s: the global gradient-norm clip factor, when the front end gives one)
//   m <- b1 m + (1-b1) g  (m <- b1 m + g without grad_averaging);  v <- b2 v + (1-b2) g^2
//   u = m_hat / (sqrt(v_hat) + eps) + wd theta      (bias-corrected; bias_correction = 0: holocron's code)
//   phi = clamp(||theta||, clip_min, clip_max);  r = phi / ||u||, or 1 when either norm is 0
//   trust_clip: r <- min(r, 1)
//   theta <- theta - lr r u
// Two passes over each tensor: the moments and the sums of u^2 and theta^2, then the update with r.
// The bias corrections are applied as reciprocals computed in double on the host: one division per
// element and pass, not three (the same values as the references within their tolerance, not bit for bit).
// RaLars (holocron.optim) is this rule with rectify = 1: RAdam's rectification of m_hat / sqrt(v_hat),
//   rho_inf = 2 / (1-b2) - 1;  rho_t = rho_inf - 2 t b2^t / (1-b2^t)
//   rho_t > sma_threshold: u = r_t m_hat / (sqrt(v_hat) + eps),
//                          r_t = sqrt((rho_t-4)(rho_t-2) rho_inf / ((rho_inf-4)(rho_inf-2) rho_t))
//   otherwise:             u = m_hat / (sqrt(v_hat) + eps) if force_adaptive_momentum, else m_hat
// and the same weight decay and trust ratio.
#pragma once
#include <algorithm>
#include <cmath>

#include "fastoptim/parts/rectification.h"
#include "fastoptim/parts/trust_ratio.h"
#include "fastoptim/parts/moments.h"
#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct LAMB {
  static constexpr const char* kName = "lamb";
#define FASTOPTIM_FIELDS_lamb(F)                                                                     \
  F(lr, 1e-3, non_negative) F(beta1, 0.9, unit_interval) F(beta2, 0.999, unit_interval)            \
  F(eps, 1e-8, non_negative) F(weight_decay, 0.0, non_negative) F(clip_min, 0.0, non_negative)    \
  F(clip_max, 10.0, bound) F(bias_correction, 1, flag) F(maximize, 0, flag) F(rectify, 0, flag)    \
  F(sma_threshold, 4.0, any) F(force_adaptive_momentum, 0, flag) F(trust_clip, 0, flag) F(grad_averaging, 1, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_lamb)

  enum Slot { kExpAvg, kExpAvgSq };
  static constexpr core::StateSlot kState[] = {{"exp_avg", nullptr}, {"exp_avg_sq", nullptr}};
  static constexpr int kStateSlots = 2;
  static constexpr unsigned kEightBitSlots = (1u << kStateSlots) - 1;  // (its moments: every slot)
  static constexpr bool kCountsSteps = true;
  static constexpr int kSums = 2;  // sum of u^2, sum of theta^2
  static constexpr bool kStateInFirstPass = true;  // the sums need the new moments
  static constexpr bool kScalesGrad = true;        // max_grad_norm
  FASTOPTIM_HD static const char* invalid_combination(const Hyper& h) {
    return h.clip_min > h.clip_max ? "scale_clip must be (low, high) with low <= high" : nullptr;
  }

  template <class T>
  struct Coeffs {
    T beta1, one_minus_beta1, beta2, one_minus_beta2, eps;
    // 1 / (1-b1^t), 1 / sqrt(1-b2^t) and, for adaptive steps, r_t / (1-b1^t) (RaLars' r_t, 1 for LAMB)
    T inv_bias_correction1, inv_bias_correction2_sqrt, adaptive_numerator_scale;
    T weight_decay, neg_lr, clip_min, clip_max;
    T grad_scale;
    bool maximize, has_weight_decay, adaptive;  // adaptive: divide by sqrt(v_hat) + eps
    bool scales_grad, trust_clip;
    T neg_lr_ratio;  // -lr * r, set by finish() from the tensor's sums
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo& s) {
    const bool corrected = h.bias_correction != 0;
    double rectification = 1.0;
    bool adaptive = true;
    if (h.rectify != 0) {
      const auto r = parts::Rectification::at(h.beta2, s.step);
      if (r.rho_t > h.sma_threshold)  // (holocron's comparison)
        rectification = r.term();
      else
        adaptive = h.force_adaptive_momentum != 0;
    }
    const double bias_correction1 = corrected ? 1 - std::pow(h.beta1, s.step) : 1.0;
    const double bias_correction2_sqrt = corrected ? std::sqrt(1 - std::pow(h.beta2, s.step)) : 1.0;
    return {T(h.beta1),
            T(h.grad_averaging != 0 ? 1 - h.beta1 : 1.0),
            T(h.beta2),
            T(1 - h.beta2),
            T(h.eps),
            T(1 / bias_correction1),
            T(1 / bias_correction2_sqrt),
            T(rectification / bias_correction1),
            T(h.weight_decay),
            T(-h.lr),
            T(h.clip_min),
            T(h.clip_max),
            T(s.grad_scale),
            h.maximize != 0,
            h.weight_decay != 0,
            adaptive,
            s.grad_scale != 1.0,
            h.trust_clip != 0,
            T(0)};
  }

  // u from the updated moments; pass 1 and pass 2 compute it alike.
  template <class T, int W>
  FASTOPTIM_HD static Vec<T, W> update(const Vec<T, W>& p, const Vec<T, W>* state, const Coeffs<T>& k) {
    Vec<T, W> u;
    if (k.adaptive) {
      const Vec<T, W> denom = core::mul_add(sqrt(state[kExpAvgSq]), k.inv_bias_correction2_sqrt, Vec<T, W>::broadcast(k.eps));
      u = state[kExpAvg] * k.adaptive_numerator_scale / denom;
    } else {
      u = state[kExpAvg] * k.inv_bias_correction1;
    }
    if (k.has_weight_decay) u = core::mul_add(p, k.weight_decay, u);
    return u;
  }

  template <class T, int W>
  FASTOPTIM_HD static void advance(const Vec<T, W>&, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    if (k.scales_grad) g = g * k.grad_scale;
    if (k.maximize) g = -g;
    state[kExpAvg] = core::mul_add(g, k.one_minus_beta1, state[kExpAvg] * k.beta1);
    parts::ema_of_square(state[kExpAvgSq], g, k.beta2, k.one_minus_beta2);
  }

  template <class T, int W>
  FASTOPTIM_HD static void contribute(const Vec<T, W>& p, const Vec<T, W>&, const Vec<T, W>* state, const Coeffs<T>& k, Vec<T, W>* out) {
    const Vec<T, W> u = update(p, state, k);
    out[0] = u * u;
    out[1] = p * p;
  }

  template <class T>
  FASTOPTIM_HD static void finish(Coeffs<T>& k, const T* sums) {
    const T update_norm = std::sqrt(sums[0]);
    const T phi = std::clamp(std::sqrt(sums[1]), k.clip_min, k.clip_max);
    k.neg_lr_ratio = k.neg_lr * parts::trust_ratio(phi, update_norm, phi == T(0) || update_norm == T(0), k.trust_clip);
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, const Vec<T, W>&, const Vec<T, W>* state, const Coeffs<T>& k) {
    p = core::mul_add(update(p, state, k), k.neg_lr_ratio, p);
  }
};

}  // namespace fastoptim::rules
