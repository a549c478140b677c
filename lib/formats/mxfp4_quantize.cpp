#include "formats/mxfp4_quantize.h"

#include <cmath>
#include <cstring>

#include "core/error.h"

namespace moeprep {
namespace {

constexpr int64_t kBlock = 32;
constexpr uint32_t kF32AbsMask = 0x7fffffffu;
constexpr uint32_t kF32Inf = 0x7f800000u;
constexpr uint16_t kBf16AbsMask = 0x7fff;
constexpr uint16_t kBf16Inf = 0x7f80;

float float_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Scale code from the bit pattern of a block's largest magnitude, given its biased binary
// exponent E (the float exponent field): floor(log2(amax)) = E - 127 for a normal amax, so
// X = E - 129 and the code X + 127 = E - 2. A subnormal amax (E = 0) or any amax below
// 2^-125 needs X < -127, clamped to code 0. Zero blocks get the neutral code 127.
uint8_t scale_code_from_exponent(uint32_t amax_bits, uint32_t biased_exponent) {
  if (amax_bits == 0) return 127;
  return biased_exponent > 2 ? static_cast<uint8_t>(biased_exponent - 2) : 0;
}

// 2^-X for code = X + 127, as a float built from its exponent field 254 - code, which is a
// normal float for every code the quantizer produces (0..252). Multiplying by it is exact
// except where the product is subnormal, and such products (< 2^-126) are far below the
// first rounding boundary 0.25, so every rounding decision below is made on the exact value.
float inverse_scale(uint8_t code) { return float_from_bits(static_cast<uint32_t>(254 - code) << 23); }

// Rounds 32 scaled magnitudes to E2M1 with ties to even and saturation at 6, copies the sign
// bits and packs two codes per byte (first element in the low nibble). Each boundary is a
// midpoint between neighbouring E2M1 values; a tie goes to the code with an even mantissa
// bit, so the comparison is ">" where the lower neighbour is even (0, 1, 2, 4 have codes 0,
// 2, 4, 6) and ">=" where the upper one is. Written as branch-free compares over a fixed
// trip count so that the compiler vectorizes it.
void encode_block(const uint32_t* bits, float inv_scale, uint8_t* packed) {
  uint8_t code[kBlock];
  for (int i = 0; i < kBlock; ++i) {
    float m = float_from_bits(bits[i] & kF32AbsMask) * inv_scale;
    uint32_t c = static_cast<uint32_t>(m > 0.25f) + static_cast<uint32_t>(m >= 0.75f) +
                 static_cast<uint32_t>(m > 1.25f) + static_cast<uint32_t>(m >= 1.75f) +
                 static_cast<uint32_t>(m > 2.5f) + static_cast<uint32_t>(m >= 3.5f) +
                 static_cast<uint32_t>(m > 5.0f);
    code[i] = static_cast<uint8_t>(c | ((bits[i] >> 28) & 8u));
  }
  for (int b = 0; b < kBlock / 2; ++b)
    packed[b] = static_cast<uint8_t>(code[2 * b] | (code[2 * b + 1] << 4));
}

std::string block_position(int64_t row, int64_t block, int64_t element) {
  return "row " + std::to_string(row) + ", block " + std::to_string(block) + " (element " +
         std::to_string(element) + ")";
}

[[noreturn]] void throw_non_finite(const std::string& context, int64_t row, int64_t block,
                                   int64_t element, bool is_nan) {
  throw_bad_input(context + ": MXFP4 quantization: " + (is_nan ? "NaN" : "Inf") + " at " +
                  block_position(row, block, element) + "; MXFP4 cannot encode NaN or Inf");
}

void check_shape(int64_t rows, int64_t k, const std::string& context) {
  if (rows < 0 || k < 0)
    throw_bad_input(context + ": MXFP4 quantization: negative shape [" + std::to_string(rows) +
                    ", " + std::to_string(k) + "]");
  if (k % kBlock != 0)
    throw_bad_input(context + ": MXFP4 quantization needs K (the last dimension) divisible by " +
                    "32, got K=" + std::to_string(k));
}

}  // namespace

uint8_t mxfp4_scale_code_for_amax(float amax) {
  uint32_t u;
  std::memcpy(&u, &amax, 4);
  u &= kF32AbsMask;
  return scale_code_from_exponent(u, u >> 23);
}

void quantize_mxfp4_rows(const float* src, int64_t rows, int64_t k, uint8_t* codes,
                         uint8_t* scales, const std::string& context) {
  check_shape(rows, k, context);
  const int64_t blocks = k / kBlock;
  uint32_t bits[kBlock];
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < blocks; ++b) {
      const float* x = src + r * k + b * kBlock;
      std::memcpy(bits, x, sizeof bits);
      // Magnitude order of non-negative floats is the integer order of their bits, and
      // every NaN or Inf pattern is >= the Inf pattern: one max finds amax and checks.
      uint32_t amax = 0;
      for (int i = 0; i < kBlock; ++i) {
        uint32_t a = bits[i] & kF32AbsMask;
        amax = a > amax ? a : amax;
      }
      if (amax >= kF32Inf) {
        for (int i = 0; i < kBlock; ++i)
          if ((bits[i] & kF32AbsMask) >= kF32Inf)
            throw_non_finite(context, r, b, b * kBlock + i, (bits[i] & kF32AbsMask) > kF32Inf);
      }
      const uint8_t scale = scale_code_from_exponent(amax, amax >> 23);
      scales[r * blocks + b] = scale;
      encode_block(bits, inverse_scale(scale), codes + r * (k / 2) + b * (kBlock / 2));
    }
  }
}

void quantize_mxfp4_rows_bf16(const uint16_t* src, int64_t rows, int64_t k, uint8_t* codes,
                              uint8_t* scales, const std::string& context) {
  check_shape(rows, k, context);
  const int64_t blocks = k / kBlock;
  uint32_t bits[kBlock];
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < blocks; ++b) {
      const uint16_t* x = src + r * k + b * kBlock;
      uint16_t amax = 0;
      for (int i = 0; i < kBlock; ++i) {
        uint16_t a = static_cast<uint16_t>(x[i] & kBf16AbsMask);
        amax = a > amax ? a : amax;
      }
      if (amax >= kBf16Inf) {
        for (int i = 0; i < kBlock; ++i)
          if ((x[i] & kBf16AbsMask) >= kBf16Inf)
            throw_non_finite(context, r, b, b * kBlock + i, (x[i] & kBf16AbsMask) > kBf16Inf);
      }
      // A bf16 is the high half of a float, so its exponent field is bits 7..14 and the
      // widened value is exact.
      const uint8_t scale = scale_code_from_exponent(amax, amax >> 7u);
      scales[r * blocks + b] = scale;
      for (int i = 0; i < kBlock; ++i) bits[i] = static_cast<uint32_t>(x[i]) << 16;
      encode_block(bits, inverse_scale(scale), codes + r * (k / 2) + b * (kBlock / 2));
    }
  }
}

double relative_frobenius_error(const float* ref, const float* approx, size_t n) {
  double diff2 = 0.0;
  double ref2 = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double r = ref[i];
    const double d = static_cast<double>(approx[i]) - r;
    diff2 += d * d;
    ref2 += r * r;
  }
  if (ref2 == 0.0) return diff2 == 0.0 ? 0.0 : INFINITY;
  return std::sqrt(diff2 / ref2);
}

}  // namespace moeprep
