// RMSprop with momentum, centering, L2 weight decay and maximize: torch.optim.RMSprop's math.
#pragma once
#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct RMSprop {
  static constexpr const char* kName = "rmsprop";
#define FASTOPTIM_FIELDS_rmsprop(F)                                                   \
  F(lr, 1e-2, non_negative) F(alpha, 0.99, non_negative) F(eps, 1e-8, non_negative)  \
  F(weight_decay, 0.0, non_negative) F(momentum, 0.0, non_negative)                  \
  F(centered, 0, flag) F(maximize, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_rmsprop)

  enum Slot { kSquareAvg, kMomentumBuffer, kGradAvg };
  // momentum is validated >= 0, so "nonzero" is torch's "momentum > 0".
  static constexpr core::StateSlot kState[] = {
      {"square_avg", nullptr}, {"momentum_buffer", "momentum"}, {"grad_avg", "centered"}};
  static constexpr int kStateSlots = 3;
  static constexpr unsigned kEightBitSlots = (1u << kStateSlots) - 1;  // (its averages and momentum: every slot)
  static constexpr bool kCountsSteps = true;
  FASTOPTIM_HD static const char* invalid_combination(const Hyper&) { return nullptr; }

  template <class T>
  struct Coeffs {
    T neg_lr, alpha, one_minus_alpha, eps, weight_decay, momentum;
    bool maximize, has_weight_decay, centered, has_momentum;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo&) {
    return {T(-h.lr),         T(h.alpha),          T(1.0 - h.alpha), T(h.eps),     T(h.weight_decay),
            T(h.momentum),    h.maximize != 0,     h.weight_decay != 0, h.centered != 0, h.momentum > 0};
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    if (k.maximize) g = -g;
    if (k.has_weight_decay) g = core::mul_add(p, k.weight_decay, g);
    Vec<T, W>& square_avg = state[kSquareAvg];
    square_avg = core::mul_add(k.one_minus_alpha * g, g, square_avg * k.alpha);
    Vec<T, W> avg;
    if (k.centered) {
      Vec<T, W>& grad_avg = state[kGradAvg];
      grad_avg = core::lerp(grad_avg, g, k.one_minus_alpha);
      avg = sqrt(core::mul_add(-grad_avg, grad_avg, square_avg));
    } else {
      avg = sqrt(square_avg);
    }
    avg = avg + k.eps;
    if (k.has_momentum) {
      Vec<T, W>& buf = state[kMomentumBuffer];
      buf = buf * k.momentum + g / avg;
      p = core::mul_add(buf, k.neg_lr, p);
    } else {
      p = p + (k.neg_lr * g) / avg;
    }
  }
};

}  // namespace fastoptim::rules
