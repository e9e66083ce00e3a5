// Schedule-Free (Defazio et al., 2024, "The Road Less Scheduled"), as the schedulefree package
// computes it. The parameter holds y, the point the gradient is taken at; the state z is the base
// iterate, and the average x (what eval() puts in the parameter) is implicit in y and z:
//   lr_t = lr min(1, t / warmup_steps)          (linear warmup, t from 1)
//   lr_max <- max(lr_max, lr_t);  w_t = t^r lr_max^weight_lr_power;  W <- W + w_t;  c = w_t / W (0 if W = 0)
//   y <- lerp(y, z, c) + lr_t (beta (1 - c) - 1) u;   z <- z - lr_t u
// where u is the rule's step direction. lr_max and W are per-tensor scalars (slots 0 and 1 of
// the rule's scalar state; the package keeps them per param group, which is the same numbers
// whenever every parameter has a gradient at every step), and z starts as a copy of y.
#pragma once
#include <cmath>

#include "fastoptim/core/lanes.h"

namespace fastoptim::parts {

struct ScheduleFreeSchedule {
  static constexpr double kLrMaxStart = -1.0;  // below any lr: the first step sets it

  double lr, warmup_steps, r, weight_lr_power;

  FASTOPTIM_HD double lr_at(double step) const { return step - 1 < warmup_steps ? lr * (step / warmup_steps) : lr; }
  FASTOPTIM_HD double weight_at(double step, double lr_max) const {
    return std::pow(step, r) * std::pow(lr_max, weight_lr_power);
  }
  // lr_max and the weight sum after step `step`, from those before it.
  FASTOPTIM_HD void advance(double step, const double* before, double* after) const {
    const double lr_t = lr_at(step);
    after[0] = before[0] < lr_t ? lr_t : before[0];
    after[1] = before[1] + weight_at(step, after[0]);
  }
  // The interpolation weight c of step `step`, given the scalars after it.
  FASTOPTIM_HD double interpolation_at(double step, const double* after) const {
    return after[1] == 0 ? 0.0 : weight_at(step, after[0]) / after[1];
  }
};

template <class T>
struct ScheduleFreeStep {
  T interpolation, y_step, neg_lr;
  bool fresh;  // z does not exist yet: it starts as y

  FASTOPTIM_HD static ScheduleFreeStep make(const ScheduleFreeSchedule& schedule, double beta, double step,
                                            const double* after, bool fresh) {
    const double lr = schedule.lr_at(step), c = schedule.interpolation_at(step, after);
    return {T(c), T(lr * (beta * (1 - c) - 1)), T(-lr), fresh};
  }

  // One step of y (the parameter) and z along the direction u.
  template <int W>
  FASTOPTIM_HD void apply(core::Vec<T, W>& y, core::Vec<T, W>& z, core::Vec<T, W> u) const {
    if (fresh) z = y;
    y = core::mul_add(u, y_step, core::lerp(y, z, interpolation));
    z = core::mul_add(u, neg_lr, z);
  }
};

}  // namespace fastoptim::parts
