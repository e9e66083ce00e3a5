// Gradient centralization (Yong et al., 2020): g <- g - (mean of g over all dims but 0), row by
// row of dim 0, for tensors of ndim > 1 (ndim > 3 with conv_only: conv weights). Vectors and
// scalars are left alone. A rule with per-row sums (kSumsPerRow) adds g to its sums in pass 1 and
// hands each row's sum to set_row_sum.
#pragma once
#include <cstdint>

#include "fastoptim/core/lanes.h"

namespace fastoptim::parts {

template <class T>
struct Centralization {
  bool active;
  T row_length, row_mean;

  FASTOPTIM_HD static Centralization make(bool enabled, bool conv_only, int ndim, std::int64_t numel, std::int64_t rows) {
    return {enabled && ndim > (conv_only ? 3 : 1), T(double(numel) / double(rows)), T(0)};
  }

  FASTOPTIM_HD void set_row_sum(T sum) { row_mean = sum / row_length; }

  template <int W>
  FASTOPTIM_HD void apply(core::Vec<T, W>& g) const {
    if (active) g = g - row_mean;
  }
};

// Element-wise clipping to [-bound, bound], as torch.clamp (NaN stays NaN); off when inactive.
template <class T>
struct Clip {
  T bound;
  bool active;

  FASTOPTIM_HD static Clip make(double bound, bool active) { return {T(bound), active && bound > 0}; }

  template <int W>
  FASTOPTIM_HD void apply(core::Vec<T, W>& x) const {
    if (active) x = core::clamp(x, -bound, bound);
  }
};

}  // namespace fastoptim::parts
