#pragma once
// MXFP4 quantization of matrices stored inputs-first (transformers' GPT-OSS BF16 experts:
// gate_up_proj [E, H, 2I], down_proj [E, I, H]), read as they lie instead of transposed first.
#include <cstdint>
#include <string>

#include "formats/mxfp4_quantize.h"

namespace moeprep {

// Columns [c0, c0 + cols) of a bf16 matrix of k rows stored row-major with a row stride of
// src_stride elements, quantized as the rows of its transpose: output row i is source column
// c0 + i. `src` is the raw bytes of element [0, c0] and may have any byte alignment (a
// safetensors map does not promise two). Codes go through `codes` (row i's blocks as
// Mxfp4CodeLayout says), scales are cols x k/32, and the error sums are added to `sums`.
//
// Bit for bit what transposing those columns (transpose_bf16, formats/bf16_transpose.h) and
// calling quantize_mxfp4_rows_bf16_measured(rows, cols, k, codes, scales, context, sums) gives,
// at every SIMD level, errors included: a NaN or Inf throws its BadInput text, naming the row
// as the output row index within this call (callers put any offset into `context`).
//
// Cost: the AVX-512 loop reads 128 source rows at a time across up to 512 columns, so calls of
// many columns (a whole expert, or 512 at a time, is best) read the rows as streams; a call of a
// few columns reads k cache lines for them all the same (quantize_bench, dev VM, from memory, on
// huge pages: 64 columns a call 4.5 GB/s, 256 6.2-6.3, 1536 6.6-6.8; transpose + rows 2.5-2.6).
// Other levels transpose 16 columns at a time into a buffer for the row quantizer.
void quantize_mxfp4_columns_bf16_measured(const uint8_t* src, int64_t src_stride, int64_t k, int64_t cols,
                                          const Mxfp4CodeLayout& codes, uint8_t* scales, const std::string& context,
                                          Mxfp4ErrorSums& sums);

// The same with each output row's codes at an address of its own: block b of row i at
// row_codes[i] + b * block_stride. For destinations no single row stride describes (the
// tile-shuffled layouts, whose rows come in groups of 16, and gate/up rows interleaved in the
// source that go to two halves), so that one call can still take a whole expert.
void quantize_mxfp4_columns_bf16_measured(const uint8_t* src, int64_t src_stride, int64_t k, int64_t cols,
                                          uint8_t* const* row_codes, int64_t block_stride, uint8_t* scales,
                                          const std::string& context, Mxfp4ErrorSums& sums);

// The same over whole source rows (cols == src_stride), whose bytes (k * cols * 2, a multiple of
// 64 as k is of 32) are also hashed as the stripes 0, 1, ... of `hash` (core/hash.h, Xxh3PieceSums): the
// AVX-512 loop hashes each group of rows once its walk is done with them, while they are cached;
// other levels hash the bytes after quantizing. The piece's stripes past its regular ones are
// left out; the caller finishes it.
void quantize_mxfp4_columns_bf16_measured(const uint8_t* src, int64_t src_stride, int64_t k, int64_t cols,
                                          uint8_t* const* row_codes, int64_t block_stride, uint8_t* scales,
                                          const std::string& context, Mxfp4ErrorSums& sums, Xxh3PieceSums& hash);

}  // namespace moeprep
