#include "models/mxfp4_sources.h"

#include <array>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "formats/bf16.h"
#include "formats/e2m1.h"
#include "formats/mxfp4_quantize.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace moeprep::models {
namespace {

constexpr int64_t kBlock = 32;

// 2^(code - 127) for every E8M0 code the quantizer can write (0..254): exact floats, 2^-127
// being a subnormal.
const std::array<float, 256>& scale_values() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 255; ++c) t[c] = std::ldexp(1.0f, c - 127);
    t[255] = NAN;
    return t;
  }();
  return table;
}

template <typename Source>
float source_value(const Source* s, int64_t i);
#if !defined(__SSE2__)
template <>
float source_value<uint16_t>(const uint16_t* s, int64_t i) { return bf16_to_float(s[i]); }
#endif
template <>
float source_value<float>(const float* s, int64_t i) { return s[i]; }

template <typename Source>
SquaredError squared_error(const Source* src, const uint8_t* codes, const uint8_t* scales, int64_t rows, int64_t k) {
  const auto& sv = scale_values();
  float e2m1[16];
  for (int c = 0; c < 16; ++c) e2m1[c] = e2m1_to_float(static_cast<uint8_t>(c));
  SquaredError out;
  const int64_t blocks = k / kBlock;
  for (int64_t b = 0; b < rows * blocks; ++b) {
    // The block's 16 possible values, then one lookup per element; four partial sums of each
    // kind keep the adds independent. Sums of one block (32 terms) in float, of blocks in double.
    float value[16];
    for (int c = 0; c < 16; ++c) value[c] = e2m1[c] * sv[scales[b]];
    const Source* x = src + b * kBlock;
    const uint8_t* q = codes + b * (kBlock / 2);
    float e0 = 0, e1 = 0, e2 = 0, e3 = 0, r0 = 0, r1 = 0, r2 = 0, r3 = 0;
    for (int64_t j = 0; j < kBlock / 2; j += 2) {
      const float x0 = source_value(x, 2 * j), x1 = source_value(x, 2 * j + 1);
      const float x2 = source_value(x, 2 * j + 2), x3 = source_value(x, 2 * j + 3);
      const float d0 = value[q[j] & 15] - x0, d1 = value[q[j] >> 4] - x1;
      const float d2 = value[q[j + 1] & 15] - x2, d3 = value[q[j + 1] >> 4] - x3;
      e0 += d0 * d0;
      e1 += d1 * d1;
      e2 += d2 * d2;
      e3 += d3 * d3;
      r0 += x0 * x0;
      r1 += x1 * x1;
      r2 += x2 * x2;
      r3 += x3 * x3;
    }
    out.error += (e0 + e1) + (e2 + e3);
    out.reference += (r0 + r1) + (r2 + r3);
  }
  return out;
}

std::string expert_context(const ExpertRows& m, int64_t e) {
  return m.labels[static_cast<size_t>(e)] + " (expert " + std::to_string(e) + ", rows as the kernel reads them)";
}

void check_slice(const ExpertRows& m, int64_t first, int64_t count) {
  if (first < 0 || count < 0 || first + count > m.experts)
    throw_internal("expert slice [" + std::to_string(first) + ", " + std::to_string(first + count) +
                   ") outside the " + std::to_string(m.experts) + " experts");
}

Shape blocks_shape(const ExpertRows& m, int64_t experts) { return {experts, m.rows, m.cols / kBlock, 16}; }
Shape scales_shape(const ExpertRows& m, int64_t experts) { return {experts, m.rows, m.cols / kBlock}; }

}  // namespace

std::string quantize_transform_name(const ExpertRows& rows) {
  return rows.from_fp8 ? "dequantize_fp8_block+quantize_mxfp4" : "quantize_mxfp4";
}

#if defined(__SSE2__)
namespace {

// Four E2M1 codes (one per 32-bit lane, sign in bit 3) to their float values times `scale`,
// built from the bit pattern: magnitude m >= 2 is (1 + (m & 1) / 2) * 2^((m >> 1) - 1), m = 1
// is 0.5 and m = 0 is 0. No table lookups, which SSE2 cannot vectorize.
inline __m128 e2m1_times(__m128i code, __m128 scale) {
  const __m128i one = _mm_set1_epi32(1);
  const __m128i m = _mm_and_si128(code, _mm_set1_epi32(7));
  const __m128i exponent = _mm_add_epi32(_mm_srli_epi32(m, 1), _mm_set1_epi32(126));
  const __m128i half_bit = _mm_and_si128(_mm_and_si128(m, one), _mm_cmpgt_epi32(m, one));
  __m128i bits = _mm_or_si128(_mm_slli_epi32(exponent, 23), _mm_slli_epi32(half_bit, 22));
  bits = _mm_andnot_si128(_mm_cmpeq_epi32(m, _mm_setzero_si128()), bits);
  bits = _mm_or_si128(bits, _mm_slli_epi32(_mm_and_si128(code, _mm_set1_epi32(8)), 28));
  return _mm_mul_ps(_mm_castsi128_ps(bits), scale);
}

float horizontal_sum(__m128 v) {
  float t[4];
  _mm_storeu_ps(t, v);
  return (t[0] + t[1]) + (t[2] + t[3]);
}

}  // namespace

