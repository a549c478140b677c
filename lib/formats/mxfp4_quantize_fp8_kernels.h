#pragma once
// Internal to lib/formats: what mxfp4_quantize_fp8.cpp (arguments, errors, the portable path)
// hands the table loop of mxfp4_quantize_fp8_avx512.cpp.
#include <cstdint>

#include "formats/mxfp4_quantize.h"
#include "formats/mxfp4_quantize_kernels.h"

namespace moeprep::mxfp4_fp8_kernels {

// Arguments already checked: k and block_k multiples of 32, scale_cols = ceil(k / block_k),
// the rows' scales finite.
struct Fp8Rows {
  const uint8_t* fp8;
  int64_t first_row, rows, k;
  const float* scale_inv;
  int64_t scale_cols, block_n, block_k;
  Mxfp4CodeLayout codes;
  uint8_t* scales;
};

// Quantizes the rows, adding their sums to *sums row by row as the float quantizer does.
// Returns false, with outputs partly written and *sums unchanged, where a block holds a NaN
// code or a value whose product with its scale overflows float: the caller then finds the
// error the reference path would report.
using Fp8Loop = bool (*)(const Fp8Rows& job, mxfp4_kernels::Sums* sums);

// The AVX-512 F + BW + VBMI loop and the AVX2 + FMA one; null where this build has none (the
// CPU is checked by the caller).
Fp8Loop avx512_vbmi_loop();
Fp8Loop avx2_loop();

}  // namespace moeprep::mxfp4_fp8_kernels
