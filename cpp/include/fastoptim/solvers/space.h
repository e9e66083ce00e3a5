// The vector space the solvers work in: vectors of the same pieces (one per parameter), each a
// list of piece pointers, with the fused passes of the active ISA's kernel table.
#pragma once
#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fastoptim/kernels/isa.h"

namespace fastoptim::solvers {

// A vector of the space: piece t at data[t]. Read-only vectors pass the same pointers.
using Vector = void* const*;

class PieceSpace {
 public:
  // sizes[t] elements of `dtype` (f32 or f64) in piece t; `sizes` must outlive the space.
  PieceSpace(const std::int64_t* sizes, std::int64_t count, fastoptim_isa::Dtype dtype)
      : segments_{sizes, count, dtype}, kernels_(fastoptim_isa::active().vector) {}

  std::int64_t count() const { return segments_.count; }

  // {a.b, a.a}
  std::array<double, 2> dots(Vector a, Vector b) const {
    std::array<double, 2> out{};
    kernels_.dots(segments_, a, b, out.data());
    return out;
  }
  double dot(Vector a, Vector b) const { return dots(a, b)[0]; }
  double squared_norm(Vector a) const { return dots(a, a)[1]; }
  // x += alpha p (x may be null); r -= alpha (hp + shift p); returns r.r
  double cg_update(Vector x, Vector r, Vector p, Vector hp, double alpha, double shift) const {
    return kernels_.cg_update(segments_, x, r, p, hp, alpha, shift);
  }
  // y = a y + b u (u may be null); returns w.y (0 when w is null)
  double axpby_dot(Vector y, double a, Vector u, double b, Vector w) const {
    return kernels_.axpby_dot(segments_, y, a, u, b, w);
  }
  void copy(Vector to, Vector from) const {
    for (std::int64_t t = 0; t < segments_.count; ++t)
      if (bytes(t)) std::memcpy(to[t], from[t], bytes(t));
  }
  void zero(Vector x) const {
    for (std::int64_t t = 0; t < segments_.count; ++t)
      if (bytes(t)) std::memset(x[t], 0, bytes(t));
  }

 private:
  std::size_t bytes(std::int64_t t) const {
    return std::size_t(segments_.sizes[t]) * (segments_.dtype == fastoptim_isa::Dtype::f64 ? 8 : 4);
  }

  fastoptim_isa::Segments segments_;
  fastoptim_isa::VectorKernels kernels_;
};

}  // namespace fastoptim::solvers
