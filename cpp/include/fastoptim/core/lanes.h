// The lane type: W values of T processed together. Built on GCC/Clang vector extensions, so the
// same rule code compiles to AVX-512, AVX2, SSE2 or NEON depending on the translation unit's
// target flags, and to plain scalar code for W == 1 (the tail). Every operation rounds once: the
// compiler may not contract a * b + c on its own (kernels build with -ffp-contract=off), and the
// explicit mul_add is a true fused multiply-add in every path, so the SIMD body and the scalar
// tail give bit-identical results.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "fastoptim/core/device.h"
#include "fastoptim/core/dtypes.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace fastoptim::core {

// Bytes of one SIMD register in the current translation unit. A per-ISA kernel file sets
// FASTOPTIM_VECTOR_BYTES; 0 means "scalar only" (the reference path the tests compare against).
#ifndef FASTOPTIM_VECTOR_BYTES
#if defined(__AVX512F__)
#define FASTOPTIM_VECTOR_BYTES 64
#elif defined(__AVX2__)
#define FASTOPTIM_VECTOR_BYTES 32
#elif defined(__SSE2__) || defined(__aarch64__)
#define FASTOPTIM_VECTOR_BYTES 16
#else
#define FASTOPTIM_VECTOR_BYTES 0
#endif
#endif

template <class T>
constexpr int kLanes = FASTOPTIM_VECTOR_BYTES == 0 ? 1 : int(FASTOPTIM_VECTOR_BYTES / sizeof(T));

#if FASTOPTIM_DEVICE_CODE
// In nvcc's device pass, which has no vector extension: a thread's W values (W is 1 there), with
// the lane-wise operators GCC's vectors have. A comparison gives a lane mask of the same shape.
template <class T, int W>
struct DeviceLanes {
  T lane[W];
  FASTOPTIM_HD T& operator[](int i) { return lane[i]; }
  FASTOPTIM_HD const T& operator[](int i) const { return lane[i]; }
};
#define FASTOPTIM_DEVICE_LANEWISE(op, Result)                                                          \
  template <class T, int W>                                                                            \
  FASTOPTIM_HD inline DeviceLanes<Result, W> operator op(DeviceLanes<T, W> a, DeviceLanes<T, W> b) {   \
    DeviceLanes<Result, W> r;                                                                          \
    for (int i = 0; i < W; ++i) r.lane[i] = a.lane[i] op b.lane[i];                                    \
    return r;                                                                                          \
  }                                                                                                    \
  template <class T, int W, class S, class = std::enable_if_t<std::is_arithmetic_v<S>>>               \
  FASTOPTIM_HD inline DeviceLanes<Result, W> operator op(DeviceLanes<T, W> a, S b) {                   \
    DeviceLanes<Result, W> r;                                                                          \
    for (int i = 0; i < W; ++i) r.lane[i] = a.lane[i] op T(b);                                         \
    return r;                                                                                          \
  }                                                                                                    \
  template <class T, int W, class S, class = std::enable_if_t<std::is_arithmetic_v<S>>>               \
  FASTOPTIM_HD inline DeviceLanes<Result, W> operator op(S a, DeviceLanes<T, W> b) {                   \
    DeviceLanes<Result, W> r;                                                                          \
    for (int i = 0; i < W; ++i) r.lane[i] = T(a) op b.lane[i];                                         \
    return r;                                                                                          \
  }
FASTOPTIM_DEVICE_LANEWISE(+, T)
FASTOPTIM_DEVICE_LANEWISE(-, T)
FASTOPTIM_DEVICE_LANEWISE(*, T)
FASTOPTIM_DEVICE_LANEWISE(/, T)
FASTOPTIM_DEVICE_LANEWISE(<, bool)
FASTOPTIM_DEVICE_LANEWISE(>, bool)
FASTOPTIM_DEVICE_LANEWISE(!=, bool)
FASTOPTIM_DEVICE_LANEWISE(|, bool)
#undef FASTOPTIM_DEVICE_LANEWISE
template <class T, int W>
FASTOPTIM_HD inline DeviceLanes<T, W> operator-(DeviceLanes<T, W> a) {
  for (int i = 0; i < W; ++i) a.lane[i] = -a.lane[i];
  return a;
}
#endif

