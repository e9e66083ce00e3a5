// 8-bit state (state_bits=8): a state tensor stored as one byte per element and one float32 scale
// per block of kCodeBlock elements (tensor-local: block b holds elements [256 b, 256 b + 256), or
// for a per-row rule the same within each row of dim 0: CodeGrid).
// The byte is a small floating-point number relative to the block's largest magnitude M, so it
// keeps its relative precision (within 1/16) across the block's whole range, as bitsandbytes' and
// torchao's dynamic maps do, but is encoded and decoded by integer arithmetic in registers (no
// table lookups) and rounds to the nearest code:
//   - a block with a negative value (a value whose sign bit is set: a signed block; its scale is
//     stored as -M): sign bit, 4-bit exponent e, 3-bit mantissa m: 2^(e-15) (1 + m/8) M, down to 2^-15 M;
//   - a block without one (second moments; its scale is stored as +M): 5-bit exponent, 3-bit
//     mantissa: 2^(e-31) (1 + m/8) M, down to 2^-31 M (a linear 8-bit code would flush every
//     second moment below M/255 to zero and divide by eps).
// A magnitude code of 0 is exactly zero, and takes the magnitudes nearer to zero than to the
// smallest nonzero code.
// The byte layout is the top of the float32 pattern of x / M with the exponent rebiased, so
// encoding is "round the float32 bits to 3 mantissa bits, subtract the bias, clamp".
#pragma once
#include <cstdint>
#include <cstring>

#include "fastoptim/core/device.h"
#include "fastoptim/core/lanes.h"

namespace fastoptim::core {

constexpr std::int64_t kCodeBlock = 256;

// The blocks (and so the scales) of a tensor of `numel` elements; the last may be short.
FASTOPTIM_HD constexpr std::int64_t code_blocks(std::int64_t numel) { return (numel + kCodeBlock - 1) / kCodeBlock; }

// Where a tensor's blocks lie: from its first element on, restarting at each row of `row_length`
// elements (in memory order), so that no block spans two rows. A per-row rule's rows are units of
// their own (AdamP's channels: each row's pass 2 stores its blocks whole); other rules have one row,
// the whole tensor (row_length = numel). Block b is the (b mod blocks_per_row())-th of its row, and
// a row's last block may be short.
struct CodeGrid {
  std::int64_t numel, row_length;

