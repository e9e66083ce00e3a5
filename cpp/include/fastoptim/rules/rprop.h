// Rprop (Riedmiller & Braun, 1993; torch.optim.Rprop's form): a step size per element, grown by
// etaplus while the gradient keeps its sign and shrunk by etaminus when it flips (clamped to
// step_sizes); on a flip the gradient counts as 0 for this step and the next:
//   s <- clamp(s * eta(g prev), min, max);  g <- 0 where g prev < 0;  p -= sign(g) s;  prev <- g
#pragma once
#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct Rprop {
  static constexpr const char* kName = "rprop";
#define FASTOPTIM_FIELDS_rprop(F)                                                                \
  F(lr, 1e-2, non_negative) F(etaminus, 0.5, non_negative) F(etaplus, 1.2, non_negative)        \
  F(step_size_min, 1e-6, non_negative) F(step_size_max, 50.0, bound) F(maximize, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_rprop)

  enum Slot { kPrev, kStepSize };
  static constexpr core::StateSlot kState[] = {{"prev", nullptr}, {"step_size", nullptr}};
  static constexpr int kStateSlots = 2;
  static constexpr bool kCountsSteps = true;
  FASTOPTIM_HD static const char* invalid_combination(const Hyper& h) {
    return h.etaminus > 0 && h.etaminus < 1 && h.etaplus > 1 ? nullptr
                                                             : "Invalid eta values: they must satisfy 0 < etaminus < 1 < etaplus";
  }
  // step_size starts at lr, as torch's does
  FASTOPTIM_HD static double initial_value(const Hyper& h, int slot, std::int64_t) { return slot == kStepSize ? h.lr : 0.0; }

  template <class T>
  struct Coeffs {
    T etaminus, etaplus, step_size_min, step_size_max;
    bool maximize;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo&) {
    return {T(h.etaminus), T(h.etaplus), T(h.step_size_min), T(h.step_size_max), h.maximize != 0};
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    using V = Vec<T, W>;
    if (k.maximize) g = -g;
    Vec<T, W>& prev = state[kPrev];
    Vec<T, W>& step_size = state[kStepSize];
    const V zero = V::broadcast(T(0)), agreement = g * prev;
    const auto flipped = core::less(agreement, zero);
    const V factor = core::select(core::greater(agreement, zero), V::broadcast(k.etaplus),
                                  core::select(flipped, V::broadcast(k.etaminus), V::broadcast(T(1))));
    step_size = core::clamp(step_size * factor, k.step_size_min, k.step_size_max);
    g = core::select(flipped, zero, g);
    p = core::mul_add(-core::sign(g), step_size, p);
    prev = g;
  }
};

}  // namespace fastoptim::rules
