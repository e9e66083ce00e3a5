// LARS (You et al., 2017) as holocron.optim documents it, with the trust ratio inside the momentum:
//   r = eta * clamp(||theta||, clip_min, clip_max) / (||g|| + wd ||theta|| + eps), or 1 when
//       ||theta|| or ||g|| is 0 (so zero-initialised tensors move)
//   trust_clip (LARC's clipping): r <- min(r, 1)
//   exclude_1d: tensors of ndim <= 1 (biases, norm scales) take r = 1 and no weight decay
//   d = r (g + wd theta)
//   momentum = 0:  theta <- theta - lr d
//   momentum > 0:  b <- d on the first step, else mu b + (1 - dampening) d
//                  theta <- theta - lr (d + mu b if nesterov else b)
// Two passes over each tensor: the sums of theta^2 and g^2, then the update with r.
#pragma once
#include <algorithm>
#include <cmath>

#include "fastoptim/parts/momentum.h"
#include "fastoptim/parts/trust_ratio.h"
#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct LARS {
  static constexpr const char* kName = "lars";
#define FASTOPTIM_FIELDS_lars(F)                                                                      \
  F(lr, 1e-3, non_negative) F(momentum, 0.0, non_negative) F(dampening, 0.0, any)                    \
  F(weight_decay, 0.0, non_negative) F(nesterov, 0, flag) F(clip_min, 0.0, non_negative)            \
  F(clip_max, 10.0, bound) F(trust_coefficient, 1.0, non_negative) F(eps, 0.0, non_negative) \
  F(maximize, 0, flag) F(trust_clip, 0, flag) F(exclude_1d, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_lars)

  static constexpr core::StateSlot kState[] = {{"momentum_buffer", "momentum"}};
  static constexpr int kStateSlots = 1;
  static constexpr unsigned kEightBitSlots = 1;  // (its momentum, as bitsandbytes' 8-bit LARS)
  static constexpr bool kCountsSteps = false;
  static constexpr int kSums = 2;                   // sum of theta^2, sum of g^2
  static constexpr bool kStateInFirstPass = false;  // the ratio comes before the momentum
  FASTOPTIM_HD static const char* invalid_combination(const Hyper& h) {
    if (h.nesterov != 0 && (h.momentum <= 0 || h.dampening != 0))
      return "Nesterov momentum requires a momentum and zero dampening";
    if (h.clip_min > h.clip_max) return "scale_clip must be (low, high) with low <= high";
    return nullptr;
  }

  template <class T>
  struct Coeffs {
    T neg_lr, weight_decay, clip_min, clip_max, trust_coefficient, eps;
    parts::Momentum<T> momentum;
    bool maximize, has_weight_decay, adapt, trust_clip;
    T ratio;  // r, set by finish() from the tensor's sums
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo& s) {
    const bool excluded = h.exclude_1d != 0 && !s.matrix;
    const double weight_decay = excluded ? 0.0 : h.weight_decay;
    return {T(-h.lr),
            T(weight_decay),
            T(h.clip_min),
            T(h.clip_max),
            T(h.trust_coefficient),
            T(h.eps),
            parts::Momentum<T>::make(h.momentum, h.dampening, h.nesterov != 0, s.fresh),
            h.maximize != 0,
            weight_decay != 0,
            !excluded,
            h.trust_clip != 0,
            T(1)};
  }

  // An excluded tensor's ratio is 1 whatever its norms.
  template <class T>
  FASTOPTIM_HD static bool needs_sums(const Coeffs<T>& k) { return k.adapt; }

  template <class T, int W>
  FASTOPTIM_HD static void contribute(const Vec<T, W>& p, const Vec<T, W>& g, const Vec<T, W>*, const Coeffs<T>&, Vec<T, W>* out) {
    out[0] = p * p;
    out[1] = g * g;
  }

  template <class T>
  FASTOPTIM_HD static void finish(Coeffs<T>& k, const T* sums) {
    const T weight_norm = std::sqrt(sums[0]);
    const T grad_norm = std::sqrt(sums[1]);
    k.ratio = parts::trust_ratio(k.trust_coefficient * std::clamp(weight_norm, k.clip_min, k.clip_max),
                                 grad_norm + k.weight_decay * weight_norm + k.eps,
                                 !k.adapt || weight_norm == T(0) || grad_norm == T(0), k.trust_clip);
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    if (k.maximize) g = -g;
    if (k.has_weight_decay) g = core::mul_add(p, k.weight_decay, g);
    if (!k.momentum.active) {  // (one product of the scalars, as holocron's code rounds it)
      p = core::mul_add(g, k.neg_lr * k.ratio, p);
      return;
    }
    p = core::mul_add(k.momentum.apply(g * k.ratio, state[0]), k.neg_lr, p);
  }
};

}  // namespace fastoptim::rules
