// quantize_mxfp4_rows_fp8_measured against its definition: fp8_block_dequant of the rows, then
// quantize_mxfp4_rows_measured. Each level runs its own path: the portable one dequantizes, AVX2
// and AVX-512 (VBMI) have table loops of their own. Codes, scales and error sums must be equal bit for bit, and the
// errors word for word, at every SIMD level the CPU runs (core/simd_level.h), on FP8 bytes of
// every non-NaN code with scales of every kind, and on data made to hit the edges: exact E2M1
// ties, saturation, all-zero blocks, maxima at both ends of the E8M0 range, overflow to Inf.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "simd_levels.h"
#include "core/error.h"
#include "core/simd_level.h"
#include "formats/fp8_block_dequant.h"
#include "formats/fp8_e4m3.h"
#include "formats/mxfp4_quantize.h"
#include "formats/mxfp4_quantize_fp8.h"

using namespace moeprep;

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

using moeprep::testing::for_each_simd_level;

// A whole FP8 weight [n, k] and its scale grid.
struct Weight {
  int64_t n, k, block_n, block_k;
  std::vector<uint8_t> fp8;
  std::vector<float> scale;
  int64_t scale_rows() const { return ceil_div(n, block_n); }
  int64_t scale_cols() const { return ceil_div(k, block_k); }
};

// Random bytes of every code but the two NaNs.
uint8_t random_code(std::mt19937& rng) {
  uint8_t c;
  do c = static_cast<uint8_t>(rng()); while (fp8_e4m3_is_nan(c));
  return c;
}

// A scale of a randomly chosen kind: ordinary, a power of two, tiny enough that products are
// float subnormals or zero, huge (up to 448 * 2^119, still finite), negative, zero.
float random_scale(std::mt19937& rng) {
  std::uniform_real_distribution<float> mantissa(1.0f, 2.0f);
  switch (rng() % 8) {
    case 0: return std::ldexp(1.0f, static_cast<int>(rng() % 60) - 30);
    case 1: return std::ldexp(mantissa(rng), -130 - static_cast<int>(rng() % 15));   // subnormal scale
    case 2: return std::ldexp(mantissa(rng), -125 + static_cast<int>(rng() % 10));   // subnormal products
    case 3: return std::ldexp(mantissa(rng), 100 + static_cast<int>(rng() % 19));    // huge
    case 4: return -std::ldexp(mantissa(rng), -static_cast<int>(rng() % 20));        // negative
    case 5: return rng() % 2 ? 0.0f : -0.0f;
    default: return std::ldexp(mantissa(rng), -static_cast<int>(rng() % 16));        // as checkpoints hold
  }
}

Weight random_weight(int64_t n, int64_t k, int64_t block_n, int64_t block_k, uint32_t seed) {
  std::mt19937 rng(seed);
  Weight w{n, k, block_n, block_k, std::vector<uint8_t>(static_cast<size_t>(n * k)), {}};
  for (auto& c : w.fp8) c = random_code(rng);
  // Some all-zero blocks of either sign, and some whose codes stay small.
  for (int64_t b = 0; b < n * k / 32; ++b) {
    const uint32_t kind = rng() % 16;
    for (int i = 0; i < 32 && kind < 2; ++i) w.fp8[b * 32 + i] = rng() % 2 ? 0x80 : 0x00;
    for (int i = 0; i < 32 && kind == 2; ++i) w.fp8[b * 32 + i] &= 0x9f;
  }
  w.scale.resize(static_cast<size_t>(w.scale_rows() * w.scale_cols()));
  for (auto& s : w.scale) s = random_scale(rng);
  return w;
}

struct Output {
  std::vector<uint8_t> codes, scales;
  Mxfp4ErrorSums sums{1.0, 2.0};  // the sums are added to, not set
};

// Codes laid out as {row_stride, block_stride} in a buffer of `rows` rows.
struct Layout {
  int64_t row_stride, block_stride;
};

Output fresh_output(int64_t rows, int64_t k, const Layout& layout) {
  Output o;
  o.codes.assign(static_cast<size_t>(rows * layout.row_stride + 64), 0xcd);
  o.scales.assign(static_cast<size_t>(rows * k / 32), 0xcd);
  return o;
}

