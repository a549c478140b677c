// The FP8 -> MXFP4 table loop for CPUs with AVX-512 F, BW and VBMI: this file alone is compiled
// with those flags (lib/CMakeLists.txt) and runs only where mxfp4_quantize_fp8.cpp found them.
//
// Why tables. All 32 elements of an MXFP4 block share one FP8 block scale s, and an E4M3
// magnitude code m (0..126, ordered like its value) fixes a = |fl(value(m) * s)|, so per FP8
// scale block a is a 128-entry function of m, monotonic. The block maximum is then the largest
// magnitude code (a byte max), the E8M0 scale X a 128-entry table of it, and an element's E2M1
// code a 128-entry table of m for each X, built the first time a scale block meets that X:
// one vpermi2b per 64 elements. The error sums keep the float quantizer's terms and order
// (mxfp4_quantize_kernels.h): a is computed from the code's bits (value(m) * 2^-120 is exactly
// the float whose bits are m << 20, subnormal codes included; times |s| * 2^120 where that is
// finite, the same exact product rounded once, else times 2^120 (exact) and then |s|), the
// dequantized value comes from the code by vpermt2ps, and the partial sums take the same fused
// multiply-adds in the same order.
//
// Each thread keeps the tables of the last band it met from one call to the next (convert
// calls this 16 rows at a time); they are reused only for a scale row of the same bits.
//
// Two rows go through together, row r in the low 256 bits of each register and row r + 1 in the
// high ones: an element's byte is then isolated in its 32-bit lane by shifts alone, lane i of
// shift t holding element 4i + t of its block, so each row's 32 partial sums stay in fixed
// lanes of four accumulators.
#include "formats/mxfp4_quantize_fp8_kernels.h"
#include "formats/mxfp4_quantize_fp8_band.h"

#include <cmath>
#include <cstring>
#include <memory>
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


// One scale block's rounding at one E8M0 scale: the E2M1 code (sign bit 3 set where the FP8
// scale is negative, so that the element's own sign is an xor) by magnitude code, and the
// dequantized magnitudes by E2M1 code, twice (the sign bit indexes the second copy).
struct alignas(64) CodeSlot {
  uint8_t code[128];
  float dequantized[16];
};

// The slot at E8M0 code x: code = flip + the number of rounding boundaries below a
// (mxfp4_quantize.cpp's strict tests on bit patterns), 16 magnitude codes a step.
void fill_code_slot(CodeSlot& slot, const int32_t* magnitude_bits, uint8_t x, uint8_t flip) {
  const mxfp4_kernels::BoundaryTable& table = mxfp4_kernels::boundary_table();
  const int32_t* boundary = table.by_code[x].f32;
  const __m512i one = _mm512_set1_epi32(1);
  for (int v = 0; v < 8; ++v) {
    const __m512i a = _mm512_loadu_si512(magnitude_bits + 16 * v);
    __m512i c = _mm512_set1_epi32(flip);
    for (int i = 0; i < 7; ++i)
      c = _mm512_mask_add_epi32(c, _mm512_cmpgt_epi32_mask(a, _mm512_set1_epi32(boundary[i])), c, one);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(slot.code + 16 * v), _mm512_cvtepi32_epi8(c));
  }
  for (int i = 0; i < 16; ++i) slot.dequantized[i] = mxfp4_kernels::kE2m1Magnitude[i & 7] * table.scale_value[x];
}

using BandTables = mxfp4_fp8_kernels::BandTables<CodeSlot>;

// A row pair's per-block state between the passes, and each row's place.
struct PairRow {
  const uint8_t* src;
  uint8_t* codes;
  uint8_t* scales;
};
struct PairScratch {
  std::vector<uint64_t> maxima;  // per 4 blocks: the largest magnitude codes, see block_maxima
  std::vector<const CodeSlot*> slot_r, slot_s;
  std::vector<float> multiplier;  // per block
  std::vector<int64_t> scale_col;  // per block
};

