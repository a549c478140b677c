// The column quantizer's loop for CPUs with AVX-512 F and BW: this file alone is compiled with
// those flags (lib/CMakeLists.txt). A register holds one source row's 32 consecutive columns,
// i.e. one element of 32 output rows' blocks, so a slab of 32 source rows is 32 blocks side by
// side and everything is vertical: the block maxima are 31 vpmaxuw, the rounding is the row
// loop's (mxfp4_quantize_avx512.cpp) with a scale per lane, and only the packed code bytes need
// a transpose (16-bit words, 8 x 32). The error sums keep each output row's 32 partial sums
// (element index mod 32) as the row loops do, added block after block in k order, so they are
// the same floats; the pairwise reduction runs across columns at the end.
//
// Order of the walk, measured on the dev VM's EPYC (12 experts of [2048, 1536], from memory):
// columns 128 at a time down all of k read the source at ~10 GB/s where sequential reads reach
// ~20 (every row a jump), 4.6 GB/s in all; 4 slabs (128 rows) at a time across the width read
// it row after row, and with the partial sums in registers across the 4 slabs (read and written
// once per 4 instead of every slab), 5.6-6.8 GB/s; the transpose and the row loop, 3.3.
// Prefetching the next vector's lines of the same rows changed nothing measurable on either the
// EPYC or a Xeon, and loading them during this one's arithmetic halved the rate (a load that
// misses stalls the arithmetic behind it). What pays is RowPrefetch below: the next group's rows
// asked of L2 row after row, a few lines per step of this group's arithmetic.
#include "formats/mxfp4_quantize_columns_kernels.h"

#include "core/hash.h"
#include "core/shape.h"

