// The FP8 -> MXFP4 table loop for CPUs with AVX-512 F, BW and VBMI: this file alone is compiled
// with those flags (lib/CMakeLists.txt) and runs only where mxfp4_quantize_fp8.cpp found them.
//
// Why tables. All 32 elements of an MXFP4 block share one FP8 block scale s, and an E4M3
// magnitude code m (0..126, ordered like its value) fixes a = |fl(value(m) * s)|, so per FP8
// scale block a is a 128-entry function of m, monotonic. The block maximum is then the largest
// magnitude code (a byte max), the E8M0 scale X a 128-entry table of it, and an element's E2M1
// code a 128-entry table of m for each X, built the first time a scale block meets that X:
// one vpermi2b per 64 elements. The error sums keep the float quantizer's terms and order
// (mxfp4_quantize_kernels.h): a is computed from the code's bits (exact: value(m) * 2^-120 is
// the float whose bits are m << 20, then two products, the first exact), the dequantized value
// comes from the code by vpermt2ps, and the partial sums take the same fused multiply-adds.
//
// Two rows go through together, row r in the low 256 bits of each register and row r + 1 in the
// high ones: an element's byte is then isolated in its 32-bit lane by shifts alone, lane i of
// shift t holding element 4i + t of its block, so each row's 32 partial sums stay in fixed
// lanes of four accumulators.
#include "formats/mxfp4_quantize_fp8_kernels.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "formats/fp8_e4m3.h"

#if defined(MOEPREP_X86_SIMD) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VBMI__)
// GCC 12's avx512fintrin.h trips its own uninitialized-value warnings (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

namespace moeprep::mxfp4_fp8_kernels {
namespace {

using mxfp4_kernels::kBlock;
using mxfp4_kernels::Sums;

constexpr uint8_t kStop = 255;  // an X-table entry: NaN code, or a product that overflows

// One scale block's rounding at one E8M0 scale: the E2M1 code (sign bit 3 set where the FP8
// scale is negative, so that the element's own sign is an xor) by magnitude code, and the
// dequantized magnitudes by E2M1 code, twice (the sign bit indexes the second copy).
struct alignas(64) CodeSlot {
  uint8_t code[128];
  float dequantized[16];
};

// The tables of one band of block_n rows, per scale column.
class BandTables {
 public:
  explicit BandTables(int64_t scale_cols)
      : scale_cols_(scale_cols),
        magnitude_bits_(static_cast<size_t>(scale_cols) * 128),
        scale_code_(static_cast<size_t>(scale_cols) * 128),
        slot_of_(static_cast<size_t>(scale_cols) * 256),
        abs_scale_(static_cast<size_t>(scale_cols)),
        flip_(static_cast<size_t>(scale_cols)) {}

  void start_band(const float* scale_row) {
    const float* value = kFp8E4m3ToFloat.data();
    for (int64_t sc = 0; sc < scale_cols_; ++sc) {
      const float s = std::fabs(scale_row[sc]);
      abs_scale_[sc] = s;
      flip_[sc] = std::signbit(scale_row[sc]) ? 8 : 0;
      int32_t* bits = &magnitude_bits_[sc * 128];
      uint8_t* x = &scale_code_[sc * 128];
      for (int m = 0; m < 127; ++m) {
        const float a = value[m] * s;
        uint32_t u;
        std::memcpy(&u, &a, 4);
        bits[m] = static_cast<int32_t>(u);
        x[m] = u >= 0x7f800000u ? kStop : mxfp4_kernels::scale_code(u, u >> 23);
      }
      bits[127] = 0;
      x[127] = kStop;
    }
    std::fill(slot_of_.begin(), slot_of_.end(), 0);
    slots_.resize(1);
  }

  float abs_scale(int64_t sc) const { return abs_scale_[sc]; }
  // The E8M0 code of a block of scale column sc whose largest magnitude code is m.
  uint8_t scale_code(int64_t sc, uint32_t m) const { return scale_code_[sc * 128 + m]; }

  // The slot of scale column sc at E8M0 code x, built on first use. An index: building moves
  // the slots.
  uint32_t slot_index(int64_t sc, uint8_t x) {
    uint32_t& index = slot_of_[sc * 256 + x];
    if (index == 0) index = build(sc, x);
    return index;
  }
  const CodeSlot& slot(uint32_t index) const { return slots_[index]; }

