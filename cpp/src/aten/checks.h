// Checks the ATen-layer entries share (internal to cpp/src/aten).
#pragma once
#include <ATen/core/Tensor.h>

#include "fastoptim/aten/layout.h"

namespace fastoptim::aten {

// Every tensor the kernels read or write must be a plain tensor with memory of its own. A tensor
// subclass with its own dispatch (a DTensor, FSDP2's sharded parameters) or a tensor without
// storage has no memory here to read: refused before any pointer is taken.
template <class What>
void check_plain(const at::Tensor& t, const What& what, const char* op) {
  TORCH_CHECK_TYPE(!t.unsafeGetTensorImpl()->is_python_dispatch(), op, ": ", what,
                   " is a tensor subclass with its own dispatch (such as a DTensor from FSDP2's fully_shard or "
                   "distribute_tensor); the ops step plain tensors (fastoptim's Python optimizers step a DTensor "
                   "parameter by its local shard)");
  TORCH_CHECK_TYPE(t.layout() == at::kStrided, op, ": ", what, " has layout ", t.layout(),
                   "; only dense (strided) tensors are supported (sparse gradients are not)");
  // (a meta tensor has no memory either: the device check names it)
  TORCH_CHECK_VALUE(t.has_storage() && (t.is_meta() || t.numel() == 0 || t.const_data_ptr() != nullptr), op, ": ",
                    what, " has no storage of its own to update");
}

}  // namespace fastoptim::aten
