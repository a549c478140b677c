#include "formats/fp8_block_dequant.h"

#include <cmath>
#include <vector>

#include "core/error.h"
#include "formats/bf16.h"
#include "formats/fp8_e4m3.h"

namespace moeprep {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void check_shape(int64_t n, int64_t k, int64_t scale_rows, int64_t scale_cols, const std::string& context,
                 int64_t block_n, int64_t block_k) {
  if (n < 0 || k < 0 || block_n <= 0 || block_k <= 0)
    throw_bad_input(context + ": FP8 block dequantization: bad shape [" + std::to_string(n) +
                    ", " + std::to_string(k) + "] or block [" + std::to_string(block_n) + ", " +
                    std::to_string(block_k) + "]");
  const int64_t want_rows = ceil_div(n, block_n);
  const int64_t want_cols = ceil_div(k, block_k);
  if (scale_rows != want_rows || scale_cols != want_cols)
    throw_bad_input(context + ": weight_scale_inv has shape [" + std::to_string(scale_rows) +
                    ", " + std::to_string(scale_cols) + "], expected [" +
                    std::to_string(want_rows) + ", " + std::to_string(want_cols) +
                    "] for weight [" + std::to_string(n) + ", " + std::to_string(k) +
                    "] with blocks of [" + std::to_string(block_n) + ", " +
                    std::to_string(block_k) + "]");
}

}  // namespace

std::string fp8_nan_message(const std::string& context, int64_t row, int64_t column) {
  return context + ": NaN in FP8 E4M3 weight at row " + std::to_string(row) + ", column " + std::to_string(column);
}

void fp8_check_scale_bands(const float* scale_inv, int64_t first_band, int64_t last_band, int64_t scale_cols,
                           const std::string& context) {
  for (int64_t sr = first_band; sr <= last_band; ++sr)
    for (int64_t sc = 0; sc < scale_cols; ++sc)
      if (!std::isfinite(scale_inv[sr * scale_cols + sc]))
        throw_bad_input(context + ": weight_scale_inv block [" + std::to_string(sr) + ", " + std::to_string(sc) +
                        "] is not finite");
}

void fp8_dequant_rows(const uint8_t* rows, int64_t first, int64_t count, int64_t k, const float* scale_inv,
                      int64_t scale_cols, int64_t block_n, int64_t block_k, float* out, const std::string& context) {
  const float* table = kFp8E4m3ToFloat.data();
  for (int64_t i = first; i < first + count; ++i) {
    const uint8_t* w = rows + (i - first) * k;
    const float* s = scale_inv + (i / block_n) * scale_cols;
    float* dst = out + (i - first) * k;
    // One OR per element keeps the loop branch-free; the position is searched only when a
    // NaN is present.
    uint8_t nan_seen = 0;
    for (int64_t c0 = 0; c0 < k; c0 += block_k) {
      const float scale = s[c0 / block_k];
      const int64_t c1 = c0 + block_k < k ? c0 + block_k : k;
      for (int64_t j = c0; j < c1; ++j) {
        nan_seen |= static_cast<uint8_t>(fp8_e4m3_is_nan(w[j]));
        dst[j] = table[w[j]] * scale;
      }
    }
    if (nan_seen)
      for (int64_t j = 0; j < k; ++j)
        if (fp8_e4m3_is_nan(w[j])) throw_bad_input(fp8_nan_message(context, i, j));
  }
}

void fp8_block_dequant(const uint8_t* weight, int64_t n, int64_t k, const float* scale_inv,
                       int64_t scale_rows, int64_t scale_cols, float* out,
                       const std::string& context, int64_t block_n, int64_t block_k, Fp8RowRange range) {
  check_shape(n, k, scale_rows, scale_cols, context, block_n, block_k);
  fp8_check_scale_bands(scale_inv, 0, scale_rows - 1, scale_cols, context);
  const int64_t first = range.first, last = range.count < 0 ? n : range.first + range.count;
  if (first < 0 || first > last || last > n)
    throw_internal(context + ": FP8 row range [" + std::to_string(first) + ", " + std::to_string(last) +
                   ") outside the " + std::to_string(n) + " rows");
  fp8_dequant_rows(weight + first * k, first, last - first, k, scale_inv, scale_cols, block_n, block_k, out, context);
}

void fp8_block_dequant_bf16_scales(const uint8_t* weight, int64_t n, int64_t k,
                                   const uint16_t* scale_inv, int64_t scale_rows,
                                   int64_t scale_cols, float* out, const std::string& context,
                                   int64_t block_n, int64_t block_k, Fp8RowRange range) {
  // The grid is small (one scale per block_n x block_k weights): widened once.
  check_shape(n, k, scale_rows, scale_cols, context, block_n, block_k);
  std::vector<float> widened(static_cast<size_t>(scale_rows * scale_cols));
  for (size_t i = 0; i < widened.size(); ++i) widened[i] = bf16_to_float(scale_inv[i]);
  fp8_block_dequant(weight, n, k, widened.data(), scale_rows, scale_cols, out, context, block_n, block_k, range);
}

}  // namespace moeprep
