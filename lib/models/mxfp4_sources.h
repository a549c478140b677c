#pragma once
// Canonical MXFP4 sources made by quantizing expert rows (models/expert_rows.h): the blocks
// (W13Weight/W2Weight, U8 [E, N, K/32, 16]) and the E8M0 scales (W13Scale/W2Scale, U8
// [E, N, K/32]). Both quantize the same rows with the same rule, so the scales the weight path
// chose are the scales the scale path writes; the scale path only finds each block's maximum.
#include <cstdint>

#include "models/adapter.h"
#include "models/expert_rows.h"

namespace moeprep::models {

// "quantize_mxfp4" for BF16 rows, "dequantize_fp8_block+quantize_mxfp4" for FP8 ones.
std::string quantize_transform_name(const ExpertRows& rows);

// Blocks; assemble() also adds each slice's quantization error to `quantization`.
CanonicalSource mxfp4_blocks_source(ExpertRowsPtr rows);
// Scales.
CanonicalSource mxfp4_scales_source(ExpertRowsPtr rows);

// Sum of squared differences between the dequantized MXFP4 rows and the source rows, and the
// sum of squares of the source (rows x k values; codes/scales as quantize_mxfp4_rows writes).
struct SquaredError {
  double error = 0, reference = 0;
};
SquaredError mxfp4_squared_error(const uint16_t* bf16_rows, const uint8_t* codes, const uint8_t* scales, int64_t rows,
                                 int64_t k);
SquaredError mxfp4_squared_error(const float* rows_f32, const uint8_t* codes, const uint8_t* scales, int64_t rows,
                                 int64_t k);

// The scale codes alone (rows x k/32), equal to those quantize_mxfp4_rows(_bf16) chooses; a NaN
// or Inf throws the same BadInput as the quantizer, naming `context`.
void mxfp4_scales_only(const uint16_t* bf16_rows, int64_t rows, int64_t k, uint8_t* scales, const std::string& context);
void mxfp4_scales_only(const float* rows_f32, int64_t rows, int64_t k, uint8_t* scales, const std::string& context);

}  // namespace moeprep::models