#if defined(MOEPREP_X86_SIMD) && defined(__AVX512F__) && defined(__AVX512BW__)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace moeprep::mxfp4_kernels {
namespace {

// Slabs whose terms one pass adds to the partial sums held in registers: the sums of a vector
// of columns are read and written once per group instead of once per slab.
constexpr int kGroupSlabs = 4;
// Columns whose partial sums (256 bytes each) are kept at a time: 128 KiB, within L2. Measured on
// the dev VM from memory, GB/s at [K, N] = [2048, 1536], [2880, 5760], [2880, 2880]: 128 columns
// 5.7, 4.1, 4.2; 512: 6.8, 5.5, 4.8; 1024: 6.2, 4.9, 4.8; 8192: 5.7, 4.4, 4.1.
constexpr int64_t kChunkColumns = 512;

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

// The partial sums of one vector of 32 columns: [element index mod 32][error of the even columns,
// of the odd ones, reference of the even, of the odd][16 lanes].
struct alignas(64) VectorSums {
  float v[kBlock][4][16];
};

// Where a vector's 32 columns put their 16 code bytes of a slab as 8 whole cache lines, the same
// lines (a block stride further) in every slab: the tile-shuffled layouts, in which 4 consecutive
// rows of a 16-row tile are one line, whether the columns are those rows in order or alternate
// between two tiles (GPT-OSS BF16's interleaved gate/up). column_of[8 L + q] is the column whose
// bytes are row L of line q, and line[q] that line in slab 0.
struct CodeLines {
  alignas(64) uint16_t column_of[32];
  uint8_t* line[8];
  bool valid = false;
};

CodeLines code_lines(uint8_t* const* row_codes, int64_t block_stride) {
  CodeLines plan{};
  if (block_stride % 64 != 0) return {};
  bool taken[32] = {};
  int lines = 0;
  for (int i = 0; i < 32; ++i) {
    const auto offset = static_cast<int>(reinterpret_cast<uintptr_t>(row_codes[i]) % 64);
    if (offset % 16 != 0) return {};
    uint8_t* const line = row_codes[i] - offset;
    int q = 0;
    while (q < lines && plan.line[q] != line) ++q;
    if (q == lines) {
      if (lines == 8) return {};
      plan.line[lines++] = line;
    }
    const int slot = 8 * (offset / 16) + q;
    if (taken[slot]) return {};
    taken[slot] = true;
    plan.column_of[slot] = static_cast<uint16_t>(i);
  }
  // 32 columns in 32 distinct slots of 8 lines: every line whole.
  plan.valid = true;
  return plan;
}

// The source lines of the group the walk takes next, asked of L2 (prefetcht1) a few at a time
// while this group is encoded, row after row: the walk itself reads 128 rows a line at a time,
// 128 streams that no hardware prefetcher follows, and its block maxima waited on memory for a
// third of the loop's samples in GPT-OSS BF16's convert. Row after row, the requests are
// sequential within each row. Into L1 (prefetcht0) they displaced the group being encoded and
// were slower than none (quantize_bench, from memory: none 6.6 GB/s, L1 5.9, L2 6.8-7.3).
class RowPrefetch {
 public:
  RowPrefetch() = default;
  // `rows` rows from `first`, `stride_bytes` apart, `width_bytes` of each. A row's bytes may start
  // anywhere in a line; its span is taken from that line's start, whole steps of kLinesPerStep
  // lines, so that a step never ends a row part-way (the few lines past a row's end are the next
  // chunk's, read later).
  RowPrefetch(const uint8_t* first, int64_t rows, int64_t stride_bytes, int64_t width_bytes) {
    const auto offset = static_cast<int64_t>(reinterpret_cast<uintptr_t>(first) % 64);
    row_ = first - offset;
    end_ = row_ + rows * stride_bytes;
    stride_ = stride_bytes;
    span_ = round_up(offset + width_bytes, kStepBytes);
  }
  // The group of kGroupSlabs slabs (fewer at the end of k) from slab blk0 of the `width_bytes`
  // from `columns` (the source's row 0), or nothing past the last of `slabs`.
  static RowPrefetch group(const uint8_t* columns, int64_t blk0, int64_t slabs, int64_t stride_bytes,
                           int64_t width_bytes) {
    if (blk0 >= slabs) return {};
    return {columns + blk0 * kBlock * stride_bytes, std::min<int64_t>(kGroupSlabs, slabs - blk0) * kBlock,
            stride_bytes, width_bytes};
  }
  // Lines per step: a group has 32 steps per vector of columns (16 vectors a chunk of 512) and its
  // successor 128 rows of 16 lines (1 KiB), so 4 a step spread the requests over the whole group.
  static constexpr int kLinesPerStep = 4;
  // Unrolled, one test a step: the earlier step, a loop that tested the end of the group and of
  // the row at every line, was a fifth of the column loop's time with its rows in L2 (dev VM).
  void step() {
    if (row_ == end_) return;
    const char* const at = reinterpret_cast<const char*>(row_) + offset_;
    for (int l = 0; l < kLinesPerStep; ++l) _mm_prefetch(at + 64 * l, _MM_HINT_T1);
    offset_ += kStepBytes;
    if (offset_ == span_) {
      offset_ = 0;
      row_ += stride_;
    }
  }

 private:
  static constexpr int64_t kStepBytes = 64 * kLinesPerStep;
  const uint8_t* row_ = nullptr;
  const uint8_t* end_ = nullptr;
  int64_t stride_ = 0, span_ = 0, offset_ = 0;
};

// Keeps a constant in its register: GCC otherwise re-broadcasts it inside the unrolled loops.
template <class V>
inline V pinned(V v) {
  asm("" : "+v"(v));
  return v;
}

// The E2M1 values by signed 4-bit code as bf16 patterns at scale 2^0 (0.5 = 0x3f00 .. 6 = 0x40c0),
// for vpermw.
constexpr uint16_t kSignedMagnitudeBf16[16] = {0x0000, 0x3f00, 0x3f80, 0x3fc0, 0x4000, 0x4040, 0x4080, 0x40c0,
                                               0x8000, 0xbf00, 0xbf80, 0xbfc0, 0xc000, 0xc040, 0xc080, 0xc0c0};

template <bool kFull>
inline __m512i load(const uint8_t* p, __mmask32 valid) {
  return kFull ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi16(valid, p);
}

// The 4-bit codes (sign in bit 3) of one source row's 32 columns, in 16-bit lanes.
inline __m512i code_of(__m512i x, __m512i a, __m512i lowest, __m512i code_offset, __m512i sign_bit) {
  const __m512i t = _mm512_subs_epu16(a, lowest);
  const __m512i code32 = _mm512_add_epi16(_mm512_permutexvar_epi16(_mm512_srli_epi16(t, 5), code_offset), t);
  // The sign (bit 15) joins as bit 8; the 4-bit code comes down to bits 0..3.
  return _mm512_srli_epi16(_mm512_ternarylogic_epi32(code32, _mm512_srli_epi16(x, 7), sign_bit, 0xf8), 5);
}

inline void add_terms(float* partial, __m512 d_even, __m512 d_odd, __m512 x_even, __m512 x_odd) {
  _mm512_store_ps(partial, _mm512_fmadd_ps(d_even, d_even, _mm512_load_ps(partial)));
  _mm512_store_ps(partial + 16, _mm512_fmadd_ps(d_odd, d_odd, _mm512_load_ps(partial + 16)));
  _mm512_store_ps(partial + 32, _mm512_fmadd_ps(x_even, x_even, _mm512_load_ps(partial + 32)));
  _mm512_store_ps(partial + 48, _mm512_fmadd_ps(x_odd, x_odd, _mm512_load_ps(partial + 48)));
}

struct Loop {
  const uint8_t* src;  // element [0, 0] of the call
  int64_t stride_bytes, blocks;
  uint8_t* const* row_codes;  // output row i's block b at row_codes[i] + b * block_stride
  int64_t block_stride;
  uint8_t* scales;

