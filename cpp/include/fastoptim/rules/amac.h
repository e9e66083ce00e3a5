// AMaC's fused update (godsonj64/AMaC-Optimizer, as its README intends; Lookahead and SWA are the
// wrappers around it). Per tensor at step t, with lr_t the warm-up + cosine schedule:
//   g <- g - mean of g over all dims but 0        (gradient centralization, ndim > 1; > 3 with conv_only)
//   g <- clamp(g, -c, c)                          (clip the gradient; clip_update: clip delta instead)
//   m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2
//   delta = (m / (1-b1^t)) / (sqrt(v) / sqrt(1-b2^t) + eps)
//   delta <- delta + sigma_t n,  n ~ N(0, 1) counter-based (parts/philox.h), sigma_t = nf max(0, 1 - t/T_noise)
//   theta <- theta (1 - lr_t wd_t),  wd_t = wd max(0, 1 - t/(2W))   (constant wd when W = 0)
//   u <- mu u - lr_t delta;  theta <- theta + u     (momentum 0: theta <- theta - lr_t delta)
// Two passes over each tensor: the row sums of g (for the centralization), then the update.
#pragma once
#include <cmath>
#include <cstdint>

#include "fastoptim/parts/centralization.h"
#include "fastoptim/parts/philox.h"
#include "fastoptim/parts/schedules.h"
#include "fastoptim/parts/moments.h"
#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct AMaC {
  static constexpr const char* kName = "amac";
#define FASTOPTIM_FIELDS_amac(F)                                                                         \
  F(lr, 1e-3, non_negative) F(beta1, 0.9, unit_interval) F(beta2, 0.999, unit_interval)                \
  F(momentum, 0.9, unit_interval) F(eps, 1e-8, non_negative) F(weight_decay, 0.01, non_negative)       \
  F(clip_value, 1.0, non_negative) F(clip_update, 0, flag) F(warmup_steps, 1000.0, non_negative)       \
  F(schedule_steps, 3000.0, non_negative) F(min_lr, 0.0, non_negative) F(noise_factor, 0.01, non_negative) \
  F(noise_steps, 2000.0, non_negative) F(centralize, 1, flag) F(centralize_conv_only, 0, flag)          \
  F(seed, 0.0, whole) F(maximize, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_amac)

  enum Slot { kExpAvg, kExpAvgSq, kMomentumBuffer, kNoiseStream };
  static constexpr core::StateSlot kState[] = {
      {"exp_avg", nullptr}, {"exp_avg_sq", nullptr}, {"momentum_buffer", "momentum"}, {"noise_stream", nullptr}};
  static constexpr int kStateSlots = 3;
  static constexpr unsigned kEightBitSlots = (1u << kStateSlots) - 1;  // (its moments and momentum: every element slot)
  static constexpr int kScalarSlots = 1;  // noise_stream: the parameter's key for the noise
  static constexpr bool kCountsSteps = true;
  static constexpr int kSums = 1;  // sum of g per row
  static constexpr bool kSumsPerRow = true;
  static constexpr bool kStateInFirstPass = false;
  static constexpr bool kUsesIndex = true;  // the noise is keyed by the element's index
  FASTOPTIM_HD static const char* invalid_combination(const Hyper& h) {
    return h.min_lr > h.lr ? "min_lr must not exceed lr" : nullptr;
  }
  // The noise key is the parameter's position among all parameters (the Python class keys it so too).
  FASTOPTIM_HD static double initial_value(const Hyper&, int slot, std::int64_t position) {
    return slot == kStateSlots ? double(position) : 0.0;
  }

  template <class T>
  struct Coeffs {
    T beta1, one_minus_beta1, beta2, one_minus_beta2, bias_correction1, bias_correction2_sqrt, eps;
    T neg_lr, decay_factor, momentum, sigma;
    parts::Centralization<T> centralization;  // its row mean is set by finish_rows()
    parts::Clip<T> grad_clip, update_clip;
    std::uint64_t seed;
    std::uint32_t stream, step;
    bool maximize, has_decay, has_momentum, noisy;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo& s) {
    const double t = s.step;
    const double lr_t = parts::warmup_cosine_lr(t, h.lr, h.min_lr, h.warmup_steps, h.schedule_steps);
    const double wd_t = h.warmup_steps > 0 ? h.weight_decay * parts::linear_decay(t, 2 * h.warmup_steps) : h.weight_decay;
    const double sigma = h.noise_factor * parts::linear_decay(t, h.noise_steps);
    return {T(h.beta1),
            T(1 - h.beta1),
            T(h.beta2),
            T(1 - h.beta2),
            T(1 - std::pow(h.beta1, t)),
            T(std::sqrt(1 - std::pow(h.beta2, t))),
            T(h.eps),
            T(-lr_t),
            T(1 - lr_t * wd_t),
            T(h.momentum),
            T(sigma),
            parts::Centralization<T>::make(h.centralize != 0, h.centralize_conv_only != 0, s.ndim, s.numel, s.rows),
            parts::Clip<T>::make(h.clip_value, h.clip_update == 0),
            parts::Clip<T>::make(h.clip_value, h.clip_update != 0),
            std::uint64_t(h.seed),
            parts::counter_word(s.scalar_state[0]),
            parts::counter_word(t),
            h.maximize != 0,
            lr_t * wd_t != 0,
            h.momentum != 0,
            sigma > 0};
  }

  // The sums are the rows' gradient sums of centralization, and nothing else.
  template <class T>
  FASTOPTIM_HD static bool needs_sums(const Coeffs<T>& k) { return k.centralization.active; }

  template <class T, int W>
  FASTOPTIM_HD static void contribute(const Vec<T, W>&, const Vec<T, W>& g, const Vec<T, W>*, const Coeffs<T>& k, Vec<T, W>* out) {
    out[0] = k.maximize ? -g : g;
  }

  template <class T, class Sums>
  FASTOPTIM_HD static void finish_rows(Coeffs<T>* rows, const Sums* sums, std::int64_t row_count) {
    if (!rows[0].centralization.active) return;
    for (std::int64_t r = 0; r < row_count; ++r) rows[r].centralization.set_row_sum(sums[r][0]);
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k, std::int64_t index) {
    if (k.maximize) g = -g;
    k.centralization.apply(g);
    k.grad_clip.apply(g);
    Vec<T, W>& exp_avg = state[kExpAvg];
    Vec<T, W>& exp_avg_sq = state[kExpAvgSq];
    exp_avg = core::mul_add(g, k.one_minus_beta1, exp_avg * k.beta1);
    parts::ema_of_square(exp_avg_sq, g, k.beta2, k.one_minus_beta2);
    Vec<T, W> delta = (exp_avg / k.bias_correction1) / (sqrt(exp_avg_sq) / k.bias_correction2_sqrt + k.eps);
    if (k.noisy) delta = core::mul_add(parts::standard_normals<T, W>(k.seed, k.stream, k.step, index), k.sigma, delta);
    k.update_clip.apply(delta);
    if (k.has_decay) p = p * k.decay_factor;
    if (k.has_momentum) {
      Vec<T, W>& buf = state[kMomentumBuffer];
      buf = core::mul_add(delta, k.neg_lr, buf * k.momentum);
      p = p + buf;
    } else {
      p = core::mul_add(delta, k.neg_lr, p);
    }
  }
};

}  // namespace fastoptim::rules
