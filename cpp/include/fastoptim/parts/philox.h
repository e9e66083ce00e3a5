// Counter-based Gaussian noise: Philox4x32-10 (Salmon et al., 2011, "Parallel random numbers: as
// easy as 1, 2, 3") and one Box-Muller draw per element. A draw depends only on (seed, stream,
// step, element index), never on thread count, ISA or iteration order, so a resumed run, every
// kernel and a reference in plain PyTorch draw the same numbers.
//   key = (seed mod 2^32, seed / 2^32);  counter = (index mod 2^32, index / 2^32, stream, step)
//   (x0, x1, ...) = Philox4x32-10(counter, key)
//   u1 = (x0 + 1) / 2^32 in (0, 1],  u2 = x1 / 2^32 in [0, 1)
//   n = sqrt(-2 ln u1) cos(2 pi u2)       (in double, then rounded to the compute type)
#pragma once
#include <array>
#include <cmath>
#include <cstdint>

#include "fastoptim/core/lanes.h"

namespace fastoptim::parts {

FASTOPTIM_HD inline std::array<std::uint32_t, 4> philox4x32_10(std::array<std::uint32_t, 4> counter, std::array<std::uint32_t, 2> key) {
  constexpr std::uint64_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr std::uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const std::uint64_t product0 = kMul0 * counter[0], product1 = kMul1 * counter[2];
    counter = {std::uint32_t(product1 >> 32) ^ counter[1] ^ key[0], std::uint32_t(product1),
               std::uint32_t(product0 >> 32) ^ counter[3] ^ key[1], std::uint32_t(product0)};
    key = {key[0] + kWeyl0, key[1] + kWeyl1};
  }
  return counter;
}

// A counter word (a stream key or a step) from a value kept as a float or double: a value outside
// [0, 2**32), which only a damaged or hand-edited state holds, becomes 0 instead of the undefined
// behaviour of the conversion.
FASTOPTIM_HD inline std::uint32_t counter_word(double value) {
  return value >= 0.0 && value < 4294967296.0 ? std::uint32_t(value) : 0u;
}

FASTOPTIM_HD inline double standard_normal(std::uint64_t seed, std::uint32_t stream, std::uint32_t step, std::uint64_t index) {
  const auto x = philox4x32_10({std::uint32_t(index), std::uint32_t(index >> 32), stream, step},
                               {std::uint32_t(seed), std::uint32_t(seed >> 32)});
  constexpr double kTwoToMinus32 = 1.0 / 4294967296.0;
  constexpr double kTwoPi = 6.283185307179586;
  const double u1 = (double(x[0]) + 1.0) * kTwoToMinus32;
  const double u2 = double(x[1]) * kTwoToMinus32;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2);
}

// The draws of the W elements first, first + 1, ... (a scalar loop: the noise is on only for the
// first steps of a run, while its amplitude decays).
template <class T, int W>
FASTOPTIM_HD inline core::Vec<T, W> standard_normals(std::uint64_t seed, std::uint32_t stream, std::uint32_t step,
                                        std::int64_t first) {
  core::Vec<T, W> out;
  for (int w = 0; w < W; ++w) out.v[w] = T(standard_normal(seed, stream, step, std::uint64_t(first + w)));
  return out;
}

}  // namespace fastoptim::parts