template <class T, int W>
struct Vec {
#if FASTOPTIM_DEVICE_CODE
  using native = DeviceLanes<T, W>;
#else
  typedef T native __attribute__((vector_size(sizeof(T) * W)));
#endif
  native v;

  Vec() = default;
  FASTOPTIM_HD Vec(native x) : v(x) {}
  FASTOPTIM_HD static Vec broadcast(T x) { return Vec(native{} + x); }

  FASTOPTIM_HD friend Vec operator+(Vec a, Vec b) { return a.v + b.v; }
  FASTOPTIM_HD friend Vec operator-(Vec a, Vec b) { return a.v - b.v; }
  FASTOPTIM_HD friend Vec operator*(Vec a, Vec b) { return a.v * b.v; }
  FASTOPTIM_HD friend Vec operator/(Vec a, Vec b) { return a.v / b.v; }
  FASTOPTIM_HD friend Vec operator+(Vec a, T b) { return a.v + b; }
  FASTOPTIM_HD friend Vec operator-(Vec a, T b) { return a.v - b; }
  FASTOPTIM_HD friend Vec operator*(Vec a, T b) { return a.v * b; }
  FASTOPTIM_HD friend Vec operator/(Vec a, T b) { return a.v / b; }
  FASTOPTIM_HD friend Vec operator*(T a, Vec b) { return a * b.v; }
  FASTOPTIM_HD friend Vec operator-(Vec a) { return -a.v; }
};

// Correctly rounded square root, lane-wise.
template <class T, int W>
FASTOPTIM_HD inline Vec<T, W> sqrt(Vec<T, W> a) {
#if defined(__AVX512F__) && !FASTOPTIM_DEVICE_CODE
  if constexpr (std::is_same_v<T, float> && W == 16) return (typename Vec<T, W>::native)_mm512_sqrt_ps((__m512)a.v);
  if constexpr (std::is_same_v<T, double> && W == 8) return (typename Vec<T, W>::native)_mm512_sqrt_pd((__m512d)a.v);
#endif
#if defined(__AVX__) && !FASTOPTIM_DEVICE_CODE
  if constexpr (std::is_same_v<T, float> && W == 8) return (typename Vec<T, W>::native)_mm256_sqrt_ps((__m256)a.v);
  if constexpr (std::is_same_v<T, double> && W == 4) return (typename Vec<T, W>::native)_mm256_sqrt_pd((__m256d)a.v);
#endif
#if defined(__SSE2__) && !FASTOPTIM_DEVICE_CODE
  if constexpr (std::is_same_v<T, float> && W == 4) return (typename Vec<T, W>::native)_mm_sqrt_ps((__m128)a.v);
  if constexpr (std::is_same_v<T, double> && W == 2) return (typename Vec<T, W>::native)_mm_sqrt_pd((__m128d)a.v);
#endif
#if defined(__aarch64__) && !FASTOPTIM_DEVICE_CODE
  if constexpr (std::is_same_v<T, float> && W == 4) return (typename Vec<T, W>::native)vsqrtq_f32((float32x4_t)a.v);
  if constexpr (std::is_same_v<T, double> && W == 2) return (typename Vec<T, W>::native)vsqrtq_f64((float64x2_t)a.v);
#endif
  Vec<T, W> r;
  for (int i = 0; i < W; ++i) {
#if FASTOPTIM_DEVICE_CODE
    r.v[i] = ::sqrt(a.v[i]);
#else
    r.v[i] = std::sqrt(a.v[i]);
#endif
  }
  return r;
}

