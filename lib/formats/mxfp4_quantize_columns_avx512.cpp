// The column quantizer's loop for CPUs with AVX-512 F and BW: this file alone is compiled with
// those flags (lib/CMakeLists.txt). A register holds one source row's 32 consecutive columns,
// i.e. one element of 32 output rows' blocks, so a slab of 32 source rows is 32 blocks side by
// side and everything is vertical: the block maxima are 31 vpmaxuw, the rounding is per lane
// as in the row loop (mxfp4_quantize_avx512.cpp) with a scale per lane, and only the packed code
// bytes need a transpose (16-bit words, 8 x 32). The error sums keep each output row's 32
// partial sums (element index mod 32) as the row loops do, added block after block in k order,
// so they are the same floats; the pairwise reduction runs across columns at the end.
#include "formats/mxfp4_quantize_columns_kernels.h"

#if defined(MOEPREP_X86_SIMD) && defined(__AVX512F__) && defined(__AVX512BW__)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstring>

namespace moeprep::mxfp4_kernels {
namespace {

// Columns processed together down all of k: 128 columns are 256 bytes of each source row (whole
// cache lines), and their partial sums (32 KiB) stay in L1.
constexpr int64_t kChunkColumns = 128;
constexpr int kVectors = static_cast<int>(kChunkColumns / 32);

// The rounding by offset above the lowest boundary, for scale codes 3 and up: the row loop's
// tables (mxfp4_quantize_avx512.cpp explains them), one lookup by t / 32 giving the code in
// bits 5..7 of kCodeOffset[t / 32] + t.
constexpr int kFirstNormalScale = 3;
constexpr int16_t kInteriorCode[32] = {1, 1, 1, 1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 7};
constexpr int16_t kOnBoundaryCode[32] = {0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 4, 4, 4, 5, 6, 6, 6, 7, 7};
struct alignas(64) Words32 {
  int16_t v[32];
};
constexpr Words32 code_offsets() {
  Words32 o{};
  for (int q = 0; q < 32; ++q)
    o.v[q] = static_cast<int16_t>(32 * kInteriorCode[q] - (kInteriorCode[q] - kOnBoundaryCode[q]) - 32 * q);
  return o;
}
constexpr Words32 kCodeOffset = code_offsets();

// The E2M1 values by signed 4-bit code ([8 + i] = -[i]), for vpermps.
alignas(64) constexpr float kSignedMagnitude[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                                    -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// For the scale codes below kFirstNormalScale (blocks under 2^-122, rare): boundary i of code c at
// [i].v[c], looked up per lane by vpermw.
struct SmallScaleBoundaries {
  Words32 boundary[7];
};
const SmallScaleBoundaries& small_scale_boundaries() {
  static const SmallScaleBoundaries table = [] {
    SmallScaleBoundaries t{};
    const BoundaryTable& all = boundary_table();
    for (int i = 0; i < 7; ++i)
      for (int c = 0; c < kFirstNormalScale; ++c) t.boundary[i].v[c] = all.by_code[c].bf16[i];
    return t;
  }();
  return table;
}

// One chunk's partial sums: [element index mod 32][vector][even, odd columns][16 lanes].
struct alignas(64) ChunkSums {
  float error[kBlock][kVectors][2][16];
  float reference[kBlock][kVectors][2][16];
};

struct Loop {
  const uint8_t* src;  // element [0, 0] of the call
  int64_t stride_bytes, blocks;
  uint8_t* const* row_codes;  // output row i's block b at row_codes[i] + b * block_stride
  int64_t block_stride;
  uint8_t* scales;
  const __m512i abs_mask = _mm512_set1_epi16(0x7fff), sign_bit = _mm512_set1_epi16(0x100),
                high = _mm512_set1_epi32(static_cast<int32_t>(0xffff0000u)),
                code_offset = _mm512_load_si512(kCodeOffset.v);
  const __m512 magnitude = _mm512_load_ps(kSignedMagnitude);

  // Columns [col, col + 32) (the first `n` of them real; the rest read as zeros and are not
  // stored) of slab `blk` (source rows 32 blk ..): codes, scales and the terms of `acc`'s vector
  // v. False at a NaN or Inf.
  template <bool kMeasure, bool kFull>
  bool vector(int64_t col, int n, int64_t blk, float (*error)[kVectors][2][16],
              float (*reference)[kVectors][2][16], int v) const {
    const uint8_t* base = src + blk * kBlock * stride_bytes + col * 2;
    const __mmask32 valid = kFull ? ~__mmask32{0} : static_cast<__mmask32>((uint64_t{1} << n) - 1);
    const auto load = [&](int j) {
      const uint8_t* p = base + j * stride_bytes;
      return kFull ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi16(valid, p);
    };
    __m512i amax = _mm512_setzero_si512();
    #pragma GCC unroll 32
    for (int j = 0; j < kBlock; ++j) amax = _mm512_max_epu16(amax, _mm512_and_si512(load(j), abs_mask));
    // Every NaN or Inf pattern is at least the Inf pattern.
    if (_mm512_cmpge_epu16_mask(amax, _mm512_set1_epi16(0x7f80))) return false;
    // scale_code per lane: biased exponent - 2 clamped at 0, and 127 for a zero block.
    const __mmask32 zero_block = _mm512_cmpeq_epi16_mask(amax, _mm512_setzero_si512());
    const __m512i scale =
        _mm512_mask_mov_epi16(_mm512_subs_epu16(_mm512_srli_epi16(amax, 7), _mm512_set1_epi16(2)), zero_block,
                              _mm512_set1_epi16(127));
    {
      alignas(32) uint8_t bytes[32];
      _mm256_store_si256(reinterpret_cast<__m256i*>(bytes), _mm512_cvtepi16_epi8(scale));
      uint8_t* s = scales + col * blocks + blk;
      for (int l = 0; l < n; ++l) s[l * blocks] = bytes[l];
    }
    const __mmask32 small = _mm512_cmplt_epu16_mask(scale, _mm512_set1_epi16(kFirstNormalScale));
    // The lowest boundary, 0.25 * 2^X = bits (code - 2) << 7 (normal for codes >= 3).
    const __m512i lowest = _mm512_slli_epi16(_mm512_sub_epi16(scale, _mm512_set1_epi16(2)), 7);
    __m512i boundary[7];
    if (__builtin_expect(small != 0, 0)) {
      const SmallScaleBoundaries& table = small_scale_boundaries();
      for (int i = 0; i < 7; ++i) boundary[i] = _mm512_permutexvar_epi16(scale, _mm512_load_si512(table.boundary[i].v));
    }
    // 2^X as bf16 bits (code << 7; code 0 is the subnormal 2^-127, bits 0x40), then as floats for
    // the even and the odd columns, as the source below.
    __m512 scale_even = _mm512_setzero_ps(), scale_odd = _mm512_setzero_ps();
    if (kMeasure) {
      const __m512i value = _mm512_mask_mov_epi16(_mm512_slli_epi16(scale, 7),
                                                  _mm512_cmpeq_epi16_mask(scale, _mm512_setzero_si512()),
                                                  _mm512_set1_epi16(0x40));
      scale_even = _mm512_castsi512_ps(_mm512_slli_epi32(value, 16));
      scale_odd = _mm512_castsi512_ps(_mm512_and_si512(value, high));
    }
    // Word c of a column's 16 code bytes holds elements 4c .. 4c + 3, a nibble each.
    __m512i word[8];
    #pragma GCC unroll 8
    for (int c = 0; c < 8; ++c) {
      word[c] = _mm512_setzero_si512();
      #pragma GCC unroll 4
      for (int u = 0; u < 4; ++u) {
        const int j = 4 * c + u;
        const __m512i x = load(j);
        const __m512i a = _mm512_and_si512(x, abs_mask);
        const __m512i t = _mm512_subs_epu16(a, lowest);
        __m512i code32 = _mm512_add_epi16(_mm512_permutexvar_epi16(_mm512_srli_epi16(t, 5), code_offset), t);
        if (__builtin_expect(small != 0, 0)) {
          __m512i by_compare = _mm512_setzero_si512();
          for (int i = 0; i < 7; ++i)
            by_compare = _mm512_mask_add_epi16(by_compare, _mm512_cmpgt_epi16_mask(a, boundary[i]), by_compare,
                                               _mm512_set1_epi16(32));
          code32 = _mm512_mask_mov_epi16(code32, small, by_compare);
        }
        // The sign (bit 15) joins as bit 8; the 4-bit code comes down to bits 0..3.
        const __m512i s =
            _mm512_srli_epi16(_mm512_ternarylogic_epi32(code32, _mm512_srli_epi16(x, 7), sign_bit, 0xf8), 5);
        word[c] = _mm512_or_si512(word[c], _mm512_slli_epi16(s, 4 * u));
        if (kMeasure) {
          // Signed dequantized value minus signed source: the row loops' difference up to sign,
          // exact, with the same square. The products are exact (two significant bits times a
          // power of two no smaller than 2^-127).
          const __m512 x_even = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
          const __m512 x_odd = _mm512_castsi512_ps(_mm512_and_si512(x, high));
          const __m512 d_even =
              _mm512_sub_ps(_mm512_mul_ps(_mm512_permutexvar_ps(s, magnitude), scale_even), x_even);
          const __m512 d_odd = _mm512_sub_ps(
              _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(s, 16), magnitude), scale_odd), x_odd);
          float* e = error[j][v][0];
          float* r = reference[j][v][0];
          _mm512_store_ps(e, _mm512_fmadd_ps(d_even, d_even, _mm512_load_ps(e)));
          _mm512_store_ps(e + 16, _mm512_fmadd_ps(d_odd, d_odd, _mm512_load_ps(e + 16)));
          _mm512_store_ps(r, _mm512_fmadd_ps(x_even, x_even, _mm512_load_ps(r)));
          _mm512_store_ps(r + 16, _mm512_fmadd_ps(x_odd, x_odd, _mm512_load_ps(r + 16)));
        }
      }
    }
    // 8 x 32 words to 32 x 8: afterwards 128-bit lane L of out[q] is column 8 L + q's 16 bytes.
    __m512i pair[8], quad[8], out[8];
    for (int c = 0; c < 4; ++c) {
      pair[2 * c] = _mm512_unpacklo_epi16(word[2 * c], word[2 * c + 1]);      // columns 0..3 of each lane
      pair[2 * c + 1] = _mm512_unpackhi_epi16(word[2 * c], word[2 * c + 1]);  // columns 4..7
    }
    for (int g = 0; g < 2; ++g)      // words 0..3, 4..7
      for (int h = 0; h < 2; ++h) {  // columns 0..3, 4..7
        const __m512i lo = pair[4 * g + h], hi = pair[4 * g + 2 + h];
        quad[4 * g + 2 * h] = _mm512_unpacklo_epi32(lo, hi);      // columns 4h, 4h + 1
        quad[4 * g + 2 * h + 1] = _mm512_unpackhi_epi32(lo, hi);  // columns 4h + 2, 4h + 3
      }
    for (int p = 0; p < 4; ++p) {  // column pairs (0, 1), (2, 3), (4, 5), (6, 7)
      out[2 * p] = _mm512_unpacklo_epi64(quad[p], quad[4 + p]);
      out[2 * p + 1] = _mm512_unpackhi_epi64(quad[p], quad[4 + p]);
    }
    uint8_t* const* const dst = row_codes + col;
    const int64_t offset = blk * block_stride;
    const auto store = [&](int column, __m128i bytes) {
      if (kFull || column < n) _mm_storeu_si128(reinterpret_cast<__m128i*>(dst[column] + offset), bytes);
    };
    #pragma GCC unroll 8
    for (int q = 0; q < 8; ++q) {
      store(q, _mm512_castsi512_si128(out[q]));
      store(8 + q, _mm512_extracti32x4_epi32(out[q], 1));
      store(16 + q, _mm512_extracti32x4_epi32(out[q], 2));
      store(24 + q, _mm512_extracti32x4_epi32(out[q], 3));
    }
    return true;
  }
};

// The row loops' pairwise reduction of 32 partial sums (reduce_partial_sums), for 16 columns at
// once: the same additions, lane by lane.
__m512 reduce_columns(const float (*partial)[kVectors][2][16], int v, int h) {
  __m512 t[16];
  for (int j = 0; j < 16; ++j) t[j] = _mm512_add_ps(_mm512_load_ps(partial[j][v][h]), _mm512_load_ps(partial[j + 16][v][h]));
  for (int j = 0; j < 8; ++j) t[j] = _mm512_add_ps(t[j], t[j + 8]);
  for (int j = 0; j < 4; ++j) t[j] = _mm512_add_ps(t[j], t[j + 4]);
  t[0] = _mm512_add_ps(t[0], t[2]);
  t[1] = _mm512_add_ps(t[1], t[3]);
  return _mm512_add_ps(t[0], t[1]);
}

template <bool kMeasure>
bool quantize_columns(const Loop& loop, int64_t k, int64_t cols, Sums* sums) {
  const int64_t slabs = k / kBlock;
  static thread_local ChunkSums acc;
  for (int64_t chunk = 0; chunk < cols; chunk += kChunkColumns) {
    const int64_t width = std::min<int64_t>(kChunkColumns, cols - chunk);
    const int full_vectors = static_cast<int>(width / 32), tail = static_cast<int>(width % 32);
    if (kMeasure) {
      std::memset(acc.error, 0, sizeof acc.error);
      std::memset(acc.reference, 0, sizeof acc.reference);
    }
    for (int64_t blk = 0; blk < slabs; ++blk) {
      for (int v = 0; v < full_vectors; ++v)
        if (!loop.vector<kMeasure, true>(chunk + 32 * v, 32, blk, acc.error, acc.reference, v)) return false;
      if (tail && !loop.vector<kMeasure, false>(chunk + 32 * full_vectors, tail, blk, acc.error, acc.reference,
                                                 full_vectors))
        return false;
    }
    if (kMeasure) {
      // Rows (columns here) added in double in their order, as the row loops do.
      alignas(64) float error[kVectors][2][16], reference[kVectors][2][16];
      for (int v = 0; v * 32 < width; ++v)
        for (int h = 0; h < 2; ++h) {
          _mm512_store_ps(error[v][h], reduce_columns(acc.error, v, h));
          _mm512_store_ps(reference[v][h], reduce_columns(acc.reference, v, h));
        }
      for (int64_t c = 0; c < width; ++c) {
        const int v = static_cast<int>(c / 32), l = static_cast<int>(c % 32);
        sums->error += error[v][l % 2][l / 2];
        sums->reference += reference[v][l % 2][l / 2];
      }
    }
  }
  return true;
}

}  // namespace

bool quantize_bf16_columns_avx512(const uint8_t* src, int64_t src_stride, int64_t k, int64_t cols,
                                  uint8_t* const* row_codes, int64_t block_stride, uint8_t* scales, Sums* sums) {
  const Loop loop{src, src_stride * 2, k / kBlock, row_codes, block_stride, scales};
  return sums ? quantize_columns<true>(loop, k, cols, sums) : quantize_columns<false>(loop, k, cols, nullptr);
}

}  // namespace moeprep::mxfp4_kernels

#elif defined(MOEPREP_X86_SIMD)
#error "mxfp4_quantize_columns_avx512.cpp must be compiled with -mavx512f -mavx512bw (lib/CMakeLists.txt)"
#endif