// Pass 1: the largest magnitude code of each block of rows r and s, 4 blocks (8 maxima) a step:
// 16-byte halves paired, then each 16 bytes reduced to one, in 64-bit lanes ordered 0r 2r 0s 2s
// 1r 3r 1s 3s, narrowed to the bytes of one word.
void block_maxima(const uint8_t* src_r, const uint8_t* src_s, int64_t blocks, uint64_t* maxima) {
  const __m512i low7 = _mm512_set1_epi8(0x7f);
  for (int64_t b0 = 0; b0 < blocks; b0 += 4) {
    const uint8_t *r = src_r + b0 * kBlock, *s = src_s + b0 * kBlock;
    // The row's last blocks: the bytes past its end read as zero codes (masked loads, which do
    // not touch them).
    const int64_t n = blocks - b0 < 4 ? (blocks - b0) * kBlock : 4 * kBlock;
    const __mmask64 first = n >= 64 ? ~0ull : (1ull << n) - 1;
    const __mmask64 second = n >= 128 ? ~0ull : n > 64 ? (1ull << (n - 64)) - 1 : 0;
    const __m512i r0 = _mm512_and_si512(_mm512_maskz_loadu_epi8(first, r), low7),
                  r1 = _mm512_and_si512(_mm512_maskz_loadu_epi8(second, r + 64), low7),
                  s0 = _mm512_and_si512(_mm512_maskz_loadu_epi8(first, s), low7),
                  s1 = _mm512_and_si512(_mm512_maskz_loadu_epi8(second, s + 64), low7);
    // Lanes: r0 = 0r.lo 0r.hi 1r.lo 1r.hi, ...; pairs of (r, s) lanes, then lo and hi halves.
    const __m512i p0 = _mm512_shuffle_i64x2(r0, s0, _MM_SHUFFLE(1, 0, 1, 0)),  // 0r 0s
        p1 = _mm512_shuffle_i64x2(r0, s0, _MM_SHUFFLE(3, 2, 3, 2)),            // 1r 1s
        p2 = _mm512_shuffle_i64x2(r1, s1, _MM_SHUFFLE(1, 0, 1, 0)),            // 2r 2s
        p3 = _mm512_shuffle_i64x2(r1, s1, _MM_SHUFFLE(3, 2, 3, 2));            // 3r 3s
    __m512i m01 = _mm512_max_epu8(_mm512_shuffle_i64x2(p0, p1, _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_i64x2(p0, p1, _MM_SHUFFLE(3, 1, 3, 1)));  // 0r 0s 1r 1s
    __m512i m23 = _mm512_max_epu8(_mm512_shuffle_i64x2(p2, p3, _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_i64x2(p2, p3, _MM_SHUFFLE(3, 1, 3, 1)));
    m01 = _mm512_max_epu8(m01, _mm512_bsrli_epi128(m01, 8));
    m23 = _mm512_max_epu8(m23, _mm512_bsrli_epi128(m23, 8));
    __m512i u = _mm512_unpacklo_epi64(m01, m23);
    u = _mm512_max_epu8(u, _mm512_srli_epi64(u, 32));
    u = _mm512_max_epu8(u, _mm512_srli_epi64(u, 16));
    u = _mm512_max_epu8(u, _mm512_srli_epi64(u, 8));
    maxima[b0 / 4] = static_cast<uint64_t>(_mm_cvtsi128_si64(_mm512_cvtepi64_epi8(u)));
  }
}

// Pass 2: each block's E8M0 code, stored, and its rounding slot; false at a NaN code or an
// overflowing product. (Locals throughout: the byte stores may alias anything, which had GCC
// reload every pointer from memory after each.)
bool block_scales(BandTables& tables, int64_t blocks, PairScratch& p, const PairRow& r, const PairRow& s) {
  constexpr int kShiftOfRowR[4] = {0, 32, 8, 40}, kShiftOfRowS[4] = {16, 48, 24, 56};
  const uint64_t* const maxima = p.maxima.data();
  const int64_t* const scale_col = p.scale_col.data();
  const CodeSlot** const slot_r = p.slot_r.data();
  const CodeSlot** const slot_s = p.slot_s.data();
  uint8_t* const scales_r = r.scales;
  uint8_t* const scales_s = s.scales;
  for (int64_t b0 = 0; b0 < blocks; b0 += 4) {
    const uint64_t m = maxima[b0 / 4];
    const int valid = blocks - b0 < 4 ? static_cast<int>(blocks - b0) : 4;
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      if (j >= valid) break;
      const int64_t b = b0 + j, sc = scale_col[b];
      const uint8_t xr = tables.scale_code(sc, (m >> kShiftOfRowR[j]) & 0xff);
      const uint8_t xs = tables.scale_code(sc, (m >> kShiftOfRowS[j]) & 0xff);
      if (xr == kStop || xs == kStop) return false;
      scales_s[b] = xs;
      scales_r[b] = xr;
      slot_r[b] = tables.slot(sc, xr);
      slot_s[b] = tables.slot(sc, xs);
    }
  }
  return true;
}

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

// Pass 3: codes and error terms, one block of both rows a register. Returns the rows' sums
// (error, reference).
template <bool kOneMultiply>
void round_blocks(const PairScratch& p, int64_t blocks, int64_t block_stride, int64_t ahead, const PairRow& r,
                  const PairRow& s, float (&sums_r)[2], float (&sums_s)[2]) {
  const __m512i sign_to_bit3 = _mm512_set1_epi8(0x08), field = _mm512_set1_epi32(0x07f00000),
                // bit 4 of the second row's codes picks its half of the two dequantization tables
                second_half = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi8(0x10), 1);
  const __m512i nibble_weights = _mm512_set1_epi16(0x1001);
  const __m512 two_120 = _mm512_set1_ps(0x1p120f);
  __m512 e0 = _mm512_setzero_ps(), e1 = e0, e2 = e0, e3 = e0, q0 = e0, q1 = e0, q2 = e0, q3 = e0;
  const __mmask64 high = 0xffffffff00000000ull;
  // A later pair's rows, a line every other block: pass 1 otherwise waits for them (measured
  // on the dev VM's EPYC, source beyond the caches: 12.0 -> 9.8 ms per 33 MB).
  for (int64_t b = 0; b < blocks; ++b) {
    if (b % 2 == 0) {
      _mm_prefetch(reinterpret_cast<const char*>(r.src + ahead + b * kBlock), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(s.src + ahead + b * kBlock), _MM_HINT_T0);
    }
    const __m512i x = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r.src + b * kBlock))),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s.src + b * kBlock)), 1);
    const CodeSlot *tr = p.slot_r[b], *ts = p.slot_s[b];
    // Codes: the magnitude's by table (vpermi2b reads the low 7 bits of each index byte), the
    // sign by xor, then two per byte, the first element in the low nibble.
    // Each lookup leaves the other row's bytes as they were (the index), so no blend.
    __m512i code = _mm512_mask2_permutex2var_epi8(_mm512_load_si512(tr->code), x, ~high,
                                                  _mm512_load_si512(tr->code + 64));
    code = _mm512_mask2_permutex2var_epi8(_mm512_load_si512(ts->code), code, high, _mm512_load_si512(ts->code + 64));
    code = _mm512_ternarylogic_epi32(code, _mm512_srli_epi16(x, 4), sign_to_bit3, 0x78);  // a ^ (b & c)
    // c0 + 16 c1 per pair of bytes, in one multiply-add.
    const __m256i packed = _mm512_cvtepi16_epi8(_mm512_maddubs_epi16(code, nibble_weights));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(s.codes + b * block_stride), _mm256_extracti128_si256(packed, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(r.codes + b * block_stride), _mm256_castsi256_si128(packed));

    // Error terms: lane i of shift t holds element 4i + t.
    const __m512i index = _mm512_or_si512(code, second_half);
    const __m512 dr = _mm512_load_ps(tr->dequantized), ds = _mm512_load_ps(ts->dequantized);
    const __m512 multiplier = _mm512_set1_ps(p.multiplier[b]);
    const auto term = [&](__m512i shifted, __m512i idx, __m512& error, __m512& reference) {
      __m512 a = _mm512_castsi512_ps(_mm512_and_si512(shifted, field));
      if (!kOneMultiply) a = _mm512_mul_ps(a, two_120);
      a = _mm512_mul_ps(a, multiplier);
      const __m512 d = _mm512_sub_ps(_mm512_permutex2var_ps(dr, idx, ds), a);
      error = _mm512_fmadd_ps(d, d, error);
      reference = _mm512_fmadd_ps(a, a, reference);
    };
    term(_mm512_slli_epi32(x, 20), index, e0, q0);
    term(_mm512_slli_epi32(x, 12), _mm512_srli_epi32(index, 8), e1, q1);
    term(_mm512_slli_epi32(x, 4), _mm512_srli_epi32(index, 16), e2, q2);
    term(_mm512_srli_epi32(x, 4), _mm512_srli_epi32(index, 24), e3, q3);
  }
  float er[kBlock], es[kBlock], rr[kBlock], rs[kBlock];
  finish({e0, e1, e2, e3}, er, es);
  finish({q0, q1, q2, q3}, rr, rs);
  sums_r[0] = mxfp4_kernels::reduce_partial_sums(er);
  sums_r[1] = mxfp4_kernels::reduce_partial_sums(rr);
  sums_s[0] = mxfp4_kernels::reduce_partial_sums(es);
  sums_s[1] = mxfp4_kernels::reduce_partial_sums(rs);
}

