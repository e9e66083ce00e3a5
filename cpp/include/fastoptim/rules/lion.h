// Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"), as pytorch_optimizer
// computes it (its signature and defaults):
//   decay: theta <- theta (1 - wd lr) (weight_decouple; fixed_decay: 1 - wd), else g <- g + wd theta
//   u = sign(lerp(m, g, 1 - b1))      (torch.sign: 0 for 0 and for NaN)
//   m <- lerp(m, g, 1 - b2);  theta <- theta - lr u
#pragma once
#include "fastoptim/parts/weight_decay.h"
#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct Lion {
  static constexpr const char* kName = "lion";
#define FASTOPTIM_FIELDS_lion(F)                                                                    \
  F(lr, 1e-4, non_negative) F(beta1, 0.9, unit_interval) F(beta2, 0.99, unit_interval)            \
  F(weight_decay, 0.0, non_negative) F(weight_decouple, 1, flag) F(fixed_decay, 0, flag) F(maximize, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_lion)

  static constexpr core::StateSlot kState[] = {{"exp_avg", nullptr}};
  static constexpr int kStateSlots = 1;
  static constexpr unsigned kEightBitSlots = (1u << kStateSlots) - 1;  // (its moments: every slot)
  static constexpr bool kCountsSteps = false;
  FASTOPTIM_HD static const char* invalid_combination(const Hyper&) { return nullptr; }

  template <class T>
  struct Coeffs {
    T one_minus_beta1, one_minus_beta2, neg_lr;
    parts::WeightDecay<T> decay;
    bool maximize;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo&) {
    return {T(1 - h.beta1), T(1 - h.beta2), T(-h.lr),
            parts::WeightDecay<T>::make(h.fixed_decay != 0 ? 1.0 : h.lr, h.weight_decay, h.weight_decouple != 0),
            h.maximize != 0};
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    if (k.maximize) g = -g;
    k.decay.apply(p, g);
    Vec<T, W>& exp_avg = state[0];
    const Vec<T, W> update = core::sign(core::lerp(exp_avg, g, k.one_minus_beta1));
    exp_avg = core::lerp(exp_avg, g, k.one_minus_beta2);
    p = core::mul_add(update, k.neg_lr, p);
  }
};

}  // namespace fastoptim::rules
