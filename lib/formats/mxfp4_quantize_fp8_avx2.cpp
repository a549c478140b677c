// The FP8 -> MXFP4 table loop for CPUs with AVX2 and FMA but not AVX-512 VBMI: this file alone
// is compiled with those flags (lib/CMakeLists.txt). The same tables and order as the AVX-512
// loop (mxfp4_quantize_fp8_avx512.cpp, whose header comment says why they give the float
// quantizer's bits), with 256-bit registers: one block of one row a register, lane i of shift t
// holding element 4i + t, so a row's 32 partial sums stay in fixed lanes of four accumulators.
// Without vpermi2b, an element's E2M1 code is the number of a slot's seven thresholds its
// magnitude code exceeds (a is monotonic in it), seven byte compares a block.
#include "formats/mxfp4_quantize_fp8_kernels.h"
#include "formats/mxfp4_quantize_fp8_band.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "formats/fp8_e4m3.h"

#if defined(MOEPREP_X86_SIMD) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

namespace moeprep::mxfp4_fp8_kernels {
namespace {

using mxfp4_kernels::kBlock;
using mxfp4_kernels::Sums;


// One scale block's rounding at one E8M0 scale: code(m) = flip + the number of thresholds below
// m (each broadcast to a register's 32 bytes), flip being 8 where the FP8 scale is negative; the
// dequantized magnitudes by E2M1 code (vpermps reads the low 3 bits, so the sign is ignored).
struct alignas(32) CodeSlot {
  int8_t threshold[7][32];
  uint8_t flip[32];
  float dequantized[8];
};

// The slot at E8M0 code x. Threshold i is the last magnitude code whose a is not above
// boundary i (mxfp4_quantize.cpp's strict tests on bit patterns): a is non-decreasing in the
// code, so the codes above it are exactly those rounded past the boundary. -1 where every code is.
void fill_code_slot(CodeSlot& slot, const int32_t* magnitude_bits, uint8_t x, uint8_t flip) {
  const mxfp4_kernels::BoundaryTable& table = mxfp4_kernels::boundary_table();
  for (int i = 0; i < 7; ++i) {
    const int32_t below = static_cast<int32_t>(
        std::upper_bound(magnitude_bits, magnitude_bits + 127, table.by_code[x].f32[i]) - magnitude_bits);
    std::memset(slot.threshold[i], below - 1, 32);
  }
  std::memset(slot.flip, flip, 32);
  for (int i = 0; i < 8; ++i) slot.dequantized[i] = mxfp4_kernels::kE2m1Magnitude[i] * table.scale_value[x];
}

using BandTables = mxfp4_fp8_kernels::BandTables<CodeSlot>;

struct RowScratch {
  std::vector<const CodeSlot*> slot;  // per block
  std::vector<float> multiplier;      // per block
  std::vector<int64_t> scale_col;     // per block
};

// The largest byte of v (all <= 0x7f): pairs of bytes to 16-bit lanes, then phminposuw on
// their complements.
inline uint32_t max_u7(__m256i v) {
  __m128i m = _mm_max_epu8(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_max_epu8(m, _mm_srli_epi16(m, 8));
  const __m128i complement = _mm_xor_si128(_mm_and_si128(m, _mm_set1_epi16(0xff)), _mm_set1_epi16(0xff));
  return (static_cast<uint32_t>(_mm_cvtsi128_si32(_mm_minpos_epu16(complement))) & 0xffu) ^ 0xffu;
}

// Pass 1: each block's E8M0 code, stored, and its slot; false at a NaN code or an overflowing
// product.
bool block_scales(BandTables& tables, const uint8_t* src, int64_t blocks, RowScratch& p, uint8_t* scales) {
  const __m256i low7 = _mm256_set1_epi8(0x7f);
  const int64_t* const scale_col = p.scale_col.data();
  const CodeSlot** const slot = p.slot.data();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint32_t m =
        max_u7(_mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + b * kBlock)), low7));
    const int64_t sc = scale_col[b];
    const uint8_t x = tables.scale_code(sc, m);
    if (x == kStop) return false;
    scales[b] = x;
    slot[b] = tables.slot(sc, x);
  }
  return true;
}