  FASTOPTIM_HD constexpr std::int64_t blocks_per_row() const { return code_blocks(row_length); }
  FASTOPTIM_HD constexpr std::int64_t blocks() const { return row_length > 0 ? numel / row_length * blocks_per_row() : 0; }
  FASTOPTIM_HD constexpr std::int64_t first(std::int64_t block) const {
    return block / blocks_per_row() * row_length + block % blocks_per_row() * kCodeBlock;
  }
  // The block of an element (a shift where the tensor is one row: no division in a hot loop).
  FASTOPTIM_HD constexpr std::int64_t block_of(std::int64_t element) const {
    if (row_length == numel) return element / kCodeBlock;
    return element / row_length * blocks_per_row() + element % row_length / kCodeBlock;
  }
  FASTOPTIM_HD constexpr std::int64_t count(std::int64_t block) const {
    const std::int64_t in_row = block % blocks_per_row() * kCodeBlock;
    return row_length - in_row < kCodeBlock ? row_length - in_row : kCodeBlock;
  }
};

// A byte of 8-bit state (a distinct storage type, so the driver's storage traits can name it).
struct code8 {
  std::uint8_t bits;
};

// The code layout of a block: the float32 exponent (biased, in units of 2^3 codes) of magnitude
// code 0, and the largest magnitude code in use (1.0).
struct CodeLayout {
  std::int32_t bias;          // (127 - exponent bits' range) << 3
  std::int32_t top;           // magnitude code of 1.0
  std::uint32_t sign_mask;
  std::uint32_t least_half;   // float32 bits of half the smallest nonzero code: below it, zero is nearest
};
// Signed blocks: a sign bit and 4 exponent bits; unsigned: 5 exponent bits. (The smallest nonzero
// code, magnitude 1, is 2^-E (1 + 1/8); half of it is 2^-(E+1) (1 + 1/8).) Built in the function, not
// read from constants, so device code can call it.
FASTOPTIM_HD constexpr CodeLayout code_layout(bool is_signed) {
  return is_signed ? CodeLayout{(127 - 15) << 3, 15 << 3, 0x80u, ((127 - 16u) << 23) | (1u << 20)}
                   : CodeLayout{(127 - 31) << 3, 31 << 3, 0u, ((127 - 32u) << 23) | (1u << 20)};
}

// The stored scale of a block whose largest magnitude is `magnitude`: negative for signed blocks.
FASTOPTIM_HD inline float block_scale(float magnitude, bool is_signed) { return is_signed ? -magnitude : magnitude; }

// What decoding a block needs from its stored scale: its layout and its largest magnitude.
struct BlockDecoding {
  CodeLayout layout;
  float magnitude;
};
FASTOPTIM_HD inline BlockDecoding block_decoding(float scale) {
  return {code_layout(scale < 0), scale < 0 ? -scale : scale};
}

// The nearest code to y = x / M (|y| <= 1, up to rounding) in `layout` (ties away from zero): the
// float32 bits of |y| rounded to 3 mantissa bits, rebiased and clamped to [1, top], or 0 below half
// the smallest nonzero code; the sign in bit 7 of a signed nonzero code. NaN and infinities give the top
// code (their block's scale carries them).
FASTOPTIM_HD inline std::uint8_t encode_code8(float y, CodeLayout layout) {
  std::uint32_t u;
  std::memcpy(&u, &y, sizeof u);
  const std::uint32_t magnitude = u & 0x7FFFFFFFu;
  std::int32_t c = std::int32_t((magnitude + 0x80000u) >> 20) - layout.bias;
  c = c < 1 ? 1 : (c > layout.top ? layout.top : c);
  if (magnitude < layout.least_half) return 0;  // (unsigned: zero has one code)
  return std::uint8_t(std::uint32_t(c) | ((u >> 24) & layout.sign_mask));
}

// x / M for a code (0 for a zero magnitude).
FASTOPTIM_HD inline float decode_code8(std::uint8_t code, CodeLayout layout) {
  const std::uint32_t magnitude = code & ~layout.sign_mask;
  if (magnitude == 0) return 0.0f;
  const std::uint32_t u = ((magnitude + std::uint32_t(layout.bias)) << 20) | ((code & layout.sign_mask) << 24);
  float y;
  std::memcpy(&y, &u, sizeof y);
  return y;
}

// The code every element and the scale every block of a tensor filled with `value` get (a state's
// start value: Adagrad's initial_accumulator_value), as encoding the filled tensor gives them: each
// block's largest magnitude is |value|, so each code is value / |value|'s. Zero: code 0, scale 0.
struct ConstantCodes {
  std::uint8_t code;
  float scale;
};
FASTOPTIM_HD inline ConstantCodes constant_codes(float value) {
  std::uint32_t u;
  std::memcpy(&u, &value, sizeof u);
  const bool is_signed = (u >> 31) != 0;
  const float top = is_signed ? -value : value;
  const float inverse = top > 0.0f ? 1.0f / top : 0.0f;
  return {encode_code8(value * inverse, code_layout(is_signed)), block_scale(top, is_signed)};
}

// ---- W codes at a time: the same arithmetic lane-wise ------------------------------------------

// encode_code8 of W values y, stored at dst.
template <int W>
FASTOPTIM_HD inline void store_codes(code8* dst, Vec<float, W> y, CodeLayout layout) {
  if constexpr (W == 1) {
    dst->bits = encode_code8(y.v[0], layout);
  } else {
    using u32v = native_t<std::uint32_t, W>;
    using i32v = native_t<std::int32_t, W>;
    u32v u;
    std::memcpy(&u, &y.v, sizeof u);
    const u32v magnitude = u & 0x7FFFFFFFu;
    i32v c = (i32v)((magnitude + 0x80000u) >> 20) - layout.bias;
    const i32v one = i32v{} + 1, top = i32v{} + layout.top;
    c = c > one ? c : one;  // (the forms a compiler takes for a lane-wise max and min)
    c = c < top ? c : top;
    const u32v code = (u32v)c | ((u >> 24) & layout.sign_mask);
    store_narrowed<W>(&dst->bits, magnitude < layout.least_half ? u32v{} : code);
  }
}

// decode_code8 of the W codes at src.
template <int W>
FASTOPTIM_HD inline Vec<float, W> load_codes(const code8* src, CodeLayout layout) {
  Vec<float, W> y;
  if constexpr (W == 1) {
    y.v[0] = decode_code8(src->bits, layout);
  } else {
    using u32v = native_t<std::uint32_t, W>;
    const u32v code = load_widened<W>(&src->bits);
    const u32v magnitude = code & ~layout.sign_mask;
    const u32v u = ((magnitude + std::uint32_t(layout.bias)) << 20) | ((code & layout.sign_mask) << 24);
    const u32v bits = magnitude == 0u ? u32v{} : u;
    std::memcpy(&y.v, &bits, sizeof bits);
  }
  return y;
}

// The W values of the codes at src, in a block decoded by `block`.
template <int W>
FASTOPTIM_HD inline Vec<float, W> decode_codes(const code8* src, const BlockDecoding& block) {
  return load_codes<W>(src, block.layout) * block.magnitude;
}

// ---- whole blocks ---------------------------------------------------------------------------

// What a block's codes depend on, gathered W values at a time: its largest magnitude and whether a
// value has its sign bit set (a signed block). Kept as bits: those of |x| order as |x| does, and
// NaN's lie above every number's, so one unsigned maximum finds the largest magnitude, or NaN (a
// NaN scale: the block decodes to NaN, as the state would be). Exact, so any ISA and any W agree.
template <int W>
struct BlockExtent {
  native_t<std::uint32_t, W> largest{}, signs{};

