// What every rule header provides (see sgd.h for a short complete example):
//   kName                     snake_case name; the op is fastoptim::<kName>_step_
//   Hyper                     FASTOPTIM_HYPER(field list): names, defaults and checks of the hyperparameters
//   kState, kStateSlots       the state tensors under torch.optim's names, each with the field
//                             that must be nonzero for it to exist (core::StateSlot)
//   kCountsSteps              whether the state holds a per-parameter `step` counter
//   invalid_combination(h)    a message when fields are valid alone but not together, else nullptr
//   Coeffs<T>, prepare<T>()   per-tensor scalars, computed in double on the host and stored as T
//   apply<T, W>()             the per-element update over lanes; the SIMD body and the scalar tail
//                             (and later CUDA and edge loops) all run this one function
#pragma once
#include <cmath>

#include "fastoptim/core/hyper.h"
#include "fastoptim/core/lanes.h"

namespace fastoptim::rules {

using core::Vec;

// What prepare() knows about one tensor at this step.
struct StepInfo {
  double step;  // the step count after this step's increment (1 on the first step)
  bool fresh;   // the state tensors were created for this step (never updated before)
};

}  // namespace fastoptim::rules
