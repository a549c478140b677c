#pragma once
// Internal to lib/formats: the column quantizer's vector loop (mxfp4_quantize_columns_avx512.cpp),
// called by mxfp4_quantize_columns.cpp, which checks arguments and words the errors.
#include <cstdint>

#include "formats/mxfp4_quantize_kernels.h"

namespace moeprep {
class Xxh3PieceSums;  // core/hash.h
}

namespace moeprep::mxfp4_kernels {

#if defined(MOEPREP_X86_SIMD)
// quantize_mxfp4_columns_bf16_measured's contract without the checks: false where it met a NaN
// or Inf (the outputs are then partly written and `sums` unchanged or partly added to; the
// caller throws).
// With `hash` (cols == src_stride), the source rows of each group of slabs are accumulated
// into it once the walk's last chunk of columns has read them, while they are still cached.
bool quantize_bf16_columns_avx512(const uint8_t* src, int64_t src_stride, int64_t k, int64_t cols,
                                  uint8_t* const* row_codes, int64_t block_stride, uint8_t* scales, Sums* sums,
                                  Xxh3PieceSums* hash);
#endif

}  // namespace moeprep::mxfp4_kernels
