#include "formats/mxfp4_quantize_fp8.h"

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "core/simd_level.h"
#include "formats/fp8_block_dequant.h"
#include "formats/fp8_e4m3.h"
#include "formats/mxfp4_quantize_fp8_kernels.h"

namespace moeprep {
namespace {

using mxfp4_fp8_kernels::Fp8Rows;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The table loop where this build and CPU have it and the level in use allows it.
mxfp4_fp8_kernels::Fp8Loop table_loop() {
#if defined(MOEPREP_X86_SIMD) && (defined(__GNUC__) || defined(__clang__))
  static const bool has_vbmi = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vbmi") != 0;
  }();
  if (simd_level() == SimdLevel::Avx512 && has_vbmi && mxfp4_fp8_kernels::avx512_vbmi_loop())
    return mxfp4_fp8_kernels::avx512_vbmi_loop();
  // The AVX2 level implies FMA (core/simd_level.cpp); AVX-512 CPUs without VBMI, or builds whose
  // compiler has none, take it too.
  if (simd_level() >= SimdLevel::Avx2) return mxfp4_fp8_kernels::avx2_loop();
#endif
  return nullptr;
}

// fp8_block_dequant of rows [first, first + count) of the job (relative to job.fp8) into
// `out`, with its per-row NaN check: the same products, the same first error.
void dequantize_rows(const Fp8Rows& job, int64_t first, int64_t count, float* out, const std::string& context) {
  fp8_dequant_rows(job.fp8 + first * job.k, job.first_row + first, count, job.k, job.scale_inv, job.scale_cols,
                   job.block_n, job.block_k, out, context);
}

// The first NaN code of the rows, in fp8_block_dequant's order, thrown; nothing if none.
void throw_first_nan(const Fp8Rows& job, const std::string& context) {
  for (int64_t r = 0; r < job.rows; ++r)
    for (int64_t j = 0; j < job.k; ++j)
      if (fp8_e4m3_is_nan(job.fp8[r * job.k + j])) throw_bad_input(fp8_nan_message(context, job.first_row + r, j));
}

Mxfp4CodeLayout rows_from(const Mxfp4CodeLayout& c, int64_t row) {
  return {c.data + row * c.row_stride, c.row_stride, c.block_stride};
}

// The definition itself: every row dequantized, then one call of the float quantizer. Used
// where the faster paths meet an error, so that it is the one the definition reports.
void quantize_as_defined(const Fp8Rows& job, const std::string& context, Mxfp4ErrorSums& sums) {
  std::vector<float> floats(static_cast<size_t>(job.rows * job.k));
  dequantize_rows(job, 0, job.rows, floats.data(), context);
  quantize_mxfp4_rows_measured(floats.data(), job.rows, job.k, job.codes, job.scales, context, sums);
}

// A few rows at a time through a buffer that stays in cache. Row sums add up in row order
// whatever the chunks, so the sums are those of one call. Any error is found again by the
// definition, which dequantizes every row before quantizing any: a NaN code in a later chunk
// comes before an overflow in an earlier one, and the quantizer names rows of the whole range.
void quantize_in_chunks(const Fp8Rows& job, const std::string& context, Mxfp4ErrorSums& sums) {
  const int64_t chunk = std::max<int64_t>(1, 65536 / std::max<int64_t>(job.k, 1));  // 256 KiB of floats
  std::vector<float> floats(static_cast<size_t>(std::min(chunk, job.rows) * job.k));
  Mxfp4ErrorSums s = sums;
  try {
    for (int64_t r = 0; r < job.rows; r += chunk) {
      const int64_t n = std::min(chunk, job.rows - r);
      dequantize_rows(job, r, n, floats.data(), context);
      const int64_t blocks = job.k / 32;
      quantize_mxfp4_rows_measured(floats.data(), n, job.k, rows_from(job.codes, r), job.scales + r * blocks, context,
                                   s);
    }
  } catch (const Error&) {
    quantize_as_defined(job, context, sums);
    throw_internal(context + ": FP8 quantization: an error in a chunk was not one of the whole rows");
  }
  sums = s;
}

}  // namespace

bool mxfp4_fp8_quantizer_uses_tables() { return table_loop() != nullptr; }

void quantize_mxfp4_rows_fp8_measured(const uint8_t* fp8, int64_t first_row, int64_t rows, int64_t k,
                                      const float* scale_inv, int64_t scale_cols, int64_t block_n, int64_t block_k,
                                      const Mxfp4CodeLayout& codes, uint8_t* scales, const std::string& context,
                                      Mxfp4ErrorSums& sums) {
  if (first_row < 0 || rows < 0 || k < 0 || block_n <= 0 || block_k <= 0)
    throw_bad_input(context + ": FP8 block quantization: bad rows [" + std::to_string(first_row) + ", " +
                    std::to_string(first_row) + " + " + std::to_string(rows) + "), K " + std::to_string(k) +
                    " or block [" + std::to_string(block_n) + ", " + std::to_string(block_k) + "]");
  if (scale_cols != ceil_div(k, block_k))
    throw_bad_input(context + ": weight_scale_inv has " + std::to_string(scale_cols) + " columns, expected " +
                    std::to_string(ceil_div(k, block_k)) + " for K=" + std::to_string(k) + " with blocks of " +
                    std::to_string(block_k));
  // fp8_block_dequant checks every scale before any weight; these rows read only their bands.
  if (rows > 0)
    fp8_check_scale_bands(scale_inv, first_row / block_n, (first_row + rows - 1) / block_n, scale_cols, context);
  const Fp8Rows job{fp8, first_row, rows, k, scale_inv, scale_cols, block_n, block_k, codes, scales};
  if (k % 32 != 0) {  // the float quantizer's error, after the dequantization's
    quantize_as_defined(job, context, sums);
    return;
  }
  if (rows == 0) return;
  const mxfp4_fp8_kernels::Fp8Loop loop = block_k % 32 == 0 ? table_loop() : nullptr;
  if (!loop) {
    quantize_in_chunks(job, context, sums);
    return;
  }
  mxfp4_kernels::Sums s{sums.error, sums.reference};
  if (!loop(job, &s)) {
    throw_first_nan(job, context);
    quantize_as_defined(job, context, sums);
    throw_internal(context + ": FP8 quantization: the table loop stopped where the definition did not");
  }
  sums = {s.error, s.reference};
}

}  // namespace moeprep
