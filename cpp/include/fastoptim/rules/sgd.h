// SGD with momentum, dampening, Nesterov, L2 weight decay and maximize: torch.optim.SGD's math.
#pragma once
#include "fastoptim/parts/momentum.h"
#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct SGD {
  static constexpr const char* kName = "sgd";
#define FASTOPTIM_FIELDS_sgd(F)                                                         \
  F(lr, 1e-3, non_negative) F(momentum, 0.0, non_negative) F(dampening, 0.0, any)      \
  F(weight_decay, 0.0, non_negative) F(nesterov, 0, flag) F(maximize, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_sgd)

  static constexpr core::StateSlot kState[] = {{"momentum_buffer", "momentum"}};
  static constexpr int kStateSlots = 1;
  static constexpr unsigned kEightBitSlots = 1;  // (its momentum, as bitsandbytes' 8-bit SGD)
  static constexpr bool kCountsSteps = false;
  FASTOPTIM_HD static const char* invalid_combination(const Hyper& h) {
    if (h.nesterov != 0 && (h.momentum <= 0 || h.dampening != 0))
      return "Nesterov momentum requires a momentum and zero dampening";
    return nullptr;
  }

  template <class T>
  struct Coeffs {
    T neg_lr, weight_decay;
    parts::Momentum<T> momentum;
    bool maximize, has_weight_decay;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo& s) {
    return {T(-h.lr), T(h.weight_decay), parts::Momentum<T>::make(h.momentum, h.dampening, h.nesterov != 0, s.fresh),
            h.maximize != 0, h.weight_decay != 0};
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    if (k.maximize) g = -g;
    if (k.has_weight_decay) g = core::mul_add(p, k.weight_decay, g);
    p = core::mul_add(k.momentum.apply(g, state[0]), k.neg_lr, p);
  }
};

}  // namespace fastoptim::rules
