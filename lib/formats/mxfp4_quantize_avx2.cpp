// The MXFP4 loops for CPUs with AVX2: this file alone is compiled with -mavx2 -mfma
// (lib/CMakeLists.txt) and runs only where core/simd_level.h found AVX2 and FMA. Same rules and
// the same summation order as the portable loops in mxfp4_quantize.cpp (see
// mxfp4_quantize_kernels.h); only the lane layout differs, undone when a row's partial sums are
// handed over.
#include "formats/mxfp4_quantize_kernels.h"

#if defined(MOEPREP_X86_SIMD) && defined(__AVX2__)
// The error sums' terms are fused multiply-adds (mxfp4_quantize_kernels.h): the file is
// compiled with -mfma too, and core/simd_level.h picks this level only where the CPU has FMA.
#if !defined(__FMA__)
#error "mxfp4_quantize_avx2.cpp must be compiled with -mfma as well (lib/CMakeLists.txt)"
#endif
#include <immintrin.h>

namespace moeprep::mxfp4_kernels {
namespace {

// The largest of eight 16-bit lanes holding values <= 0x7fff: the smallest of their
// complements, which one instruction (phminposuw) finds.
inline uint32_t max_u15(__m128i v) {
  const __m128i complement = _mm_xor_si128(v, _mm_set1_epi16(0x7fff));
  return 0x7fffu - (static_cast<uint32_t>(_mm_cvtsi128_si32(_mm_minpos_epu16(complement))) & 0xffffu);
}

inline uint32_t max_i32(__m256i v) {
  __m128i m = _mm_max_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_max_epi32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(1, 0, 3, 2)));
  m = _mm_max_epi32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(2, 3, 0, 1)));
  return static_cast<uint32_t>(_mm_cvtsi128_si32(m));
}

// Row partial sums held in four vectors of eight lanes; `element[q][l]` is the element index
// (mod 32) that lane l of vector q sums.
struct RowSums {
  __m256 error[4], reference[4];
  void clear() {
    for (int q = 0; q < 4; ++q) error[q] = reference[q] = _mm256_setzero_ps();
  }
  void add(int q, __m256 dequantized, __m256 magnitude) {
    const __m256 d = _mm256_sub_ps(dequantized, magnitude);
    error[q] = _mm256_fmadd_ps(d, d, error[q]);
    reference[q] = _mm256_fmadd_ps(magnitude, magnitude, reference[q]);
  }
  void finish(const int (&element)[4][8], Sums* sums) const {
    alignas(32) float e[4][8], r[4][8];
    float es[kBlock], rs[kBlock];
    for (int q = 0; q < 4; ++q) {
      _mm256_store_ps(e[q], error[q]);
      _mm256_store_ps(r[q], reference[q]);
      for (int l = 0; l < 8; ++l) {
        es[element[q][l]] = e[q][l];
        rs[element[q][l]] = r[q][l];
      }
    }
    sums->error += reduce_partial_sums(es);
    sums->reference += reduce_partial_sums(rs);
  }
};

// The 16-bit unpacks work within 128-bit halves: vector q = 2h + hi of block half h takes
// elements 16h + 4 hi + {0..3} in its low half and 16h + 8 + 4 hi + {0..3} in its high half.
constexpr int kBf16Element[4][8] = {{0, 1, 2, 3, 8, 9, 10, 11},
                                    {4, 5, 6, 7, 12, 13, 14, 15},
                                    {16, 17, 18, 19, 24, 25, 26, 27},
                                    {20, 21, 22, 23, 28, 29, 30, 31}};
constexpr int kF32Element[4][8] = {{0, 1, 2, 3, 4, 5, 6, 7},
                                   {8, 9, 10, 11, 12, 13, 14, 15},
                                   {16, 17, 18, 19, 20, 21, 22, 23},
                                   {24, 25, 26, 27, 28, 29, 30, 31}};

