#include "models/mxfp4_sources.h"

#include <array>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "formats/bf16.h"
#include "formats/e2m1.h"
#include "formats/mxfp4_quantize.h"

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
template <>
float source_value<uint16_t>(const uint16_t* s, int64_t i) { return bf16_to_float(s[i]); }
template <>
float source_value<float>(const float* s, int64_t i) { return s[i]; }

template <typename Source>
SquaredError squared_error(const Source* src, const uint8_t* codes, const uint8_t* scales, int64_t rows, int64_t k) {
  const auto& sv = scale_values();
  float lut[16];
  for (int c = 0; c < 16; ++c) lut[c] = e2m1_to_float(static_cast<uint8_t>(c));
  SquaredError out;
  const int64_t blocks = k / kBlock;
  for (int64_t b = 0; b < rows * blocks; ++b) {
    const float scale = sv[scales[b]];
    const Source* x = src + b * kBlock;
    const uint8_t* q = codes + b * (kBlock / 2);
    // Per block in float (32 terms), summed in double: cheap and far more precise than the
    // error being measured.
    float err = 0, ref = 0;
    for (int64_t j = 0; j < kBlock / 2; ++j) {
      const float x0 = source_value(x, 2 * j), x1 = source_value(x, 2 * j + 1);
      const float d0 = lut[q[j] & 15] * scale - x0, d1 = lut[q[j] >> 4] * scale - x1;
      err += d0 * d0 + d1 * d1;
      ref += x0 * x0 + x1 * x1;
    }
    out.error += err;
    out.reference += ref;
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

SquaredError mxfp4_squared_error(const uint16_t* bf16_rows, const uint8_t* codes, const uint8_t* scales, int64_t rows,
                                 int64_t k) {
  return squared_error(bf16_rows, codes, scales, rows, k);
}

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
    std::vector<uint16_t> bf16(m.read_bf16 ? static_cast<size_t>(m.elements()) : 0);
    std::vector<float> f32(m.read_f32 ? static_cast<size_t>(m.elements()) : 0);
    SquaredError total;
    for (int64_t e = first; e < first + count; ++e) {
      uint8_t* codes = out.bytes.data() + code_bytes * static_cast<size_t>(e - first);
      SquaredError se;
      if (m.read_bf16) {
        m.read_bf16(e, bf16.data());
        quantize_mxfp4_rows_bf16(bf16.data(), m.rows, m.cols, codes, scales.data(), expert_context(m, e));
        se = mxfp4_squared_error(bf16.data(), codes, scales.data(), m.rows, m.cols);
      } else {
        m.read_f32(e, f32.data());
        quantize_mxfp4_rows(f32.data(), m.rows, m.cols, codes, scales.data(), expert_context(m, e));
        se = mxfp4_squared_error(f32.data(), codes, scales.data(), m.rows, m.cols);
      }
      total.error += se.error;
      total.reference += se.reference;
    }
    stats->add(total.error, total.reference);
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
    std::vector<uint16_t> bf16(m.read_bf16 ? static_cast<size_t>(m.elements()) : 0);
    std::vector<float> f32(m.read_f32 ? static_cast<size_t>(m.elements()) : 0);
    for (int64_t e = first; e < first + count; ++e) {
      uint8_t* scales = out.bytes.data() + per * static_cast<size_t>(e - first);
      if (m.read_bf16) {
        m.read_bf16(e, bf16.data());
        mxfp4_scales_only(bf16.data(), m.rows, m.cols, scales, expert_context(m, e));
      } else {
        m.read_f32(e, f32.data());
        mxfp4_scales_only(f32.data(), m.rows, m.cols, scales, expert_context(m, e));
      }
    }
    return out;
  };
  return s;
}

}  // namespace moeprep::models
