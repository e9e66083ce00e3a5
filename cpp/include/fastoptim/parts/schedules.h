// Step-dependent factors, computed per tensor on the host in double.
#pragma once
#include <algorithm>
#include <cmath>

namespace fastoptim::parts {

// Linear warm-up over `warmup` steps, then a half cosine from lr to min_lr ending at step
// `horizon`, held at min_lr afterwards (it never rises again). t counts from 1.
FASTOPTIM_HD inline double warmup_cosine_lr(double t, double lr, double min_lr, double warmup, double horizon) {
  if (t < warmup) return lr * t / warmup;
  if (horizon <= warmup) return lr;
  const double progress = std::min((t - warmup) / (horizon - warmup), 1.0);
  return min_lr + (lr - min_lr) * 0.5 * (1.0 + std::cos(3.141592653589793 * progress));
}

// 1 - t / horizon, never below 0 (0 when horizon is 0): an amplitude that decays to zero and stays there.
FASTOPTIM_HD inline double linear_decay(double t, double horizon) {
  return horizon > 0 ? std::max(0.0, 1.0 - t / horizon) : 0.0;
}

}  // namespace fastoptim::parts
