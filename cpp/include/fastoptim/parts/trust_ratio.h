// The layer-wise trust ratio of LARS and LAMB (optax's scale_by_trust_ratio) as a part:
//   r = numerator / denominator, 1 where the step is degenerate (a zero norm, or a tensor the rule
//   leaves out), capped at 1 with trust_clip (LARC's clipping; NaN stays NaN).
// LARS: numerator = trust_coefficient * clamp(||w||), denominator = ||g|| + wd ||w|| + eps;
// LAMB: numerator = clamp(||w||), denominator = ||u|| (clamp: to [clip_min, clip_max]).
#pragma once
#include <algorithm>

#include "fastoptim/core/device.h"

namespace fastoptim::parts {

template <class T>
FASTOPTIM_HD inline T trust_ratio(T numerator, T denominator, bool degenerate, bool trust_clip) {
  const T ratio = degenerate ? T(1) : numerator / denominator;
  return trust_clip ? std::min(ratio, T(1)) : ratio;
}

}  // namespace fastoptim::parts
