// NAdam (Dozat, 2016), torch.optim.NAdam's math, with momentum decay and decoupled_weight_decay:
//   mu_t = b1 (1 - 0.5 * 0.96^(t psi)),  P_t = P_{t-1} mu_t  (mu_product, per tensor)
//   m, v as Adam;  d = sqrt(v / (1 - b2^t)) + eps
//   p -= lr (1 - mu_t) / (1 - P_t) g / d + lr mu_{t+1} / (1 - P_t mu_{t+1}) m / d
// mu_product is a float32 number, as torch keeps it (a float32 scalar tensor multiplied in float32),
// so the step sizes, computed from it in double as torch does, are torch's to the last bit.
#pragma once
#include "fastoptim/parts/moments.h"
#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct NAdam {
  static constexpr const char* kName = "nadam";
#define FASTOPTIM_FIELDS_nadam(F)                                                                   \
  F(lr, 2e-3, non_negative) F(beta1, 0.9, unit_interval) F(beta2, 0.999, unit_interval)            \
  F(eps, 1e-8, non_negative) F(weight_decay, 0.0, non_negative) F(momentum_decay, 4e-3, non_negative) \
  F(decoupled_weight_decay, 0, flag) F(maximize, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_nadam)

  enum Slot { kExpAvg, kExpAvgSq, kMuProduct };
  static constexpr core::StateSlot kState[] = {{"exp_avg", nullptr}, {"exp_avg_sq", nullptr}, {"mu_product", nullptr}};
  static constexpr int kStateSlots = 2;
  static constexpr unsigned kEightBitSlots = (1u << kStateSlots) - 1;  // (its moments: every slot)
  static constexpr int kScalarSlots = 1;  // mu_product
  static constexpr bool kCountsSteps = true;
  FASTOPTIM_HD static const char* invalid_combination(const Hyper&) { return nullptr; }
  FASTOPTIM_HD static double initial_value(const Hyper&, int slot, std::int64_t) { return slot == kMuProduct ? 1.0 : 0.0; }

  // The momentum coefficient of step t.
  FASTOPTIM_HD static double mu_at(const Hyper& h, double step) {
    return h.beta1 * (1.0 - 0.5 * std::pow(0.96, step * h.momentum_decay));
  }

  FASTOPTIM_HD static void next_scalars(const Hyper& h, const StepInfo& s, double* next) {
    next[0] = double(float(double(float(mu_at(h, s.step))) * s.scalar_state[0]));
  }

  template <class T>
  struct Coeffs {
    parts::AdamMoments<T> moments;
    T bias_correction2, eps, neg_grad_step, neg_avg_step;
    parts::WeightDecay<T> decay;
    bool maximize;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo& s) {
    const double mu = mu_at(h, s.step), mu_next = mu_at(h, s.step + 1);
    const double mu_product = s.scalar_next[0];
    const double mu_product_next = mu_product * mu_next;
    return {parts::AdamMoments<T>::make(h.beta1, h.beta2),
            T(1 - std::pow(h.beta2, s.step)),
            T(h.eps),
            T(-h.lr * (1.0 - mu) / (1.0 - mu_product)),
            T(-h.lr * mu_next / (1.0 - mu_product_next)),
            parts::WeightDecay<T>::make(h.lr, h.weight_decay, h.decoupled_weight_decay != 0),
            h.maximize != 0};
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    if (k.maximize) g = -g;
    k.decay.apply(p, g);
    Vec<T, W>& exp_avg = state[kExpAvg];
    Vec<T, W>& exp_avg_sq = state[kExpAvgSq];
    k.moments.update(exp_avg, exp_avg_sq, g);
    const Vec<T, W> denom = sqrt(exp_avg_sq / k.bias_correction2) + k.eps;
    p = p + (k.neg_grad_step * g) / denom;
    p = p + (k.neg_avg_step * exp_avg) / denom;
  }
};

}  // namespace fastoptim::rules