  // The scale codes of one slab's 32 columns; false at a NaN or Inf.
  template <bool kFull>
  bool slab_scales(const uint8_t* base, __mmask32 valid, __m512i& scale) const {
    const __m512i abs_mask = pinned(_mm512_set1_epi16(0x7fff));
    __m512i amax_even = _mm512_setzero_si512(), amax_odd = _mm512_setzero_si512();
    const uint8_t* p = base;
    #pragma GCC unroll 16
    for (int j = 0; j < kBlock; j += 2) {
      amax_even = _mm512_max_epu16(amax_even, _mm512_and_si512(load<kFull>(p, valid), abs_mask));
      amax_odd = _mm512_max_epu16(amax_odd, _mm512_and_si512(load<kFull>(p + stride_bytes, valid), abs_mask));
      p += 2 * stride_bytes;
      // One pointer walk a slab: GCC otherwise keeps the 32 row offsets, shared by a group's
      // slabs, in vector registers and moves each back to an integer register to load.
      asm("" : "+r"(p));
    }
    const __m512i amax = _mm512_max_epu16(amax_even, amax_odd);
    // Every NaN or Inf pattern is at least the Inf pattern.
    if (_mm512_cmpge_epu16_mask(amax, _mm512_set1_epi16(0x7f80))) return false;
    // scale_code per lane: biased exponent - 2 clamped at 0, and 127 for a zero block.
    scale = _mm512_mask_mov_epi16(_mm512_subs_epu16(_mm512_srli_epi16(amax, 7), _mm512_set1_epi16(2)),
                                  _mm512_cmpeq_epi16_mask(amax, _mm512_setzero_si512()), _mm512_set1_epi16(127));
    return true;
  }

  // Stores the scale codes of slabs blk0 .. blk0 + G - 1: a column's are consecutive bytes, so a
  // group of 4 is one 4-byte store per column.
  template <int G>
  void store_scales(const __m512i (&scale)[G], int64_t col, int n, int64_t blk0) const {
    uint8_t* const s = scales + col * blocks + blk0;
    if constexpr (G == 4) {
      // Bytes of slabs (0, 1) and (2, 3) paired in 16-bit lanes, then the pairs interleaved:
      // 128-bit lane L of `low` holds columns 8 L .. 8 L + 3, of `high` 8 L + 4 .. 8 L + 7.
      const __m512i pair01 = _mm512_or_si512(scale[0], _mm512_slli_epi16(scale[1], 8));
      const __m512i pair23 = _mm512_or_si512(scale[2], _mm512_slli_epi16(scale[3], 8));
      const __m512i low = _mm512_unpacklo_epi16(pair01, pair23), high = _mm512_unpackhi_epi16(pair01, pair23);
      alignas(64) uint32_t codes[2][16];
      _mm512_store_si512(codes[0], low);
      _mm512_store_si512(codes[1], high);
      for (int l = 0; l < n; ++l) std::memcpy(s + l * blocks, &codes[(l / 4) % 2][(l / 8) * 4 + l % 4], 4);
    } else {
      alignas(32) uint8_t bytes[G][32];
      for (int q = 0; q < G; ++q)
        _mm256_store_si256(reinterpret_cast<__m256i*>(bytes[q]), _mm512_cvtepi16_epi8(scale[q]));
      for (int l = 0; l < n; ++l)
        for (int q = 0; q < G; ++q) s[l * blocks + q] = bytes[q][l];
    }
  }

