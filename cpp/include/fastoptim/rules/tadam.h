// TAdam (Ilboudo et al., 2020) as holocron.optim computes it: a Student-t weighted first moment.
// Per tensor of d elements, with m and v from the previous step:
//   g <- g + wd theta                                  (L2, as holocron)
//   w = (nu + d) / (nu + sum_j (g_j - m_j)^2 / (v_j + eps)),   nu = dof, or d when dof = 0 (None)
//   m <- W / (W + w) m + w / (W + w) g;   W <- (2 b1 - 1) / b1 W + w
//   v <- b2 v + (1-b2) g^2;  amsgrad: vmax <- max(vmax, v)
//   theta <- theta - lr / (1-b1^t) m / (sqrt(v) / sqrt(1-b2^t) + eps)
// W is per-tensor state (W_t, in the compute type) that the front end starts at b1 / (1 - b1).
// adam_first_step = 1 uses w = 1 on the first step (an Adam-like first step) instead of the
// near-zero w that v = 0 gives (holocron's first update is ~1e-9 of Adam's).
// Two passes over each tensor: the sum of standardised residuals, then the update.
#pragma once
#include <cmath>

#include "fastoptim/parts/moments.h"
#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct TAdam {
  static constexpr const char* kName = "tadam";
#define FASTOPTIM_FIELDS_tadam(F)                                                                  \
  F(lr, 1e-3, non_negative) F(beta1, 0.9, unit_interval) F(beta2, 0.999, unit_interval)          \
  F(eps, 1e-8, non_negative) F(weight_decay, 0.0, non_negative) F(amsgrad, 0, flag)              \
  F(dof, 0.0, non_negative) F(adam_first_step, 0, flag) F(maximize, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_tadam)

  enum Slot { kExpAvg, kExpAvgSq, kMaxExpAvgSq };
  static constexpr core::StateSlot kState[] = {
      {"exp_avg", nullptr}, {"exp_avg_sq", nullptr}, {"max_exp_avg_sq", "amsgrad"}, {"W_t", nullptr}};
  static constexpr int kStateSlots = 3;
  static constexpr unsigned kEightBitSlots = (1u << kStateSlots) - 1;  // (its moments: every element slot)
  static constexpr int kScalarSlots = 1;  // W_t
  static constexpr bool kCountsSteps = true;
  static constexpr int kSums = 1;                   // sum of (g - m)^2 / (v + eps)
  static constexpr bool kStateInFirstPass = false;  // the sum reads the previous moments
  FASTOPTIM_HD static const char* invalid_combination(const Hyper& h) {
    return h.beta1 > 0 ? nullptr : "TAdam needs beta1 > 0 (W is updated with (2 beta1 - 1) / beta1)";
  }
  // W starts at b1 / (1 - b1), the sum of the weights a steady first moment would have had.
  FASTOPTIM_HD static double initial_value(const Hyper& h, int slot, std::int64_t) {
    return slot == kStateSlots ? h.beta1 / (1 - h.beta1) : 0.0;
  }

  template <class T>
  struct Coeffs {
    T beta2, one_minus_beta2, bias_correction2_sqrt, neg_step_size, eps, weight_decay;
    T dof_plus_numel, dof, W_decay;  // nu + d, nu, (2 b1 - 1) / b1
    bool maximize, has_weight_decay, amsgrad, unit_weight;
    T keep, take;  // W / (W + w) and w / (W + w), set by finish()
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo& s) {
    const double dof = h.dof > 0 ? h.dof : double(s.numel);
    return {T(h.beta2),
            T(1 - h.beta2),
            T(std::sqrt(1 - std::pow(h.beta2, s.step))),
            T(-h.lr / (1 - std::pow(h.beta1, s.step))),
            T(h.eps),
            T(h.weight_decay),
            T(dof + double(s.numel)),
            T(dof),
            T((2 * h.beta1 - 1) / h.beta1),
            h.maximize != 0,
            h.weight_decay != 0,
            h.amsgrad != 0,
            h.adam_first_step != 0 && s.step == 1,
            T(0),
            T(0)};
  }

  template <class T, int W>
  FASTOPTIM_HD static Vec<T, W> gradient(const Vec<T, W>& p, Vec<T, W> g, const Coeffs<T>& k) {
    if (k.maximize) g = -g;
    if (k.has_weight_decay) g = core::mul_add(p, k.weight_decay, g);
    return g;
  }

  template <class T, int W>
  FASTOPTIM_HD static void contribute(const Vec<T, W>& p, const Vec<T, W>& g, const Vec<T, W>* state, const Coeffs<T>& k,
                         Vec<T, W>* out) {
    const Vec<T, W> residual = gradient(p, g, k) - state[kExpAvg];
    out[0] = residual * residual / (state[kExpAvgSq] + k.eps);
  }

  template <class T>
  FASTOPTIM_HD static void finish(Coeffs<T>& k, const T* sums, T* const* scalars) {
    T& big_w = *scalars[0];
    const T w = k.unit_weight ? T(1) : k.dof_plus_numel / (sums[0] + k.dof);
    k.keep = big_w / (big_w + w);
    k.take = w / (big_w + w);
    big_w = big_w * k.W_decay + w;
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    g = gradient(p, g, k);
    Vec<T, W>& exp_avg = state[kExpAvg];
    Vec<T, W>& exp_avg_sq = state[kExpAvgSq];
    exp_avg = core::mul_add(g, k.take, exp_avg * k.keep);
    parts::ema_of_square(exp_avg_sq, g, k.beta2, k.one_minus_beta2);
    Vec<T, W> second_moment = exp_avg_sq;
    if (k.amsgrad) second_moment = state[kMaxExpAvgSq] = core::maximum(state[kMaxExpAvgSq], exp_avg_sq);
    p = p + (k.neg_step_size * exp_avg) / (sqrt(second_moment) / k.bias_correction2_sqrt + k.eps);
  }
};

}  // namespace fastoptim::rules
