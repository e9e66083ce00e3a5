// Adadelta (Zeiler, 2012), torch.optim.Adadelta's math (lr scales the update, as torch does):
//   v <- rho v + (1 - rho) g^2;  d = sqrt(a + eps) / sqrt(v + eps) g;  a <- rho a + (1 - rho) d^2;  p -= lr d
#pragma once
#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct Adadelta {
  static constexpr const char* kName = "adadelta";
#define FASTOPTIM_FIELDS_adadelta(F)                                                       \
  F(lr, 1.0, non_negative) F(rho, 0.9, unit_closed) F(eps, 1e-6, non_negative)            \
  F(weight_decay, 0.0, non_negative) F(maximize, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_adadelta)

  enum Slot { kSquareAvg, kAccDelta };
  static constexpr core::StateSlot kState[] = {{"square_avg", nullptr}, {"acc_delta", nullptr}};
  static constexpr int kStateSlots = 2;
  static constexpr unsigned kEightBitSlots = (1u << kStateSlots) - 1;  // (its two averages: every slot)
  static constexpr bool kCountsSteps = true;
  FASTOPTIM_HD static const char* invalid_combination(const Hyper&) { return nullptr; }

  template <class T>
  struct Coeffs {
    T rho, one_minus_rho, eps, neg_lr;
    parts::WeightDecay<T> decay;
    bool maximize;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo&) {
    return {T(h.rho), T(1 - h.rho), T(h.eps), T(-h.lr), parts::WeightDecay<T>::make(h.lr, h.weight_decay, false),
            h.maximize != 0};
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    if (k.maximize) g = -g;
    k.decay.apply(p, g);
    Vec<T, W>& square_avg = state[kSquareAvg];
    Vec<T, W>& acc_delta = state[kAccDelta];
    square_avg = core::mul_add(k.one_minus_rho * g, g, square_avg * k.rho);
    const Vec<T, W> delta = sqrt(acc_delta + k.eps) / sqrt(square_avg + k.eps) * g;
    acc_delta = core::mul_add(k.one_minus_rho * delta, delta, acc_delta * k.rho);
    p = core::mul_add(delta, k.neg_lr, p);
  }
};

}  // namespace fastoptim::rules
