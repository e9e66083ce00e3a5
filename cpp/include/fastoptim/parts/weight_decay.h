// Weight decay in torch.optim's two flavours, as a part rules compose:
//   L2 (coupled):  g <- g + wd * theta            (torch SGD/Adam/Adagrad/RMSprop, holocron)
//   decoupled:     theta <- theta * (1 - lr * wd) (AdamW; lr * wd computed in double on the host)
#pragma once
#include "fastoptim/core/lanes.h"

namespace fastoptim::parts {

template <class T>
struct WeightDecay {
  T weight_decay, decay_factor;
  bool active, decoupled;

  FASTOPTIM_HD static WeightDecay make(double lr, double weight_decay, bool decoupled) {
    return {T(weight_decay), T(1 - lr * weight_decay), weight_decay != 0, decoupled};
  }

  template <int W>
  FASTOPTIM_HD void apply(core::Vec<T, W>& p, core::Vec<T, W>& g) const {
    if (!active) return;
    if (decoupled) p = p * decay_factor;
    else g = core::mul_add(p, weight_decay, g);
  }
};

}  // namespace fastoptim::parts