// The definition: the whole tensor dequantized, then the float quantizer over the rows.
Output by_definition(const Weight& w, int64_t first_row, int64_t rows, const Layout& layout) {
  std::vector<float> floats(w.fp8.size());
  fp8_block_dequant(w.fp8.data(), w.n, w.k, w.scale.data(), w.scale_rows(), w.scale_cols(), floats.data(), "w",
                    w.block_n, w.block_k);
  Output o = fresh_output(rows, w.k, layout);
  quantize_mxfp4_rows_measured(floats.data() + first_row * w.k, rows, w.k,
                               Mxfp4CodeLayout{o.codes.data(), layout.row_stride, layout.block_stride},
                               o.scales.data(), "w", o.sums);
  return o;
}

Output by_fp8_quantizer(const Weight& w, int64_t first_row, int64_t rows, const Layout& layout) {
  Output o = fresh_output(rows, w.k, layout);
  quantize_mxfp4_rows_fp8_measured(w.fp8.data() + first_row * w.k, first_row, rows, w.k, w.scale.data(),
                                   w.scale_cols(), w.block_n, w.block_k,
                                   Mxfp4CodeLayout{o.codes.data(), layout.row_stride, layout.block_stride},
                                   o.scales.data(), "w", o.sums);
  return o;
}

void expect_identical(const Output& got, const Output& want) {
  ASSERT_EQ(got.scales, want.scales);
  ASSERT_EQ(got.codes, want.codes);
  // Bit for bit, not within a tolerance.
  EXPECT_EQ(0, std::memcmp(&got.sums.error, &want.sums.error, sizeof(double)))
      << got.sums.error << " vs " << want.sums.error;
  EXPECT_EQ(0, std::memcmp(&got.sums.reference, &want.sums.reference, sizeof(double)))
      << got.sums.reference << " vs " << want.sums.reference;
}

// The definition at the baseline level, then the FP8 quantizer at every level.
void expect_as_defined(const Weight& w, int64_t first_row, int64_t rows, const Layout& layout) {
  const SimdLevel before = cap_simd_level(SimdLevel::Baseline);
  const Output want = by_definition(w, first_row, rows, layout);
  cap_simd_level(before);
  for_each_simd_level([&](SimdLevel) { expect_identical(by_fp8_quantizer(w, first_row, rows, layout), want); });
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::BadInput);
    return e.what();
  }
  return "(no error)";
}

// The error the definition reports for rows [first_row, first_row + rows).
std::string definition_error(const Weight& w, int64_t first_row, int64_t rows) {
  return error_of([&] { by_definition(w, first_row, rows, {w.k / 2, 16}); });
}

}  // namespace

TEST(Mxfp4QuantizeFp8, RandomCodesAndScalesMatchTheDefinitionOnEveryLevel) {
  struct Case {
    int64_t n, k, block_n, block_k, first_row, rows;
  };
  for (const Case& c : std::vector<Case>{{200, 128, 128, 128, 0, 200},
                                         {300, 256, 128, 128, 37, 250},    // first_row inside a band
                                         {160, 2048, 128, 128, 130, 29},   // rows not a multiple of block_n
                                         {50, 2880, 128, 128, 3, 41},      // a ragged scale column, k % 128 = 64
                                         {40, 224, 7, 32, 5, 33},          // narrow blocks: a scale per MXFP4 block
                                         {30, 320, 16, 64, 1, 28}}) {      // k % 128 = 64, 5 scale columns
    SCOPED_TRACE("n " + std::to_string(c.n) + ", k " + std::to_string(c.k) + ", block [" + std::to_string(c.block_n) +
                 ", " + std::to_string(c.block_k) + "], rows " + std::to_string(c.first_row) + " + " +
                 std::to_string(c.rows));
    const Weight w = random_weight(c.n, c.k, c.block_n, c.block_k, static_cast<uint32_t>(c.n * 31 + c.k));
    expect_as_defined(w, c.first_row, c.rows, {c.k / 2, 16});
    // The tile-shuffled weight layout's kind of strides: blocks 48 bytes apart.
    expect_as_defined(w, c.first_row, c.rows, {c.k / 32 * 48, 48});
  }
}

