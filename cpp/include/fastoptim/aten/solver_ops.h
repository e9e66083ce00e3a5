// The ATen layer of the second-order solvers: their vector algebra and dense solves over tensors
// (the Python solvers decide; these move the bytes). A vector is a list of CPU tensors, one piece
// per parameter, all float32 or all float64, contiguous; the vectors of one call are cut alike.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

namespace fastoptim::aten {

// apply(p) = H p, piece by piece (tensors shaped like p's pieces).
using TensorApply = std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>&)>;

// Solves (H + shift I) x = rhs by conjugate gradient (solvers/conjugate_gradient.h) into x, which
// holds the start when `warm`. Returns (iterations, stopped on non-positive curvature).
std::pair<int, bool> conjugate_gradient(const TensorApply& apply, at::TensorList rhs, at::TensorList x, bool warm,
                                        double shift, std::int64_t max_iter, double tol);

// q <- H q by the L-BFGS two-loop over the rows order[k] of s_history and y_history (m x q's
// elements, q's dtype; a row is q's pieces end to end) with rho[i] = 1 / s_i'y_i (m values), oldest first.
void two_loop(at::TensorList q, const at::Tensor& s_history, const at::Tensor& y_history,
              const std::vector<double>& rho, const std::vector<std::int64_t>& order);

// {a.b, a.a} over the pieces.
std::pair<double, double> dots(at::TensorList a, at::TensorList b);

// M^-1 rhs (float64) for a symmetric positive definite n x n M by Cholesky (a jitter of at most
// 1e-8 relative only when the factorisation fails); raises when M is not positive definite.
at::Tensor cholesky_solve(const at::Tensor& matrix, const at::Tensor& rhs);

}  // namespace fastoptim::aten
