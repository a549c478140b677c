#include "formats/mxfp4_quantize.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/hash.h"
#include "core/simd_level.h"
#include "formats/bf16.h"
#include "formats/mxfp4_quantize_kernels.h"

namespace moeprep {
namespace mxfp4_kernels {
namespace {

// Rounding boundaries: midpoints between neighbouring E2M1 magnitudes. A value exactly on a
// boundary goes to the neighbour whose code has an even mantissa bit (codes 0, 2, 4, 6 =
// 0, 1, 2, 4), so a boundary whose lower neighbour is even is crossed only by a strictly
// larger value (">"), one whose upper neighbour is even already at equality (">=").
constexpr float kBoundary[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
constexpr bool kTieGoesUp[7] = {false, true, false, true, false, true, false};

}  // namespace

// The boundaries of one scale, as bit patterns to compare with |x|'s bit pattern. For
// non-negative IEEE values (subnormals included) the integer order of the bit patterns is
// the order of the values, and every boundary times 2^X (X = code - 127, codes 0..252) has
// at most three significant bits and lies within [2^-129, 5 * 2^125], so it is exact in
// float and in bf16: |x| / 2^X > b  <=>  bits(|x|) > bits(b * 2^X), with no rounding
// anywhere. A ">=" boundary is stored minus one so that every test is ">".
BoundaryTable::BoundaryTable() : by_code{}, scale_value{}, dequantized_bf16{} {
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
  for (int code = 0; code < 255; ++code) scale_value[code] = std::ldexp(1.0f, code - 127);
  scale_value[255] = NAN;
  for (int code = 0; code < 255; ++code)
    for (int i = 0; i < 8; ++i) {
      const float v = kE2m1Magnitude[i] * scale_value[code];
      uint32_t u;
      std::memcpy(&u, &v, 4);
      dequantized_bf16[code][i] = static_cast<uint16_t>(u >> 16);
    }
}

const BoundaryTable& boundary_table() {
  static const BoundaryTable table;
  return table;
}

namespace {

// Rounds 32 elements (raw float bits as int32, or bf16 bits as int16) to E2M1 with ties to
// even and saturation at 6 (nothing beyond the last boundary): the magnitude code is the
// number of boundaries crossed. Packs two codes per byte with the sign bits, the first element
// in the low nibble, and leaves the magnitudes in `magnitude` for the error sums.
template <class Bits>
void encode_block(const Bits* x, const Bits* boundary, uint8_t* packed, uint8_t* magnitude) {
  constexpr int kSignToBit3 = static_cast<int>(sizeof(Bits)) * 8 - 4;
  constexpr Bits kAbsMask = static_cast<Bits>(~(Bits(1) << (sizeof(Bits) * 8 - 1)));
  const Bits b0 = boundary[0], b1 = boundary[1], b2 = boundary[2], b3 = boundary[3],
             b4 = boundary[4], b5 = boundary[5], b6 = boundary[6];
  Bits code[kBlock];
  for (int i = 0; i < kBlock; ++i) {
    const Bits a = static_cast<Bits>(x[i] & kAbsMask);
    const Bits c = static_cast<Bits>((a > b0) + (a > b1) + (a > b2) + (a > b3) + (a > b4) +
                                     (a > b5) + (a > b6));
    magnitude[i] = static_cast<uint8_t>(c);
    code[i] = static_cast<Bits>(c | ((x[i] >> kSignToBit3) & 8));
  }
  for (int b = 0; b < kBlock / 2; ++b)
    packed[b] = static_cast<uint8_t>(code[2 * b] | (code[2 * b + 1] << 4));
}

float magnitude_of(const uint16_t* x, int i) { return bf16_to_float(static_cast<uint16_t>(x[i] & 0x7fff)); }
float magnitude_of(const int16_t* x, int i) { return magnitude_of(reinterpret_cast<const uint16_t*>(x), i); }
float magnitude_of(const int32_t* x, int i) {
  float f;
  std::memcpy(&f, x + i, 4);
  return std::fabs(f);
}

// One block's terms of the row's 32 partial sums, in the order the header fixes.
template <class Source>
void add_block_terms(const Source* x, const uint8_t* magnitude, float scale, float* error, float* reference) {
  if constexpr (sizeof(Source) == 2) {
    // The terms are fused (mxfp4_quantize_kernels.h), and without FMA in the target std::fma is
    // a library call (this loop measured 4.4x slower with it). BF16 sources' d and |x| have at
    // most 11 significant bits, so where a product is a normal float (a rounded product above
    // FLT_MIN means an exact one at least FLT_MIN: rounding is monotonic, FLT_MIN representable)
    // or zero it is exact, and the plain multiply and add give the fused result. A block whose
    // products all are takes that path; the check is free of branches, so the loop vectorizes
    // (1.35x the time of the former unfused loop, against 4.4x).
    float a[kBlock], d[kBlock];
    int inexact = 0;
    for (int i = 0; i < kBlock; ++i) {
      a[i] = magnitude_of(x, i);
      d[i] = kE2m1Magnitude[magnitude[i]] * scale - a[i];
      const float pd = d[i] * d[i], pa = a[i] * a[i];
      inexact |= static_cast<int>(!(pd > FLT_MIN) & (d[i] != 0.0f)) | static_cast<int>(!(pa > FLT_MIN) & (a[i] != 0.0f));
    }
    if (!inexact) {
      for (int i = 0; i < kBlock; ++i) {
        error[i] += d[i] * d[i];
        reference[i] += a[i] * a[i];
      }
      return;
    }
  }
  for (int i = 0; i < kBlock; ++i) {
    const float a = magnitude_of(x, i);
    const float d = kE2m1Magnitude[magnitude[i]] * scale - a;
    error[i] = std::fma(d, d, error[i]);
    reference[i] = std::fma(a, a, reference[i]);
  }
}

void add_row(const float* error, const float* reference, Sums* sums) {
  sums->error += reduce_partial_sums(error);
  sums->reference += reduce_partial_sums(reference);
}

// The portable loops: the default target's compiler output (SSE2 on x86-64).
int64_t quantize_bf16(const uint16_t* src, int64_t rows, int64_t k, const Mxfp4CodeLayout& codes, uint8_t* scales,
                      Sums* sums) {
  const int64_t blocks = k / kBlock;
  const BoundaryTable& table = boundary_table();
  // int16_t may alias uint16_t; the signed view makes the compares plain signed ones, which
  // is what SIMD integer compares are.
  const int16_t* all = reinterpret_cast<const int16_t*>(src);
  uint8_t magnitude[kBlock];
  for (int64_t r = 0; r < rows; ++r) {
    float error[kBlock] = {}, reference[kBlock] = {};
    for (int64_t b = 0; b < blocks; ++b) {
      const int16_t* x = all + r * k + b * kBlock;
      // Every NaN or Inf pattern is >= the Inf pattern, so one max finds amax and checks.
      int16_t amax = 0;
      for (int i = 0; i < kBlock; ++i) {
        const int16_t a = static_cast<int16_t>(x[i] & 0x7fff);
        amax = a > amax ? a : amax;
      }
      if (amax >= 0x7f80) return r * blocks + b;
      // A bf16 is the high half of a float: its exponent field is bits 7..14.
      const auto a = static_cast<uint32_t>(amax);
      const uint8_t scale = scale_code(a, a >> 7);
      scales[r * blocks + b] = scale;
      encode_block(x, table.by_code[scale].bf16, code_block(codes, r, b), magnitude);
      if (sums) add_block_terms(x, magnitude, table.scale_value[scale], error, reference);
    }
    if (sums) add_row(error, reference, sums);
  }
  return -1;
}

int64_t quantize_f32(const float* src, int64_t rows, int64_t k, const Mxfp4CodeLayout& codes, uint8_t* scales,
                     Sums* sums) {
  const int64_t blocks = k / kBlock;
  const BoundaryTable& table = boundary_table();
  int32_t bits[kBlock];
  uint8_t magnitude[kBlock];
  for (int64_t r = 0; r < rows; ++r) {
    float error[kBlock] = {}, reference[kBlock] = {};
    for (int64_t b = 0; b < blocks; ++b) {
      std::memcpy(bits, src + r * k + b * kBlock, sizeof bits);
      int32_t amax = 0;
      for (int i = 0; i < kBlock; ++i) {
        const int32_t a = bits[i] & 0x7fffffff;
        amax = a > amax ? a : amax;
      }
      if (amax >= 0x7f800000) return r * blocks + b;
      const auto a = static_cast<uint32_t>(amax);
      const uint8_t scale = scale_code(a, a >> 23);
      scales[r * blocks + b] = scale;
      encode_block(bits, table.by_code[scale].f32, code_block(codes, r, b), magnitude);
      if (sums) add_block_terms(bits, magnitude, table.scale_value[scale], error, reference);
    }
    if (sums) add_row(error, reference, sums);
  }
  return -1;
}

int64_t scales_bf16(const uint16_t* src, int64_t rows, int64_t k, uint8_t* scales) {
  const int64_t blocks = k / kBlock;
  for (int64_t b = 0; b < rows * blocks; ++b) {
    const uint16_t* x = src + b * kBlock;
    uint16_t amax = 0;
    for (int i = 0; i < kBlock; ++i) {
      const uint16_t a = x[i] & 0x7fff;
      amax = a > amax ? a : amax;
    }
    if (amax >= 0x7f80) return b;
    scales[b] = scale_code(amax, amax >> 7u);
  }
  return -1;
}

int64_t scales_f32(const float* src, int64_t rows, int64_t k, uint8_t* scales) {
  const int64_t blocks = k / kBlock;
  uint32_t bits[kBlock];
  for (int64_t b = 0; b < rows * blocks; ++b) {
    std::memcpy(bits, src + b * kBlock, sizeof bits);
    uint32_t amax = 0;
    for (int i = 0; i < kBlock; ++i) {
      const uint32_t a = bits[i] & 0x7fffffffu;
      amax = a > amax ? a : amax;
    }
    if (amax >= 0x7f800000u) return b;
    scales[b] = scale_code(amax, amax >> 23);
  }
  return -1;
}

}  // namespace

const Kernels& baseline_kernels() {
  static const Kernels k{quantize_bf16, quantize_f32, scales_bf16, scales_f32, nullptr};
  return k;
}

void check_quantize_shape(int64_t rows, int64_t k, const std::string& context) {
  if (rows < 0 || k < 0)
    throw_bad_input(context + ": MXFP4 quantization: negative shape [" + std::to_string(rows) +
                    ", " + std::to_string(k) + "]");
  if (k % kBlock != 0)
    throw_bad_input(context + ": MXFP4 quantization needs K (the last dimension) divisible by " +
                    "32, got K=" + std::to_string(k));
}

void throw_non_finite(const std::string& context, uint32_t magnitude_bits, int64_t row, int64_t element) {
  throw_bad_input(context + ": MXFP4 quantization: " + (magnitude_bits > 0x7f800000u ? "NaN" : "Inf") + " at row " +
                  std::to_string(row) + ", block " + std::to_string(element / kBlock) + " (element " +
                  std::to_string(element) + "); MXFP4 cannot encode NaN or Inf");
}

const Kernels& kernels_in_use() {
  switch (simd_level()) {
#if defined(MOEPREP_X86_SIMD)
    case SimdLevel::Avx512: return avx512_kernels();
    case SimdLevel::Avx2: return avx2_kernels();
#endif
    default: return baseline_kernels();
  }
}

}  // namespace mxfp4_kernels

namespace {

using mxfp4_kernels::kBlock;
using mxfp4_kernels::Sums;

const mxfp4_kernels::Kernels& kernels() { return mxfp4_kernels::kernels_in_use(); }

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
uint32_t float_bits(uint16_t bf16) { return static_cast<uint32_t>(bf16) << 16; }

// The loops stop at the first block holding a NaN or Inf; this names its first such element.
template <class Source>
void throw_if_bad(const Source* src, int64_t k, int64_t bad_block, const std::string& context) {
  if (bad_block < 0) return;
  const int64_t blocks = k / kBlock, row = bad_block / blocks, block = bad_block % blocks;
  for (int64_t i = 0; i < kBlock; ++i) {
    const uint32_t a = float_bits(src[bad_block * kBlock + i]) & 0x7fffffffu;
    if (a >= 0x7f800000u) mxfp4_kernels::throw_non_finite(context, a, row, block * kBlock + i);
  }
  throw_internal(context + ": MXFP4 quantization stopped at a finite block");
}


Mxfp4ErrorSums to_public(const Sums& s) { return {s.error, s.reference}; }

Mxfp4CodeLayout contiguous(uint8_t* codes, int64_t k) { return {codes, k / 2, kBlock / 2}; }

// The error of given codes, in the order the header of the loops fixes.
template <class Source>
Mxfp4ErrorSums error_sums(const Source* src, const uint8_t* codes, const uint8_t* scales, int64_t rows, int64_t k) {
  const auto& table = mxfp4_kernels::boundary_table();
  const int64_t blocks = k / kBlock;
  Sums sums;
  for (int64_t r = 0; r < rows; ++r) {
    float error[kBlock] = {}, reference[kBlock] = {};
    for (int64_t b = r * blocks; b < (r + 1) * blocks; ++b) {
      const float scale = table.scale_value[scales[b]];
      for (int i = 0; i < kBlock; ++i) {
        const uint8_t byte = codes[b * (kBlock / 2) + i / 2];
        const uint8_t magnitude = (i % 2 == 0 ? byte : byte >> 4) & 7;
        float a;
        if constexpr (sizeof(Source) == 2) {
          a = bf16_to_float(static_cast<uint16_t>(src[b * kBlock + i] & 0x7fff));
        } else {
          a = std::fabs(src[b * kBlock + i]);
        }
        const float d = mxfp4_kernels::kE2m1Magnitude[magnitude] * scale - a;
        // Always std::fma: the codes given need not be the quantizer's, whose short differences
        // add_block_terms relies on.
        error[i] = std::fma(d, d, error[i]);
        reference[i] = std::fma(a, a, reference[i]);
      }
    }
    sums.error += mxfp4_kernels::reduce_partial_sums(error);
    sums.reference += mxfp4_kernels::reduce_partial_sums(reference);
  }
  return to_public(sums);
}

}  // namespace

uint8_t mxfp4_scale_code_for_amax(float amax) {
  uint32_t u;
  std::memcpy(&u, &amax, 4);
  u &= 0x7fffffffu;
  return mxfp4_kernels::scale_code(u, u >> 23);
}

void quantize_mxfp4_rows(const float* src, int64_t rows, int64_t k, uint8_t* codes,
                         uint8_t* scales, const std::string& context) {
  mxfp4_kernels::check_quantize_shape(rows, k, context);
  throw_if_bad(src, k, kernels().quantize_f32(src, rows, k, contiguous(codes, k), scales, nullptr), context);
}

void quantize_mxfp4_rows_bf16(const uint16_t* src, int64_t rows, int64_t k, uint8_t* codes,
                              uint8_t* scales, const std::string& context) {
  mxfp4_kernels::check_quantize_shape(rows, k, context);
  throw_if_bad(src, k, kernels().quantize_bf16(src, rows, k, contiguous(codes, k), scales, nullptr), context);
}

void quantize_mxfp4_rows_measured(const float* src, int64_t rows, int64_t k, uint8_t* codes, uint8_t* scales,
                                  const std::string& context, Mxfp4ErrorSums& sums) {
  quantize_mxfp4_rows_measured(src, rows, k, contiguous(codes, k), scales, context, sums);
}

void quantize_mxfp4_rows_bf16_measured(const uint16_t* src, int64_t rows, int64_t k, uint8_t* codes,
                                       uint8_t* scales, const std::string& context, Mxfp4ErrorSums& sums) {
  quantize_mxfp4_rows_bf16_measured(src, rows, k, contiguous(codes, k), scales, context, sums);
}

void quantize_mxfp4_rows_measured(const float* src, int64_t rows, int64_t k, const Mxfp4CodeLayout& codes,
                                  uint8_t* scales, const std::string& context, Mxfp4ErrorSums& sums) {
  mxfp4_kernels::check_quantize_shape(rows, k, context);
  Sums s{sums.error, sums.reference};
  throw_if_bad(src, k, kernels().quantize_f32(src, rows, k, codes, scales, &s), context);
  sums = to_public(s);
}

void quantize_mxfp4_rows_bf16_measured(const uint16_t* src, int64_t rows, int64_t k, const Mxfp4CodeLayout& codes,
                                       uint8_t* scales, const std::string& context, Mxfp4ErrorSums& sums) {
  mxfp4_kernels::check_quantize_shape(rows, k, context);
  Sums s{sums.error, sums.reference};
  throw_if_bad(src, k, kernels().quantize_bf16(src, rows, k, codes, scales, &s), context);
  sums = to_public(s);
}

namespace {

// The hashed row quantizers' one body: with block_out null the loop scrambles as XXH3 does (a
// whole tensor, Xxh3StripeHash), else it stores each block's sums there (a piece of one,
// Xxh3PieceSums).
template <class Hash>
void quantize_bf16_rows_hashed(const uint16_t* src, int64_t rows, int64_t k, const Mxfp4CodeLayout& codes,
                               uint8_t* scales, const std::string& context, Mxfp4ErrorSums& sums, Hash& hash,
                               int64_t first_stripe, uint64_t* block_out) {
  mxfp4_kernels::check_quantize_shape(rows, k, context);
  const int64_t hashed = std::clamp<int64_t>(hash.regular_stripes() - first_stripe, 0, rows * (k / kBlock));
  if (!kernels().quantize_bf16_hashed) {  // no hashing loop at this level: the rows after quantizing
    quantize_mxfp4_rows_bf16_measured(src, rows, k, codes, scales, context, sums);
    hash.accumulate(src, first_stripe, hashed);
    return;
  }
  Sums s{sums.error, sums.reference};
  throw_if_bad(src, k,
               kernels().quantize_bf16_hashed(src, rows, k, codes, scales, &s, hash.accumulators(), first_stripe,
                                              hashed, block_out),
               context);
  sums = to_public(s);
}

}  // namespace

void quantize_mxfp4_rows_bf16_measured(const uint16_t* src, int64_t rows, int64_t k, const Mxfp4CodeLayout& codes,
                                       uint8_t* scales, const std::string& context, Mxfp4ErrorSums& sums,
                                       Xxh3StripeHash& hash, int64_t first_stripe) {
  quantize_bf16_rows_hashed(src, rows, k, codes, scales, context, sums, hash, first_stripe, nullptr);
}

void quantize_mxfp4_rows_bf16_measured(const uint16_t* src, int64_t rows, int64_t k, const Mxfp4CodeLayout& codes,
                                       uint8_t* scales, const std::string& context, Mxfp4ErrorSums& sums,
                                       Xxh3PieceSums& hash, int64_t first_stripe) {
  quantize_bf16_rows_hashed(src, rows, k, codes, scales, context, sums, hash, first_stripe,
                            hash.block_out(first_stripe));
}

bool mxfp4_quantizer_hashes_in_pass() { return kernels().quantize_bf16_hashed != nullptr; }

Mxfp4ErrorSums mxfp4_error_sums(const uint16_t* bf16_src, const uint8_t* codes, const uint8_t* scales,
                                int64_t rows, int64_t k) {
  return error_sums(bf16_src, codes, scales, rows, k);
}

Mxfp4ErrorSums mxfp4_error_sums(const float* src, const uint8_t* codes, const uint8_t* scales, int64_t rows,
                                int64_t k) {
  return error_sums(src, codes, scales, rows, k);
}

void mxfp4_block_scales(const float* src, int64_t rows, int64_t k, uint8_t* scales, const std::string& context) {
  mxfp4_kernels::check_quantize_shape(rows, k, context);
  throw_if_bad(src, k, kernels().scales_f32(src, rows, k, scales), context);
}

void mxfp4_block_scales_bf16(const uint16_t* src, int64_t rows, int64_t k, uint8_t* scales,
                             const std::string& context) {
  mxfp4_kernels::check_quantize_shape(rows, k, context);
  throw_if_bad(src, k, kernels().scales_bf16(src, rows, k, scales), context);
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