// a * b + c rounded once (fused multiply-add), lane-wise. torch's CPU kernels fuse add(alpha),
// addcmul and lerp this way, so the rules do too where torch does; unfused everywhere else.
template <class T, int W>
FASTOPTIM_HD inline Vec<T, W> mul_add(Vec<T, W> a, Vec<T, W> b, Vec<T, W> c) {
  using N [[maybe_unused]] = typename Vec<T, W>::native;
#if defined(__AVX512F__) && !FASTOPTIM_DEVICE_CODE
  if constexpr (std::is_same_v<T, float> && W == 16) return (N)_mm512_fmadd_ps((__m512)a.v, (__m512)b.v, (__m512)c.v);
  if constexpr (std::is_same_v<T, double> && W == 8) return (N)_mm512_fmadd_pd((__m512d)a.v, (__m512d)b.v, (__m512d)c.v);
#endif
#if defined(__FMA__) && !FASTOPTIM_DEVICE_CODE
  if constexpr (std::is_same_v<T, float> && W == 8) return (N)_mm256_fmadd_ps((__m256)a.v, (__m256)b.v, (__m256)c.v);
  if constexpr (std::is_same_v<T, double> && W == 4) return (N)_mm256_fmadd_pd((__m256d)a.v, (__m256d)b.v, (__m256d)c.v);
  if constexpr (std::is_same_v<T, float> && W == 4) return (N)_mm_fmadd_ps((__m128)a.v, (__m128)b.v, (__m128)c.v);
  if constexpr (std::is_same_v<T, double> && W == 2) return (N)_mm_fmadd_pd((__m128d)a.v, (__m128d)b.v, (__m128d)c.v);
#endif
#if defined(__aarch64__) && !FASTOPTIM_DEVICE_CODE
  if constexpr (std::is_same_v<T, float> && W == 4) return (N)vfmaq_f32((float32x4_t)c.v, (float32x4_t)a.v, (float32x4_t)b.v);
  if constexpr (std::is_same_v<T, double> && W == 2) return (N)vfmaq_f64((float64x2_t)c.v, (float64x2_t)a.v, (float64x2_t)b.v);
#endif
  Vec<T, W> r;
  for (int i = 0; i < W; ++i) {
#if FASTOPTIM_DEVICE_CODE
    r.v[i] = ::fma(a.v[i], b.v[i], c.v[i]);
#else
    r.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
#endif
  }
  return r;
}

template <class T, int W>
FASTOPTIM_HD inline Vec<T, W> mul_add(Vec<T, W> a, T b, Vec<T, W> c) {
  return mul_add(a, Vec<T, W>::broadcast(b), c);
}

// Lane-wise comparisons give a mask (a vector of all-ones/zero lanes, or bools on the device);
// select(mask, a, b) takes a where the mask is set, b elsewhere.
template <class T, int W>
FASTOPTIM_HD inline auto less(Vec<T, W> a, Vec<T, W> b) { return a.v < b.v; }
template <class T, int W>
FASTOPTIM_HD inline auto greater(Vec<T, W> a, Vec<T, W> b) { return a.v > b.v; }
template <class T, int W>
FASTOPTIM_HD inline auto is_nan(Vec<T, W> a) { return a.v != a.v; }

template <class Mask, class T, int W>
FASTOPTIM_HD inline Vec<T, W> select(Mask mask, Vec<T, W> a, Vec<T, W> b) {
#if FASTOPTIM_DEVICE_CODE
  for (int i = 0; i < W; ++i)
    if (!mask[i]) a.v[i] = b.v[i];
  return a;
#else
  return mask ? a.v : b.v;
#endif
}

// Lane-wise maximum that propagates NaN from either side, as torch.maximum does.
template <class T, int W>
FASTOPTIM_HD inline Vec<T, W> maximum(Vec<T, W> a, Vec<T, W> b) {
  return select(greater(a, b) | is_nan(a), a, b);
}

// torch.abs: |a|, +0 for either zero, NaN for NaN.
template <class T, int W>
FASTOPTIM_HD inline Vec<T, W> abs(Vec<T, W> a) {
  return maximum(a, -a);
}

// torch.clamp(a, low, high): low below low, high above high, NaN stays NaN.
template <class T, int W>
FASTOPTIM_HD inline Vec<T, W> clamp(Vec<T, W> a, T low, T high) {
  const Vec<T, W> lo = Vec<T, W>::broadcast(low), hi = Vec<T, W>::broadcast(high);
  return select(less(a, lo), lo, select(greater(a, hi), hi, a));
}

// torch.sign: 1 above zero, -1 below, 0 for zero and for NaN.
template <class T, int W>
FASTOPTIM_HD inline Vec<T, W> sign(Vec<T, W> a) {
  const Vec<T, W> zero = Vec<T, W>::broadcast(T(0));
  return select(greater(a, zero), Vec<T, W>::broadcast(T(1)), select(less(a, zero), Vec<T, W>::broadcast(T(-1)), zero));
}