namespace fastoptim::parts {

// ---- random bits for stochastic rounding ------------------------------------------------------
// 16 bits per element, from Philox4x32-10 with key (seed mod 2^32, seed / 2^32) at counter
// (b mod 2^32, b / 2^32, stream, step). Elements come in groups of 128 (group e / 128), each group
// from 16 draws b = 16 (e / 128) + l, l < 16: element q = e mod 128 of its group takes draw
// l = q mod 16, word (q / 16) mod 4, half q / 64 (the low half first). So the draws run side by side
// in 16 SIMD lanes and each word of them gives 16 consecutive elements their bits in order. Like the
// noise's, the bits depend only on the key and the element.
struct RoundingKey {
  std::uint64_t seed;
  std::uint32_t stream, step;
};

constexpr std::int64_t kRoundingGroup = 128;

FASTOPTIM_HD inline std::uint16_t rounding_bits(const RoundingKey& key, std::uint64_t element) {
  const unsigned q = unsigned(element % kRoundingGroup);
  const std::uint64_t draw = 16 * (element / kRoundingGroup) + (q % 16);
  const auto x = philox4x32_10({std::uint32_t(draw), std::uint32_t(draw >> 32), key.stream, key.step},
                               {std::uint32_t(key.seed), std::uint32_t(key.seed >> 32)});
  return std::uint16_t(x[(q / 16) % 4] >> (16 * (q / 64)));
}

#if !FASTOPTIM_DEVICE_CODE
// hi:lo = a * m lane-wise (32 x 32 -> 64 bits). With AVX2/AVX-512, vpmuludq on the even and on the
// odd lanes, each result put back in its lane (GCC's 64-bit vector product takes twice as many
// instructions).
template <int L>
FASTOPTIM_ALWAYS_INLINE void multiply_wide(core::native_t<std::uint32_t, L> a, std::uint32_t m,
                                                 core::native_t<std::uint32_t, L>& hi, core::native_t<std::uint32_t, L>& lo) {
  using V = core::native_t<std::uint32_t, L>;
#if defined(__AVX512F__)
  if constexpr (L == 16) {
    const __m512i factor = _mm512_set1_epi32(int(m));
    const __m512i even = _mm512_mul_epu32((__m512i)a, factor);
    const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64((__m512i)a, 32), factor);
    hi = (V)_mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
    lo = (V)_mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
    return;
  }
#endif
#if defined(__AVX2__)
  if constexpr (L == 8) {
    const __m256i factor = _mm256_set1_epi32(int(m));
    const __m256i even = _mm256_mul_epu32((__m256i)a, factor);
    const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64((__m256i)a, 32), factor);
    hi = (V)_mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
    lo = (V)_mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
    return;
  }
#endif
  using V64 = core::native_t<std::uint64_t, L>;
  const V64 product = __builtin_convertvector(a, V64) * m;
  hi = __builtin_convertvector(product >> 32, V);
  lo = __builtin_convertvector(product, V);
}

// out[q] = rounding_bits(key, kRoundingGroup * group + q) for q < kRoundingGroup: the group's 16
// draws in lanes of the widest vector this translation unit has (16, 8 or 4 at a time).
inline void rounding_bits_of_group(const RoundingKey& key, std::uint64_t group, std::uint16_t* out) {
  constexpr int L = FASTOPTIM_VECTOR_BYTES >= 64 ? 16 : FASTOPTIM_VECTOR_BYTES >= 32 ? 8 : 4;
  using V = core::native_t<std::uint32_t, L>;
  V lane{};
  for (int l = 0; l < L; ++l) lane[l] = std::uint32_t(l);
  for (int part = 0; part < 16 / L; ++part) {
    const std::uint64_t first = 16 * group + std::uint64_t(part * L);  // (a multiple of L: the lanes never carry)
    V c0 = std::uint32_t(first) + lane, c1 = V{} + std::uint32_t(first >> 32), c2 = V{} + key.stream, c3 = V{} + key.step;
    std::uint32_t k0 = std::uint32_t(key.seed), k1 = std::uint32_t(key.seed >> 32);
    for (int round = 0; round < 10; ++round) {  // philox4x32_10's rounds, lane-wise
      V hi0, lo0, hi1, lo1;
      multiply_wide<L>(c0, 0xD2511F53u, hi0, lo0);
      multiply_wide<L>(c2, 0xCD9E8D57u, hi1, lo1);
      c0 = hi1 ^ c1 ^ k0;
      c1 = lo1;
      c2 = hi0 ^ c3 ^ k1;
      c3 = lo0;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    const V words[4] = {c0, c1, c2, c3};
    for (int w = 0; w < 4; ++w) {
      core::store_narrowed<L>(out + 16 * w + part * L, words[w] & 0xFFFFu);
      core::store_narrowed<L>(out + 64 + 16 * w + part * L, words[w] >> 16);
    }
  }
}
#endif

}  // namespace fastoptim::parts
