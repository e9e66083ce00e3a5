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
// 16 bits per element, eight elements per draw: element e takes half e % 2 (the low half first) of
// word (e / 2) % 4 of Philox4x32-10 at counter (e / 8 mod 2^32, e / 8 / 2^32, stream, step) and key
// (seed mod 2^32, seed / 2^32). Like the noise's, the bits depend only on the key and the element.
struct RoundingKey {
  std::uint64_t seed;
  std::uint32_t stream, step;
};

FASTOPTIM_HD inline std::uint16_t rounding_bits(const RoundingKey& key, std::uint64_t element) {
  const std::uint64_t block = element >> 3;
  const auto x = philox4x32_10({std::uint32_t(block), std::uint32_t(block >> 32), key.stream, key.step},
                               {std::uint32_t(key.seed), std::uint32_t(key.seed >> 32)});
  const unsigned j = unsigned(element & 7);
  return std::uint16_t(x[j >> 1] >> (16 * (j & 1)));
}

#if !FASTOPTIM_DEVICE_CODE
// Draws per call of rounding_bits_of_blocks: sixteen side by side in vector lanes, so one call's
// twenty multiplies per round serve 128 elements (one draw per element would cost more than the step).
constexpr int kRoundingBlocks = 16;

// out[j] = rounding_bits(key, 8 * first_block + j) for j < 8 * kRoundingBlocks.
inline void rounding_bits_of_blocks(const RoundingKey& key, std::uint64_t first_block, std::uint16_t* out) {
  using u32v = std::uint32_t __attribute__((vector_size(4 * kRoundingBlocks)));
  using u64v = std::uint64_t __attribute__((vector_size(8 * kRoundingBlocks)));
  u64v block{};
  for (int lane = 0; lane < kRoundingBlocks; ++lane) block[lane] = first_block + std::uint64_t(lane);
  u32v c0 = __builtin_convertvector(block, u32v), c1 = __builtin_convertvector(block >> 32, u32v);
  u32v c2 = u32v{} + key.stream, c3 = u32v{} + key.step;
  std::uint32_t k0 = std::uint32_t(key.seed), k1 = std::uint32_t(key.seed >> 32);
  for (int round = 0; round < 10; ++round) {  // philox4x32_10's rounds, lane-wise
    const u64v product0 = __builtin_convertvector(c0, u64v) * 0xD2511F53u;
    const u64v product1 = __builtin_convertvector(c2, u64v) * 0xCD9E8D57u;
    const u32v next0 = __builtin_convertvector(product1 >> 32, u32v) ^ c1 ^ k0;
    const u32v next2 = __builtin_convertvector(product0 >> 32, u32v) ^ c3 ^ k1;
    c1 = __builtin_convertvector(product1, u32v);
    c3 = __builtin_convertvector(product0, u32v);
    c0 = next0;
    c2 = next2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  const u32v words[4] = {c0, c1, c2, c3};
  for (int lane = 0; lane < kRoundingBlocks; ++lane)
    for (int w = 0; w < 4; ++w) {
      out[8 * lane + 2 * w] = std::uint16_t(words[w][lane]);
      out[8 * lane + 2 * w + 1] = std::uint16_t(words[w][lane] >> 16);
    }
}
#endif

}  // namespace fastoptim::parts