  // The 16 code bytes of each of the 32 columns of slab blk, from its 8 words (word c holding
  // elements 4c .. 4c + 3, a nibble each): an 8 x 32 transpose of 16-bit words, after which
  // 128-bit lane L of out[q] is column 8 L + q's bytes. Where `lines` places the columns as whole
  // cache lines, the words' lanes are first put in line order, so that out[q] is line q, stored
  // whole: a quarter of the stores and none of the lane extracts. On the device host's Xeon the
  // 16-byte stores into uncached destination lines cost GPT-OSS BF16's convert about a tenth of
  // its CPU time (stores to a buffer that stays in L1 instead: -10%); whole lines took back about
  // half of that (bench/RESULTS.md). Streaming stores of the lines gave the same wall time.
  template <bool kFull>
  void store_codes(const __m512i (&word)[8], int64_t col, int n, int64_t blk, const CodeLines* lines) const {
    __m512i in[8], pair[8], quad[8], out[8];
    if (kFull && lines) {
      const __m512i order = _mm512_load_si512(lines->column_of);
      for (int c = 0; c < 8; ++c) in[c] = _mm512_permutexvar_epi16(order, word[c]);
    } else {
      for (int c = 0; c < 8; ++c) in[c] = word[c];
    }
    for (int c = 0; c < 4; ++c) {
      pair[2 * c] = _mm512_unpacklo_epi16(in[2 * c], in[2 * c + 1]);      // columns 0..3 of each lane
      pair[2 * c + 1] = _mm512_unpackhi_epi16(in[2 * c], in[2 * c + 1]);  // columns 4..7
    }
    for (int g = 0; g < 2; ++g)      // words 0..3, 4..7
      for (int h = 0; h < 2; ++h) {  // columns 0..3, 4..7
        const __m512i lo = pair[4 * g + h], hi = pair[4 * g + 2 + h];
        quad[4 * g + 2 * h] = _mm512_unpacklo_epi32(lo, hi);      // columns 4h, 4h + 1
        quad[4 * g + 2 * h + 1] = _mm512_unpackhi_epi32(lo, hi);  // columns 4h + 2, 4h + 3
      }
    for (int q = 0; q < 4; ++q) {  // column pairs (0, 1), (2, 3), (4, 5), (6, 7)
      out[2 * q] = _mm512_unpacklo_epi64(quad[q], quad[4 + q]);
      out[2 * q + 1] = _mm512_unpackhi_epi64(quad[q], quad[4 + q]);
    }
    const int64_t offset = blk * block_stride;
    if (kFull && lines) {
      #pragma GCC unroll 8
      for (int q = 0; q < 8; ++q) _mm512_store_si512(lines->line[q] + offset, out[q]);
      return;
    }
    uint8_t* const* const dst = row_codes + col;
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
  }

