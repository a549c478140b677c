#pragma once
#include <cstdint>

namespace moeprep {

// dst[c * dst_stride + r] = src[r * src_stride + c] for r < rows, c < cols: a block of a
// row-major bf16 matrix written transposed. `src` is raw bytes of bf16 bits and need not be
// 2-byte aligned (a safetensors map does not promise it); strides are in elements. Used to read
// experts stored inputs-first (transformers' GPT-OSS BF16 layout) as the rows the quantizer
// takes, a few dozen rows at a time so that both sides stay in cache.
void transpose_bf16(const uint8_t* src, int64_t src_stride, int64_t rows, int64_t cols, uint16_t* dst,
                    int64_t dst_stride);

}  // namespace moeprep
