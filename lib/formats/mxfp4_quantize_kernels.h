#pragma once
// Internal to lib/formats: the MXFP4 quantization loops, one set per instruction-set level
// (mxfp4_quantize.cpp: portable C++, mxfp4_quantize_avx2.cpp, mxfp4_quantize_avx512.cpp),
// and what they share. mxfp4_quantize.cpp checks arguments, picks a set by simd_level() and
// turns a failure into an error message; the loops only compute.
//
// Every set must give the same codes, scales and error sums bit for bit. For the sums that
// fixes the order of the float operations: per row, 32 float partial sums, partial sum j taking
// the elements j, j + 32, j + 64, ... in that order (one per block), each term one fused
// multiply-add (sum = fma(d, d, sum), rounded once: vfmadd in the vector loops; in the portable
// ones std::fma, or the plain multiply and add where the product is exact, see add_block_terms
// in mxfp4_quantize.cpp), reduced by reduce_partial_sums below; row sums are added in double,
// rows in order.
//
// Why fused, and what it changes. A fused term costs one instruction where d * d and the add
// cost two (measured: the AVX-512 BF16 quantizer with sums 7.0 -> 6.4 ms per 66 MB). For BF16
// sources it changes nothing but where squares underflow: |x| has 8 significant bits and the
// dequantized value v * 2^X is a multiple of 2^(X-1) below 8 * 2^X; an element rounded to a
// nonzero code has |x| >= 2^(X-2), so d = v * 2^X - |x| is a multiple of 2^(X-9) with |d| <=
// 2 * 2^X, i.e. at most 11 significant bits, and d is exact in float; an element rounded to
// zero has d = -|x|. d * d (at most 22 bits) and |x| * |x| (16 bits) are then exact unless their
// lowest bit falls below 2^-149, the step of the float subnormals (blocks whose maximum is under
// about 2^-63, or elements under about 2^-67), and a fused add of an exact product equals the
// separate multiply and add. So the manifest's quantization_rel_error of a
// BF16 checkpoint is what it was with separate operations; F32 sources (FP8 checkpoints) have
// 24-bit d, whose squares are inexact, and their sums moved in the last bits.
#include <cstdint>
#include <string>

#include "formats/mxfp4_quantize.h"

