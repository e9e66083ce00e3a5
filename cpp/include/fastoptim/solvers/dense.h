// The solvers' small dense solves, through the active ISA's kernel table (the Eigen code is
// compiled per ISA there).
#pragma once
#include <cstdint>

#include "fastoptim/kernels/isa.h"

namespace fastoptim::solvers {

// x = M^-1 rhs for the n x n symmetric positive definite M (row-major float64, lower triangle
// read) by Cholesky; a relative jitter of at most 1e-8 only when a factorisation fails. Returns the
// jitter used, or -1 when M is not positive definite even with it.
inline double cholesky_solve(const double* matrix, std::int64_t n, const double* rhs, double* x) {
  return fastoptim_isa::active().vector.cholesky_solve(matrix, n, rhs, x);
}

}  // namespace fastoptim::solvers