 private:
  // code = the number of rounding boundaries below a (mxfp4_quantize.cpp's strict tests on bit
  // patterns), 16 magnitude codes a step.
  uint32_t build(int64_t sc, uint8_t x) {
    const mxfp4_kernels::BoundaryTable& table = mxfp4_kernels::boundary_table();
    CodeSlot slot;
    const int32_t* boundary = table.by_code[x].f32;
    const __m512i one = _mm512_set1_epi32(1);
    for (int v = 0; v < 8; ++v) {
      const __m512i a = _mm512_loadu_si512(&magnitude_bits_[sc * 128 + 16 * v]);
      __m512i c = _mm512_set1_epi32(flip_[sc]);
      for (int i = 0; i < 7; ++i)
        c = _mm512_mask_add_epi32(c, _mm512_cmpgt_epi32_mask(a, _mm512_set1_epi32(boundary[i])), c, one);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(slot.code + 16 * v), _mm512_cvtepi32_epi8(c));
    }
    for (int i = 0; i < 16; ++i) slot.dequantized[i] = mxfp4_kernels::kE2m1Magnitude[i & 7] * table.scale_value[x];
    slots_.push_back(slot);
    return static_cast<uint32_t>(slots_.size() - 1);
  }

  int64_t scale_cols_;
  std::vector<int32_t> magnitude_bits_;  // bits of a by magnitude code
  std::vector<uint8_t> scale_code_;      // E8M0 code by largest magnitude code
  std::vector<uint32_t> slot_of_;        // slot by E8M0 code, 0 where not built yet
  std::vector<float> abs_scale_;
  std::vector<uint8_t> flip_;
  std::vector<CodeSlot> slots_;
};

// One row's place in a row pair: its source, codes and scales, and its 32 partial sums (row r:
// lanes 0..7 of the four accumulators, row r + 1: lanes 8..15).
struct PairRow {
  const uint8_t* src;
  uint8_t* codes;
  uint8_t* scales;
};

// Row sums of a pair in the header's order: partial sum 4i + t is lane i (+8 for the second
// row) of accumulator t.
void finish(const __m512 (&acc)[4], float (&first)[kBlock], float (&second)[kBlock]) {
  alignas(64) float lanes[4][16];
  for (int t = 0; t < 4; ++t) _mm512_store_ps(lanes[t], acc[t]);
  for (int i = 0; i < 8; ++i)
    for (int t = 0; t < 4; ++t) {
      first[4 * i + t] = lanes[t][i];
      second[4 * i + t] = lanes[t][8 + i];
    }
}

// Rows r and s (s = r where a band has one row left: the same bytes written twice, its sums
// taken once) of one band. Returns false at a NaN code or an overflowing product.
bool quantize_pair(const Fp8Rows& job, BandTables& tables, const int64_t* scale_col_of_block, const PairRow& r,
                   const PairRow& s, float (&sums_r)[2], float (&sums_s)[2]) {
  const int64_t blocks = job.k / kBlock;
  const int64_t block_stride = job.codes.block_stride;
  const __m512i low7 = _mm512_set1_epi8(0x7f), sign_to_bit3 = _mm512_set1_epi8(0x08),
                field = _mm512_set1_epi32(0x07f00000),
                // bit 4 of the second row's codes picks its half of the two dequantization tables
                second_half = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi8(0x10), 1);
  const __m512 two_120 = _mm512_set1_ps(0x1p120f);
  __m512 error[4], reference[4];
  for (int t = 0; t < 4; ++t) error[t] = reference[t] = _mm512_setzero_ps();
  alignas(64) uint8_t pad_r[128], pad_s[128];