template <bool kMeasure>
int64_t quantize_bf16_rows(const uint16_t* src, int64_t rows, int64_t k, const Mxfp4CodeLayout& codes,
                           uint8_t* scales, Sums* sums) {
  const int64_t blocks = k / kBlock;
  const BoundaryTable& table = boundary_table();
  const __m256i abs_mask = _mm256_set1_epi16(0x7fff), eight = _mm256_set1_epi16(8),
                low_byte = _mm256_set1_epi16(0xff), zero = _mm256_setzero_si256();
  const __m256 magnitudes = _mm256_loadu_ps(kE2m1Magnitude);
  RowSums row_sums;
  for (int64_t r = 0; r < rows; ++r) {
    if (kMeasure) row_sums.clear();
    for (int64_t blk = r * blocks; blk < (r + 1) * blocks; ++blk) {
      const uint16_t* x = src + blk * kBlock;
      _mm_prefetch(reinterpret_cast<const char*>(x) + kPrefetchBytes, _MM_HINT_T0);
      const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
      const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 16));
      const __m256i a0 = _mm256_and_si256(x0, abs_mask), a1 = _mm256_and_si256(x1, abs_mask);
      const __m256i m = _mm256_max_epi16(a0, a1);
      const uint32_t amax = max_u15(_mm_max_epi16(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1)));
      if (amax >= 0x7f80) return blk;
      const uint8_t scale = scale_code(amax, amax >> 7);
      scales[blk] = scale;
      const int16_t* boundary = table.by_code[scale].bf16;
      // Magnitude code = the number of boundaries crossed (a compare gives -1 per lane).
      __m256i c0 = zero, c1 = zero;
      #pragma GCC unroll 7
      for (int i = 0; i < 7; ++i) {
        const __m256i b = _mm256_set1_epi16(boundary[i]);
        c0 = _mm256_sub_epi16(c0, _mm256_cmpgt_epi16(a0, b));
        c1 = _mm256_sub_epi16(c1, _mm256_cmpgt_epi16(a1, b));
      }
      const __m256i s0 = _mm256_or_si256(c0, _mm256_and_si256(_mm256_srli_epi16(x0, 12), eight));
      const __m256i s1 = _mm256_or_si256(c1, _mm256_and_si256(_mm256_srli_epi16(x1, 12), eight));
      // Bytes: elements 0-7, 16-23 | 8-15, 24-31; then two codes per byte, and the four
      // 4-byte groups back in element order.
      const __m256i bytes = _mm256_packus_epi16(s0, s1);
      const __m256i pairs = _mm256_and_si256(_mm256_or_si256(bytes, _mm256_srli_epi16(bytes, 4)), low_byte);
      const __m128i packed = _mm_packus_epi16(_mm256_castsi256_si128(pairs), _mm256_extracti128_si256(pairs, 1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(code_block(codes, r, blk - r * blocks)),
                       _mm_shuffle_epi32(packed, _MM_SHUFFLE(3, 1, 2, 0)));
      if (kMeasure) {
        const __m256 value = _mm256_mul_ps(magnitudes, _mm256_set1_ps(table.scale_value[scale]));
        const __m256i a[2] = {a0, a1}, c[2] = {c0, c1};
        for (int h = 0; h < 2; ++h) {
          row_sums.add(2 * h, _mm256_permutevar8x32_ps(value, _mm256_unpacklo_epi16(c[h], zero)),
                       _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, a[h])));
          row_sums.add(2 * h + 1, _mm256_permutevar8x32_ps(value, _mm256_unpackhi_epi16(c[h], zero)),
                       _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, a[h])));
        }
      }
    }
    if (kMeasure) row_sums.finish(kBf16Element, sums);
  }
  return -1;
}

int64_t quantize_bf16(const uint16_t* src, int64_t rows, int64_t k, const Mxfp4CodeLayout& codes, uint8_t* scales,
                      Sums* sums) {
  return sums ? quantize_bf16_rows<true>(src, rows, k, codes, scales, sums)
              : quantize_bf16_rows<false>(src, rows, k, codes, scales, nullptr);
}