  FASTOPTIM_ALWAYS_INLINE void add(Vec<float, W> x) {
    native_t<std::uint32_t, W> u;
    std::memcpy(&u, &x.v, sizeof u);
    const native_t<std::uint32_t, W> magnitude = u & 0x7FFFFFFFu;
    largest = magnitude > largest ? magnitude : largest;
    signs |= u;
  }
  // (the lanes' maximum and sign bits folded into `into`'s first lane)
  template <int V>
  FASTOPTIM_ALWAYS_INLINE void fold_into(BlockExtent<V>& into) const {
    for (int w = 0; w < W; ++w) {
      into.largest[0] = largest[w] > into.largest[0] ? largest[w] : into.largest[0];
      into.signs[0] |= signs[w];
    }
  }
};

// Encodes the `count` (at most kCodeBlock) values of a block whose extent is `extent` at out, W
// lanes at a time; returns the block's stored scale. (The block functions are templates so that
// only the CPU code that calls them instantiates them: nvcc's device pass has no vector lanes.)
template <int W = kLanes<float>>
inline float encode_with_extent(const float* values, std::int64_t count, const BlockExtent<1>& extent, code8* out) {
  float top;
  const std::uint32_t top_bits = extent.largest[0];
  std::memcpy(&top, &top_bits, sizeof top);
  const bool is_signed = (extent.signs[0] >> 31) != 0;
  const float inverse = top > 0.0f ? 1.0f / top : 0.0f;
  const CodeLayout layout = code_layout(is_signed);
  std::int64_t i = 0;
  for (; i + W <= count; i += W) store_codes<W>(out + i, load<W>(values + i) * inverse, layout);
  for (; i < count; ++i) store_codes<1>(out + i, Vec<float, 1>::broadcast(values[i] * inverse), layout);
  return block_scale(top, is_signed);
}

// Encodes `count` (at most kCodeBlock) values as one block at out; returns the block's stored scale.
template <int W = kLanes<float>>
inline float encode_block(const float* values, std::int64_t count, code8* out) {
  BlockExtent<W> lanes;
  BlockExtent<1> extent;
  std::int64_t i = 0;
  for (; i + W <= count; i += W) lanes.add(load<W>(values + i));
  for (; i < count; ++i) extent.add(load<1>(values + i));
  lanes.fold_into(extent);
  return encode_with_extent<W>(values, count, extent, out);
}

// The `count` values of the block at codes with stored scale `scale`, written to out.
inline void decode_block(const code8* codes, float scale, std::int64_t count, float* out) {
  const BlockDecoding block = block_decoding(scale);
  for (std::int64_t i = 0; i < count; ++i) out[i] = decode_codes<1>(codes + i, block).v[0];
}

}  // namespace fastoptim::core