  for (int64_t b0 = 0; b0 < blocks; b0 += 4) {
    const int valid = blocks - b0 < 4 ? static_cast<int>(blocks - b0) : 4;
    const uint8_t *src_r = r.src + b0 * kBlock, *src_s = s.src + b0 * kBlock;
    if (valid < 4) {  // the row's last blocks, padded with zero codes that add nothing
      std::memset(pad_r, 0, sizeof pad_r);
      std::memset(pad_s, 0, sizeof pad_s);
      std::memcpy(pad_r, src_r, static_cast<size_t>(valid) * kBlock);
      std::memcpy(pad_s, src_s, static_cast<size_t>(valid) * kBlock);
      src_r = pad_r;
      src_s = pad_s;
    }
    const __m512i r0 = _mm512_loadu_si512(src_r), r1 = _mm512_loadu_si512(src_r + 64),
                  s0 = _mm512_loadu_si512(src_s), s1 = _mm512_loadu_si512(src_s + 64);
    // x[j]: block b0 + j of row r in the low half, of row s in the high half.
    const __m512i x[4] = {_mm512_shuffle_i64x2(r0, s0, _MM_SHUFFLE(1, 0, 1, 0)),
                          _mm512_shuffle_i64x2(r0, s0, _MM_SHUFFLE(3, 2, 3, 2)),
                          _mm512_shuffle_i64x2(r1, s1, _MM_SHUFFLE(1, 0, 1, 0)),
                          _mm512_shuffle_i64x2(r1, s1, _MM_SHUFFLE(3, 2, 3, 2))};
    // The eight blocks' largest magnitude codes: 16-byte halves paired, then each 16 bytes
    // reduced to one, in 64-bit lanes ordered 0r 2r 0s 2s 1r 3r 1s 3s.
    __m512i m01, m23;
    {
      const __m512i a0 = _mm512_and_si512(x[0], low7), a1 = _mm512_and_si512(x[1], low7),
                    a2 = _mm512_and_si512(x[2], low7), a3 = _mm512_and_si512(x[3], low7);
      m01 = _mm512_max_epu8(_mm512_shuffle_i64x2(a0, a1, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i64x2(a0, a1, _MM_SHUFFLE(3, 1, 3, 1)));
      m23 = _mm512_max_epu8(_mm512_shuffle_i64x2(a2, a3, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i64x2(a2, a3, _MM_SHUFFLE(3, 1, 3, 1)));
    }
    m01 = _mm512_max_epu8(m01, _mm512_bsrli_epi128(m01, 8));
    m23 = _mm512_max_epu8(m23, _mm512_bsrli_epi128(m23, 8));
    __m512i u = _mm512_unpacklo_epi64(m01, m23);
    u = _mm512_max_epu8(u, _mm512_srli_epi64(u, 32));
    u = _mm512_max_epu8(u, _mm512_srli_epi64(u, 16));
    u = _mm512_max_epu8(u, _mm512_srli_epi64(u, 8));
    const uint64_t maxima = static_cast<uint64_t>(_mm_cvtsi128_si64(_mm512_cvtepi64_epi8(u)));
    // Magnitude codes are <= 127; one of 127 (NaN) carries into bit 7 when 1 is added.
    if ((maxima + 0x0101010101010101ull) & 0x8080808080808080ull) return false;
    constexpr int kByteOfRowR[4] = {0, 4, 1, 5}, kByteOfRowS[4] = {2, 6, 3, 7};

    uint32_t index_r = 0, index_s = 0;
    for (int j = 0; j < 4; ++j) {
      const int64_t b = b0 + j;
      if (j < valid) {
        const int64_t sc = scale_col_of_block[b];
        const uint8_t xr = tables.scale_code(sc, (maxima >> (8 * kByteOfRowR[j])) & 0xff);
        const uint8_t xs = tables.scale_code(sc, (maxima >> (8 * kByteOfRowS[j])) & 0xff);
        if (xr == kStop || xs == kStop) return false;
        s.scales[b] = xs;
        r.scales[b] = xr;
        index_r = tables.slot_index(sc, xr);
        index_s = tables.slot_index(sc, xs);
      }  // else: zero padding, rounded with the last block's tables and not stored
      const CodeSlot *slot_r = &tables.slot(index_r), *slot_s = &tables.slot(index_s);
      const __m512 abs_scale = _mm512_set1_ps(tables.abs_scale(scale_col_of_block[b0 + (j < valid ? j : valid - 1)]));

      // Codes: the magnitude's by table (vpermi2b reads the low 7 bits of each index byte),
      // the sign by xor, then two per byte, the first element in the low nibble.
      __m512i code = _mm512_permutex2var_epi8(_mm512_load_si512(slot_r->code), x[j],
                                              _mm512_load_si512(slot_r->code + 64));
      code = _mm512_mask_mov_epi8(code, 0xffffffff00000000ull,
                                  _mm512_permutex2var_epi8(_mm512_load_si512(slot_s->code), x[j],
                                                           _mm512_load_si512(slot_s->code + 64)));
      code = _mm512_ternarylogic_epi32(code, _mm512_srli_epi16(x[j], 4), sign_to_bit3, 0x78);  // a ^ (b & c)
      const __m256i packed = _mm512_cvtepi16_epi8(_mm512_or_si512(code, _mm512_srli_epi16(code, 4)));
      if (j < valid) {
        const int64_t at = b * block_stride;
        _mm_storeu_si128(reinterpret_cast<__m128i*>(s.codes + at), _mm256_extracti128_si256(packed, 1));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(r.codes + at), _mm256_castsi256_si128(packed));
      }

      // Error terms: lane i of shift t holds element 4i + t.
      const __m512i index = _mm512_or_si512(code, second_half);
      const __m512 dequantized_r = _mm512_load_ps(slot_r->dequantized),
                   dequantized_s = _mm512_load_ps(slot_s->dequantized);
      const __m512i fields[4] = {_mm512_slli_epi32(x[j], 20), _mm512_slli_epi32(x[j], 12), _mm512_slli_epi32(x[j], 4),
                                 _mm512_srli_epi32(x[j], 4)};
      const __m512i indices[4] = {index, _mm512_srli_epi32(index, 8), _mm512_srli_epi32(index, 16),
                                  _mm512_srli_epi32(index, 24)};
      for (int t = 0; t < 4; ++t) {
        const __m512 value = _mm512_castsi512_ps(_mm512_and_si512(fields[t], field));
        const __m512 a = _mm512_mul_ps(_mm512_mul_ps(value, two_120), abs_scale);
        const __m512 q = _mm512_permutex2var_ps(dequantized_r, indices[t], dequantized_s);
        const __m512 d = _mm512_sub_ps(q, a);
        error[t] = _mm512_fmadd_ps(d, d, error[t]);
        reference[t] = _mm512_fmadd_ps(a, a, reference[t]);
      }
    }
  }
  float er[kBlock], es[kBlock], rr[kBlock], rs[kBlock];
  finish(error, er, es);
  finish(reference, rr, rs);
  sums_r[0] = mxfp4_kernels::reduce_partial_sums(er);
  sums_r[1] = mxfp4_kernels::reduce_partial_sums(rr);
  sums_s[0] = mxfp4_kernels::reduce_partial_sums(es);
  sums_s[1] = mxfp4_kernels::reduce_partial_sums(rs);
  return true;
}

bool quantize_rows(const Fp8Rows& job, Sums* sums) {
  const int64_t k = job.k, blocks = k / kBlock;
  std::vector<int64_t> scale_col_of_block(static_cast<size_t>(blocks));
  for (int64_t b = 0; b < blocks; ++b) scale_col_of_block[b] = b * kBlock / job.block_k;
  BandTables tables(job.scale_cols);
  Sums local = *sums;
  int64_t band = -1;
  const auto row = [&](int64_t i) {
    return PairRow{job.fp8 + i * k, job.codes.data + i * job.codes.row_stride, job.scales + i * blocks};
  };
  for (int64_t i = 0; i < job.rows;) {
    const int64_t absolute = job.first_row + i, this_band = absolute / job.block_n;
    if (this_band != band) {
      tables.start_band(job.scale_inv + this_band * job.scale_cols);
      band = this_band;
    }
    const int64_t band_end = (this_band + 1) * job.block_n - job.first_row;
    const bool pair = i + 1 < job.rows && i + 1 < band_end;
    float first[2], second[2];
    if (!quantize_pair(job, tables, scale_col_of_block.data(), row(i), row(pair ? i + 1 : i), first, second))
      return false;
    local.error += first[0];
    local.reference += first[1];
    if (pair) {
      local.error += second[0];
      local.reference += second[1];
    }
    i += pair ? 2 : 1;
  }
  *sums = local;
  return true;
}

}  // namespace

Fp8Loop avx512_vbmi_loop() { return quantize_rows; }

}  // namespace moeprep::mxfp4_fp8_kernels

#else

namespace moeprep::mxfp4_fp8_kernels {
Fp8Loop avx512_vbmi_loop() { return nullptr; }
}  // namespace moeprep::mxfp4_fp8_kernels

#endif