// How many rows ahead pass 3 prefetches the source (reading past the rows is harmless: a
// prefetch never faults).
constexpr int64_t kAhead = 4;

using TableCache = mxfp4_fp8_kernels::BandTableCache<CodeSlot, PairScratch>;

bool quantize_rows(const Fp8Rows& job, Sums* sums) {
  static thread_local TableCache cache;
  const int64_t k = job.k, blocks = k / kBlock;
  PairScratch& p = cache.scratch;
  p.maxima.resize(static_cast<size_t>((blocks + 3) / 4));
  p.slot_r.resize(static_cast<size_t>(blocks));
  p.slot_s.resize(static_cast<size_t>(blocks));
  p.multiplier.resize(static_cast<size_t>(blocks));
  p.scale_col.resize(static_cast<size_t>(blocks));
  for (int64_t b = 0; b < blocks; ++b) p.scale_col[b] = b * kBlock / job.block_k;
  Sums local = *sums;
  int64_t band = -1;
  BandTables* tables = nullptr;
  const auto row = [&](int64_t i) {
    return PairRow{job.fp8 + i * k, job.codes.data + i * job.codes.row_stride, job.scales + i * blocks};
  };
  for (int64_t i = 0; i < job.rows;) {
    const int64_t absolute = job.first_row + i, this_band = absolute / job.block_n;
    if (this_band != band) {
      tables = &cache.tables_for(job.scale_inv + this_band * job.scale_cols, job.scale_cols);
      for (int64_t b = 0; b < blocks; ++b) p.multiplier[b] = tables->multiplier(p.scale_col[b]);
      band = this_band;
    }
    // Rows of one band only; a band's last row alone goes with itself (written twice, summed once).
    const int64_t band_end = (this_band + 1) * job.block_n - job.first_row;
    const bool pair = i + 1 < job.rows && i + 1 < band_end;
    const PairRow r = row(i), s = row(pair ? i + 1 : i);
    block_maxima(r.src, s.src, blocks, p.maxima.data());
    if (!block_scales(*tables, blocks, p, r, s)) return false;
    float first[2], second[2];
    if (tables->one_multiply())
      round_blocks<true>(p, blocks, job.codes.block_stride, kAhead * k, r, s, first, second);
    else
      round_blocks<false>(p, blocks, job.codes.block_stride, kAhead * k, r, s, first, second);
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
