// The ATen-layer step of an element-wise rule, shared by the custom op fastoptim::<name>_step_ and
// the direct pybind11 entry the Python classes use outside torch.compile (half the call cost).
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>

namespace fastoptim::aten {

// Checks every argument before touching any tensor, then steps all tensors of the group.
// `state` holds, slot by slot, one tensor per param for each state slot the hyperparameters use;
// `steps` one counter per param when the rule counts steps; `fresh` is empty or one flag per param.
template <class Rule>
void elementwise_step(at::TensorList params, at::TensorList grads, at::TensorList state, at::TensorList steps,
                      c10::ArrayRef<bool> fresh, c10::ArrayRef<double> hyper, const std::optional<at::Tensor>& lr);

}  // namespace fastoptim::aten