template <bool kMeasure>
int64_t quantize_f32_rows(const float* src, int64_t rows, int64_t k, const Mxfp4CodeLayout& codes,
                          uint8_t* scales, Sums* sums) {
  const int64_t blocks = k / kBlock;
  const BoundaryTable& table = boundary_table();
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), eight = _mm256_set1_epi32(8),
                low_byte = _mm256_set1_epi16(0xff);
  // Bytes of 16-bit units (two packed bytes each) 0,4,1,5,2,6,3,7: the order packus leaves
  // them in, back to element order.
  const __m128i unit_order = _mm_setr_epi8(0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15);
  const __m256 magnitudes = _mm256_loadu_ps(kE2m1Magnitude);
  RowSums row_sums;
  for (int64_t r = 0; r < rows; ++r) {
    if (kMeasure) row_sums.clear();
    for (int64_t blk = r * blocks; blk < (r + 1) * blocks; ++blk) {
      const float* x = src + blk * kBlock;
      __m256i xq[4], aq[4];
      for (int q = 0; q < 4; ++q) {
        xq[q] = _mm256_castps_si256(_mm256_loadu_ps(x + 8 * q));
        aq[q] = _mm256_and_si256(xq[q], abs_mask);
      }
      const uint32_t amax =
          max_i32(_mm256_max_epi32(_mm256_max_epi32(aq[0], aq[1]), _mm256_max_epi32(aq[2], aq[3])));
      if (amax >= 0x7f800000u) return blk;
      const uint8_t scale = scale_code(amax, amax >> 23);
      scales[blk] = scale;
      const int32_t* boundary = table.by_code[scale].f32;
      __m256i cq[4];
      for (int q = 0; q < 4; ++q) cq[q] = _mm256_setzero_si256();
      #pragma GCC unroll 7
      for (int i = 0; i < 7; ++i) {
        const __m256i b = _mm256_set1_epi32(boundary[i]);
        for (int q = 0; q < 4; ++q) cq[q] = _mm256_sub_epi32(cq[q], _mm256_cmpgt_epi32(aq[q], b));
      }
      __m256i sq[4];
      for (int q = 0; q < 4; ++q)
        sq[q] = _mm256_or_si256(cq[q], _mm256_and_si256(_mm256_srli_epi32(xq[q], 28), eight));
      // Bytes: elements 0-3, 8-11, 16-19, 24-27 | 4-7, 12-15, 20-23, 28-31.
      const __m256i bytes = _mm256_packus_epi16(_mm256_packus_epi32(sq[0], sq[1]), _mm256_packus_epi32(sq[2], sq[3]));
      const __m256i pairs = _mm256_and_si256(_mm256_or_si256(bytes, _mm256_srli_epi16(bytes, 4)), low_byte);
      const __m128i packed = _mm_packus_epi16(_mm256_castsi256_si128(pairs), _mm256_extracti128_si256(pairs, 1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(code_block(codes, r, blk - r * blocks)),
                       _mm_shuffle_epi8(packed, unit_order));
      if (kMeasure) {
        const __m256 value = _mm256_mul_ps(magnitudes, _mm256_set1_ps(table.scale_value[scale]));
        for (int q = 0; q < 4; ++q)
          row_sums.add(q, _mm256_permutevar8x32_ps(value, cq[q]), _mm256_castsi256_ps(aq[q]));
      }
    }
    if (kMeasure) row_sums.finish(kF32Element, sums);
  }
  return -1;
}

int64_t quantize_f32(const float* src, int64_t rows, int64_t k, const Mxfp4CodeLayout& codes, uint8_t* scales,
                     Sums* sums) {
  return sums ? quantize_f32_rows<true>(src, rows, k, codes, scales, sums)
              : quantize_f32_rows<false>(src, rows, k, codes, scales, nullptr);
}

int64_t scales_bf16(const uint16_t* src, int64_t rows, int64_t k, uint8_t* scales) {
  const __m256i abs_mask = _mm256_set1_epi16(0x7fff);
  for (int64_t blk = 0; blk < rows * (k / kBlock); ++blk) {
    const uint16_t* x = src + blk * kBlock;
    const __m256i m =
        _mm256_max_epi16(_mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)), abs_mask),
                         _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 16)), abs_mask));
    const uint32_t amax = max_u15(_mm_max_epi16(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1)));
    if (amax >= 0x7f80) return blk;
    scales[blk] = scale_code(amax, amax >> 7);
  }
  return -1;
}

int64_t scales_f32(const float* src, int64_t rows, int64_t k, uint8_t* scales) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
  for (int64_t blk = 0; blk < rows * (k / kBlock); ++blk) {
    const float* x = src + blk * kBlock;
    __m256i m = _mm256_setzero_si256();
    for (int q = 0; q < 4; ++q)
      m = _mm256_max_epi32(m, _mm256_and_si256(_mm256_castps_si256(_mm256_loadu_ps(x + 8 * q)), abs_mask));
    const uint32_t amax = max_i32(m);
    if (amax >= 0x7f800000u) return blk;
    scales[blk] = scale_code(amax, amax >> 23);
  }
  return -1;
}

}  // namespace

const Kernels& avx2_kernels() {
  static const Kernels k{quantize_bf16, quantize_f32, scales_bf16, scales_f32, nullptr};
  return k;
}

}  // namespace moeprep::mxfp4_kernels

#elif defined(MOEPREP_X86_SIMD)
#error "mxfp4_quantize_avx2.cpp must be compiled with -mavx2 (lib/CMakeLists.txt)"
#endif