namespace moeprep::mxfp4_kernels {

constexpr int64_t kBlock = 32;

// The source 4 KiB ahead of the block being quantized is asked for (prefetcht0), a line per
// block, by the AVX-512 and AVX2 BF16 row loops. On the device host's Xeon those loops waited on
// memory without it (presumably its hardware prefetchers stop at each 4 KiB page and keep few
// lines in flight). Paired medians of 5-7 converts pinned to 2 cores (twelfth session), AVX-512:
// Qwen3 0.348 -> 0.293 s wall and 0.617 -> 0.485 s CPU, Mixtral 0.409 -> 0.283 and 0.729 ->
// 0.468; 8 and 16 KiB ahead the same within the spread; the dev VM's EPYC gained 0.01 s CPU
// (2-3%). AVX2, capped there: Qwen3 0.802 -> 0.702 s CPU and 0.449 -> 0.404 s wall, Mixtral
// -0.028 s CPU paired (that loop is more bound by its arithmetic). A prefetch never faults, so
// the last blocks' hints past the source's end are harmless.
constexpr int64_t kPrefetchBytes = 4096;

// Per E8M0 code: the E2M1 rounding boundaries times 2^(code - 127) as bit patterns (see
// mxfp4_quantize.cpp), each made a strict ">" test.
struct ScaleBoundaries {
  int32_t f32[7];
  int16_t bf16[7];
};
struct BoundaryTable {
  ScaleBoundaries by_code[256];
  // 2^(code - 127) as a float (codes 0..254), the dequantization scale.
  float scale_value[256];
  // The dequantized magnitudes kE2m1Magnitude[i] * 2^(code - 127) as bf16 bit patterns (codes
  // 0..254): exact, since each has at most two significant bits and lies within the float
  // range (the smallest, 0.5 * 2^-127, is a float subnormal whose low 16 bits are zero).
  alignas(16) uint16_t dequantized_bf16[256][8];
  BoundaryTable();
};
const BoundaryTable& boundary_table();

// E2M1 magnitudes by code 0..7.
constexpr float kE2m1Magnitude[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

// Scale code from a block maximum's bit pattern and its biased exponent field (float: bits
// 23..30, bf16: bits 7..14): floor(log2(amax)) - 2 + 127 = E - 2, clamped at 0; a zero block
// gets the neutral 127.
inline uint8_t scale_code(uint32_t amax_bits, uint32_t biased_exponent) {
  if (amax_bits == 0) return 127;
  return biased_exponent > 2 ? static_cast<uint8_t>(biased_exponent - 2) : 0;
}

// The fixed pairwise reduction of one row's 32 partial sums (element index mod 32).
inline float reduce_partial_sums(const float s[32]) {
  float t[16];
  for (int j = 0; j < 16; ++j) t[j] = s[j] + s[j + 16];
  for (int j = 0; j < 8; ++j) t[j] = t[j] + t[j + 8];
  for (int j = 0; j < 4; ++j) t[j] = t[j] + t[j + 4];
  t[0] = t[0] + t[2];
  t[1] = t[1] + t[3];
  return t[0] + t[1];
}

// Where the 16 code bytes of block `block` of row `row` go.
inline uint8_t* code_block(const Mxfp4CodeLayout& c, int64_t row, int64_t block) {
  return c.data + row * c.row_stride + block * c.block_stride;
}

// Sums of squares over the quantized rows: (dequantized - source)^2 and source^2.
struct Sums {
  double error = 0, reference = 0;
};

// One set of loops. Each returns -1, or the index (row * blocks + block) of the first block
// holding a NaN or Inf, where it stopped (outputs of the blocks before it are written). The
// quantizers add to *sums when it is not null.
struct Kernels {
  int64_t (*quantize_bf16)(const uint16_t* src, int64_t rows, int64_t k, const Mxfp4CodeLayout& codes,
                           uint8_t* scales, Sums* sums);
  int64_t (*quantize_f32)(const float* src, int64_t rows, int64_t k, const Mxfp4CodeLayout& codes, uint8_t* scales,
                          Sums* sums);
  int64_t (*scales_bf16)(const uint16_t* src, int64_t rows, int64_t k, uint8_t* scales);
  int64_t (*scales_f32)(const float* src, int64_t rows, int64_t k, uint8_t* scales);
  // quantize_bf16 with sums that also accumulates its first `hashed` blocks as XXH3 stripes
  // first_stripe, first_stripe + 1, ... into `acc` (core/hash.h, Xxh3StripeHash): a block is
  // the 64 bytes the loop loads anyway. With block_out null, the accumulators are scrambled after
  // each 16th stripe, as XXH3 does; else they are stored to block_out, the next 8 words, and
  // zeroed there instead (Xxh3PieceSums). Null where a level has no such loop.
  int64_t (*quantize_bf16_hashed)(const uint16_t* src, int64_t rows, int64_t k, const Mxfp4CodeLayout& codes,
                                  uint8_t* scales, Sums* sums, uint64_t* acc, int64_t first_stripe, int64_t hashed,
                                  uint64_t* block_out);
};

const Kernels& baseline_kernels();
#if defined(MOEPREP_X86_SIMD)
const Kernels& avx2_kernels();
const Kernels& avx512_kernels();
#endif
// The loops of the SIMD level in use (core/simd_level.h), for every quantizer entry point.
const Kernels& kernels_in_use();

// The quantizers' errors, worded once for every entry point (row and column quantizers alike):
// a shape they cannot take (BadInput), and the NaN or Inf at element `element` of row `row`,
// given its float bit pattern's magnitude (>= 0x7f800000).
void check_quantize_shape(int64_t rows, int64_t k, const std::string& context);
[[noreturn]] void throw_non_finite(const std::string& context, uint32_t magnitude_bits, int64_t row, int64_t element);

}  // namespace moeprep::mxfp4_kernels
