// RAdam (Liu et al., 2019), torch.optim.RAdam's math, with its decoupled_weight_decay: Adam's
// moments; while the SMA length rho_t <= 5 the step is the bias-corrected momentum alone, after it
// the adaptive step times the rectification r_t (parts/rectification.h; torch's rho_t > 5).
#pragma once
#include "fastoptim/parts/moments.h"
#include "fastoptim/parts/rectification.h"
#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct RAdam {
  static constexpr const char* kName = "radam";
#define FASTOPTIM_FIELDS_radam(F)                                                                   \
  F(lr, 1e-3, non_negative) F(beta1, 0.9, unit_interval) F(beta2, 0.999, unit_interval)            \
  F(eps, 1e-8, non_negative) F(weight_decay, 0.0, non_negative) F(decoupled_weight_decay, 0, flag) \
  F(maximize, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_radam)

  enum Slot { kExpAvg, kExpAvgSq };
  static constexpr core::StateSlot kState[] = {{"exp_avg", nullptr}, {"exp_avg_sq", nullptr}};
  static constexpr int kStateSlots = 2;
  static constexpr unsigned kEightBitSlots = (1u << kStateSlots) - 1;  // (its moments: every slot)
  static constexpr bool kCountsSteps = true;
  FASTOPTIM_HD static const char* invalid_combination(const Hyper&) { return nullptr; }

  template <class T>
  struct Coeffs {
    parts::AdamMoments<T> moments;
    T eps;
    T neg_step;  // on m / (sqrt(v) + eps) when rectified, on m otherwise
    parts::WeightDecay<T> decay;
    bool maximize, rectified;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo& s) {
    const double bias_correction1 = 1 - std::pow(h.beta1, s.step);
    const double bias_correction2 = 1 - std::pow(h.beta2, s.step);
    const parts::Rectification rect = parts::Rectification::at(h.beta2, s.step);
    const bool rectified = rect.rho_t > 5.0;
    const double step = rectified ? h.lr / bias_correction1 * std::sqrt(bias_correction2) * rect.term()
                                  : h.lr / bias_correction1;
    return {parts::AdamMoments<T>::make(h.beta1, h.beta2), T(h.eps), T(-step),
            parts::WeightDecay<T>::make(h.lr, h.weight_decay, h.decoupled_weight_decay != 0), h.maximize != 0,
            rectified};
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    if (k.maximize) g = -g;
    k.decay.apply(p, g);
    Vec<T, W>& exp_avg = state[kExpAvg];
    Vec<T, W>& exp_avg_sq = state[kExpAvgSq];
    k.moments.update(exp_avg, exp_avg_sq, g);
    if (k.rectified) p = p + (k.neg_step * exp_avg) / (sqrt(exp_avg_sq) + k.eps);
    else p = core::mul_add(exp_avg, k.neg_step, p);
  }
};

}  // namespace fastoptim::rules