// Pass 2: codes and error terms, a block a register. Returns the row's sums (error, reference).
template <bool kOneMultiply>
void round_blocks(const RowScratch& p, const uint8_t* src, int64_t blocks, uint8_t* codes, int64_t block_stride,
                  float (&sums)[2]) {
  const __m256i low7 = _mm256_set1_epi8(0x7f), sign_to_bit3 = _mm256_set1_epi8(0x08),
                field = _mm256_set1_epi32(0x07f00000), nibble_weights = _mm256_set1_epi16(0x1001);
  const __m256 two_120 = _mm256_set1_ps(0x1p120f);
  __m256 e0 = _mm256_setzero_ps(), e1 = e0, e2 = e0, e3 = e0, q0 = e0, q1 = e0, q2 = e0, q3 = e0;
  for (int64_t b = 0; b < blocks; ++b) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + b * kBlock));
    const __m256i m = _mm256_and_si256(x, low7);
    const CodeSlot* t = p.slot[b];
    __m256i code = _mm256_load_si256(reinterpret_cast<const __m256i*>(t->flip));
    for (int i = 0; i < 7; ++i) {  // minus -1 where above the threshold
      const __m256i threshold = _mm256_load_si256(reinterpret_cast<const __m256i*>(t->threshold[i]));
      code = _mm256_sub_epi8(code, _mm256_cmpgt_epi8(m, threshold));
    }
    code = _mm256_xor_si256(code, _mm256_and_si256(_mm256_srli_epi16(x, 4), sign_to_bit3));
    // c0 + 16 c1 per pair of bytes, then the 16 words to bytes.
    const __m256i words = _mm256_maddubs_epi16(code, nibble_weights);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + b * block_stride),
                     _mm_packus_epi16(_mm256_castsi256_si128(words), _mm256_extracti128_si256(words, 1)));

    const __m256 dequantized = _mm256_load_ps(t->dequantized);
    const __m256 multiplier = _mm256_set1_ps(p.multiplier[b]);
    const auto term = [&](__m256i shifted, __m256i index, __m256& error, __m256& reference) {
      __m256 a = _mm256_castsi256_ps(_mm256_and_si256(shifted, field));
      if (!kOneMultiply) a = _mm256_mul_ps(a, two_120);
      a = _mm256_mul_ps(a, multiplier);
      const __m256 d = _mm256_sub_ps(_mm256_permutevar8x32_ps(dequantized, index), a);
      error = _mm256_fmadd_ps(d, d, error);
      reference = _mm256_fmadd_ps(a, a, reference);
    };
    term(_mm256_slli_epi32(x, 20), code, e0, q0);
    term(_mm256_slli_epi32(x, 12), _mm256_srli_epi32(code, 8), e1, q1);
    term(_mm256_slli_epi32(x, 4), _mm256_srli_epi32(code, 16), e2, q2);
    term(_mm256_srli_epi32(x, 4), _mm256_srli_epi32(code, 24), e3, q3);
  }
  alignas(32) float lanes[2][4][8];
  const __m256 error[4] = {e0, e1, e2, e3}, reference[4] = {q0, q1, q2, q3};
  for (int t = 0; t < 4; ++t) {
    _mm256_store_ps(lanes[0][t], error[t]);
    _mm256_store_ps(lanes[1][t], reference[t]);
  }
  float partial[2][kBlock];
  for (int s = 0; s < 2; ++s)
    for (int i = 0; i < 8; ++i)
      for (int t = 0; t < 4; ++t) partial[s][4 * i + t] = lanes[s][t][i];
  sums[0] = mxfp4_kernels::reduce_partial_sums(partial[0]);
  sums[1] = mxfp4_kernels::reduce_partial_sums(partial[1]);
}

using TableCache = mxfp4_fp8_kernels::BandTableCache<CodeSlot, RowScratch>;

bool quantize_rows(const Fp8Rows& job, Sums* sums) {
  static thread_local TableCache cache;
  const int64_t k = job.k, blocks = k / kBlock;
  RowScratch& p = cache.scratch;
  p.slot.resize(static_cast<size_t>(blocks));
  p.multiplier.resize(static_cast<size_t>(blocks));
  p.scale_col.resize(static_cast<size_t>(blocks));
  for (int64_t b = 0; b < blocks; ++b) p.scale_col[b] = b * kBlock / job.block_k;
  Sums local = *sums;
  int64_t band = -1;
  BandTables* tables = nullptr;
  for (int64_t i = 0; i < job.rows; ++i) {
    const int64_t this_band = (job.first_row + i) / job.block_n;
    if (this_band != band) {
      tables = &cache.tables_for(job.scale_inv + this_band * job.scale_cols, job.scale_cols);
      for (int64_t b = 0; b < blocks; ++b) p.multiplier[b] = tables->multiplier(p.scale_col[b]);
      band = this_band;
    }
    const uint8_t* src = job.fp8 + i * k;
    if (!block_scales(*tables, src, blocks, p, job.scales + i * blocks)) return false;
    float row[2];
    uint8_t* codes = job.codes.data + i * job.codes.row_stride;
    if (tables->one_multiply())
      round_blocks<true>(p, src, blocks, codes, job.codes.block_stride, row);
    else
      round_blocks<false>(p, src, blocks, codes, job.codes.block_stride, row);
    local.error += row[0];
    local.reference += row[1];
  }
  *sums = local;
  return true;
}

}  // namespace

Fp8Loop avx2_loop() { return quantize_rows; }

}  // namespace moeprep::mxfp4_fp8_kernels

#else

namespace moeprep::mxfp4_fp8_kernels {
Fp8Loop avx2_loop() { return nullptr; }
}  // namespace moeprep::mxfp4_fp8_kernels

#endif
