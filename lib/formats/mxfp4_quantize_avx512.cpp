// The MXFP4 loops for CPUs with AVX-512 F and BW: this file alone is compiled with those flags
// (lib/CMakeLists.txt) and runs only where core/simd_level.h found them. One block of 32 bf16
// elements is one register; compares give masks, and vpmov* narrowings pack the codes. Same
// rules and summation order as the portable loops (mxfp4_quantize_kernels.h).
#include "formats/mxfp4_quantize_kernels.h"

#include <cstring>

#include "core/hash.h"

#if defined(MOEPREP_X86_SIMD) && defined(__AVX512F__) && defined(__AVX512BW__)
// GCC 12's avx512fintrin.h trips its own uninitialized-value warnings (_mm512_undefined_*,
// GCC bug 105593) in the reductions and extracts used here.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

namespace moeprep::mxfp4_kernels {
namespace {

// The largest of eight 16-bit lanes holding values <= 0x7fff (see the AVX2 file).
inline uint32_t max_u15(__m128i v) {
  const __m128i complement = _mm_xor_si128(v, _mm_set1_epi16(0x7fff));
  // 0x7fff - m as an xor (m <= 0x7fff): no register held for the constant.
  return (static_cast<uint32_t>(_mm_cvtsi128_si32(_mm_minpos_epu16(complement))) & 0xffffu) ^ 0x7fffu;
}

// 512-bit steps (vshufi64x2 where the halves were extracted: also one port-5 uop on Intel), so
// that GCC, without AVX-512 VL, need not copy a value in zmm16..31 to a lower register first.
inline uint32_t max_u15(__m512i v) {
  const __m512i m = _mm512_max_epi16(v, _mm512_shuffle_i64x2(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
  return max_u15(_mm512_castsi512_si128(_mm512_max_epi16(m, _mm512_shuffle_i64x2(m, m, _MM_SHUFFLE(2, 3, 0, 1)))));
}

// Row partial sums in two vectors of 16 lanes; `element[q][l]` is the element index (mod 32)
// that lane l of vector q sums.
struct RowSums {
  __m512 error[2], reference[2];
  void clear() {
    for (int q = 0; q < 2; ++q) error[q] = reference[q] = _mm512_setzero_ps();
  }
  void add(int q, __m512 dequantized, __m512 magnitude) {
    const __m512 d = _mm512_sub_ps(dequantized, magnitude);
    error[q] = _mm512_fmadd_ps(d, d, error[q]);
    reference[q] = _mm512_fmadd_ps(magnitude, magnitude, reference[q]);
  }
  // `order` lists, for elements 0..31, the lane (vector * 16 + lane) that sums it.
  void finish(const int32_t (&order)[kBlock], Sums* sums) const {
    alignas(64) float es[kBlock], rs[kBlock];
    for (int h = 0; h < 2; ++h) {
      const __m512i index = _mm512_loadu_si512(order + 16 * h);
      _mm512_store_ps(es + 16 * h, _mm512_permutex2var_ps(error[0], index, error[1]));
      _mm512_store_ps(rs + 16 * h, _mm512_permutex2var_ps(reference[0], index, reference[1]));
    }
    sums->error += reduce_partial_sums(es);
    sums->reference += reduce_partial_sums(rs);
  }
};

// bf16 patterns become floats without a shuffle: the even elements shifted into the high half of
// their 32-bit lane, the odd ones (already there) masked. Lane l of the even vector sums element
// 2l, of the odd vector 2l + 1. (Shifts and masks instead of four unpacks: 6.31 -> 6.20 ms per
// 66 MB on the dev VM's Zen 4, a small gain; not measured on Intel, where the unpacks would
// share port 5 with the permutes.)
constexpr int32_t kBf16Order[kBlock] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                        8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
// Keeps a constant in its register: GCC otherwise re-broadcasts it from a general register in
// every iteration of the block loop.
template <class V>
inline V pinned(V v) {
  asm("" : "+v"(v));
  return v;
}
// F32 lanes are in element order.
constexpr int32_t kF32Order[kBlock] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                       16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};

// The rounding of a block by its offset above the lowest boundary, for scales whose boundaries
// are all normal bf16 numbers (codes 3 and up: every block with a maximum of 2^-122 or more).
// Then |x| / 2^X = 2^(e - 2) * (1 + m / 128) with t = |x| - bits(0.25 * 2^X) = e * 128 + m
// (0 below 0.25 * 2^X), and the boundaries 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5 sit at t = 0,
// 192, 288, 352, 416, 480, 544: all multiples of 32. Strictly between two multiples, the code is
// interior[t / 32]; at t = 32 q exactly it is on_boundary[q], one less where the boundary at q
// rounds down (ties to the even code: 0.25 -> 0, 1.25 -> 1, 2.5 -> 2, 5 -> 4). t < 640, since
// |x| < 8 * 2^X.
constexpr int kFirstNormalScale = 3;
constexpr int16_t kInteriorCode[32] = {1, 1, 1, 1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 7};
constexpr int16_t kOnBoundaryCode[32] = {0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 4, 4, 4, 5, 6, 6, 6, 7, 7};
// Both tables in one lookup (one vpermw where a second, masked one and a mask test ran on
// Intel's port 5): with t = 32 q + r, (kCodeOffset[q] + t) / 32 = (32 interior[q] - down[q] + r)
// / 32, which is interior[q] for r > 0 and interior[q] - down[q] = on_boundary[q] for r = 0,
// down[q] being 1 where the boundary at q rounds down. The sum stays below 256 (7 * 32 + 31),
// so bits 5..7 of it hold the code; 16-bit arithmetic wraps the negative offsets back.
struct CodeOffsets {
  alignas(64) int16_t v[32];
};
constexpr CodeOffsets code_offsets() {
  CodeOffsets o{};
  for (int q = 0; q < 32; ++q)
    o.v[q] = static_cast<int16_t>(32 * kInteriorCode[q] - (kInteriorCode[q] - kOnBoundaryCode[q]) - 32 * q);
  return o;
}
constexpr CodeOffsets kCodeOffset = code_offsets();

// Per scale code: the dequantized values as bf16 patterns indexed by the 4-bit code, sign
// included ([8 + i] = -[i]), so that one vpermw by the signed codes gives values whose
// difference from the signed source is +-(dequantized - |x|), exact either way, with the same
// square; and the lowest boundary twice in 32 bits, for a vpbroadcastd (vpbroadcastw from
// memory takes a port-5 uop on Intel).
struct SignedRow {
  uint16_t dequantized[16];
  uint32_t lowest_boundary_pair;
};
struct alignas(64) SignedRowSlot {
  SignedRow row;
};
const SignedRowSlot* signed_rows() {
  static const auto* rows = [] {
    static SignedRowSlot r[256];
    const BoundaryTable& table = boundary_table();
    for (int code = 0; code < 256; ++code) {
      for (int i = 0; i < 8; ++i) {
        r[code].row.dequantized[i] = table.dequantized_bf16[code][i];
        r[code].row.dequantized[8 + i] = static_cast<uint16_t>(table.dequantized_bf16[code][i] | 0x8000u);
      }
      const uint32_t lowest = static_cast<uint16_t>(table.by_code[code].bf16[0]);
      r[code].row.lowest_boundary_pair = lowest | lowest << 16;
    }
    return r;
  }();
  return rows;
}

// XXH3's stripe accumulation and scramble (xxhash.h, XXH3_accumulate_512_avx512 and
// XXH3_scrambleAcc_avx512) on a stripe already in a register; the accumulation's product term
// only (the caller adds the swapped data, see quantize_bf16_rows).
inline __m512i xxh3_accumulate_product(__m512i acc, __m512i data, const uint8_t* key) {
  const __m512i data_key = _mm512_xor_si512(data, _mm512_loadu_si512(key));
  // vpmuludq reads the low half of each 64-bit lane: a shift brings the high half there, as
  // xxhash.h's shuffle does, on a port other than the shuffles' on Intel.
  return _mm512_add_epi64(acc, _mm512_mul_epu32(data_key, _mm512_srli_epi64(data_key, 32)));
}
inline __m512i xxh3_scramble(__m512i acc, const uint8_t* key) {
  const __m512i prime32 = _mm512_set1_epi32(static_cast<int>(0x9E3779B1u));  // XXH_PRIME32_1
  const __m512i data_key = _mm512_xor_si512(_mm512_xor_si512(acc, _mm512_srli_epi64(acc, 47)), _mm512_loadu_si512(key));
  const __m512i high = _mm512_shuffle_epi32(data_key, static_cast<_MM_PERM_ENUM>(_MM_SHUFFLE(0, 3, 0, 1)));
  return _mm512_add_epi64(_mm512_mul_epu32(data_key, prime32), _mm512_slli_epi64(_mm512_mul_epu32(high, prime32), 32));
}

// XXH3's secret (192 bytes) copied where it is 128-byte aligned: a stripe's key then advances
// by 8 bytes a block and reaches the scramble key (+128) exactly when its address is a multiple
// of 128, a test that needs no register (the stripe number, the secret's address and the end
// had needed three, two of which GCC kept in vector registers and moved back every block).
struct alignas(128) AlignedSecret {
  uint8_t bytes[192];
};
const uint8_t* aligned_secret() {
  static const AlignedSecret secret = [] {
    AlignedSecret s;
    std::memcpy(s.bytes, Xxh3StripeHash::secret(), sizeof s.bytes);
    return s;
  }();
  return secret.bytes;
}

// The source's XXH3 stripes, when the caller hashes them in this pass (kHash).
struct StripeHash {
  uint64_t* acc = nullptr;
  int64_t first_stripe = 0, hashed = 0;
  uint64_t* block_out = nullptr;  // Xxh3PieceSums' blocks, or null for XXH3's scramble
};

template <bool kMeasure, bool kHash = false>
int64_t quantize_bf16_rows(const uint16_t* src, int64_t rows, int64_t k, const Mxfp4CodeLayout& codes,
                           uint8_t* scales, Sums* sums, const StripeHash& stripes = {}) {
  const int64_t blocks = k / kBlock;
  if (blocks == 0) return -1;  // the look-ahead below reads a row's last block
  const BoundaryTable& table = boundary_table();
  const SignedRowSlot* const signed_row = signed_rows();
  const __m512i abs_mask = _mm512_set1_epi16(0x7fff), sign_bit = pinned(_mm512_set1_epi16(0x100)),
                thirty_two = _mm512_set1_epi16(32), zero = _mm512_setzero_si512(),
                code_offset = _mm512_load_si512(kCodeOffset.v),
                high = pinned(_mm512_set1_epi32(static_cast<int32_t>(0xffff0000u))),
                nibbles = pinned(_mm512_set1_epi32(0x00100001));
  // Locals: a store through a uint8_t pointer may alias the layout, which would then be loaded
  // again for every block.
  const int64_t row_stride = codes.row_stride, block_stride = codes.block_stride;
  RowSums row_sums;
  const uint8_t* key = kHash ? aligned_secret() + static_cast<uint64_t>(stripes.first_stripe) % 16 * 8 : nullptr;
  __m512i hash_acc = kHash ? _mm512_load_si512(stripes.acc) : _mm512_setzero_si512();
  // The stripes' own term of XXH3's accumulation (each 64-bit lane adds its neighbour's data) is
  // a sum: the stripes are added here unswapped and swapped once before each scramble and at the
  // end, one shuffle per 16 stripes instead of one per stripe (the same sums modulo 2^64).
  __m512i hash_data = _mm512_setzero_si512();
  const auto fold_hash_data = [&] {
    const __m512i swapped = _mm512_shuffle_epi32(hash_data, static_cast<_MM_PERM_ENUM>(_MM_SHUFFLE(1, 0, 3, 2)));
    hash_acc = _mm512_add_epi64(hash_acc, swapped);
    hash_data = _mm512_setzero_si512();
  };
  // Locals, as the strides above.
  const int64_t hashed = stripes.hashed;
  uint64_t* block_out = stripes.block_out;
  for (int64_t r = 0; r < rows; ++r) {
    if (kMeasure) row_sums.clear();
    uint8_t* const code_row = codes.data + r * row_stride;
    const int64_t row_end = (r + 1) * blocks;
    // Two blocks ahead: a block's maximum (vector to general register, the longest chain of a
    // block) is taken two iterations before its rounding, so that its scale is ready when its
    // turn comes; the out-of-order window holds only a few blocks (measured on the dev VM's
    // EPYC with the rows in L2: 0.057 -> 0.053 ms one block ahead, 0.050 two, 0.050 three). The
    // block is loaded again in its own turn (from L1) rather than kept: a vector carried from
    // one iteration to the next costs GCC a register copy. Past the row's end the last block
    // stands in (its maximum is not used).
    const auto block_max = [&](int64_t b) {
      const __m512i x = _mm512_loadu_si512(src + (b < row_end ? b : row_end - 1) * kBlock);
      return max_u15(_mm512_and_si512(x, abs_mask));
    };
    uint32_t amax_next = block_max(r * blocks), amax_after = block_max(r * blocks + 1);
    for (int64_t blk = r * blocks; blk < row_end; ++blk) {
      const uint32_t amax = amax_next;
      amax_next = amax_after;
      amax_after = block_max(blk + 2);
      const __m512i x = _mm512_loadu_si512(src + blk * kBlock);
      // Past the source's end the hint is harmless (a prefetch never faults).
      _mm_prefetch(reinterpret_cast<const char*>(src + blk * kBlock) + kPrefetchBytes, _MM_HINT_T0);
      if (kHash && blk < hashed) {
        hash_acc = xxh3_accumulate_product(hash_acc, x, key);
        hash_data = _mm512_add_epi64(hash_data, x);
        key += 8;
        if (__builtin_expect(reinterpret_cast<uintptr_t>(key) % 128 == 0, 0)) {
          fold_hash_data();
          if (block_out) {
            _mm512_storeu_si512(block_out, hash_acc);
            block_out += 8;
            hash_acc = _mm512_setzero_si512();
          } else {
            hash_acc = xxh3_scramble(hash_acc, key);
          }
          key -= 128;
        }
      }
      const __m512i a = _mm512_and_si512(x, abs_mask);
      // One test for the usual blocks, whose maximum's exponent field is 5..254 (scale codes
      // 3..252, the rounding by offset below); zero blocks, the smallest scales and NaN or Inf
      // take the other branch (fewer scalar uops, which share Intel's vector ports 0 and 5).
      const bool usual = amax - 0x280u < 0x7f80u - 0x280u;
      uint32_t scale;
      if (__builtin_expect(usual, 1)) {
        scale = (amax >> 7) - 2;
      } else {
        if (amax >= 0x7f80) {
          if (kHash) {
            fold_hash_data();
            _mm512_store_si512(stripes.acc, hash_acc);
          }
          return blk;
        }
        scale = scale_code(amax, amax >> 7);
      }
      scales[blk] = static_cast<uint8_t>(scale);
      const SignedRow& row = signed_row[scale].row;
      // 32 * code + something below 32, in 16-bit lanes.
      __m512i code32;
      if (usual || scale >= kFirstNormalScale) {
        // t = |x| - 0.25 * 2^X as bit patterns, saturating at 0: the lowest boundary is that
        // bound, exact; t / 32 (< 20) picks the offset (kCodeOffset).
        const __m512i t =
            _mm512_subs_epu16(a, _mm512_set1_epi32(static_cast<int32_t>(row.lowest_boundary_pair)));
        code32 = _mm512_add_epi16(_mm512_permutexvar_epi16(_mm512_srli_epi16(t, 5), code_offset), t);
      } else {
        const int16_t* boundary = table.by_code[scale].bf16;
        code32 = zero;
        #pragma GCC unroll 7
        for (int i = 0; i < 7; ++i)
          code32 = _mm512_mask_add_epi16(code32, _mm512_cmpgt_epi16_mask(a, _mm512_set1_epi16(boundary[i])), code32,
                                         thirty_two);
      }
      // The sign (bit 15 of x) joins as bit 8, then the 4-bit codes come down to bits 0..3.
      const __m512i s = _mm512_srli_epi16(
          _mm512_ternarylogic_epi32(code32, _mm512_srli_epi16(x, 7), sign_bit, 0xf8), 5);
      // Each 32-bit lane holds two codes; one multiply-add puts both nibbles into its low byte
      // (even + 16 * odd), and vpmovdb keeps it.
      const __m512i pairs = _mm512_madd_epi16(s, nibbles);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(code_row + (blk - r * blocks) * block_stride),
                       _mm512_cvtepi32_epi8(pairs));
      if (kMeasure) {
        // The signed dequantized values as bf16 patterns in the lanes of their elements (vpermw
        // reads only lanes 0..15), made floats as the source is; the differences and squares
        // are those of the magnitudes up to sign.
        const __m512i dequantized = _mm512_permutexvar_epi16(
            s, _mm512_castsi256_si512(_mm256_load_si256(reinterpret_cast<const __m256i*>(row.dequantized))));
        row_sums.add(0, _mm512_castsi512_ps(_mm512_slli_epi32(dequantized, 16)),
                     _mm512_castsi512_ps(_mm512_slli_epi32(x, 16)));
        row_sums.add(1, _mm512_castsi512_ps(_mm512_and_si512(dequantized, high)),
                     _mm512_castsi512_ps(_mm512_and_si512(x, high)));
      }
    }
    if (kMeasure) {
      // A copy goes to finish(): were the loop's own sums' address taken, clang would store
      // them to memory every block (the code stores might alias them).
      const RowSums row = row_sums;
      row.finish(kBf16Order, sums);
    }
  }
  if (kHash) {
    fold_hash_data();
    _mm512_store_si512(stripes.acc, hash_acc);
  }
  return -1;
}

int64_t quantize_bf16(const uint16_t* src, int64_t rows, int64_t k, const Mxfp4CodeLayout& codes, uint8_t* scales,
                      Sums* sums) {
  return sums ? quantize_bf16_rows<true>(src, rows, k, codes, scales, sums)
              : quantize_bf16_rows<false>(src, rows, k, codes, scales, nullptr);
}

int64_t quantize_bf16_hashed(const uint16_t* src, int64_t rows, int64_t k, const Mxfp4CodeLayout& codes,
                             uint8_t* scales, Sums* sums, uint64_t* acc, int64_t first_stripe, int64_t hashed,
                             uint64_t* block_out) {
  return quantize_bf16_rows<true, true>(src, rows, k, codes, scales, sums,
                                        StripeHash{acc, first_stripe, hashed, block_out});
}

template <bool kMeasure>
int64_t quantize_f32_rows(const float* src, int64_t rows, int64_t k, const Mxfp4CodeLayout& codes,
                          uint8_t* scales, Sums* sums) {
  const int64_t blocks = k / kBlock;
  const BoundaryTable& table = boundary_table();
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), eight = _mm512_set1_epi32(8), one = _mm512_set1_epi32(1);
  const __m512 magnitudes = _mm512_castps256_ps512(_mm256_loadu_ps(kE2m1Magnitude));
  RowSums row_sums;
  for (int64_t r = 0; r < rows; ++r) {
    if (kMeasure) row_sums.clear();
    for (int64_t blk = r * blocks; blk < (r + 1) * blocks; ++blk) {
      const float* x = src + blk * kBlock;
      const __m512i x0 = _mm512_castps_si512(_mm512_loadu_ps(x)), x1 = _mm512_castps_si512(_mm512_loadu_ps(x + 16));
      const __m512i a0 = _mm512_and_si512(x0, abs_mask), a1 = _mm512_and_si512(x1, abs_mask);
      const uint32_t amax = static_cast<uint32_t>(_mm512_reduce_max_epi32(_mm512_max_epi32(a0, a1)));
      if (amax >= 0x7f800000u) return blk;
      const uint8_t scale = scale_code(amax, amax >> 23);
      scales[blk] = scale;
      const int32_t* boundary = table.by_code[scale].f32;
      __m512i c0 = _mm512_setzero_si512(), c1 = _mm512_setzero_si512();
      #pragma GCC unroll 7
      for (int i = 0; i < 7; ++i) {
        const __m512i b = _mm512_set1_epi32(boundary[i]);
        c0 = _mm512_mask_add_epi32(c0, _mm512_cmpgt_epi32_mask(a0, b), c0, one);
        c1 = _mm512_mask_add_epi32(c1, _mm512_cmpgt_epi32_mask(a1, b), c1, one);
      }
      const __m512i s0 = _mm512_or_si512(c0, _mm512_and_si512(_mm512_srli_epi32(x0, 28), eight));
      const __m512i s1 = _mm512_or_si512(c1, _mm512_and_si512(_mm512_srli_epi32(x1, 28), eight));
      // Each 64-bit lane holds two codes; its low byte gets both nibbles, and vpmovqb keeps it.
      const __m128i p0 = _mm512_cvtepi64_epi8(_mm512_or_si512(s0, _mm512_srli_epi64(s0, 28)));
      const __m128i p1 = _mm512_cvtepi64_epi8(_mm512_or_si512(s1, _mm512_srli_epi64(s1, 28)));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(code_block(codes, r, blk - r * blocks)),
                       _mm_unpacklo_epi64(p0, p1));
      if (kMeasure) {
        const __m512 value = _mm512_mul_ps(magnitudes, _mm512_set1_ps(table.scale_value[scale]));
        row_sums.add(0, _mm512_permutexvar_ps(c0, value), _mm512_castsi512_ps(a0));
        row_sums.add(1, _mm512_permutexvar_ps(c1, value), _mm512_castsi512_ps(a1));
      }
    }
    if (kMeasure) row_sums.finish(kF32Order, sums);
  }
  return -1;
}

