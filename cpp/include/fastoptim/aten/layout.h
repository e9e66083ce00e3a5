// Memory layouts the ATen layer steps in place (shared by the ops and the bindings' gather).
#pragma once
#include <ATen/core/Tensor.h>

#include "fastoptim/rules/rule.h"

namespace fastoptim::aten {

// Whether two tensors of one shape lay their elements out alike in memory (the same stride in
// every dimension of size > 1): then an element-wise step can walk both in memory order.
inline bool same_layout(const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() != b.sizes()) return false;
  for (int64_t d = 0; d < a.dim(); ++d)
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) return false;
  return true;
}

// Which layouts a rule's step walks in place: element-wise rules any dense non-overlapping layout
// (channels_last, a permuted tensor), in memory order, as torch's fused kernels do; rules that sum
// over a tensor or its rows, or key noise by the element's index, row-major (contiguous) only, so
// their sums and draws are those of the tensor's logical order.
template <class Rule>
constexpr bool needs_row_major() {
  return rules::sums_of<Rule>::value > 0 || rules::uses_index<Rule>::value;
}

}  // namespace fastoptim::aten