  // One slab where some lanes have a scale code below kFirstNormalScale (blocks under 2^-122,
  // rare): those lanes round by compares with their own boundaries, and the dequantized values
  // (down to 0.5 * 2^-127, a float subnormal) come from exact float products.
  template <bool kFull>
  __attribute__((noinline)) void encode_slab_small_scales(const uint8_t* base, __mmask32 valid, int64_t col, int n,
                                                          int64_t blk, __m512i scale, VectorSums& acc) const {
    const __m512i abs_mask = _mm512_set1_epi16(0x7fff), sign_bit = _mm512_set1_epi16(0x100),
                  high = _mm512_set1_epi32(static_cast<int32_t>(0xffff0000u)),
                  code_offset = _mm512_load_si512(kCodeOffset.v);
    const __m512i lowest = _mm512_slli_epi16(_mm512_sub_epi16(scale, _mm512_set1_epi16(2)), 7);
    const __mmask32 small = _mm512_cmplt_epu16_mask(scale, _mm512_set1_epi16(kFirstNormalScale));
    const SmallScaleBoundaries& table = small_scale_boundaries();
    __m512i boundary[7];
    for (int i = 0; i < 7; ++i) boundary[i] = _mm512_permutexvar_epi16(scale, _mm512_load_si512(table.boundary[i].v));
    // 2^X as bf16 bits (code << 7; code 0 is the subnormal 2^-127, bits 0x40), as floats.
    const __m512i value = _mm512_mask_mov_epi16(_mm512_slli_epi16(scale, 7),
                                                _mm512_cmpeq_epi16_mask(scale, _mm512_setzero_si512()),
                                                _mm512_set1_epi16(0x40));
    const __m512 scale_even = _mm512_castsi512_ps(_mm512_slli_epi32(value, 16));
    const __m512 scale_odd = _mm512_castsi512_ps(_mm512_and_si512(value, high));
    const __m512 magnitude = _mm512_load_ps(kSignedMagnitude);
    __m512i word[8];
    const uint8_t* p = base;
    for (int j = 0; j < kBlock; ++j, p += stride_bytes) {
      const __m512i x = load<kFull>(p, valid);
      const __m512i a = _mm512_and_si512(x, abs_mask);
      __m512i s = code_of(x, a, lowest, code_offset, sign_bit);
      __m512i by_compare = _mm512_setzero_si512();
      for (int i = 0; i < 7; ++i)
        by_compare = _mm512_mask_add_epi16(by_compare, _mm512_cmpgt_epi16_mask(a, boundary[i]), by_compare,
                                           _mm512_set1_epi16(1));
      s = _mm512_mask_mov_epi16(s, small, _mm512_or_si512(by_compare, _mm512_and_si512(_mm512_srli_epi16(x, 12),
                                                                                        _mm512_set1_epi16(8))));
      word[j / 4] = j % 4 == 0 ? s : _mm512_or_si512(word[j / 4], _mm512_sll_epi16(s, _mm_cvtsi32_si128(4 * (j % 4))));
      const __m512 x_even = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
      const __m512 x_odd = _mm512_castsi512_ps(_mm512_and_si512(x, high));
      const __m512 d_even = _mm512_sub_ps(_mm512_mul_ps(_mm512_permutexvar_ps(s, magnitude), scale_even), x_even);
      const __m512 d_odd =
          _mm512_sub_ps(_mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(s, 16), magnitude), scale_odd), x_odd);
      add_terms(acc.v[j][0], d_even, d_odd, x_even, x_odd);
    }
    store_codes<kFull>(word, col, n, blk, nullptr);
  }

  // G consecutive slabs from blk0 of the 32 columns from col (the first n real; the rest read as
  // zeros, neither stored nor summed). False at a NaN or Inf.
  template <int G, bool kFull>
  bool group(int64_t col, int n, int64_t blk0, VectorSums& acc, const CodeLines* lines, RowPrefetch& prefetch) const {
    const int64_t slab_bytes = kBlock * stride_bytes;
    const uint8_t* const base = src + blk0 * slab_bytes + col * 2;
    const __mmask32 valid = kFull ? ~__mmask32{0} : static_cast<__mmask32>((uint64_t{1} << n) - 1);
    __m512i scale[G];
    __mmask32 small = 0;
    for (int q = 0; q < G; ++q) {
      if (!slab_scales<kFull>(base + q * slab_bytes, valid, scale[q])) return false;
      small |= _mm512_cmplt_epu16_mask(scale[q], _mm512_set1_epi16(kFirstNormalScale));
    }
    store_scales<G>(scale, col, n, blk0);
    if (__builtin_expect(small != 0, 0)) {
      for (int q = 0; q < G; ++q)
        encode_slab_small_scales<kFull>(base + q * slab_bytes, valid, col, n, blk0 + q, scale[q], acc);
      return true;
    }
    encode_group<G, kFull>(base, valid, col, n, blk0, scale, acc, lines, prefetch);
    return true;
  }

  // The usual case, every scale code at least kFirstNormalScale: the rounding by offset, and the
  // dequantized values as the exponent added to the bf16 pattern of the E2M1 value (2^-125 at
  // least: normal, exact). Each element index's partial sums stay in registers across the G slabs.
  template <int G, bool kFull>
  void encode_group(const uint8_t* base, __mmask32 valid, int64_t col, int n, int64_t blk0, const __m512i (&scale)[G],
                    VectorSums& acc, const CodeLines* lines, RowPrefetch& group_prefetch) const {
    // A local copy, written back at the end: through the reference GCC kept its fields in memory.
    RowPrefetch prefetch = group_prefetch;
    const int64_t slab_bytes = kBlock * stride_bytes;
    const __m512i abs_mask = pinned(_mm512_set1_epi16(0x7fff)), sign_bit = pinned(_mm512_set1_epi16(0x100)),
                  high = pinned(_mm512_set1_epi32(static_cast<int32_t>(0xffff0000u))),
                  code_offset = _mm512_load_si512(kCodeOffset.v),
                  magnitude = _mm512_castsi256_si512(
                      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kSignedMagnitudeBf16)));
    __m512i lowest[G], exponent[G];
    for (int q = 0; q < G; ++q) {
      // The lowest boundary, 0.25 * 2^X = bits (code - 2) << 7, and X in the exponent field.
      lowest[q] = _mm512_slli_epi16(_mm512_sub_epi16(scale[q], _mm512_set1_epi16(2)), 7);
      exponent[q] = _mm512_slli_epi16(_mm512_sub_epi16(scale[q], _mm512_set1_epi16(127)), 7);
    }
    __m512i word[G][8];
    const uint8_t* p = base;
    #pragma GCC unroll 8
    for (int c = 0; c < 8; ++c) {
      #pragma GCC unroll 4
      for (int u = 0; u < 4; ++u, p += stride_bytes) {
        prefetch.step();
        float* const partial = acc.v[4 * c + u][0];
        __m512 error_even = _mm512_load_ps(partial), error_odd = _mm512_load_ps(partial + 16),
               reference_even = _mm512_load_ps(partial + 32), reference_odd = _mm512_load_ps(partial + 48);
        #pragma GCC unroll 8
        for (int q = 0; q < G; ++q) {
          const __m512i x = load<kFull>(p + q * slab_bytes, valid);
          const __m512i s = code_of(x, _mm512_and_si512(x, abs_mask), lowest[q], code_offset, sign_bit);
          word[q][c] = u == 0 ? s : _mm512_or_si512(word[q][c], _mm512_slli_epi16(s, 4 * u));
          // Signed dequantized value minus signed source: the row loops' difference up to sign,
          // exact, with the same square.
          // A code of magnitude 0 dequantizes to zero and takes no exponent. Its sign is dropped
          // (zero-masking needs no copy of the lookup, as merging did): the difference with the
          // source is -x either way, and the same square. Tested on the looked-up pattern rather
          // than the code, so that no register holds the mask of the code bits.
          const __m512i looked_up = _mm512_permutexvar_epi16(s, magnitude);
          const __m512i dequantized =
              _mm512_maskz_add_epi16(_mm512_test_epi16_mask(looked_up, abs_mask), looked_up, exponent[q]);
          const __m512 x_even = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
          const __m512 x_odd = _mm512_castsi512_ps(_mm512_and_si512(x, high));
          const __m512 d_even = _mm512_sub_ps(_mm512_castsi512_ps(_mm512_slli_epi32(dequantized, 16)), x_even);
          const __m512 d_odd = _mm512_sub_ps(_mm512_castsi512_ps(_mm512_and_si512(dequantized, high)), x_odd);
          error_even = _mm512_fmadd_ps(d_even, d_even, error_even);
          error_odd = _mm512_fmadd_ps(d_odd, d_odd, error_odd);
          reference_even = _mm512_fmadd_ps(x_even, x_even, reference_even);
          reference_odd = _mm512_fmadd_ps(x_odd, x_odd, reference_odd);
        }
        _mm512_store_ps(partial, error_even);
        _mm512_store_ps(partial + 16, error_odd);
        _mm512_store_ps(partial + 32, reference_even);
        _mm512_store_ps(partial + 48, reference_odd);
      }
    }
    group_prefetch = prefetch;
    for (int q = 0; q < G; ++q) store_codes<kFull>(word[q], col, n, blk0 + q, lines);
  }
};