int64_t quantize_f32(const float* src, int64_t rows, int64_t k, const Mxfp4CodeLayout& codes, uint8_t* scales,
                     Sums* sums) {
  return sums ? quantize_f32_rows<true>(src, rows, k, codes, scales, sums)
              : quantize_f32_rows<false>(src, rows, k, codes, scales, nullptr);
}

int64_t scales_bf16(const uint16_t* src, int64_t rows, int64_t k, uint8_t* scales) {
  const __m512i abs_mask = _mm512_set1_epi16(0x7fff);
  for (int64_t blk = 0; blk < rows * (k / kBlock); ++blk) {
    const uint32_t amax = max_u15(_mm512_and_si512(_mm512_loadu_si512(src + blk * kBlock), abs_mask));
    if (amax >= 0x7f80) return blk;
    scales[blk] = scale_code(amax, amax >> 7);
  }
  return -1;
}

int64_t scales_f32(const float* src, int64_t rows, int64_t k, uint8_t* scales) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
  for (int64_t blk = 0; blk < rows * (k / kBlock); ++blk) {
    const float* x = src + blk * kBlock;
    const __m512i m = _mm512_max_epi32(_mm512_and_si512(_mm512_castps_si512(_mm512_loadu_ps(x)), abs_mask),
                                       _mm512_and_si512(_mm512_castps_si512(_mm512_loadu_ps(x + 16)), abs_mask));
    const uint32_t amax = static_cast<uint32_t>(_mm512_reduce_max_epi32(m));
    if (amax >= 0x7f800000u) return blk;
    scales[blk] = scale_code(amax, amax >> 23);
  }
  return -1;
}

}  // namespace

const Kernels& avx512_kernels() {
  static const Kernels k{quantize_bf16, quantize_f32, scales_bf16, scales_f32, quantize_bf16_hashed};
  return k;
}

}  // namespace moeprep::mxfp4_kernels

#elif defined(MOEPREP_X86_SIMD)
#error "mxfp4_quantize_avx512.cpp must be compiled with -mavx512f -mavx512bw (lib/CMakeLists.txt)"
#endif
