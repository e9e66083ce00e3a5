// The solvers' vector algebra and dense solves over tensors: checks, then the core's solvers over
// the pieces' raw memory (see fastoptim/aten/solver_ops.h).
#include "fastoptim/aten/solver_ops.h"

#include <string>

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include "checks.h"
#include "fastoptim/solvers/conjugate_gradient.h"
#include "fastoptim/solvers/dense.h"
#include "fastoptim/solvers/space.h"
#include "fastoptim/solvers/two_loop.h"

namespace fastoptim::aten {
namespace {

using fastoptim_isa::Dtype;

// The pieces' sizes and dtype, from the first vector of a call; every vector is checked against it.
struct Cut {
  std::vector<std::int64_t> sizes;
  Dtype dtype = Dtype::f32;
  at::ScalarType scalar_type = at::kFloat;
};

Cut cut_of(at::TensorList vector, const char* op) {
  Cut cut;
  TORCH_CHECK_VALUE(!vector.empty(), op, ": a vector needs at least one piece");
  cut.scalar_type = vector[0].scalar_type();
  TORCH_CHECK_TYPE(cut.scalar_type == at::kFloat || cut.scalar_type == at::kDouble, op,
                   ": the solvers take float32 or float64 tensors, got ", cut.scalar_type);
  cut.dtype = cut.scalar_type == at::kDouble ? Dtype::f64 : Dtype::f32;
  for (const auto& piece : vector) cut.sizes.push_back(piece.numel());
  return cut;
}

// The pieces' pointers, after checking each against the cut.
std::vector<void*> pieces_of(at::TensorList vector, const Cut& cut, const char* name, const char* op) {
  TORCH_CHECK_VALUE(vector.size() == cut.sizes.size(), op, ": ", name, " has ", vector.size(), " pieces, expected ",
                    cut.sizes.size());
  std::vector<void*> pointers;
  pointers.reserve(vector.size());
  for (size_t t = 0; t < vector.size(); ++t) {
    const at::Tensor& piece = vector[t];
    const std::string what = std::string(name) + "[" + std::to_string(t) + "]";
    TORCH_CHECK_VALUE(piece.defined(), op, ": ", what, " is undefined");
    check_plain(piece, what, op);
    TORCH_CHECK_VALUE(piece.device().is_cpu(), op, ": ", what, " must be on the CPU, got ", piece.device());
    TORCH_CHECK_TYPE(piece.scalar_type() == cut.scalar_type, op, ": ", what, " has dtype ", piece.scalar_type(),
                     ", expected ", cut.scalar_type, " (one dtype per vector)");
    TORCH_CHECK_VALUE(piece.numel() == cut.sizes[t], op, ": ", what, " has ", piece.numel(), " elements, expected ",
                      cut.sizes[t]);
    TORCH_CHECK_VALUE(piece.is_contiguous(), op, ": ", what, " must be contiguous");
    pointers.push_back(piece.numel() ? const_cast<void*>(piece.const_data_ptr()) : nullptr);
  }
  return pointers;
}

std::vector<at::Tensor> empty_like(at::TensorList vector) {
  std::vector<at::Tensor> out;
  for (const auto& piece : vector) out.push_back(at::empty_like(piece, at::MemoryFormat::Contiguous));
  return out;
}

}  // namespace

std::pair<int, bool> conjugate_gradient(const TensorApply& apply, at::TensorList rhs, at::TensorList x, bool warm,
                                        double shift, std::int64_t max_iter, double tol) {
  const char* op = "fastoptim conjugate_gradient";
  TORCH_CHECK_VALUE(max_iter >= 0 && max_iter <= INT32_MAX, op, ": max_iter must be in [0, 2**31), got ", max_iter);
  const Cut cut = cut_of(rhs, op);
  auto rhs_p = pieces_of(rhs, cut, "rhs", op), x_p = pieces_of(x, cut, "x", op);
  const std::vector<at::Tensor> r = empty_like(rhs), p = empty_like(rhs);
  auto r_p = pieces_of(r, cut, "r", op), p_p = pieces_of(p, cut, "p", op);
  const solvers::PieceSpace space(cut.sizes.data(), std::int64_t(cut.sizes.size()), cut.dtype);
  // H p's pieces, kept alive until the next product (contiguous copies where apply's are not)
  std::vector<at::Tensor> product;
  std::vector<void*> product_p;
  // (CG multiplies the start x once, then only p)
  const std::vector<at::Tensor> x_tensors(x.begin(), x.end());
  auto matvec = [&](solvers::Vector v) -> solvers::Vector {
    product = apply(v == x_p.data() ? x_tensors : p);
    for (auto& piece : product)
      if (piece.defined() && !piece.is_contiguous()) piece = piece.contiguous();
    product_p = pieces_of(product, cut, "the product apply returned", op);
    return product_p.data();
  };
  const auto result = solvers::conjugate_gradient(space, matvec, shift, solvers::Vector(rhs_p.data()),
                                                  solvers::Vector(x_p.data()), warm, solvers::Vector(r_p.data()),
                                                  solvers::Vector(p_p.data()), int(max_iter), tol);
  return {result.iterations, result.stopped_on_curvature};
}

void two_loop(at::TensorList q, const at::Tensor& s_history, const at::Tensor& y_history,
              const std::vector<double>& rho, const std::vector<std::int64_t>& order) {
  const char* op = "fastoptim two_loop";
  const Cut cut = cut_of(q, op);
  auto q_p = pieces_of(q, cut, "q", op);
  const std::int64_t m = std::int64_t(rho.size());
  std::int64_t d = 0;
  for (const auto size : cut.sizes) d += size;
  for (const auto* history : {&s_history, &y_history}) {
    check_plain(*history, "a history", op);
    TORCH_CHECK_VALUE(history->dim() == 2 && history->size(0) == m && history->size(1) == d && history->is_contiguous() &&
                          history->device().is_cpu() && history->scalar_type() == cut.scalar_type,
                      op, ": the histories must be contiguous CPU tensors (", m, ", ", d, ") of ", cut.scalar_type,
                      ", got ", history->sizes(), " of ", history->scalar_type());
  }
  for (const auto i : order) TORCH_CHECK_VALUE(i >= 0 && i < m, op, ": order names row ", i, " of ", m);
  TORCH_CHECK_VALUE(std::int64_t(order.size()) <= m, op, ": order has ", order.size(), " rows of ", m);
  // Each history row, cut into q's pieces: row i's piece t starts at element i * d + (q's elements before t).
  const std::size_t pieces = cut.sizes.size();
  std::vector<void*> row_pieces(2 * std::size_t(m) * pieces, nullptr);
  std::vector<solvers::Vector> s(static_cast<size_t>(m)), y(static_cast<size_t>(m));
  const std::int64_t element = q[0].element_size();
  for (std::int64_t i = 0; i < m; ++i) {
    void** s_row = &row_pieces[(2 * std::size_t(i)) * pieces];
    void** y_row = s_row + pieces;
    std::int64_t offset = i * d;
    for (std::size_t t = 0; t < pieces; offset += cut.sizes[t], ++t) {
      if (cut.sizes[t] == 0) continue;
      s_row[t] = static_cast<char*>(const_cast<void*>(s_history.const_data_ptr())) + offset * element;
      y_row[t] = static_cast<char*>(const_cast<void*>(y_history.const_data_ptr())) + offset * element;
    }
    s[size_t(i)] = s_row;
    y[size_t(i)] = y_row;
  }
  const solvers::PieceSpace space(cut.sizes.data(), std::int64_t(pieces), cut.dtype);
  solvers::two_loop(space, solvers::Vector(q_p.data()), s.data(), y.data(), rho.data(), order.data(),
                    std::int64_t(order.size()));
}

std::pair<double, double> dots(at::TensorList a, at::TensorList b) {
  const char* op = "fastoptim dots";
  const Cut cut = cut_of(a, op);
  auto a_p = pieces_of(a, cut, "a", op), b_p = pieces_of(b, cut, "b", op);
  const auto out = solvers::PieceSpace(cut.sizes.data(), std::int64_t(cut.sizes.size()), cut.dtype)
                       .dots(solvers::Vector(a_p.data()), solvers::Vector(b_p.data()));
  return {out[0], out[1]};
}

at::Tensor cholesky_solve(const at::Tensor& matrix, const at::Tensor& rhs) {
  const char* op = "fastoptim cholesky_solve";
  check_plain(matrix, "matrix", op);
  check_plain(rhs, "rhs", op);
  const std::int64_t n = matrix.dim() == 2 ? matrix.size(0) : -1;
  TORCH_CHECK_VALUE(n >= 0 && matrix.size(1) == n && rhs.dim() == 1 && rhs.size(0) == n, op,
                    ": expected an n x n matrix and n right-hand sides, got ", matrix.sizes(), " and ", rhs.sizes());
  TORCH_CHECK_VALUE(matrix.device().is_cpu() && rhs.device().is_cpu(), op, ": expected CPU tensors");
  const at::Tensor m = matrix.to(at::kDouble).contiguous(), r = rhs.to(at::kDouble).contiguous();
  at::Tensor x = at::empty({n}, r.options());
  const double jitter = solvers::cholesky_solve(static_cast<const double*>(m.const_data_ptr()), n,
                                                static_cast<const double*>(r.const_data_ptr()),
                                                static_cast<double*>(x.data_ptr()));
  TORCH_CHECK_VALUE(jitter >= 0, op, ": the damped curvature system is not positive definite even with a jitter of "
                    "1e-8 (relative): raise damping");
  return x;
}

}  // namespace fastoptim::aten