// The row loops' pairwise reduction of 32 partial sums (reduce_partial_sums), for 16 columns at
// once: the same additions, lane by lane.
__m512 reduce_columns(const VectorSums& acc, int h) {
  __m512 t[16];
  for (int j = 0; j < 16; ++j) t[j] = _mm512_add_ps(_mm512_load_ps(acc.v[j][h]), _mm512_load_ps(acc.v[j + 16][h]));
  for (int j = 0; j < 8; ++j) t[j] = _mm512_add_ps(t[j], t[j + 8]);
  for (int j = 0; j < 4; ++j) t[j] = _mm512_add_ps(t[j], t[j + 4]);
  t[0] = _mm512_add_ps(t[0], t[2]);
  t[1] = _mm512_add_ps(t[1], t[3]);
  return _mm512_add_ps(t[0], t[1]);
}

// The vectors of one call: `head` columns (none when 0), then 32 at a time, the last vector
// holding what is left.
struct Vectors {
  int64_t head, cols;
  int64_t full() const { return (cols - head) / 32; }
  int rest() const { return static_cast<int>((cols - head) % 32); }
  int64_t count() const { return (head > 0) + full() + (rest() > 0); }
  // Columns of vector v.
  int width(int64_t v) const {
    if (head > 0 && v == 0) return static_cast<int>(head);
    return v - (head > 0) < full() ? 32 : rest();
  }
};

