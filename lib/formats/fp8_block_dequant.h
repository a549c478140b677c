#pragma once
#include <cstdint>
#include <string>

namespace moeprep {

// Rows [first, first + count) of the weight, for a reader that takes it a piece at a time;
// count < 0 means through the last row.
struct Fp8RowRange {
  int64_t first = 0, count = -1;
};

// Block-scaled FP8 weights as DeepSeek-V3 stores them: `weight` [n, k] F8_E4M3 and
// `weight_scale_inv` [ceil(n/block_n), ceil(k/block_k)] (F32, or BF16 in some exports),
// quantization_config.weight_block_size = [block_n, block_k], normally [128, 128]. The last
// row and column of blocks may be partial ("ragged") when n or k is not a multiple.
// Dequantized: out[i][j] = fp8(weight[i][j]) * scale_inv[i / block_n][j / block_k], the
// float32 product (correctly rounded, as the reference computes it before casting).
// With a row range, `weight` is still the whole tensor and `out` receives the range's rows only.
//
// Throws BadInput naming `context` (the tensor): for a scale grid of the wrong shape, a NaN
// weight (row and column given) and a NaN or infinite scale (its block given).
void fp8_block_dequant(const uint8_t* weight, int64_t n, int64_t k, const float* scale_inv,
                       int64_t scale_rows, int64_t scale_cols, float* out,
                       const std::string& context, int64_t block_n = 128, int64_t block_k = 128,
                       Fp8RowRange range = {});

// Its pieces, for readers that take a weight a few rows at a time (the FP8 quantizer):
// - the scales of bands [first_band, last_band] (rows of the grid), each finite or BadInput;
// - rows [first, first + count) dequantized into `out`: `rows` is the weight's row `first`,
//   `scale_inv` the whole grid, whose scales the caller checked; BadInput at a NaN weight;
// - the text of that error.
void fp8_check_scale_bands(const float* scale_inv, int64_t first_band, int64_t last_band, int64_t scale_cols,
                           const std::string& context);
void fp8_dequant_rows(const uint8_t* rows, int64_t first, int64_t count, int64_t k, const float* scale_inv,
                      int64_t scale_cols, int64_t block_n, int64_t block_k, float* out, const std::string& context);
std::string fp8_nan_message(const std::string& context, int64_t row, int64_t column);

// The same with BF16 scales (raw bits), widened to float exactly.
void fp8_block_dequant_bf16_scales(const uint8_t* weight, int64_t n, int64_t k,
                                   const uint16_t* scale_inv, int64_t scale_rows,
                                   int64_t scale_cols, float* out, const std::string& context,
                                   int64_t block_n = 128, int64_t block_k = 128, Fp8RowRange range = {});

}  // namespace moeprep
