#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/bf16.h"
#include "formats/e2m1.h"
#include "formats/e8m0.h"
#include "formats/mxfp4_dequantize.h"
#include "formats/mxfp4_quantize.h"

using namespace moeprep;

namespace {

struct Quantized {
  std::vector<uint8_t> codes;
  std::vector<uint8_t> scales;
};

Quantized quantize(const std::vector<float>& x, int64_t rows, const std::string& name = "t") {
  const int64_t k = static_cast<int64_t>(x.size()) / rows;
  Quantized q{std::vector<uint8_t>(x.size() / 2), std::vector<uint8_t>(x.size() / 32)};
  quantize_mxfp4_rows(x.data(), rows, k, q.codes.data(), q.scales.data(), name);
  return q;
}

uint8_t code_at(const Quantized& q, size_t i) {
  const uint8_t byte = q.codes[i / 2];
  return i % 2 == 0 ? e2m1_low(byte) : e2m1_high(byte);
}

// A block of 32 elements: `head` first, the rest zero.
std::vector<float> block(std::vector<float> head) {
  head.resize(32, 0.0f);
  return head;
}

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// An independent reference written from the definition, in double: X from frexp, the
// division by ldexp, and the nearest E2M1 value found by search with an explicit
// ties-to-even-mantissa rule.
uint8_t reference_scale(const float* x) {
  double amax = 0.0;
  for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(static_cast<double>(x[i])));
  if (amax == 0.0) return 127;
  int e2;
  std::frexp(amax, &e2);  // amax = f * 2^e2 with f in [0.5, 1): floor(log2) = e2 - 1
  int shared = (e2 - 1) - 2;
  shared = std::max(-127, std::min(127, shared));
  return static_cast<uint8_t>(shared + 127);
}

