#pragma once
#include <cstdint>
#include <string>

namespace moeprep {

class Xxh3StripeHash;  // core/hash.h
class Xxh3PieceSums;

// MXFP4 quantization following the conversion the OCP Microscaling Formats (MX) v1.0
// specification recommends for FP32 input:
//
//   * A block is 32 consecutive elements of one row (along K, the last dimension).
//   * Shared exponent X = floor(log2(amax)) - emax_elem, where amax is the block's largest
//     magnitude and emax_elem = 2 is the largest exponent of E2M1 (6 = 1.5 * 2^2).
//     X is clamped to the E8M0 range [-127, 127] and stored as the code X + 127, so the
//     NaN code 255 is never produced. For float32 inputs the clamp only acts at the low end
//     (amax < 2^-125); the largest finite float gives X = 125, code 252.
//   * Every element is divided by 2^X and rounded to the nearest E2M1 value (0, 0.5, 1,
//     1.5, 2, 3, 4, 6) with ties to even, "even" meaning the code whose mantissa bit is 0
//     (so 0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4), and
//     magnitudes above 6 saturate to 6 (they occur because amax / 2^X lies in [4, 8)).
//
// Choices the spec leaves open, fixed here:
//   * An all-zero block (every element +0 or -0) has no amax exponent; it gets scale code
//     127 (2^0), the neutral scale, so its dequantized values are exactly zero.
//   * The sign bit is always copied: -0.0, and any negative value that rounds to zero,
//     encodes as code 8 (-0), as IEEE rounding would give and as torchao's and Triton's MX
//     casts do. Dequantization turns it into -0.0f, which compares equal to 0.
//   * NaN or +-Inf anywhere in a block is an error (BadInput naming the tensor, the row and
//     the block): MXFP4 has no encoding for them and silently saturating would hide a
//     corrupt source.
//
// Output layout (the GPT-OSS checkpoint's): codes are rows x k/2 bytes, element 2b of a row
// in the low nibble of byte b and element 2b+1 in the high nibble; scales are rows x k/32
// E8M0 bytes. `context` names the tensor in error messages. K must be a multiple of 32.
void quantize_mxfp4_rows(const float* src, int64_t rows, int64_t k, uint8_t* codes,
                         uint8_t* scales, const std::string& context);

// The same quantization of bfloat16 input (raw bits), bit for bit equal to converting to
// float first and calling quantize_mxfp4_rows. This is the hot path when converting BF16
// checkpoints: the block maximum and the non-finite check are one integer max over the
// 16-bit patterns, and the per-element rounding is branch-free compares that vectorize.
// All the functions below run the widest loops the CPU has (core/simd_level.h); the output
// does not depend on which.
void quantize_mxfp4_rows_bf16(const uint16_t* src, int64_t rows, int64_t k, uint8_t* codes,
                              uint8_t* scales, const std::string& context);

// Sums of squares over quantized rows, in double: error = sum of (dequantized - source)^2,
// reference = sum of source^2, so that sqrt(error / reference) is the relative Frobenius
// error. Every row is summed in float in one fixed order (formats/mxfp4_quantize_kernels.h)
// and added in double, rows in order, so the sums are the same on every CPU and for every
// SIMD level, and quantizing a matrix in several row ranges into one Mxfp4ErrorSums gives the
// sums of one call over all of it.
struct Mxfp4ErrorSums {
  double error = 0, reference = 0;
};

// quantize_mxfp4_rows(_bf16) that also measures its error, in the same pass over `src`,
// adding its rows to `sums`.
void quantize_mxfp4_rows_measured(const float* src, int64_t rows, int64_t k, uint8_t* codes, uint8_t* scales,
                                  const std::string& context, Mxfp4ErrorSums& sums);
void quantize_mxfp4_rows_bf16_measured(const uint16_t* src, int64_t rows, int64_t k, uint8_t* codes,
                                       uint8_t* scales, const std::string& context, Mxfp4ErrorSums& sums);

// Where the _measured quantizers below put the codes when the caller lays them out itself (as
// the tile-shuffled weight layout does): the 16 bytes of block b of row r (elements 32b to
// 32b + 31, packed as above) go to data + r * row_stride + b * block_stride. Rows written one
// after the other are {codes, k / 2, 16}. Scales stay rows x k/32.
struct Mxfp4CodeLayout {
  uint8_t* data = nullptr;
  int64_t row_stride = 0, block_stride = 0;
};
void quantize_mxfp4_rows_measured(const float* src, int64_t rows, int64_t k, const Mxfp4CodeLayout& codes,
                                  uint8_t* scales, const std::string& context, Mxfp4ErrorSums& sums);
void quantize_mxfp4_rows_bf16_measured(const uint16_t* src, int64_t rows, int64_t k, const Mxfp4CodeLayout& codes,
                                       uint8_t* scales, const std::string& context, Mxfp4ErrorSums& sums);

// The bf16 _measured quantizer that also hashes its rows (rows * k * 2 bytes) as XXH3 stripes
// first_stripe, first_stripe + 1, ... of `hash` (core/hash.h; a block of 32 elements is one
// stripe), up to hash.regular_stripes(): the tensor's bytes hashed without a pass of their own.
// Where the loops in use cannot (mxfp4_quantizer_hashes_in_pass() false), the stripes are
// accumulated after quantizing, portably and slowly; the digest is the same either way.
void quantize_mxfp4_rows_bf16_measured(const uint16_t* src, int64_t rows, int64_t k, const Mxfp4CodeLayout& codes,
                                       uint8_t* scales, const std::string& context, Mxfp4ErrorSums& sums,
                                       Xxh3StripeHash& hash, int64_t first_stripe);
// The same for a piece of a tensor that other calls, on other threads, hash too: its stripes
// from first_stripe (counted from the piece's start) summed block by block into `hash`
// (Xxh3PieceSums), which Xxh3BlockFold puts together with the other pieces' in order.
void quantize_mxfp4_rows_bf16_measured(const uint16_t* src, int64_t rows, int64_t k, const Mxfp4CodeLayout& codes,
                                       uint8_t* scales, const std::string& context, Mxfp4ErrorSums& sums,
                                       Xxh3PieceSums& hash, int64_t first_stripe);
bool mxfp4_quantizer_hashes_in_pass();

// The error of codes and scales that quantize_mxfp4_rows(_bf16) wrote for `src`, measured in
// a separate pass: the same sums as the _measured quantizers give (the reference for them).
Mxfp4ErrorSums mxfp4_error_sums(const uint16_t* bf16_src, const uint8_t* codes, const uint8_t* scales,
                                int64_t rows, int64_t k);
Mxfp4ErrorSums mxfp4_error_sums(const float* src, const uint8_t* codes, const uint8_t* scales, int64_t rows,
                                int64_t k);

// Only the scale codes (rows x k/32) the quantizers choose, from each block's maximum; NaN or
// Inf throws the quantizers' BadInput.
void mxfp4_block_scales(const float* src, int64_t rows, int64_t k, uint8_t* scales, const std::string& context);
void mxfp4_block_scales_bf16(const uint16_t* src, int64_t rows, int64_t k, uint8_t* scales,
                             const std::string& context);

// The E8M0 scale code quantize_mxfp4_rows chooses for a block whose largest magnitude is
// `amax` (finite, >= 0). Exposed so that callers and tests can state the rule directly.
uint8_t mxfp4_scale_code_for_amax(float amax);

// ||approx - ref||_2 / ||ref||_2 over n values, accumulated in double. 0 when both are all
// zero; +Inf when ref is all zero and approx is not.
double relative_frobenius_error(const float* ref, const float* approx, size_t n);

}  // namespace moeprep