// The hot path of BF16 sources: the same sums as the scalar template, eight lanes at a time.
SquaredError mxfp4_squared_error(const uint16_t* bf16_rows, const uint8_t* codes, const uint8_t* scales, int64_t rows,
                                 int64_t k) {
  const auto& sv = scale_values();
  const __m128i zero = _mm_setzero_si128(), low_nibble = _mm_set1_epi8(15);
  SquaredError out;
  const int64_t blocks = k / kBlock;
  for (int64_t r = 0; r < rows; ++r) {
    // Sums of one row in float (K terms), of rows in double.
    __m128 err_a = _mm_setzero_ps(), err_b = _mm_setzero_ps(), ref_a = _mm_setzero_ps(), ref_b = _mm_setzero_ps();
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t b = r * blocks + blk;
      const __m128 scale = _mm_set1_ps(sv[scales[b]]);
      const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + b * (kBlock / 2)));
      const __m128i lo = _mm_and_si128(q, low_nibble), hi = _mm_and_si128(_mm_srli_epi16(q, 4), low_nibble);
      // Element order: low nibble of byte j is element 2j, high nibble element 2j + 1.
      const __m128i first = _mm_unpacklo_epi8(lo, hi), second = _mm_unpackhi_epi8(lo, hi);
      const __m128i eight[4] = {_mm_unpacklo_epi8(first, zero), _mm_unpackhi_epi8(first, zero),
                                _mm_unpacklo_epi8(second, zero), _mm_unpackhi_epi8(second, zero)};
      const uint16_t* x = bf16_rows + b * kBlock;
      for (int g = 0; g < 4; ++g) {
        const __m128i xv = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 8 * g));
        const __m128 x0 = _mm_castsi128_ps(_mm_unpacklo_epi16(zero, xv));
        const __m128 x1 = _mm_castsi128_ps(_mm_unpackhi_epi16(zero, xv));
        const __m128 d0 = _mm_sub_ps(e2m1_times(_mm_unpacklo_epi16(eight[g], zero), scale), x0);
        const __m128 d1 = _mm_sub_ps(e2m1_times(_mm_unpackhi_epi16(eight[g], zero), scale), x1);
        err_a = _mm_add_ps(err_a, _mm_mul_ps(d0, d0));
        err_b = _mm_add_ps(err_b, _mm_mul_ps(d1, d1));
        ref_a = _mm_add_ps(ref_a, _mm_mul_ps(x0, x0));
        ref_b = _mm_add_ps(ref_b, _mm_mul_ps(x1, x1));
      }
    }
    out.error += horizontal_sum(_mm_add_ps(err_a, err_b));
    out.reference += horizontal_sum(_mm_add_ps(ref_a, ref_b));
  }
  return out;
}
#else
SquaredError mxfp4_squared_error(const uint16_t* bf16_rows, const uint8_t* codes, const uint8_t* scales, int64_t rows,
                                 int64_t k) {
  return squared_error(bf16_rows, codes, scales, rows, k);
}
#endif

SquaredError mxfp4_squared_error(const float* rows_f32, const uint8_t* codes, const uint8_t* scales, int64_t rows,
                                 int64_t k) {
  return squared_error(rows_f32, codes, scales, rows, k);
}

void mxfp4_scales_only(const uint16_t* src, int64_t rows, int64_t k, uint8_t* scales, const std::string& context) {
  const int64_t blocks = k / kBlock;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < blocks; ++b) {
      const uint16_t* x = src + r * k + b * kBlock;
      uint16_t amax = 0;
      for (int64_t i = 0; i < kBlock; ++i) {
        const uint16_t a = x[i] & 0x7fff;
        amax = a > amax ? a : amax;
      }
      if (amax >= 0x7f80) {
        // Let the quantizer report it, so that both paths fail with the same words.
        std::vector<uint8_t> codes(static_cast<size_t>(k / 2)), sc(static_cast<size_t>(blocks));
        quantize_mxfp4_rows_bf16(src + r * k, 1, k, codes.data(), sc.data(), context + " row " + std::to_string(r));
      }
      scales[r * blocks + b] = mxfp4_scale_code_for_amax(bf16_to_float(amax));
    }
}

