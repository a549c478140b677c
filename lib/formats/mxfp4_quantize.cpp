#include "formats/mxfp4_quantize.h"

#include <cmath>
#include <cstring>

#include "core/error.h"

namespace moeprep {
namespace {

constexpr int64_t kBlock = 32;

// Rounding boundaries: midpoints between neighbouring E2M1 magnitudes. A value exactly on a
// boundary goes to the neighbour whose code has an even mantissa bit (codes 0, 2, 4, 6 =
// 0, 1, 2, 4), so a boundary whose lower neighbour is even is crossed only by a strictly
// larger value (">"), one whose upper neighbour is even already at equality (">=").
constexpr float kBoundary[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
constexpr bool kTieGoesUp[7] = {false, true, false, true, false, true, false};

// The boundaries of one scale, as bit patterns to compare with |x|'s bit pattern. For
// non-negative IEEE values (subnormals included) the integer order of the bit patterns is
// the order of the values, and every boundary times 2^X (X = code - 127, codes 0..252) has
// at most three significant bits and lies within [2^-129, 5 * 2^125], so it is exact in
// float and in bf16: |x| / 2^X > b  <=>  bits(|x|) > bits(b * 2^X), with no rounding
// anywhere. A ">=" boundary is stored minus one so that every test is ">".
struct ScaleBoundaries {
  int32_t f32[7];
  int16_t bf16[7];
};

struct BoundaryTable {
  ScaleBoundaries by_code[256];
  BoundaryTable() {
    for (int code = 0; code <= 252; ++code) {
      for (int i = 0; i < 7; ++i) {
        const float b = std::ldexp(kBoundary[i], code - 127);
        uint32_t u;
        std::memcpy(&u, &b, 4);
        const int32_t below = kTieGoesUp[i] ? 1 : 0;
        by_code[code].f32[i] = static_cast<int32_t>(u) - below;
        by_code[code].bf16[i] = static_cast<int16_t>((u >> 16) - below);
      }
    }
  }
};

const BoundaryTable& boundary_table() {
  static const BoundaryTable table;
  return table;
}

// Scale code from the bit pattern of a block's largest magnitude, given its biased binary
// exponent E (the float exponent field): floor(log2(amax)) = E - 127 for a normal amax, so
// X = E - 129 and the code X + 127 = E - 2. A subnormal amax (E = 0) or any amax below
// 2^-125 needs X < -127, clamped to code 0. Zero blocks get the neutral code 127.
uint8_t scale_code_from_exponent(uint32_t amax_bits, uint32_t biased_exponent) {
  if (amax_bits == 0) return 127;
  return biased_exponent > 2 ? static_cast<uint8_t>(biased_exponent - 2) : 0;
}

// Rounds 32 elements (raw float bits as int32, or bf16 bits as int16) to E2M1 with ties to
// even and saturation at 6 (nothing beyond the last boundary), copies the sign bits and packs
// two codes per byte, the first element in the low nibble. The magnitude code is the number
// of boundaries crossed. Branch-free over a fixed trip count so that the compiler vectorizes
// it; with int16 lanes a vector holds twice as many bf16 elements.
template <class Bits>
void encode_block(const Bits* x, const Bits* boundary, uint8_t* packed) {
  constexpr int kSignToBit3 = static_cast<int>(sizeof(Bits)) * 8 - 4;
  constexpr Bits kAbsMask = static_cast<Bits>(~(Bits(1) << (sizeof(Bits) * 8 - 1)));
  const Bits b0 = boundary[0], b1 = boundary[1], b2 = boundary[2], b3 = boundary[3],
             b4 = boundary[4], b5 = boundary[5], b6 = boundary[6];
  Bits code[kBlock];
  for (int i = 0; i < kBlock; ++i) {
    const Bits a = static_cast<Bits>(x[i] & kAbsMask);
    const Bits c = static_cast<Bits>((a > b0) + (a > b1) + (a > b2) + (a > b3) + (a > b4) +
                                     (a > b5) + (a > b6));
    code[i] = static_cast<Bits>(c | ((x[i] >> kSignToBit3) & 8));
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
  u &= 0x7fffffffu;
  return scale_code_from_exponent(u, u >> 23);
}

void quantize_mxfp4_rows(const float* src, int64_t rows, int64_t k, uint8_t* codes,
                         uint8_t* scales, const std::string& context) {
  check_shape(rows, k, context);
  const int64_t blocks = k / kBlock;
  const BoundaryTable& table = boundary_table();
  int32_t bits[kBlock];
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < blocks; ++b) {
      std::memcpy(bits, src + r * k + b * kBlock, sizeof bits);
      // Every NaN or Inf pattern is >= the Inf pattern, so one max finds amax and checks.
      int32_t amax = 0;
      for (int i = 0; i < kBlock; ++i) {
        const int32_t a = bits[i] & 0x7fffffff;
        amax = a > amax ? a : amax;
      }
      if (amax >= 0x7f800000) {
        for (int i = 0; i < kBlock; ++i)
          if ((bits[i] & 0x7fffffff) >= 0x7f800000)
            throw_non_finite(context, r, b, b * kBlock + i, (bits[i] & 0x7fffffff) > 0x7f800000);
      }
      const auto a = static_cast<uint32_t>(amax);
      const uint8_t scale = scale_code_from_exponent(a, a >> 23);
      scales[r * blocks + b] = scale;
      encode_block(bits, table.by_code[scale].f32, codes + r * (k / 2) + b * (kBlock / 2));
    }
  }
}

void quantize_mxfp4_rows_bf16(const uint16_t* src, int64_t rows, int64_t k, uint8_t* codes,
                              uint8_t* scales, const std::string& context) {
  check_shape(rows, k, context);
  const int64_t blocks = k / kBlock;
  const BoundaryTable& table = boundary_table();
  // int16_t may alias uint16_t; the signed view makes the compares plain signed ones, which
  // is what SIMD integer compares are.
  const int16_t* all = reinterpret_cast<const int16_t*>(src);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int16_t* x = all + r * k + b * kBlock;
      int16_t amax = 0;
      for (int i = 0; i < kBlock; ++i) {
        const int16_t a = static_cast<int16_t>(x[i] & 0x7fff);
        amax = a > amax ? a : amax;
      }
      if (amax >= 0x7f80) {
        for (int i = 0; i < kBlock; ++i)
          if ((x[i] & 0x7fff) >= 0x7f80)
            throw_non_finite(context, r, b, b * kBlock + i, (x[i] & 0x7fff) > 0x7f80);
      }
      // A bf16 is the high half of a float: its exponent field is bits 7..14.
      const auto a = static_cast<uint32_t>(amax);
      const uint8_t scale = scale_code_from_exponent(a, a >> 7);
      scales[r * blocks + b] = scale;
      encode_block(x, table.by_code[scale].bf16, codes + r * (k / 2) + b * (kBlock / 2));
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
