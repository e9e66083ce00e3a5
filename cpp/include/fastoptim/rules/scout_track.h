// Scout's running statistics of the updates since the last sync, in constant memory: with
// delta = param - previous (the update the base optimizer just made),
//   window start:  sum_sq = delta^2, min_delta = max_delta = delta
//   otherwise:     sum_sq += delta^2, min_delta = min(min_delta, delta), max_delta = max(max_delta, delta)
//   previous <- param
// At a sync, the mean update is (fast - slow) / k, so these give the std of the k updates and their
// largest deviation from the mean, max(max_delta - mean, mean - min_delta), exactly - where
// holocron's Scout stores all k + 1 snapshots.
#pragma once
#include "fastoptim/rules/rule.h"

namespace fastoptim::rules {

struct ScoutTrack {
  static constexpr const char* kName = "scout_track";
#define FASTOPTIM_FIELDS_scout_track(F) F(window_start, 0, flag)
  FASTOPTIM_HYPER(FASTOPTIM_FIELDS_scout_track)

  enum Slot { kPrevious, kSumSq, kMinDelta, kMaxDelta };
  static constexpr core::StateSlot kState[] = {
      {"scout_previous", nullptr}, {"scout_sum_sq", nullptr}, {"scout_min_delta", nullptr}, {"scout_max_delta", nullptr}};
  static constexpr int kStateSlots = 4;
  static constexpr bool kCountsSteps = false;
  static constexpr bool kReadsGrad = false;
  FASTOPTIM_HD static const char* invalid_combination(const Hyper&) { return nullptr; }

  template <class T>
  struct Coeffs {
    bool window_start;
  };

  template <class T>
  FASTOPTIM_HD static Coeffs<T> prepare(const Hyper& h, const StepInfo&) {
    return {h.window_start != 0};
  }

  template <class T>
  FASTOPTIM_HD static bool writes_param(const Coeffs<T>&) {
    return false;
  }

  template <class T, int W>
  FASTOPTIM_HD static void apply(Vec<T, W>& p, Vec<T, W>, Vec<T, W>* state, const Coeffs<T>& k) {
    const Vec<T, W> delta = p - state[kPrevious];
    if (k.window_start) {
      state[kSumSq] = delta * delta;
      state[kMinDelta] = delta;
      state[kMaxDelta] = delta;
    } else {
      state[kSumSq] = core::mul_add(delta, delta, state[kSumSq]);
      state[kMinDelta] = -core::maximum(-state[kMinDelta], -delta);
      state[kMaxDelta] = core::maximum(state[kMaxDelta], delta);
    }
    state[kPrevious] = p;
  }
};

}  // namespace fastoptim::rules