TEST(Mxfp4QuantizeFp8, BlocksThatAreNotMultiplesOf32TakeTheFallbackWithTheSameResult) {
  const Weight w = random_weight(70, 192, 24, 48, 5);
  expect_as_defined(w, 9, 50, {96, 16});
  const Weight w2 = random_weight(9, 200 - 8, 4, 100, 6);  // K = 192, ragged scale column
  expect_as_defined(w2, 0, 9, {96, 16});
}

TEST(Mxfp4QuantizeFp8, CheckpointLikeScalesAndManyRowsMatch) {
  // DeepSeek-V3's shape of scales (about 1e-4) and codes concentrated around small values.
  std::mt19937 rng(8);
  Weight w{384, 1024, 128, 128, std::vector<uint8_t>(384 * 1024), {}};
  std::normal_distribution<float> normal(0.0f, 40.0f);
  for (auto& c : w.fp8) {
    const float v = normal(rng);
    c = static_cast<uint8_t>(std::min(std::fabs(v), 126.0f)) | (v < 0 ? 0x80 : 0);
  }
  w.scale.resize(3 * 8);
  std::uniform_real_distribution<float> u(0.5e-4f, 3e-4f);
  for (auto& s : w.scale) s = u(rng);
  expect_as_defined(w, 0, 384, {512, 16});
  // Ordinary numbers, whose last bits show any change in the order of the additions.
  const Output sums = by_fp8_quantizer(w, 0, 384, {512, 16});
  EXPECT_TRUE(std::isfinite(sums.sums.error) && sums.sums.error > 1.0) << sums.sums.error;
  EXPECT_TRUE(std::isfinite(sums.sums.reference) && sums.sums.reference > 2.0) << sums.sums.reference;
  // In pieces, as a caller quantizing a chunk at a time: the same sums as one call.
  const Output whole = by_fp8_quantizer(w, 0, 384, {512, 16});
  Output pieces = fresh_output(384, 1024, {512, 16});
  for (int64_t r = 0; r < 384; r += 100) {
    const int64_t n = std::min<int64_t>(100, 384 - r);
    quantize_mxfp4_rows_fp8_measured(w.fp8.data() + r * 1024, r, n, 1024, w.scale.data(), 8, 128, 128,
                                     Mxfp4CodeLayout{pieces.codes.data() + r * 512, 512, 16},
                                     pieces.scales.data() + r * 32, "w", pieces.sums);
  }
  expect_identical(pieces, whole);
}

