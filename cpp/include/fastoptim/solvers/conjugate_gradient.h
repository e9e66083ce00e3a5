// Conjugate gradient for (H + shift I) x = rhs with a symmetric H given only by its products, over
// any vector space with the operations of PieceSpace. Each iteration is one product and three
// fused passes (p'Hp with p'p; x, r and r'r; the next p).
#pragma once
#include <cmath>

namespace fastoptim::solvers {

struct CgResult {
  int iterations;
  bool stopped_on_curvature;
};

// Stops when ||r|| <= tol ||rhs|| (the right-hand side, as Somax's CG measures it), after max_iter
// iterations, or on non-positive curvature p'(H + shift I)p <= 0: x is then the current iterate,
// or rhs itself (the steepest-descent direction of the quadratic) when that happens on the first
// iteration of a cold start. x holds the start when `warm` (else it is zeroed) and the solution on
// return; r and p are work vectors. apply(p) returns H p as a vector of the space, valid until
// the next call.
template <class Space, class Vector, class Apply>
CgResult conjugate_gradient(const Space& space, Apply&& apply, double shift, Vector rhs, Vector x, bool warm,
                            Vector r, Vector p, int max_iter, double tol) {
  const double threshold = tol * std::sqrt(space.squared_norm(rhs));
  space.copy(r, rhs);
  double rr;
  if (warm) {
    rr = space.cg_update(nullptr, r, x, apply(x), 1.0, shift);  // r = rhs - (H + shift I) x
  } else {
    space.zero(x);
    rr = space.squared_norm(r);
  }
  space.copy(p, r);
  for (int iteration = 0; iteration < max_iter; ++iteration) {
    if (std::sqrt(rr) <= threshold) return {iteration, false};
    const Vector hp = apply(p);
    const auto [p_hp, p_p] = space.dots(p, hp);
    const double curvature = p_hp + shift * p_p;
    if (curvature <= 0) {
      if (iteration == 0 && !warm) space.copy(x, rhs);
      return {iteration, true};
    }
    const double alpha = rr / curvature;
    const double rr_next = space.cg_update(x, r, p, hp, alpha, shift);
    space.axpby_dot(p, rr_next / rr, r, 1.0, nullptr);  // p = r + beta p
    rr = rr_next;
  }
  return {max_iter, false};
}

}  // namespace fastoptim::solvers
