// The small dense solves of the batch-space solvers (EGN's n x n Gauss-Newton system, SWM-NG's
// b x b Woodbury system), over Eigen in float64. Included only by the per-ISA kernel translation
// unit, which renames Eigen's namespace per ISA (see CMakeLists) so that Eigen's inline code
// compiled for one ISA is never linked into a caller running on another.
#pragma once
#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace fastoptim::kernels {

// See fastoptim_isa::VectorKernels::cholesky_solve. The jitter is relative to the mean absolute
// diagonal, and is only tried when a factorisation fails: a matrix that is positive definite in
// exact arithmetic but not in floating point.
inline double cholesky_solve(const double* matrix, std::int64_t n, const double* rhs, double* x) {
  using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Map<const RowMajor> m(matrix, n, n);
  const double scale =
      std::max(n > 0 ? m.diagonal().cwiseAbs().mean() : 0.0, std::numeric_limits<double>::min());
  for (const double jitter : {0.0, 1e-12, 1e-10, 1e-8}) {
    RowMajor shifted = m.triangularView<Eigen::Lower>();
    shifted.diagonal().array() += jitter * scale;
    const Eigen::LLT<RowMajor, Eigen::Lower> factor(shifted);
    if (factor.info() != Eigen::Success) continue;
    Eigen::Map<Eigen::VectorXd>(x, n) = factor.solve(Eigen::Map<const Eigen::VectorXd>(rhs, n));
    return jitter;
  }
  return -1.0;
}

}  // namespace fastoptim::kernels
