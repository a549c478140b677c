#include "formats/mxfp4_quantize_columns.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/hash.h"
#include "core/simd_level.h"
#include "formats/bf16_transpose.h"
#include "formats/mxfp4_quantize_columns_kernels.h"
#include "formats/mxfp4_quantize_kernels.h"

namespace moeprep {
namespace {

using mxfp4_kernels::kBlock;
using mxfp4_kernels::Sums;

// Columns the portable path transposes at a time: 16 x k bf16 (64 KiB at k = 2048) stays in L2.
constexpr int64_t kPieceColumns = 16;

uint16_t element(const uint8_t* src, int64_t src_stride, int64_t row, int64_t col) {
  uint16_t v;
  std::memcpy(&v, src + (row * src_stride + col) * 2, 2);
  return v;
}

// The loops only report that a NaN or Inf was met; the row quantizer names the first one in its
// row-major order of output rows, which here is the first column holding one and its first
// such element along k. Only runs on the way to an error.
[[noreturn]] void throw_first_non_finite(const uint8_t* src, int64_t src_stride, int64_t k, int64_t cols,
                                         const std::string& context) {
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t r = 0; r < k; ++r) {
      const uint32_t a = static_cast<uint32_t>(element(src, src_stride, r, c) & 0x7fff) << 16;
      if (a >= 0x7f800000u) mxfp4_kernels::throw_non_finite(context, a, c, r);
    }
  throw_internal(context + ": MXFP4 column quantization stopped without a NaN or Inf");
}

// Levels without a column loop: a few columns at a time transposed into rows for the row loop,
// a row per call (each row has its own code address). Sums added in row order across calls are
// those of one call over all the rows.
bool quantize_by_transposing(const uint8_t* src, int64_t src_stride, int64_t k, int64_t cols,
                             uint8_t* const* row_codes, int64_t block_stride, uint8_t* scales, Sums* sums) {
  const auto& kernels = mxfp4_kernels::kernels_in_use();
  const int64_t blocks = k / kBlock;
  std::vector<uint16_t> rows(static_cast<size_t>(kPieceColumns * k));
  for (int64_t c = 0; c < cols; c += kPieceColumns) {
    const int64_t n = std::min(kPieceColumns, cols - c);
    transpose_bf16(src + c * 2, src_stride, k, n, rows.data(), k);
    for (int64_t i = 0; i < n; ++i)
      if (kernels.quantize_bf16(rows.data() + i * k, 1, k, {row_codes[c + i], 0, block_stride},
                                scales + (c + i) * blocks, sums) >= 0)
        return false;
  }
  return true;
}

void quantize_columns_hashed(const uint8_t* src, int64_t src_stride, int64_t k, int64_t cols,
                             uint8_t* const* row_codes, int64_t block_stride, uint8_t* scales,
                             const std::string& context, Mxfp4ErrorSums& sums, Xxh3PieceSums* hash) {
  mxfp4_kernels::check_quantize_shape(cols, k, context);
  if (cols == 0 || k == 0) return;
  Sums s{sums.error, sums.reference};
  bool finite;
#if defined(MOEPREP_X86_SIMD)
  if (simd_level() == SimdLevel::Avx512) {
    finite = mxfp4_kernels::quantize_bf16_columns_avx512(src, src_stride, k, cols, row_codes, block_stride, scales, &s,
                                                         hash);
    hash = nullptr;  // hashed in the loop
  } else
#endif
    finite = quantize_by_transposing(src, src_stride, k, cols, row_codes, block_stride, scales, &s);
  if (!finite) throw_first_non_finite(src, src_stride, k, cols, context);
  if (hash) hash->accumulate(src, 0, std::min<int64_t>(hash->regular_stripes(), k * cols * 2 / 64));
  sums = {s.error, s.reference};
}

}  // namespace

void quantize_mxfp4_columns_bf16_measured(const uint8_t* src, int64_t src_stride, int64_t k, int64_t cols,
                                          uint8_t* const* row_codes, int64_t block_stride, uint8_t* scales,
                                          const std::string& context, Mxfp4ErrorSums& sums) {
  quantize_columns_hashed(src, src_stride, k, cols, row_codes, block_stride, scales, context, sums, nullptr);
}

void quantize_mxfp4_columns_bf16_measured(const uint8_t* src, int64_t src_stride, int64_t k, int64_t cols,
                                          uint8_t* const* row_codes, int64_t block_stride, uint8_t* scales,
                                          const std::string& context, Mxfp4ErrorSums& sums, Xxh3PieceSums& hash) {
  // (Whole rows are whole stripes: k is a multiple of 32.)
  if (cols != src_stride)
    throw_internal(context + ": a hashed column call takes whole rows (" + std::to_string(cols) + " columns of " +
                   std::to_string(src_stride) + ")");
  quantize_columns_hashed(src, src_stride, k, cols, row_codes, block_stride, scales, context, sums, &hash);
}

void quantize_mxfp4_columns_bf16_measured(const uint8_t* src, int64_t src_stride, int64_t k, int64_t cols,
                                          const Mxfp4CodeLayout& codes, uint8_t* scales, const std::string& context,
                                          Mxfp4ErrorSums& sums) {
  mxfp4_kernels::check_quantize_shape(cols, k, context);
  std::vector<uint8_t*> row_codes(static_cast<size_t>(cols));
  for (int64_t i = 0; i < cols; ++i) row_codes[static_cast<size_t>(i)] = codes.data + i * codes.row_stride;
  quantize_mxfp4_columns_bf16_measured(src, src_stride, k, cols, row_codes.data(), codes.block_stride, scales, context,
                                       sums);
}

}  // namespace moeprep