template <int G>
bool group_of_vectors(const Loop& loop, const Vectors& vectors, int64_t blk0, VectorSums* acc, const CodeLines* lines,
                      RowPrefetch& prefetch) {
  int64_t v = 0;
  if (vectors.head > 0 && !loop.group<G, false>(0, static_cast<int>(vectors.head), blk0, acc[v++], nullptr, prefetch))
    return false;
  for (int64_t i = 0; i < vectors.full(); ++i, ++v)
    if (!loop.group<G, true>(vectors.head + 32 * i, 32, blk0, acc[v], lines[v].valid ? &lines[v] : nullptr, prefetch))
      return false;
  if (vectors.rest() > 0 &&
      !loop.group<G, false>(vectors.head + 32 * vectors.full(), vectors.rest(), blk0, acc[v], nullptr, prefetch))
    return false;
  return true;
}

// Groups of kGroupSlabs slabs walk k; within one, vectors of 32 columns walk the width, so that
// the source rows are read front to back. The partial sums of every column (256 bytes each)
// live in memory between groups. `after` is what the walk reads after this call's last group
// (the next chunk's first group), prefetched during it.
// The source rows a group read, hashed once the last chunk's pass over them is done: the
// rows lie whole and in order there, each group's a whole number of XXH3 stripes (128 rows of an
// even byte length are a multiple of 256 bytes), and most of their lines are still cached,
// where the executor hashed them from memory on its own thread (GPT-OSS BF16's convert on the
// device host's Xeon, pinned to 2 cores: 0.448 -> 0.392 s wall, paired medians of 9).
struct RowHash {
  Xxh3PieceSums* piece = nullptr;
  const uint8_t* src = nullptr;  // row 0 of the call: the piece's stripe 0
  int64_t row_bytes = 0;
  void rows(int64_t first_row, int64_t count) const {
    if (!piece) return;
    const int64_t first = first_row * row_bytes / 64;
    const int64_t end = std::min(piece->regular_stripes(), (first_row + count) * row_bytes / 64);
    if (end > first) piece->accumulate(src + first * 64, first, end - first);
  }
};

