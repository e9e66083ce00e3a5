// Schedule-Free AdamW and SGD (the schedulefree package's AdamWScheduleFree and SGDScheduleFree):
// the interpolation of parts/schedule_free.h along
//   AdamW:  u = g / (sqrt(v / (1 - b2^t)) + eps) + wd y,   v <- b2 v + (1 - b2) g^2 first
//   SGD:    u = g + wd y
// (weight decay taken at y, as the package does). beta is betas[0] for AdamW, momentum for SGD.
#pragma once
#include "fastoptim/parts/moments.h"
#include "fastoptim/parts/schedule_free.h"
#include "fastoptim/parts/weight_decay.h"
#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

// What both rules share: the state (z, then their own slots, then the schedule's two scalars),
// the schedule's start values and advance, and the checks.
template <class Hyper>
struct ScheduleFreeCommon {
  static constexpr int kScalarSlots = 2;  // lr_max, weight_sum
  static constexpr bool kCountsSteps = true;

  static FASTOPTIM_HD parts::ScheduleFreeSchedule schedule(const Hyper& h) {
    return {h.lr, h.warmup_steps, h.r, h.weight_lr_power};
  }
  // What state slot `slot` starts at, for a rule whose first scalar slot (lr_max) is `lr_max_slot`.
  static FASTOPTIM_HD double start_value(int slot, int lr_max_slot) {
    return slot == lr_max_slot ? parts::ScheduleFreeSchedule::kLrMaxStart : 0.0;
  }
  static FASTOPTIM_HD void next_scalars(const Hyper& h, const StepInfo& s, double* next) {
    schedule(h).advance(s.step, s.scalar_state, next);
  }
  template <class T>
  static FASTOPTIM_HD parts::ScheduleFreeStep<T> step_of(const Hyper& h, double beta, const StepInfo& s) {
    return parts::ScheduleFreeStep<T>::make(schedule(h), beta, s.step, s.scalar_next, s.fresh);
  }
};

struct AdamWScheduleFree {
  static constexpr const char* kName = "adamw_schedulefree";
#define FASTOPTIM_FIELDS_adamw_schedulefree(F)                                                       \
  F(lr, 0.0025, non_negative) F(beta1, 0.9, unit_interval) F(beta2, 0.999, unit_interval)            \
  F(eps, 1e-8, non_negative) F(weight_decay, 0.0, non_negative) F(warmup_steps, 0, whole) F(r, 0.0, any) \
  F(weight_lr_power, 2.0, any)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_adamw_schedulefree)
  using Common = ScheduleFreeCommon<Hyper>;

  enum Slot { kZ, kExpAvgSq };
  static constexpr core::StateSlot kState[] = {
      {"z", nullptr}, {"exp_avg_sq", nullptr}, {"lr_max", nullptr}, {"weight_sum", nullptr}};
  static constexpr int kStateSlots = 2;
  static constexpr unsigned kEightBitSlots = 1u << kExpAvgSq;  // (its moment; z is a copy of the weights)
  static constexpr int kScalarSlots = Common::kScalarSlots;
  static constexpr bool kCountsSteps = Common::kCountsSteps;
  FASTOPTIM_HD static const char* invalid_combination(const Hyper& h) {
    return h.beta1 == 0 ? "betas[0] must be > 0 (eval() moves the parameters by 1 - 1/beta1)" : nullptr;
  }
  FASTOPTIM_HD static double initial_value(const Hyper&, int slot, std::int64_t) { return Common::start_value(slot, kStateSlots); }
  FASTOPTIM_HD static void next_scalars(const Hyper& h, const StepInfo& s, double* next) { Common::next_scalars(h, s, next); }

  template <class T>
  struct Coeffs {
    parts::ScheduleFreeStep<T> step;
    T beta2, one_minus_beta2, bias_correction2, eps;
    parts::WeightDecay<T> decay;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo& s) {
    return {Common::template step_of<T>(h, h.beta1, s), T(h.beta2), T(1 - h.beta2), T(1 - std::pow(h.beta2, s.step)),
            T(h.eps), parts::WeightDecay<T>::make(h.lr, h.weight_decay, false)};
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    Vec<T, W>& exp_avg_sq = state[kExpAvgSq];
    parts::ema_of_square(exp_avg_sq, g, k.beta2, k.one_minus_beta2);
    Vec<T, W> direction = g / (sqrt(exp_avg_sq / k.bias_correction2) + k.eps);
    k.decay.apply(p, direction);
    k.step.apply(p, state[kZ], direction);
  }
};

struct SGDScheduleFree {
  static constexpr const char* kName = "sgd_schedulefree";
#define FASTOPTIM_FIELDS_sgd_schedulefree(F)                                                         \
  F(lr, 1.0, non_negative) F(momentum, 0.9, unit_interval) F(weight_decay, 0.0, non_negative)         \
  F(warmup_steps, 0, whole) F(r, 0.0, any) F(weight_lr_power, 2.0, any)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_sgd_schedulefree)
  using Common = ScheduleFreeCommon<Hyper>;

  static constexpr core::StateSlot kState[] = {{"z", nullptr}, {"lr_max", nullptr}, {"weight_sum", nullptr}};
  static constexpr int kStateSlots = 1;
  static constexpr int kScalarSlots = Common::kScalarSlots;
  static constexpr bool kCountsSteps = Common::kCountsSteps;
  FASTOPTIM_HD static const char* invalid_combination(const Hyper& h) {
    return h.momentum == 0 ? "Momentum must be between 0 and 1 exclusive: 0.0" : nullptr;
  }
  FASTOPTIM_HD static double initial_value(const Hyper&, int slot, std::int64_t) { return Common::start_value(slot, kStateSlots); }
  FASTOPTIM_HD static void next_scalars(const Hyper& h, const StepInfo& s, double* next) { Common::next_scalars(h, s, next); }

  template <class T>
  struct Coeffs {
    parts::ScheduleFreeStep<T> step;
    parts::WeightDecay<T> decay;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo& s) {
    return {Common::template step_of<T>(h, h.momentum, s), parts::WeightDecay<T>::make(h.lr, h.weight_decay, false)};
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W> g, Vec<T, W>* state, const Coeffs<T>& k) {
    k.decay.apply(p, g);
    k.step.apply(p, state[0], g);
  }
};

}  // namespace fastoptim::rules
