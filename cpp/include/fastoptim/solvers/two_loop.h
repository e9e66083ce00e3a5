// The L-BFGS two-loop recursion, q <- H_k q, over any vector space with the operations of
// PieceSpace: each axpy is fused with the dot the next step needs, so m pairs cost 2m + 1 passes.
#pragma once
#include <cstdint>
#include <vector>

namespace fastoptim::solvers {

// The pairs (s[i], y[i]) with rho[i] = 1 / s[i]'y[i], taken in `order` (indices into s, y, rho,
// oldest first, `count` of them); H_0 = gamma I with gamma = s'y / y'y of the newest pair. With
// no pair, q is left as it is (H_0 = I).
template <class Space, class Vector>
void two_loop(const Space& space, Vector q, const Vector* s, const Vector* y, const double* rho, const std::int64_t* order,
              std::int64_t count) {
  if (count == 0) return;
  const std::int64_t newest = order[count - 1];
  std::vector<double> alpha(static_cast<std::size_t>(count));
  double s_q = space.dot(s[newest], q);
  for (std::int64_t k = count - 1; k >= 0; --k) {  // newest to oldest
    const std::int64_t i = order[k];
    alpha[std::size_t(k)] = rho[i] * s_q;
    s_q = space.axpby_dot(q, 1.0, y[i], -alpha[std::size_t(k)], k > 0 ? s[order[k - 1]] : nullptr);
  }
  const auto [y_s, y_y] = space.dots(y[newest], s[newest]);
  double y_q = space.axpby_dot(q, y_s / y_y, nullptr, 0.0, y[order[0]]);  // q = gamma q
  for (std::int64_t k = 0; k < count; ++k) {  // oldest to newest
    const std::int64_t i = order[k];
    const double beta = rho[i] * y_q;
    y_q = space.axpby_dot(q, 1.0, s[i], alpha[std::size_t(k)] - beta, k + 1 < count ? y[order[k + 1]] : nullptr);
  }
}

}  // namespace fastoptim::solvers