bool quantize_columns(const Loop& loop, int64_t k, const Vectors& columns, Sums* sums, RowPrefetch after,
                      const RowHash& hash) {
  const int64_t slabs = k / kBlock, vectors = columns.count();
  static thread_local std::vector<VectorSums> acc;
  static thread_local std::vector<CodeLines> lines;
  if (static_cast<int64_t>(acc.size()) < vectors) {
    acc.resize(static_cast<size_t>(vectors));
    lines.resize(static_cast<size_t>(vectors));
  }
  std::memset(acc.data(), 0, static_cast<size_t>(vectors) * sizeof(VectorSums));
  for (int64_t i = 0, v = columns.head > 0; i < columns.full(); ++i, ++v)
    lines[static_cast<size_t>(v)] = code_lines(loop.row_codes + columns.head + 32 * i, loop.block_stride);
  for (int64_t blk0 = 0; blk0 < slabs; blk0 += kGroupSlabs) {
    const int64_t next = blk0 + kGroupSlabs;
    RowPrefetch prefetch =
        next < slabs ? RowPrefetch::group(loop.src, next, slabs, loop.stride_bytes, columns.cols * 2) : after;
    bool finite;
    switch (std::min<int64_t>(kGroupSlabs, slabs - blk0)) {
      case 1: finite = group_of_vectors<1>(loop, columns, blk0, acc.data(), lines.data(), prefetch); break;
      case 2: finite = group_of_vectors<2>(loop, columns, blk0, acc.data(), lines.data(), prefetch); break;
      case 3: finite = group_of_vectors<3>(loop, columns, blk0, acc.data(), lines.data(), prefetch); break;
      default: finite = group_of_vectors<4>(loop, columns, blk0, acc.data(), lines.data(), prefetch); break;
    }
    if (!finite) return false;
    hash.rows(blk0 * kBlock, std::min<int64_t>(kGroupSlabs, slabs - blk0) * kBlock);
  }
  // Rows (columns here) added in double in their order, as the row loops do.
  for (int64_t v = 0; v < vectors; ++v) {
    alignas(64) float total[4][16];
    for (int h = 0; h < 4; ++h) _mm512_store_ps(total[h], reduce_columns(acc[static_cast<size_t>(v)], h));
    for (int l = 0; l < columns.width(v); ++l) {
      sums->error += total[l % 2][l / 2];
      sums->reference += total[2 + l % 2][l / 2];
    }
  }
  return true;
}

}  // namespace

bool quantize_bf16_columns_avx512(const uint8_t* src, int64_t src_stride, int64_t k, int64_t cols,
                                  uint8_t* const* row_codes, int64_t block_stride, uint8_t* scales, Sums* sums,
                                  Xxh3PieceSums* hash) {
  const Loop loop{src, src_stride * 2, k / kBlock, row_codes, block_stride, scales};
  // Where every row starts at the same offset within a cache line, the columns before the next
  // line boundary go first, so that the loads of the others are aligned (loads across two lines:
  // 4.7 GB/s from memory at [2048, 1536] on the dev VM's EPYC, aligned 5.1; quantize_bench).
  int64_t head = 0;
  const auto offset = static_cast<int64_t>(reinterpret_cast<uintptr_t>(src) % 64);
  if (offset % 2 == 0 && loop.stride_bytes % 64 == 0) head = std::min(cols, (64 - offset) % 64 / 2);
  // Chunks of columns, each down all of k, so that their partial sums stay in L2. The head
  // columns lead the first chunk, read with the rest of their rows: walked down k on their own,
  // one cache line a row, they were a stride through memory that no prefetcher followed, and
  // their loads took about 12% of this loop's samples in GPT-OSS BF16's convert.
  const auto chunk_columns = [&](int64_t c) { return std::min(cols - c, (c == 0 ? head : 0) + kChunkColumns); };
  for (int64_t c = 0; c < cols;) {
    const int64_t count = chunk_columns(c), next = c + count;
    const Loop part{src + c * 2, loop.stride_bytes, loop.blocks, row_codes + c, block_stride, scales + c * loop.blocks};
    const RowPrefetch after = next < cols ? RowPrefetch::group(src + next * 2, 0, loop.blocks, loop.stride_bytes,
                                                               chunk_columns(next) * 2)
                                          : RowPrefetch();
    // The last chunk's groups finish their rows.
    const RowHash row_hash = next < cols ? RowHash{} : RowHash{hash, src, loop.stride_bytes};
    if (!quantize_columns(part, k, Vectors{c == 0 ? head : 0, count}, sums, after, row_hash)) return false;
    c = next;
  }
  return true;
}

}  // namespace moeprep::mxfp4_kernels

#elif defined(MOEPREP_X86_SIMD)
#error "mxfp4_quantize_columns_avx512.cpp must be compiled with -mavx512f -mavx512bw (lib/CMakeLists.txt)"
#endif
