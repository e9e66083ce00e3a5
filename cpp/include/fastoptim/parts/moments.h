// Adam's moment estimates, in the forms torch's CPU kernels compute them (so every rule built on
// them agrees with torch to the bit where torch's does):
//   m <- lerp(m, g, 1 - b1)                 (torch's lerp_)
//   v <- fma((1 - b2) g, g, b2 v)           (torch's mul_(b2).addcmul_(g, g, value=1 - b2))
#pragma once
#include "fastoptim/core/lanes.h"

namespace fastoptim::parts {

// The exponential moving average of the squared gradient.
template <class T, int W>
FASTOPTIM_HD inline void ema_of_square(core::Vec<T, W>& v, core::Vec<T, W> g, T beta2, T one_minus_beta2) {
  v = core::mul_add(one_minus_beta2 * g, g, v * beta2);
}

// Both moments with the coefficients of one step.
template <class T>
struct AdamMoments {
  T one_minus_beta1, beta2, one_minus_beta2;

  FASTOPTIM_HD static AdamMoments make(double beta1, double beta2) { return {T(1 - beta1), T(beta2), T(1 - beta2)}; }

  template <int W>
  FASTOPTIM_HD void update(core::Vec<T, W>& m, core::Vec<T, W>& v, core::Vec<T, W> g) const {
    m = core::lerp(m, g, one_minus_beta1);
    ema_of_square(v, g, beta2, one_minus_beta2);
  }
};

}  // namespace fastoptim::parts