void mxfp4_scales_only(const float* src, int64_t rows, int64_t k, uint8_t* scales, const std::string& context) {
  const int64_t blocks = k / kBlock;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < blocks; ++b) {
      uint32_t amax = 0;
      for (int64_t i = 0; i < kBlock; ++i) {
        uint32_t u;
        std::memcpy(&u, src + r * k + b * kBlock + i, 4);
        u &= 0x7fffffffu;
        amax = u > amax ? u : amax;
      }
      if (amax >= 0x7f800000u) {
        std::vector<uint8_t> codes(static_cast<size_t>(k / 2)), sc(static_cast<size_t>(blocks));
        quantize_mxfp4_rows(src + r * k, 1, k, codes.data(), sc.data(), context + " row " + std::to_string(r));
      }
      float a;
      std::memcpy(&a, &amax, 4);
      scales[r * blocks + b] = mxfp4_scale_code_for_amax(a);
    }
}

namespace {

// Expert e's BF16 rows as runs: in place when the map allows, else copied into `buffer`.
std::vector<Bf16Run> bf16_runs(const ExpertRows& m, int64_t e, std::vector<uint16_t>& buffer, const std::string& label) {
  if (m.mapped_bf16) {
    std::vector<Bf16Run> runs = m.mapped_bf16(e);
    if (!runs.empty()) return runs;
  }
  buffer.resize(static_cast<size_t>(m.elements()));
  m.read_bf16(e, buffer.data());
  return {{buffer.data(), m.rows, &label}};
}

}  // namespace

CanonicalSource mxfp4_blocks_source(ExpertRowsPtr rows) {
  CanonicalSource s;
  s.dtype = Dtype::U8;
  s.shape = blocks_shape(*rows, rows->experts);
  s.tensors = rows->tensors;
  s.transform = quantize_transform_name(*rows);
  s.quantization = std::make_shared<QuantizationStats>();
  auto stats = s.quantization;
  s.assemble = [rows, stats](int64_t first, int64_t count) {
    const ExpertRows& m = *rows;
    check_slice(m, first, count);
    ByteTensor out{Dtype::U8, blocks_shape(m, count), {}};
    const size_t code_bytes = static_cast<size_t>(m.elements() / 2);
    out.bytes.resize(code_bytes * static_cast<size_t>(count));
    std::vector<uint8_t> scales(static_cast<size_t>(m.elements() / kBlock));
    std::vector<uint16_t> bf16;
    std::vector<float> f32(m.read_f32 ? static_cast<size_t>(m.elements()) : 0);
    for (int64_t e = first; e < first + count; ++e) {
      uint8_t* codes = out.bytes.data() + code_bytes * static_cast<size_t>(e - first);
      const std::string label = expert_context(m, e);
      SquaredError se;
      if (m.read_f32) {
        m.read_f32(e, f32.data());
        quantize_mxfp4_rows(f32.data(), m.rows, m.cols, codes, scales.data(), label);
        se = mxfp4_squared_error(f32.data(), codes, scales.data(), m.rows, m.cols);
      } else {
        int64_t row = 0;
        for (const Bf16Run& run : bf16_runs(m, e, bf16, label)) {
          uint8_t* c = codes + row * m.cols / 2;
          uint8_t* sc = scales.data() + row * m.cols / kBlock;
          quantize_mxfp4_rows_bf16(run.data, run.rows, m.cols, c, sc, *run.name);
          const SquaredError part = mxfp4_squared_error(run.data, c, sc, run.rows, m.cols);
          se.error += part.error;
          se.reference += part.reference;
          row += run.rows;
        }
      }
      if (m.release) m.release(e);
      stats->add(e, se.error, se.reference);
    }
    return out;
  };
  return s;
}

CanonicalSource mxfp4_scales_source(ExpertRowsPtr rows) {
  CanonicalSource s;
  s.dtype = Dtype::U8;
  s.shape = scales_shape(*rows, rows->experts);
  s.tensors = rows->tensors;
  s.transform = quantize_transform_name(*rows);
  s.assemble = [rows](int64_t first, int64_t count) {
    const ExpertRows& m = *rows;
    check_slice(m, first, count);
    ByteTensor out{Dtype::U8, scales_shape(m, count), {}};
    const size_t per = static_cast<size_t>(m.elements() / kBlock);
    out.bytes.resize(per * static_cast<size_t>(count));
    std::vector<uint16_t> bf16;
    std::vector<float> f32(m.read_f32 ? static_cast<size_t>(m.elements()) : 0);
    for (int64_t e = first; e < first + count; ++e) {
      uint8_t* scales = out.bytes.data() + per * static_cast<size_t>(e - first);
      const std::string label = expert_context(m, e);
      if (m.read_f32) {
        m.read_f32(e, f32.data());
        mxfp4_scales_only(f32.data(), m.rows, m.cols, scales, label);
      } else {
        int64_t row = 0;
        for (const Bf16Run& run : bf16_runs(m, e, bf16, label)) {
          mxfp4_scales_only(run.data, run.rows, m.cols, scales + row * m.cols / kBlock, *run.name);
          row += run.rows;
        }
      }
      if (m.release) m.release(e);
    }
    return out;
  };
  return s;
}

}  // namespace moeprep::models