// torch's lerp: fma(w, end - self, self) for |w| < 0.5, fma(w - 1, end - self, end) otherwise.
// The branch is on a scalar, so every lane takes the same one.
template <class T, int W>
FASTOPTIM_HD inline Vec<T, W> lerp(Vec<T, W> self, Vec<T, W> end, T weight) {
  if ((weight < T(0) ? -weight : weight) < T(0.5)) return mul_add(end - self, weight, self);
  return mul_add(end - self, weight - T(1), end);
}

// ---- 16-bit and 8-bit lanes: widened on load, narrowed on store ----------------------------------------

template <class T, int W>
using native_t = typename Vec<T, W>::native;

// W 16-bit values at src, zero-extended to 32-bit lanes (one vpmovzxwd where there is one: GCC
// splits __builtin_convertvector's widening into halves).
template <int W>
FASTOPTIM_HD inline native_t<std::uint32_t, W> load_widened(const std::uint16_t* src) {
#if defined(__AVX512F__) && !FASTOPTIM_DEVICE_CODE
  if constexpr (W == 16) return (native_t<std::uint32_t, W>)_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)src));
#endif
#if defined(__AVX2__) && !FASTOPTIM_DEVICE_CODE
  if constexpr (W == 8) return (native_t<std::uint32_t, W>)_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)src));
#endif
  native_t<std::uint16_t, W> h;
  std::memcpy(&h, src, sizeof h);
  return __builtin_convertvector(h, native_t<std::uint32_t, W>);
}

// The low 16 bits of each lane of u (each lane below 2^16) stored at dst.
template <int W>
FASTOPTIM_HD inline void store_narrowed(std::uint16_t* dst, native_t<std::uint32_t, W> u) {
#if defined(__AVX512F__) && !FASTOPTIM_DEVICE_CODE
  if constexpr (W == 16) {
    _mm256_storeu_si256((__m256i*)dst, _mm512_cvtepi32_epi16((__m512i)u));
    return;
  }
#endif
#if defined(__AVX2__) && !FASTOPTIM_DEVICE_CODE
  if constexpr (W == 8) {  // (packus works per 128-bit half: the permute gathers the two results)
    const __m256i packed = _mm256_packus_epi32((__m256i)u, (__m256i)u);
    _mm_storeu_si128((__m128i*)dst, _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0xD8)));
    return;
  }
#endif
  const auto h = __builtin_convertvector(u, native_t<std::uint16_t, W>);
  std::memcpy(dst, &h, sizeof h);
}

// W bytes at src, zero-extended to 32-bit lanes (one vpmovzxbd where there is one).
template <int W>
FASTOPTIM_HD inline native_t<std::uint32_t, W> load_widened(const std::uint8_t* src) {
#if defined(__AVX512F__) && !FASTOPTIM_DEVICE_CODE
  if constexpr (W == 16) return (native_t<std::uint32_t, W>)_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)src));
#endif
#if defined(__AVX2__) && !FASTOPTIM_DEVICE_CODE
  if constexpr (W == 8) return (native_t<std::uint32_t, W>)_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)src));
#endif
  native_t<std::uint8_t, W> b;
  std::memcpy(&b, src, sizeof b);
  return __builtin_convertvector(b, native_t<std::uint32_t, W>);
}

// The low byte of each lane of u (each lane below 256) stored at dst.
template <int W>
FASTOPTIM_HD inline void store_narrowed(std::uint8_t* dst, native_t<std::uint32_t, W> u) {
#if defined(__AVX512F__) && !FASTOPTIM_DEVICE_CODE
  if constexpr (W == 16) {
    _mm_storeu_si128((__m128i*)dst, _mm512_cvtepi32_epi8((__m512i)u));
    return;
  }
#endif
#if defined(__AVX2__) && !FASTOPTIM_DEVICE_CODE
  if constexpr (W == 8) {  // (each 128-bit half's four low bytes to its bottom, then the halves side by side)
    const __m256i low_bytes = _mm256_shuffle_epi8(
        (__m256i)u, _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1,
                                     -1, -1, -1, -1, -1, -1, -1, -1, -1, -1));
    const __m128i both = _mm_unpacklo_epi32(_mm256_castsi256_si128(low_bytes), _mm256_extracti128_si256(low_bytes, 1));
    _mm_storel_epi64((__m128i*)dst, both);
    return;
  }
