// RAdam's variance rectification (Liu et al., 2019) as a part: RaLars (LAMB's rectify) and
// AdaBelief's rectify use it. At step t, with rho_inf = 2 / (1 - b2) - 1:
//   rho_t = rho_inf - 2 t b2^t / (1 - b2^t)       (the length of the approximated SMA)
//   r_t   = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
// Each rule compares rho_t with its reference's threshold the way its reference does (holocron's
// RaLars: rho_t > sma_threshold; the official AdaBelief: rho_t >= 5): below it the step is not rectified.
#pragma once
#include <cmath>

#include "fastoptim/core/device.h"

namespace fastoptim::parts {

struct Rectification {
  double rho_inf, rho_t;

  FASTOPTIM_HD static Rectification at(double beta2, double step) {
    const double rho_inf = 2 / (1 - beta2) - 1;
    const double beta2_t = std::pow(beta2, step);
    return {rho_inf, rho_inf - 2 * step * beta2_t / (1 - beta2_t)};
  }

  // r_t, in the order of holocron's RaLars.
  FASTOPTIM_HD double term() const {
    return std::sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t));
  }

  // sqrt(1 - b2^t) r_t, in the order of the official AdaBelief (adabelief-pytorch), bit for bit.
  FASTOPTIM_HD double term_with_bias_correction(double bias_correction2) const {
    return std::sqrt(bias_correction2 * (rho_t - 4) / (rho_inf - 4) * (rho_t - 2) / rho_t * rho_inf / (rho_inf - 2));
  }
};

}  // namespace fastoptim::parts
