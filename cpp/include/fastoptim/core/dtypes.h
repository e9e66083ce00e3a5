// Storage types the kernels read and write, and their exact scalar conversions to the compute type.
// bf16 rounds to nearest even exactly as c10::BFloat16 does, so fastoptim and torch agree bit for bit
// on what a float becomes when it is stored.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "fastoptim/core/device.h"
#if defined(__CUDACC__)
#include <cuda_fp16.h>
#endif

namespace fastoptim::core {

struct bf16 { std::uint16_t bits; };
struct f16 { std::uint16_t bits; };

// Arithmetic happens in double for double storage and in float for everything else.
template <class S> using compute_t = std::conditional_t<std::is_same_v<S, double>, double, float>;

// The machine epsilon of a storage type (torch.finfo(dtype).eps): the default of a rule whose eps
// follows the parameter's dtype (Adafactor's eps1).
template <class S>
constexpr double machine_epsilon() {
  if constexpr (std::is_same_v<S, double>) return 2.220446049250313e-16;
  else if constexpr (std::is_same_v<S, bf16>) return 0.0078125;
  else if constexpr (std::is_same_v<S, f16>) return 0.0009765625;
  else return 1.1920928955078125e-07;
}

FASTOPTIM_HD inline float bf16_to_float(bf16 x) {
  std::uint32_t u = std::uint32_t(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

FASTOPTIM_HD inline bf16 float_to_bf16(float f) {
  if (f != f) return bf16{0x7FC0};
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const std::uint32_t rounding_bias = ((u >> 16) & 1u) + 0x7FFFu;
  return bf16{static_cast<std::uint16_t>((u + rounding_bias) >> 16)};
}

// f rounded to bf16 stochastically with 16 random bits r: adding r below the kept bits carries into
// them with probability (the dropped bits) / 2^16, so f rounds away from zero with probability equal
// to its distance from the bf16 value toward zero, in units of the bf16 step: the expected result
// is f. Infinities stay; NaN is torch's NaN.
FASTOPTIM_HD inline bf16 float_to_bf16_stochastic(float f, std::uint16_t r) {
  if (f != f) return bf16{0x7FC0};
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7F800000u) == 0x7F800000u) return bf16{static_cast<std::uint16_t>(u >> 16)};
  return bf16{static_cast<std::uint16_t>((u + r) >> 16)};
}

// _Float16 conversions are IEEE round-to-nearest-even, the same as F16C's vcvtps2ph with
// _MM_FROUND_TO_NEAREST_INT, so the scalar tail and the SIMD body store identical bits. On aarch64
// (where g++ 12 has no _Float16 in C++) the ACLE's __fp16 is the same IEEE half with the same rounding;
// on a CUDA device, cuda_fp16's round-to-nearest-even conversions.
#if FASTOPTIM_DEVICE_CODE
#elif defined(__aarch64__)
using half_t = __fp16;
#else
using half_t = _Float16;
#endif

FASTOPTIM_HD inline float f16_to_float(f16 x) {
#if FASTOPTIM_DEVICE_CODE
  return __half2float(__ushort_as_half(x.bits));
#else
  half_t h;
  std::memcpy(&h, &x.bits, sizeof h);
  return static_cast<float>(h);
#endif
}

FASTOPTIM_HD inline f16 float_to_f16(float f) {
#if FASTOPTIM_DEVICE_CODE
  return f16{__half_as_ushort(__float2half_rn(f))};
#else
  half_t h = static_cast<half_t>(f);
  f16 out;
  std::memcpy(&out.bits, &h, sizeof h);
  return out;
#endif
}

}  // namespace fastoptim::core