TEST(Mxfp4QuantizeFp8, ExactTiesSaturationZerosAndTheE8m0RangeEndsMatch) {
  // Values on every E2M1 rounding boundary (0.25, 0.75, ..., 5 times 2^X, all exact in E4M3)
  // with a block maximum of 6 or 7 (saturating) times 2^X, scaled by powers of two, by 1.5 and
  // by 3 (products exact), by scales under 2^-125 (maxima at the E8M0 clamp, scale code 0) and
  // 2^124 (maxima up to 14 * 2^124: scale code 252, the largest a float gives), and all-zero
  // blocks.
  const float ties[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  auto code_of = [](float v) {
    for (int c = 0; c < 256; ++c)
      if (fp8_e4m3_to_float(static_cast<uint8_t>(c)) == v) return static_cast<uint8_t>(c);
    ADD_FAILURE() << v << " is not an E4M3 value";
    return uint8_t{0};
  };
  std::mt19937 rng(3);
  const int64_t n = 64, k = 512;
  Weight w{n, k, 16, 128, std::vector<uint8_t>(n * k), {}};
  for (int64_t b = 0; b < n * k / 32; ++b) {
    const int e = static_cast<int>(rng() % 5) - 3;  // 2^-3 .. 2^1 keeps every value in E4M3's normals
    const uint32_t kind = rng() % 6;
    for (int i = 0; i < 32; ++i) {
      const float v = kind == 0 ? 0.0f : std::ldexp(ties[rng() % 14], e);
      w.fp8[b * 32 + i] = static_cast<uint8_t>(code_of(v) | (rng() % 2 ? 0x80 : 0));
    }
    if (kind != 0) w.fp8[b * 32 + rng() % 32] = code_of(std::ldexp(kind == 1 ? 7.0f : 6.0f, e));
  }
  const float scales[] = {1.0f, 0.5f, 1.5f, 3.0f, -0.25f, 0x1p-126f, 0x1p-140f, 0x1p124f, 0x1.8p123f, 0.0f};
  w.scale.resize(4 * 4);
  for (size_t i = 0; i < w.scale.size(); ++i) w.scale[i] = scales[i % 10];

  // The data hits what it is meant to: ties, saturation, zero blocks and both range ends.
  std::vector<float> floats(n * k);
  fp8_block_dequant(w.fp8.data(), n, k, w.scale.data(), 4, 4, floats.data(), "w", 16, 128);
  std::vector<uint8_t> codes(n * k / 2), e8m0(n * k / 32);
  quantize_mxfp4_rows(floats.data(), n, k, codes.data(), e8m0.data(), "w");
  int on_boundary = 0, saturated = 0, zero_blocks = 0, clamped = 0, largest = 0;
  for (int64_t b = 0; b < n * k / 32; ++b) {
    zero_blocks += e8m0[b] == 127 && std::fabs(floats[b * 32]) == 0.0f;
    clamped += e8m0[b] == 0;
    largest += e8m0[b] == 252;
    for (int i = 0; i < 32; ++i) {
      const float r = std::fabs(floats[b * 32 + i]) / std::ldexp(1.0f, e8m0[b] - 127);
      for (float t : {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f}) on_boundary += r == t;
      saturated += r > 6.0f;
    }
  }
  EXPECT_GT(on_boundary, 1000);
  EXPECT_GT(saturated, 10);
  EXPECT_GT(zero_blocks, 10);
  EXPECT_GT(clamped, 10);
  EXPECT_GT(largest, 10);
  expect_as_defined(w, 0, n, {k / 2, 16});
  expect_as_defined(w, 5, 40, {k / 32 * 64, 64});
}

TEST(Mxfp4QuantizeFp8, ANanCodeNamesItsAbsoluteRowAndColumnAsTheDequantizationDoes) {
  Weight w = random_weight(300, 256, 128, 128, 11);
  for (auto& s : w.scale) s = 0.01f;
  for (uint8_t nan : {uint8_t{0x7f}, uint8_t{0xff}}) {
    w.fp8[200 * 256 + 77] = nan;
    w.fp8[230 * 256 + 3] = nan;  // a later one is not the one named
    const std::string want = definition_error(w, 150, 120);
    EXPECT_NE(want.find("NaN in FP8 E4M3 weight at row 200, column 77"), std::string::npos) << want;
    for_each_simd_level([&](SimdLevel) {
      Output o = fresh_output(120, 256, {128, 16});
      const std::string got = error_of([&] {
        quantize_mxfp4_rows_fp8_measured(w.fp8.data() + 150 * 256, 150, 120, 256, w.scale.data(), 2, 128, 128,
                                         Mxfp4CodeLayout{o.codes.data(), 128, 16}, o.scales.data(), "w", o.sums);
      });
      EXPECT_EQ(got, want);
      EXPECT_EQ(o.sums.error, 1.0);  // left as it was
      EXPECT_EQ(o.sums.reference, 2.0);
    });
    w.fp8[200 * 256 + 77] = w.fp8[230 * 256 + 3] = 0x11;
  }
}

TEST(Mxfp4QuantizeFp8, AProductOverflowingFloatGivesTheQuantizersInfError) {
  Weight w = random_weight(40, 256, 16, 128, 12);
  for (auto& s : w.scale) s = 1.0f;
  w.scale[2 * 2 + 1] = 0x1p121f;                   // rows 32..39, columns 128..255
  for (auto& c : w.fp8) c &= 0xbf;                 // small values: products of 2^121 stay finite
  w.fp8[35 * 256 + 200] = 0x7e;                    // 448 * 2^121 = Inf
  const std::string want = definition_error(w, 10, 30);
  EXPECT_NE(want.find("Inf at row 25, block 6"), std::string::npos) << want;
  for_each_simd_level([&](SimdLevel) {
    EXPECT_EQ(error_of([&] { by_fp8_quantizer(w, 10, 30, {128, 16}); }), want);
  });
  // A NaN anywhere is reported first, as the dequantization runs over all rows before.
  w.fp8[38 * 256 + 1] = 0xff;
  const std::string nan = definition_error(w, 10, 30);
  EXPECT_NE(nan.find("NaN in FP8 E4M3 weight at row 38, column 1"), std::string::npos) << nan;
  for_each_simd_level([&](SimdLevel) { EXPECT_EQ(error_of([&] { by_fp8_quantizer(w, 10, 30, {128, 16}); }), nan); });
}

TEST(Mxfp4QuantizeFp8, BadScalesAndShapesAreNamed) {
  Weight w = random_weight(64, 256, 32, 128, 13);
  w.scale[1 * 2 + 1] = NAN;
  const std::string want = definition_error(w, 0, 64);
  EXPECT_NE(want.find("weight_scale_inv block [1, 1] is not finite"), std::string::npos) << want;
  EXPECT_EQ(error_of([&] { by_fp8_quantizer(w, 0, 64, {128, 16}); }), want);
  // Rows of the other band do not read that scale.
  EXPECT_EQ(error_of([&] { by_fp8_quantizer(w, 0, 32, {128, 16}); }), "(no error)");
  w.scale[1 * 2 + 1] = 1.0f;

  Output o = fresh_output(4, 256, {128, 16});
  const Mxfp4CodeLayout layout{o.codes.data(), 128, 16};
  EXPECT_NE(error_of([&] {
              quantize_mxfp4_rows_fp8_measured(w.fp8.data(), 0, 4, 256, w.scale.data(), 3, 32, 128, layout,
                                               o.scales.data(), "w", o.sums);
            }).find("w: weight_scale_inv has 3 columns, expected 2"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              quantize_mxfp4_rows_fp8_measured(w.fp8.data(), 0, 4, 256, w.scale.data(), 2, 0, 128, layout,
                                               o.scales.data(), "w", o.sums);
            }).find("block [0, 128]"),
            std::string::npos);
  // K not a multiple of 32: the float quantizer's own message.
  Weight odd = random_weight(4, 48, 4, 16, 14);
  EXPECT_EQ(error_of([&] { by_fp8_quantizer(odd, 0, 4, {24, 16}); }), definition_error(odd, 0, 4));
  EXPECT_NE(definition_error(odd, 0, 4).find("divisible by 32"), std::string::npos);
}