#endif
  const auto b = __builtin_convertvector(u, native_t<std::uint8_t, W>);
  std::memcpy(dst, &b, sizeof b);
}

// ---- loads and stores: storage type S <-> compute lanes of T ---------------------------------

template <int W, class S, class T = compute_t<S>>
FASTOPTIM_HD inline Vec<T, W> load(const S* src) {
  Vec<T, W> r;
  if constexpr (std::is_same_v<S, T>) {
    std::memcpy(&r.v, src, sizeof(r.v));
  } else if constexpr (std::is_same_v<S, bf16> && W == 1) {
    r.v[0] = bf16_to_float(*src);
  } else if constexpr (std::is_same_v<S, bf16>) {
    const native_t<std::uint32_t, W> wide = load_widened<W>(reinterpret_cast<const std::uint16_t*>(src)) << 16;
    std::memcpy(&r.v, &wide, sizeof r.v);
  } else {
    static_assert(std::is_same_v<S, f16>);
#if defined(__AVX512F__) && !FASTOPTIM_DEVICE_CODE
    if constexpr (W == 16) {
      r.v = (typename Vec<T, W>::native)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)src));
      return r;
    }
#endif
#if defined(__F16C__) && !FASTOPTIM_DEVICE_CODE
    if constexpr (W == 8) {
      r.v = (typename Vec<T, W>::native)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)src));
      return r;
    }
#endif
    for (int i = 0; i < W; ++i) r.v[i] = f16_to_float(src[i]);
  }
  return r;
}

template <int W, class S, class T>
FASTOPTIM_HD inline void store(S* dst, Vec<T, W> x) {
  if constexpr (std::is_same_v<S, T>) {
    std::memcpy(dst, &x.v, sizeof(x.v));
  } else if constexpr (std::is_same_v<S, bf16> && W == 1) {
    *dst = float_to_bf16(x.v[0]);
  } else if constexpr (std::is_same_v<S, bf16>) {
    // float_to_bf16's rounding, lane-wise.
    using u32v = native_t<std::uint32_t, W>;
    u32v u;
    std::memcpy(&u, &x.v, sizeof u);
    const u32v rounded = (u + (((u >> 16) & 1u) + 0x7FFFu)) >> 16;
    const native_t<std::int32_t, W> is_nan = x.v != x.v;
    store_narrowed<W>(reinterpret_cast<std::uint16_t*>(dst), is_nan ? u32v{} + 0x7FC0u : rounded);
  } else {
    static_assert(std::is_same_v<S, f16>);
#if defined(__AVX512F__) && !FASTOPTIM_DEVICE_CODE
    if constexpr (W == 16) {
      _mm256_storeu_si256((__m256i*)dst, _mm512_cvtps_ph((__m512)x.v, _MM_FROUND_TO_NEAREST_INT));
      return;
    }
#endif
#if defined(__F16C__) && !FASTOPTIM_DEVICE_CODE
    if constexpr (W == 8) {
      _mm_storeu_si128((__m128i*)dst, _mm256_cvtps_ph((__m256)x.v, _MM_FROUND_TO_NEAREST_INT));
      return;
    }
#endif
    for (int i = 0; i < W; ++i) dst[i] = float_to_f16(x.v[i]);
  }
}

// store to bf16 with stochastic rounding (float_to_bf16_stochastic, lane-wise): bits[w] are lane w's
// 16 random bits.
template <int W>
FASTOPTIM_HD inline void store_rounded(bf16* dst, Vec<float, W> x, const std::uint16_t* bits) {
  if constexpr (W == 1) {
    *dst = float_to_bf16_stochastic(x.v[0], bits[0]);
  } else {
    using u32v = native_t<std::uint32_t, W>;
    using i32v = native_t<std::int32_t, W>;
    u32v u;
    std::memcpy(&u, &x.v, sizeof u);
    const i32v finite = (u & 0x7F800000u) != 0x7F800000u;
    const u32v out = (finite ? u + load_widened<W>(bits) : u) >> 16;
    const i32v is_nan = x.v != x.v;
    store_narrowed<W>(reinterpret_cast<std::uint16_t*>(dst), is_nan ? u32v{} + 0x7FC0u : out);
  }
}

}  // namespace fastoptim::core
