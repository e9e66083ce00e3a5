// ASGD (Polyak & Juditsky, 1992; torch.optim.ASGD's form): SGD with a decaying step eta, a decay
// of the weights by lambd eta, and the running average ax of the iterates:
//   p <- p (1 - lambd eta) - eta g;  ax <- ax + mu (p - ax)  (ax <- p while mu = 1)
//   then eta <- lr / (1 + lambd lr t)^alpha,  mu <- 1 / max(1, t - t0)  (per tensor, for the next step)
// eta and mu are float32 numbers, as torch keeps them (float32 scalar tensors), and this step uses
// the values the previous step left (eta follows the lr of the step before, as in torch).
#pragma once
#include <algorithm>

#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct ASGD {
  static constexpr const char* kName = "asgd";
#define FASTOPTIM_FIELDS_asgd(F)                                                   \
  F(lr, 1e-2, non_negative) F(lambd, 1e-4, any) F(alpha, 0.75, any) F(t0, 1e6, any) \
  F(weight_decay, 0.0, non_negative) F(maximize, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_asgd)

  enum Slot { kAx, kEta, kMu };
  static constexpr core::StateSlot kState[] = {{"ax", nullptr}, {"eta", nullptr}, {"mu", nullptr}};
  static constexpr int kStateSlots = 1;
  static constexpr int kScalarSlots = 2;  // eta, mu
  static constexpr bool kCountsSteps = true;
  FASTOPTIM_HD static const char* invalid_combination(const Hyper&) { return nullptr; }
  FASTOPTIM_HD static double initial_value(const Hyper& h, int slot, std::int64_t) {
    return slot == kEta ? double(float(h.lr)) : slot == kMu ? 1.0 : 0.0;
  }

  FASTOPTIM_HD static void next_scalars(const Hyper& h, const StepInfo& s, double* next) {
    next[0] = double(float(h.lr / std::pow(1 + h.lambd * h.lr * s.step, h.alpha)));
    next[1] = double(float(1 / std::max(1.0, s.step - h.t0)));
  }

  template <class T>
  struct Coeffs {
    T decay_factor, neg_eta, mu;
    parts::WeightDecay<T> decay;
    bool maximize, averaging;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo& s) {
    const double eta = s.scalar_state[0], mu = s.scalar_state[1];
    return {T(1 - h.lambd * eta), T(-eta), T(mu), parts::WeightDecay<T>::make(h.lr, h.weight_decay, false),
            h.maximize != 0, mu != 1.0};
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    if (k.maximize) g = -g;
    k.decay.apply(p, g);
    p = core::mul_add(g, k.neg_eta, p * k.decay_factor);
    Vec<T, W>& ax = state[kAx];
    ax = k.averaging ? ax + (p - ax) * k.mu : p;
  }
};

}  // namespace fastoptim::rules