TEST(Mxfp4QuantizeFp8, SaysWhetherTheTableLoopRuns) {
  // The portable level dequantizes; every x86 vector level has a table loop.
  for_each_simd_level([](SimdLevel level) {
    EXPECT_EQ(mxfp4_fp8_quantizer_uses_tables(), level != SimdLevel::Baseline);
    std::printf("FP8 table loop at %s: %s\n", simd_level_name(level), mxfp4_fp8_quantizer_uses_tables() ? "yes" : "no");
  });
}

TEST(Mxfp4QuantizeFp8, ScalesChangedBetweenCallsAtTheSameAddressAreUsed) {
  // The table loop keeps a band's tables from call to call; a caller that reuses a scale
  // buffer for another tensor (or changes one value, or its sign) must not get the old ones.
  Weight w = random_weight(256, 512, 128, 128, 21);
  for (auto& s : w.scale) s = 0.001f;
  expect_as_defined(w, 0, 16, {256, 16});
  w.scale[0] = 0.0015f;
  expect_as_defined(w, 0, 16, {256, 16});
  w.scale[0] = -0.0015f;
  expect_as_defined(w, 16, 16, {256, 16});
  w.scale[3] = 0.002f;  // the last column of the band
  expect_as_defined(w, 32, 16, {256, 16});
  // Another K with the same leading scales.
  Weight narrow = random_weight(256, 256, 128, 128, 22);
  narrow.scale[0] = w.scale[0];
  narrow.scale[1] = w.scale[1];
  expect_as_defined(narrow, 0, 16, {128, 16});
  expect_as_defined(w, 48, 100, {256, 16});
}