uint8_t reference_code(float x, uint8_t scale) {
  const double m = std::fabs(std::ldexp(static_cast<double>(x), 127 - scale));
  const double grid[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  int best = 0;
  for (int c = 1; c < 8; ++c) {
    const double d = std::fabs(grid[c] - m), db = std::fabs(grid[best] - m);
    if (d < db || (d == db && c % 2 == 0)) best = c;
  }
  return static_cast<uint8_t>(best | (std::signbit(x) ? 8 : 0));
}

void expect_matches_reference(const std::vector<float>& x, const Quantized& q) {
  for (size_t b = 0; b < x.size() / 32; ++b) {
    const uint8_t s = reference_scale(&x[b * 32]);
    ASSERT_EQ(q.scales[b], s) << "block " << b;
    for (size_t i = b * 32; i < b * 32 + 32; ++i)
      ASSERT_EQ(code_at(q, i), reference_code(x[i], s)) << "element " << i << " value " << x[i];
  }
}

std::string error_of(const std::vector<float>& x, int64_t rows, const std::string& name) {
  try {
    quantize(x, rows, name);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::BadInput);
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST(Mxfp4Quantize, ExactValuesOnTheGridWithScaleOne) {
  // amax 6 -> floor(log2 6) = 2 -> X = 0, code 127: the inputs are the E2M1 values themselves.
  auto x = block({0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.5, -1, -1.5, -2, -3, -4, -6});
  Quantized q = quantize(x, 1);
  EXPECT_EQ(q.scales[0], 127);
  const uint8_t want[15] = {0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15};
  for (int i = 0; i < 15; ++i) EXPECT_EQ(code_at(q, i), want[i]) << i;
  // Nibble order: element 0 low, element 1 high.
  EXPECT_EQ(q.codes[0], 0x10);
  EXPECT_EQ(q.codes[1], 0x32);
}

TEST(Mxfp4Quantize, TiesGoToTheEvenMantissaCode) {
  // The 6 fixes X = 0 so the other values are rounded as written.
  auto x = block({6, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5, -0.25, -2.5, -5});
  Quantized q = quantize(x, 1);
  ASSERT_EQ(q.scales[0], 127);
  EXPECT_EQ(code_at(q, 1), 0);   // 0.25: between 0 (even) and 0.5 -> 0
  EXPECT_EQ(code_at(q, 2), 2);   // 0.75: between 0.5 and 1 (even) -> 1
  EXPECT_EQ(code_at(q, 3), 2);   // 1.25: between 1 (even) and 1.5 -> 1
  EXPECT_EQ(code_at(q, 4), 4);   // 1.75: between 1.5 and 2 (even) -> 2
  EXPECT_EQ(code_at(q, 5), 4);   // 2.5: between 2 (even) and 3 -> 2
  EXPECT_EQ(code_at(q, 6), 6);   // 3.5: between 3 and 4 (even) -> 4
  EXPECT_EQ(code_at(q, 7), 6);   // 5: between 4 (even) and 6 -> 4
  EXPECT_EQ(code_at(q, 8), 8);   // -0.25 -> -0
  EXPECT_EQ(code_at(q, 9), 12);  // -2.5 -> -2
  EXPECT_EQ(code_at(q, 10), 14); // -5 -> -4
}

TEST(Mxfp4Quantize, JustOffTheTiesRoundToTheNearest) {
  auto x = block({6, std::nextafter(0.25f, 1.0f), std::nextafter(0.75f, 0.0f),
                  std::nextafter(1.25f, 2.0f), std::nextafter(1.75f, 0.0f),
                  std::nextafter(2.5f, 3.0f), std::nextafter(3.5f, 0.0f),
                  std::nextafter(5.0f, 6.0f)});
  Quantized q = quantize(x, 1);
  ASSERT_EQ(q.scales[0], 127);
  const uint8_t want[8] = {7, 1, 1, 3, 3, 5, 5, 7};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(code_at(q, i), want[i]) << "value " << x[i];
}

TEST(Mxfp4Quantize, ScaledBlockAndSaturation) {
  // amax 7.9 -> floor(log2) = 2 -> X = 0; 7.9 > 6 saturates to 6 (code 7).
  auto x = block({7.9f, -7.0f, 6.5f, 0.1f});
  Quantized q = quantize(x, 1);
  EXPECT_EQ(q.scales[0], 127);
  EXPECT_EQ(code_at(q, 0), 7);
  EXPECT_EQ(code_at(q, 1), 15);
  EXPECT_EQ(code_at(q, 2), 7);
  EXPECT_EQ(code_at(q, 3), 0);
  // amax 100 -> floor(log2 100) = 6 -> X = 4 (code 131); 100/16 = 6.25 -> 6; 40/16 = 2.5 -> 2;
  // 24/16 = 1.5; 4/16 = 0.25 -> 0 (tie, even); 8/16 = 0.5 (the E2M1 subnormal).
  auto y = block({100, 40, 24, 4, 8, -12});
  q = quantize(y, 1);
  EXPECT_EQ(q.scales[0], 131);
  const uint8_t want[6] = {7, 4, 3, 0, 1, 10};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(code_at(q, i), want[i]) << "value " << y[i];
}

TEST(Mxfp4Quantize, ScaleIsFloorLog2OfAmaxMinusTwo) {
  EXPECT_EQ(mxfp4_scale_code_for_amax(1.0f), 125);            // 2^0 -> X = -2
  EXPECT_EQ(mxfp4_scale_code_for_amax(std::nextafter(2.0f, 0.0f)), 125);
  EXPECT_EQ(mxfp4_scale_code_for_amax(2.0f), 126);
  EXPECT_EQ(mxfp4_scale_code_for_amax(6.0f), 127);
  EXPECT_EQ(mxfp4_scale_code_for_amax(0.0f), 127);            // zero block: 2^0
  EXPECT_EQ(mxfp4_scale_code_for_amax(std::ldexp(1.0f, -125)), 0);
  EXPECT_EQ(mxfp4_scale_code_for_amax(std::ldexp(1.0f, -124)), 1);
  EXPECT_EQ(mxfp4_scale_code_for_amax(1e-38f), 0);            // floor(log2) = -127, clamped
  EXPECT_EQ(mxfp4_scale_code_for_amax(1e38f), 251);           // 2^126.2 -> X = 124
  EXPECT_EQ(mxfp4_scale_code_for_amax(3e38f), 252);           // 2^127.8 -> X = 125
  EXPECT_EQ(mxfp4_scale_code_for_amax(std::numeric_limits<float>::max()), 252);
  EXPECT_EQ(mxfp4_scale_code_for_amax(std::numeric_limits<float>::denorm_min()), 0);
}

TEST(Mxfp4Quantize, ZeroBlocksGetScale127AndZeroCodes) {
  std::vector<float> x(64, 0.0f);
  for (int i = 32; i < 64; ++i) x[i] = -0.0f;
  Quantized q = quantize(x, 1);
  EXPECT_EQ(q.scales[0], 127);
  EXPECT_EQ(q.scales[1], 127);
  for (int b = 0; b < 16; ++b) EXPECT_EQ(q.codes[b], 0x00);
  // -0.0 keeps its sign: code 8, decoded as -0.0.
  for (int b = 16; b < 32; ++b) EXPECT_EQ(q.codes[b], 0x88);
  std::vector<float> back(64);
  dequantize_mxfp4_rows(q.codes.data(), q.scales.data(), 1, 64, back.data());
  for (int i = 0; i < 64; ++i) {
    EXPECT_EQ(back[i], 0.0f);
    EXPECT_EQ(std::signbit(back[i]), i >= 32);
  }
}

TEST(Mxfp4Quantize, NegativeValuesRoundingToZeroKeepTheSign) {
  auto x = block({6, -0.1f, 0.1f, -0.0f});
  Quantized q = quantize(x, 1);
  EXPECT_EQ(code_at(q, 1), 8);
  EXPECT_EQ(code_at(q, 2), 0);
  EXPECT_EQ(code_at(q, 3), 8);
}

TEST(Mxfp4Quantize, TinyMagnitudesAtTheLowClamp) {
  // amax 1e-38 (2^-126.2): X would be -129, clamped to -127 (code 0); 1e-38 * 2^127 = 1.70
  // -> 1.5; 2^-128 (a float subnormal) * 2^127 = 0.5 exactly.
  auto x = block({1e-38f, -std::ldexp(1.0f, -128), std::ldexp(1.0f, -130),
                  std::ldexp(1.0f, -129)});
  Quantized q = quantize(x, 1);
  EXPECT_EQ(q.scales[0], 0);
  EXPECT_EQ(code_at(q, 0), 3);
  EXPECT_EQ(code_at(q, 1), 9);
  EXPECT_EQ(code_at(q, 2), 0);  // 0.125 -> 0
  EXPECT_EQ(code_at(q, 3), 0);  // 0.25 tie -> 0
  expect_matches_reference(x, q);
  // Every element subnormal: amax 2^-140 -> clamped scale, all codes round to zero.
  auto s = block({std::ldexp(1.0f, -140), -std::numeric_limits<float>::denorm_min()});
  q = quantize(s, 1);
  EXPECT_EQ(q.scales[0], 0);
  EXPECT_EQ(code_at(q, 0), 0);
  EXPECT_EQ(code_at(q, 1), 8);
}

TEST(Mxfp4Quantize, HugeMagnitudes) {
  // 3e38 = 1.76 * 2^127 -> X = 125 (code 252); 3e38 / 2^125 = 7.05 -> 6 (saturated);
  // 1e38 / 2^125 = 2.35 -> 2; 2^126 / 2^125 = 2 exactly.
  auto x = block({3e38f, 1e38f, -std::ldexp(1.0f, 126), std::numeric_limits<float>::max()});
  Quantized q = quantize(x, 1);
  EXPECT_EQ(q.scales[0], 252);
  EXPECT_EQ(code_at(q, 0), 7);
  EXPECT_EQ(code_at(q, 1), 4);
  EXPECT_EQ(code_at(q, 2), 12);
  EXPECT_EQ(code_at(q, 3), 7);
  expect_matches_reference(x, q);
  std::vector<float> back(32);
  dequantize_mxfp4_rows(q.codes.data(), q.scales.data(), 1, 32, back.data());
  EXPECT_EQ(back[0], 6.0f * std::ldexp(1.0f, 125));
  EXPECT_EQ(back[2], -std::ldexp(1.0f, 126));
}

TEST(Mxfp4Quantize, RejectsNanAndInfNamingTensorRowAndBlock) {
  std::vector<float> x(2 * 64, 1.0f);
  x[64 + 32 + 5] = std::numeric_limits<float>::quiet_NaN();  // row 1, block 1, element 37
  std::string msg = error_of(x, 2, "model.layers.3.mlp.experts.down_proj");
  EXPECT_NE(msg.find("model.layers.3.mlp.experts.down_proj"), std::string::npos) << msg;
  EXPECT_NE(msg.find("NaN"), std::string::npos) << msg;
  EXPECT_NE(msg.find("row 1, block 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("element 37"), std::string::npos) << msg;

  std::vector<float> y(64, 1.0f);
  y[3] = -std::numeric_limits<float>::infinity();
  msg = error_of(y, 1, "w_inf");
  EXPECT_NE(msg.find("w_inf"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Inf at row 0, block 0"), std::string::npos) << msg;

  std::vector<uint16_t> h(64, 0x3f80);
  h[40] = 0x7fc1;  // a NaN
  std::vector<uint8_t> codes(32), scales(2);
  try {
    quantize_mxfp4_rows_bf16(h.data(), 1, 64, codes.data(), scales.data(), "bf16_tensor");
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::BadInput);
    EXPECT_NE(std::string(e.what()).find("bf16_tensor"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("NaN at row 0, block 1 (element 40)"),
              std::string::npos) << e.what();
  }
}

TEST(Mxfp4Quantize, RejectsKNotAMultipleOf32) {
  std::vector<float> x(48, 1.0f);
  std::string msg = error_of(x, 1, "odd_k");
  EXPECT_NE(msg.find("odd_k"), std::string::npos) << msg;
  EXPECT_NE(msg.find("divisible by 32, got K=48"), std::string::npos) << msg;
}

TEST(Mxfp4Quantize, RandomBitPatternsMatchTheReferenceAndBf16EqualsFloat) {
  // Every finite bf16 pattern class: random bits (all exponents, subnormals, both zeros),
  // exact grid ties at random scales, and values around the clamps. 4M elements.
  std::mt19937 rng(1234);
  const int64_t rows = 1024, k = 4096;
  std::vector<uint16_t> h(rows * k);
  std::uniform_int_distribution<int> kind(0, 3), exp_shift(-133, 125), tie(0, 6);
  const float ties[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
  for (int64_t b = 0; b < rows * k / 32; ++b) {
    const int block_kind = kind(rng);
    const int shift = exp_shift(rng);
    for (int i = 0; i < 32; ++i) {
      uint16_t v;
      if (block_kind == 0) {
        v = static_cast<uint16_t>(rng());
      } else if (block_kind == 1) {
        // Block max 6 * 2^shift, the rest exact ties at the same scale.
        const float t = i == 0 ? 6.0f : ties[tie(rng)];
        v = float_to_bf16(std::ldexp(rng() % 2 ? t : -t, shift));
      } else if (block_kind == 2) {
        v = static_cast<uint16_t>((rng() & 0x807f) | ((rng() % 4) << 7));  // subnormal-ish
      } else {
        v = static_cast<uint16_t>(rng() & 0x80ff);  // smallest exponents only
      }
      if ((v & 0x7fff) >= 0x7f80) v = static_cast<uint16_t>(v & 0x807f);  // keep finite
      h[b * 32 + i] = v;
    }
  }
  // Explicit edge blocks first: +0, -0, the largest finite bf16 with everything else, the
  // smallest subnormal and the smallest normal.
  const uint16_t edges[] = {0x0000, 0x8000, 0x7f7f, 0xff7f, 0x0001, 0x8001, 0x0080, 0x8080,
                            0x3f80, 0x4000, 0x40c0, 0x3e80, 0x3f40, 0x0040, 0x007f, 0x7f00};
  for (int e = 0; e < 16; ++e)
    for (int i = 0; i < 32; ++i) {
      h[e * 32 + i] = edges[e];                              // a block of one pattern
      h[(16 + e) * 32 + i] = edges[(e + i) % 16];            // all patterns mixed
      h[(32 + e) * 32 + i] = i < 16 ? edges[e] : edges[i - 16];  // one pattern vs each
    }
  std::vector<float> f(h.size());
  for (size_t i = 0; i < h.size(); ++i) f[i] = bf16_to_float(h[i]);

  Quantized qf = quantize(f, rows);
  Quantized qh{std::vector<uint8_t>(h.size() / 2), std::vector<uint8_t>(h.size() / 32)};
  quantize_mxfp4_rows_bf16(h.data(), rows, k, qh.codes.data(), qh.scales.data(), "t");
  ASSERT_EQ(qf.codes, qh.codes);
  ASSERT_EQ(qf.scales, qh.scales);
  expect_matches_reference(f, qf);

  // Random float bit patterns (full float precision, not only bf16 values).
  std::vector<float> g(256 * 1024);
  for (auto& v : g) {
    uint32_t u = static_cast<uint32_t>(rng());
    if ((u & 0x7fffffffu) >= 0x7f800000u) u &= 0x807fffffu;
    v = from_bits(u);
  }
  expect_matches_reference(g, quantize(g, 256));
}

TEST(Mxfp4Quantize, GaussianRoundTripErrorIsBounded) {
  // MXFP4 on N(0, 1), 1M values: measured relative Frobenius error 0.1149 for this seed and
  // 0.1149-0.1151 over five seeds (an independent double-precision quantizer gives the same
  // figures). The band [0.110, 0.120] allows for that spread and still fails the plausible
  // bugs, measured the same way: rounding toward zero 0.196, a scale one step too large
  // 0.144, one step too small (so amax saturates) 0.282.
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t rows = 256, k = 4096;
  std::vector<float> x(rows * k);
  for (auto& v : x) v = normal(rng);
  Quantized q = quantize(x, rows);
  std::vector<float> back(x.size());
  dequantize_mxfp4_rows(q.codes.data(), q.scales.data(), rows, k, back.data());
  const double err = relative_frobenius_error(x.data(), back.data(), x.size());
  EXPECT_GT(err, 0.110);
  EXPECT_LT(err, 0.120);
  // Scale invariance: multiplying the input by a power of two shifts only the scales.
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * 1024.0f;
  Quantized qy = quantize(y, rows);
  EXPECT_EQ(qy.codes, q.codes);
  for (size_t b = 0; b < q.scales.size(); ++b) ASSERT_EQ(qy.scales[b], q.scales[b] + 10);
}

TEST(RelativeFrobeniusError, Definition) {
  const float r[3] = {3, 0, 4};
  const float a[3] = {3, 1, 4};
  EXPECT_DOUBLE_EQ(relative_frobenius_error(r, a, 3), 1.0 / 5.0);
  EXPECT_EQ(relative_frobenius_error(r, r, 3), 0.0);
  const float z[2] = {0, 0};
  const float nz[2] = {0, 1};
  EXPECT_EQ(relative_frobenius_error(z, z, 2), 0.0);
  EXPECT_TRUE(std::isinf(relative_frobenius_error(z, nz, 2)));
}
