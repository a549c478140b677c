#pragma once
#include <cstdint>
#include <string>

#include "formats/mxfp4_quantize.h"

namespace moeprep {

// MXFP4 quantization straight from DeepSeek-V3-style block-scaled FP8 E4M3 weights
// (formats/fp8_block_dequant.h), without the float copy in between.
//
// Rows [first_row, first_row + rows) of an FP8 E4M3 [n, k] weight whose block scales are
// scale_inv [ceil(n / block_n), scale_cols] floats (row-major, scale_cols = ceil(k / block_k)),
// quantized to MXFP4 with their error measured: codes through `codes`, scales rows x k/32 at
// `scales`, sums added to `sums`. `fp8` points at row first_row; scale_inv at the grid's row 0.
//
// Bit for bit the result of fp8_block_dequant of those rows followed by
// quantize_mxfp4_rows_measured(floats, rows, k, codes, scales, context, sums), at every SIMD
// level, errors included: a non-finite scale of the rows' blocks and a NaN code throw
// fp8_block_dequant's BadInput (naming `context`; a NaN's row is the absolute row), a product
// that overflows float the quantizer's Inf error, K not a multiple of 32 its shape error. On an
// error `sums` is left as it was.
//
// Where the SIMD level in use is AVX2 or AVX-512 (core/simd_level.h), block_k a multiple of 32
// and K of 32, the work is done per FP8 scale block with tables (mxfp4_quantize_fp8_avx512.cpp
// where the CPU has AVX-512 VBMI, else mxfp4_quantize_fp8_avx2.cpp); elsewhere rows are
// dequantized a few at a time into a buffer for the float quantizer. Each thread keeps its last
// band's tables between calls (a few hundred KB at most), so calls of a few rows cost no more.
void quantize_mxfp4_rows_fp8_measured(const uint8_t* fp8, int64_t first_row, int64_t rows, int64_t k,
                                      const float* scale_inv, int64_t scale_cols, int64_t block_n, int64_t block_k,
                                      const Mxfp4CodeLayout& codes, uint8_t* scales, const std::string& context,
                                      Mxfp4ErrorSums& sums);

// Whether quantize_mxfp4_rows_fp8_measured runs its table loop at the SIMD level in use (for
// benchmarks and tests to say which path they measured).
bool mxfp4_fp8_quantizer_uses_tables();

}  // namespace moeprep
