// The refresh of a Hessian-diagonal EMA from a new estimate D (Sophia, AdaHessian), run by the
// front ends on refresh steps only. The estimate is the "parameter" of the call (read, never
// written) and the EMA its state:
//   square = 0:  h <- lerp(h, D, 1 - b2)          (Sophia-H: h estimates the diagonal itself)
//   square = 1:  h <- b2 h + (1 - b2) D * D       (AdaHessian's v, SophiaG's EMA of g_hat^2;
//                                                   torch's mul_(b2).addcmul_(D, D, 1 - b2))
#pragma once
#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct HessianEMA {
  static constexpr const char* kName = "hessian_ema";
#define FASTOPTIM_FIELDS_hessian_ema(F) F(beta2, 0.99, unit_interval) F(square, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_hessian_ema)

  static constexpr core::StateSlot kState[] = {{"hessian", nullptr}};
  static constexpr int kStateSlots = 1;
  static constexpr unsigned kEightBitSlots = 1;  // (the EMA, in 8 bits where the optimizer keeps it so)
  static constexpr bool kCountsSteps = false;
  static constexpr bool kReadsGrad = false;
  FASTOPTIM_HD static const char* invalid_combination(const Hyper&) { return nullptr; }

  template <class T>
  struct Coeffs {
    T beta2, one_minus_beta2;
    bool square;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo&) {
    return {T(h.beta2), T(1 - h.beta2), h.square != 0};
  }

  template <class T>
  FASTOPTIM_HD static bool writes_param(const Coeffs<T>&) {
    return false;
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& estimate, Vec<T, W>, Vec<T, W>* state, const Coeffs<T>& k) {
    state[0] = k.square ? core::mul_add(k.one_minus_beta2 * estimate, estimate, state[0] * k.beta2)
                        : core::lerp(state[0], estimate, k.one_minus_beta2);
  }
};

}  // namespace fastoptim::rules
