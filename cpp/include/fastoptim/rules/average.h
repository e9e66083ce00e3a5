// Weight averaging, the update behind Lookahead, EMA and SWA, in the two forms torch uses:
//   count == 0:  average <- lerp(average, param, weight)       (torch's lerp; AveragedModel's EMA)
//   count > 0:   average <- average + (param - average) / count  (a running mean; AveragedModel's
//                                                                 default SWA average on the CPU)
//   param <- average afterwards when copy_back (Lookahead's sync).
// EMA uses weight = 1 - decay, SWA count = n + 1, Lookahead weight = sync_rate.
#pragma once
#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct Average {
  static constexpr const char* kName = "average";
#define FASTOPTIM_FIELDS_average(F) F(weight, 0.5, unit_closed) F(count, 0.0, non_negative) F(copy_back, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_average)

  static constexpr core::StateSlot kState[] = {{"average", nullptr}};
  static constexpr int kStateSlots = 1;
  static constexpr bool kCountsSteps = false;
  static constexpr bool kReadsGrad = false;
  FASTOPTIM_HD static const char* invalid_combination(const Hyper&) { return nullptr; }

  template <class T>
  struct Coeffs {
    T weight, count;
    bool running_mean, copy_back;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo&) {
    return {T(h.weight), T(h.count), h.count > 0, h.copy_back != 0};
  }

  template <class T>
  FASTOPTIM_HD static bool writes_param(const Coeffs<T>& k) {
    return k.copy_back;
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W>, Vec<T, W>* state, const Coeffs<T>& k) {
    state[0] = k.running_mean ? state[0] + (p - state[0]) / k.count : core::lerp(state[0], p, k.weight);
    if (k.copy_back) p = state[0];
  }
};

}  // namespace fastoptim::rules
