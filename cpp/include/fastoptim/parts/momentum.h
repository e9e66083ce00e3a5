// torch.optim.SGD's momentum buffer, with dampening and Nesterov, as a part: SGD and LARS use it.
//   b <- d on the first step (torch starts the buffer as a copy, without dampening),
//        mu b + (1 - dampening) d afterwards;   the direction is b, or d + mu b with Nesterov.
#pragma once
#include "fastoptim/core/lanes.h"

namespace fastoptim::parts {

template <class T>
struct Momentum {
  T momentum, one_minus_dampening;
  bool active, nesterov, fresh;

  FASTOPTIM_HD static Momentum make(double momentum, double dampening, bool nesterov, bool fresh) {
    return {T(momentum), T(1.0 - dampening), momentum != 0, nesterov, fresh};
  }

  // The direction of this step for the update d, advancing the buffer; d itself without momentum.
  template <int W>
  FASTOPTIM_HD core::Vec<T, W> apply(core::Vec<T, W> d, core::Vec<T, W>& buffer) const {
    if (!active) return d;
    buffer = fresh ? d : core::mul_add(d, one_minus_dampening, buffer * momentum);
    return nesterov ? core::mul_add(buffer, momentum, d) : buffer;
  }
};

}  // namespace fastoptim::parts
