// The second-order solvers' vector algebra as fused passes over all pieces of a vector at once
// (one piece per parameter): a conjugate-gradient iteration's x += alpha p, r -= alpha A p and
// ||r||^2 in one pass, the L-BFGS two-loop's axpy and next dot in one pass. Each pass is one
// parallel sweep with the SIMD body and the tail running the same term, and its sums are the
// fixed-block sums of core/reduce.h. Included only by the per-ISA kernel translation unit.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "fastoptim/kernels/isa.h"
#include "fastoptim/core/lanes.h"
#include "fastoptim/core/reduce.h"

namespace fastoptim::kernels {

using core::load;
using core::mul_add;
using core::store;
using core::Vec;
using fastoptim_isa::Segments;

// The N sums of the terms make_term(t) gives for each piece t, added piece by piece in double.
template <class T, int N, class MakeTerm>
std::array<double, N> sum_over_pieces(const Segments& s, MakeTerm make_term) {
  static thread_local std::vector<std::array<T, N>> per_piece_buffer;
  std::vector<std::array<T, N>>& per_piece = per_piece_buffer;
  per_piece.resize(static_cast<std::size_t>(s.count));
  core::per_tensor_sums<T, core::kLanes<T>, N>(
      s.count, [&](std::int64_t t) { return s.sizes[t]; }, make_term, per_piece.data());
  std::array<double, N> total{};
  for (const auto& sums : per_piece)
    for (int n = 0; n < N; ++n) total[std::size_t(n)] += double(sums[std::size_t(n)]);
  return total;
}

template <class T>
struct DotsTerm {  // a.b and a.a
  const T* a;
  const T* b;
  template <int W>
  void at(std::int64_t i, Vec<T, W>* out) const {
    const Vec<T, W> av = load<W>(a + i);
    out[0] = av * load<W>(b + i);
    out[1] = av * av;
  }
};

template <class T>
struct CgUpdateTerm {  // x += alpha p; r -= alpha (hp + shift p); r.r
  T* x;
  T* r;
  const T* p;
  const T* hp;
  T alpha, shift;
  template <int W>
  void at(std::int64_t i, Vec<T, W>* out) const {
    const Vec<T, W> pv = load<W>(p + i);
    if (x) store<W>(x + i, mul_add(pv, alpha, load<W>(x + i)));
    const Vec<T, W> ap = mul_add(pv, shift, load<W>(hp + i));
    const Vec<T, W> rv = mul_add(ap, -alpha, load<W>(r + i));
    store<W>(r + i, rv);
    out[0] = rv * rv;
  }
};

template <class T>
struct AxpbyDotTerm {  // y = a y + b u; w.y
  T* y;
  const T* u;
  const T* w;
  T a, b;
  template <int W>
  void at(std::int64_t i, Vec<T, W>* out) const {
    Vec<T, W> yv = load<W>(y + i) * a;
    if (u) yv = mul_add(load<W>(u + i), b, yv);
    store<W>(y + i, yv);
    out[0] = w ? load<W>(w + i) * yv : Vec<T, W>::broadcast(T(0));
  }
};

template <class T>
const T* piece(const void* const* pieces, std::int64_t t) {
  return pieces ? static_cast<const T*>(pieces[t]) : nullptr;
}
template <class T>
T* piece(void* const* pieces, std::int64_t t) {
  return pieces ? static_cast<T*>(pieces[t]) : nullptr;
}

template <class T>
void dots(const Segments& s, const void* const* a, const void* const* b, double* out) {
  const auto sums = sum_over_pieces<T, 2>(s, [&](std::int64_t t) { return DotsTerm<T>{piece<T>(a, t), piece<T>(b, t)}; });
  out[0] = sums[0];
  out[1] = sums[1];
}

template <class T>
double cg_update(const Segments& s, void* const* x, void* const* r, const void* const* p, const void* const* hp,
                 double alpha, double shift) {
  return sum_over_pieces<T, 1>(s, [&](std::int64_t t) {
    return CgUpdateTerm<T>{piece<T>(x, t), piece<T>(r, t), piece<T>(p, t), piece<T>(hp, t), T(alpha), T(shift)};
  })[0];
}

template <class T>
double axpby_dot(const Segments& s, void* const* y, double a, const void* const* u, double b, const void* const* w) {
  return sum_over_pieces<T, 1>(s, [&](std::int64_t t) {
    return AxpbyDotTerm<T>{piece<T>(y, t), piece<T>(u, t), piece<T>(w, t), T(a), T(b)};
  })[0];
}

// The table entries: the storage dtype chooses the instantiation (the solvers take f32 and f64).
inline void dots_entry(const Segments& s, const void* const* a, const void* const* b, double* out) {
  s.dtype == fastoptim_isa::Dtype::f64 ? dots<double>(s, a, b, out) : dots<float>(s, a, b, out);
}
inline double cg_update_entry(const Segments& s, void* const* x, void* const* r, const void* const* p,
                              const void* const* hp, double alpha, double shift) {
  return s.dtype == fastoptim_isa::Dtype::f64 ? cg_update<double>(s, x, r, p, hp, alpha, shift)
                                              : cg_update<float>(s, x, r, p, hp, alpha, shift);
}
inline double axpby_dot_entry(const Segments& s, void* const* y, double a, const void* const* u, double b,
                              const void* const* w) {
  return s.dtype == fastoptim_isa::Dtype::f64 ? axpby_dot<double>(s, y, a, u, b, w)
                                              : axpby_dot<float>(s, y, a, u, b, w);
}

}  // namespace fastoptim::kernels
