// Every SIMD level of the MXFP4 quantizer this CPU can run (core/simd_level.h) gives the same
// codes, scales, error sums and error messages as the portable loops, byte for byte, on data
// made to hit the edges: exact ties at every scale, saturation, subnormals, zero blocks, the
// largest finite values, NaN and Inf at every position of a block.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "simd_levels.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/simd_level.h"
#include "formats/bf16.h"
#include "formats/mxfp4_dequantize.h"
#include "formats/mxfp4_quantize.h"

using namespace moeprep;

namespace {

using moeprep::testing::for_each_simd_level;

const float kTies[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};

// One block of 32 float values of a randomly chosen kind. `moderate` keeps squares finite and
// above the float subnormals (scales 2^-40..2^40, no random bit patterns), so that the error
// sums are ordinary numbers whose last bits show any change in the order of the additions;
// otherwise every exponent occurs and the sums are mostly Inf.
void fill_block(std::mt19937& rng, float* x, bool moderate) {
  std::uniform_int_distribution<int> kind(moderate ? 1 : 0, 7), shift(moderate ? -40 : -140, moderate ? 40 : 125),
      tie(0, 6), pick(0, 31);
  int k = kind(rng);
  if (moderate && (k == 4 || k == 5)) k = 6;
  const int s = shift(rng);
  auto bits = [](uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  };
  switch (k) {
    case 0:  // random finite bit patterns: every exponent, subnormals, both zeros
      for (int i = 0; i < 32; ++i) {
        uint32_t u = static_cast<uint32_t>(rng());
        if ((u & 0x7fffffffu) >= 0x7f800000u) u &= 0x807fffffu;
        x[i] = bits(u);
      }
      break;
    case 1:  // exact ties at one scale, the block maximum 6 * 2^s fixing it
      for (int i = 0; i < 32; ++i) x[i] = std::ldexp(kTies[tie(rng)], s) * (rng() % 2 ? 1.0f : -1.0f);
      x[pick(rng)] = std::ldexp(6.0f, s);
      break;
    case 2:  // saturation: the maximum in (6, 8) * 2^s, others near it
      for (int i = 0; i < 32; ++i)
        x[i] = std::ldexp(4.0f + 4.0f * static_cast<float>(rng() % 1024) / 1024.0f, s) * (rng() % 2 ? 1.0f : -1.0f);
      break;
    case 3:  // all zero, either sign
      for (int i = 0; i < 32; ++i) x[i] = rng() % 2 ? 0.0f : -0.0f;
      break;
    case 4:  // float subnormals and the smallest normals
      for (int i = 0; i < 32; ++i) x[i] = bits(static_cast<uint32_t>(rng() & 0x80ffffffu));
      break;
    case 5:  // the largest finite magnitudes
      for (int i = 0; i < 32; ++i) x[i] = bits(0x7f7fffffu - static_cast<uint32_t>(rng() % 0x01000000u)) *
                                          (rng() % 2 ? 1.0f : -1.0f);
      break;
    case 6:  // Gaussian weights, as checkpoints hold them
    default: {
      std::normal_distribution<float> normal(0.0f, std::ldexp(1.0f, s / 8));
      for (int i = 0; i < 32; ++i) x[i] = normal(rng);
      break;
    }
  }
}

struct Data {
  int64_t rows, k;
  std::vector<float> f32;
  std::vector<uint16_t> bf16;
};

Data make_data(int64_t rows, int64_t k, uint32_t seed, bool moderate = false) {
  std::mt19937 rng(seed);
  Data d{rows, k, std::vector<float>(static_cast<size_t>(rows * k)), {}};
  for (int64_t b = 0; b < rows * k / 32; ++b) fill_block(rng, d.f32.data() + b * 32, moderate);
  d.bf16.resize(d.f32.size());
  // bf16 by truncation keeps the exact ties, zeros, subnormal patterns and saturations.
  for (size_t i = 0; i < d.f32.size(); ++i) {
    uint32_t u;
    std::memcpy(&u, &d.f32[i], 4);
    d.bf16[i] = static_cast<uint16_t>(u >> 16);
    if ((d.bf16[i] & 0x7fff) >= 0x7f80) d.bf16[i] = static_cast<uint16_t>(d.bf16[i] & 0x807f);
  }
  return d;
}

struct Result {
  std::vector<uint8_t> codes, scales, scales_only;
  Mxfp4ErrorSums sums;
  std::vector<uint8_t> plain_codes, plain_scales;
};

template <class Source>
Result quantize_all(const Source* src, int64_t rows, int64_t k) {
  const size_t n = static_cast<size_t>(rows * k);
  Result r{std::vector<uint8_t>(n / 2), std::vector<uint8_t>(n / 32), std::vector<uint8_t>(n / 32), {},
           std::vector<uint8_t>(n / 2), std::vector<uint8_t>(n / 32)};
  if constexpr (sizeof(Source) == 2) {
    quantize_mxfp4_rows_bf16_measured(src, rows, k, r.codes.data(), r.scales.data(), "t", r.sums);
    quantize_mxfp4_rows_bf16(src, rows, k, r.plain_codes.data(), r.plain_scales.data(), "t");
    mxfp4_block_scales_bf16(src, rows, k, r.scales_only.data(), "t");
  } else {
    quantize_mxfp4_rows_measured(src, rows, k, r.codes.data(), r.scales.data(), "t", r.sums);
    quantize_mxfp4_rows(src, rows, k, r.plain_codes.data(), r.plain_scales.data(), "t");
    mxfp4_block_scales(src, rows, k, r.scales_only.data(), "t");
  }
  return r;
}

template <class Source>
void expect_same_on_every_level(const Source* src, int64_t rows, int64_t k) {
  const SimdLevel before = cap_simd_level(SimdLevel::Baseline);
  const Result want = quantize_all(src, rows, k);
  cap_simd_level(before);
  std::printf("  rows %lld, k %lld: error %.17g, reference %.17g\n", static_cast<long long>(rows),
              static_cast<long long>(k), want.sums.error, want.sums.reference);
  // The portable loops themselves: measuring changes nothing, the scale-only pass agrees, and
  // the fused sums are those of a separate pass over the written codes.
  ASSERT_EQ(want.codes, want.plain_codes);
  ASSERT_EQ(want.scales, want.plain_scales);
  ASSERT_EQ(want.scales, want.scales_only);
  const Mxfp4ErrorSums separate = mxfp4_error_sums(src, want.codes.data(), want.scales.data(), rows, k);
  EXPECT_EQ(separate.error, want.sums.error);
  EXPECT_EQ(separate.reference, want.sums.reference);
  for_each_simd_level([&](SimdLevel) {
    const Result got = quantize_all(src, rows, k);
    ASSERT_EQ(got.codes, want.codes);
    ASSERT_EQ(got.scales, want.scales);
    ASSERT_EQ(got.plain_codes, want.codes);
    ASSERT_EQ(got.plain_scales, want.scales);
    ASSERT_EQ(got.scales_only, want.scales);
    // Bit for bit, not within a tolerance.
    EXPECT_EQ(0, std::memcmp(&got.sums.error, &want.sums.error, sizeof(double)))
        << got.sums.error << " vs " << want.sums.error;
    EXPECT_EQ(0, std::memcmp(&got.sums.reference, &want.sums.reference, sizeof(double)));
  });
}

}  // namespace

TEST(Mxfp4SimdVariants, TheBaselineLevelIsAlwaysThereAndTheWidestIsTheDefault) {
  const auto levels = supported_simd_levels();
  ASSERT_FALSE(levels.empty());
  EXPECT_EQ(levels.front(), SimdLevel::Baseline);
  EXPECT_EQ(levels.back(), cpu_simd_level());
  std::string names;
  for (SimdLevel l : levels) names += std::string(simd_level_name(l)) + " ";
  std::printf("SIMD levels run here: %s\n", names.c_str());
}

TEST(Mxfp4SimdVariants, Bf16CodesScalesAndSumsAreIdenticalOnEveryLevel) {
  for (const auto& [rows, k] : std::vector<std::pair<int64_t, int64_t>>{{1, 32}, {3, 96}, {64, 2048}, {37, 2880}}) {
    SCOPED_TRACE("rows " + std::to_string(rows) + ", k " + std::to_string(k));
    for (bool moderate : {false, true}) {
      const Data d = make_data(rows, k, static_cast<uint32_t>(rows * 31 + k), moderate);
      expect_same_on_every_level(d.bf16.data(), rows, k);
    }
  }
}

TEST(Mxfp4SimdVariants, F32CodesScalesAndSumsAreIdenticalOnEveryLevel) {
  for (const auto& [rows, k] : std::vector<std::pair<int64_t, int64_t>>{{1, 32}, {5, 160}, {32, 2048}}) {
    SCOPED_TRACE("rows " + std::to_string(rows) + ", k " + std::to_string(k));
    for (bool moderate : {false, true}) {
      const Data d = make_data(rows, k, static_cast<uint32_t>(rows * 7 + k), moderate);
      expect_same_on_every_level(d.f32.data(), rows, k);
    }
  }
}

TEST(Mxfp4SimdVariants, GaussianWeightsGiveTheSameSumsOnEveryLevel) {
  // Checkpoint-like weights, where every term matters to the last bits of the sums.
  std::mt19937 rng(21);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  const int64_t rows = 48, k = 2880;
  std::vector<float> f(static_cast<size_t>(rows * k));
  std::vector<uint16_t> h(f.size());
  for (size_t i = 0; i < f.size(); ++i) {
    h[i] = float_to_bf16(normal(rng));
    f[i] = normal(rng);
  }
  expect_same_on_every_level(h.data(), rows, k);
  expect_same_on_every_level(f.data(), rows, k);
}

TEST(Mxfp4SimdVariants, EveryBf16PatternAsABlockMaximumAndAsAnElement) {
  // All 2^15 non-negative bf16 patterns below Inf, once as the maximum of a block of smaller
  // copies and once in a block whose maximum is fixed by another element, both signs.
  std::vector<uint16_t> src;
  for (uint32_t p = 0; p < 0x7f80; ++p) {
    for (int i = 0; i < 32; ++i) {
      const uint32_t below = p >> (i % 9);
      src.push_back(static_cast<uint16_t>((i == 5 ? p : below) | (i % 3 == 0 ? 0x8000 : 0)));
    }
  }
  const int64_t rows = static_cast<int64_t>(src.size()) / 256;
  expect_same_on_every_level(src.data(), rows, 256);
}

TEST(Mxfp4SimdVariants, SplittingRowsGivesTheSumsOfOneCall) {
  const Data d = make_data(40, 256, 5);
  for_each_simd_level([&](SimdLevel) {
    std::vector<uint8_t> codes(d.bf16.size() / 2), scales(d.bf16.size() / 32);
    Mxfp4ErrorSums whole, parts;
    quantize_mxfp4_rows_bf16_measured(d.bf16.data(), 40, 256, codes.data(), scales.data(), "t", whole);
    for (int64_t r0 : {0, 7, 30}) {
      const int64_t r1 = r0 == 0 ? 7 : r0 == 7 ? 30 : 40;
      quantize_mxfp4_rows_bf16_measured(d.bf16.data() + r0 * 256, r1 - r0, 256, codes.data() + r0 * 128,
                                        scales.data() + r0 * 8, "t", parts);
    }
    EXPECT_EQ(whole.error, parts.error);
    EXPECT_EQ(whole.reference, parts.reference);
  });
}

TEST(Mxfp4SimdVariants, MeasuredErrorEqualsTheDequantizedDifference) {
  // The sums against a plain double-precision sum over dequantize_mxfp4_rows' output: float
  // partial sums of 64 terms stay within a few ulps of it.
  const Data d = make_data(16, 2048, 77);
  std::vector<float> gauss(d.f32.size());
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (auto& v : gauss) v = bf16_to_float(float_to_bf16(normal(rng)));
  for_each_simd_level([&](SimdLevel) {
    std::vector<uint8_t> codes(gauss.size() / 2), scales(gauss.size() / 32);
    Mxfp4ErrorSums sums;
    quantize_mxfp4_rows_measured(gauss.data(), 16, 2048, codes.data(), scales.data(), "t", sums);
    std::vector<float> back(gauss.size());
    dequantize_mxfp4_rows(codes.data(), scales.data(), 16, 2048, back.data());
    double err = 0, ref = 0;
    for (size_t i = 0; i < gauss.size(); ++i) {
      err += (double(back[i]) - gauss[i]) * (double(back[i]) - gauss[i]);
      ref += double(gauss[i]) * gauss[i];
    }
    EXPECT_NEAR(sums.error, err, 1e-5 * err);
    EXPECT_NEAR(sums.reference, ref, 1e-5 * ref);
    EXPECT_NEAR(std::sqrt(sums.error / sums.reference), 0.115, 0.01);
  });
}

TEST(Mxfp4SimdVariants, NanAndInfAtEveryPositionFailWithTheSameMessage) {
  const int64_t k = 96;
  for (int pos = 0; pos < 32; ++pos) {
    for (const uint16_t bad : {uint16_t{0x7fc0}, uint16_t{0xff80}, uint16_t{0x7f81}}) {
      std::vector<uint16_t> h(2 * k, 0x3f80);
      h[k + 64 + pos] = bad;  // row 1, block 2
      h[k + 64 + (pos + 7) % 32] = 0xc2c8;
      std::vector<float> f(h.size());
      for (size_t i = 0; i < h.size(); ++i) f[i] = bf16_to_float(h[i]);
      const std::string want = std::string(bad == 0xff80 ? "Inf" : "NaN") + " at row 1, block 2 (element " +
                               std::to_string(64 + pos) + ")";
      for_each_simd_level([&](SimdLevel) {
        std::vector<uint8_t> codes(k), scales(6);
        Mxfp4ErrorSums sums;
        const std::vector<std::function<void()>> calls = {
            [&] { quantize_mxfp4_rows_bf16(h.data(), 2, k, codes.data(), scales.data(), "w_bad"); },
            [&] { quantize_mxfp4_rows_bf16_measured(h.data(), 2, k, codes.data(), scales.data(), "w_bad", sums); },
            [&] { mxfp4_block_scales_bf16(h.data(), 2, k, scales.data(), "w_bad"); },
            [&] { quantize_mxfp4_rows(f.data(), 2, k, codes.data(), scales.data(), "w_bad"); },
            [&] { quantize_mxfp4_rows_measured(f.data(), 2, k, codes.data(), scales.data(), "w_bad", sums); },
            [&] { mxfp4_block_scales(f.data(), 2, k, scales.data(), "w_bad"); }};
        for (size_t c = 0; c < calls.size(); ++c) {
          try {
            calls[c]();
            ADD_FAILURE() << "call " << c << " did not throw";
          } catch (const Error& e) {
            EXPECT_EQ(e.kind(), ErrorKind::BadInput);
            const std::string msg = e.what();
            EXPECT_NE(msg.find("w_bad: MXFP4 quantization: " + want), std::string::npos) << "call " << c << ": " << msg;
          }
        }
      });
    }
  }
}

TEST(Mxfp4SimdVariants, CodesGoWhereTheLayoutSaysWithTheSameScalesAndSums) {
  // Blocks of a row 16 bytes apart is the plain layout; a tile-like layout (rows 16 bytes
  // apart, blocks a column further, with a 16-byte gap per column that must stay untouched)
  // gets the same 16-byte blocks, and the scales and sums do not change.
  const int64_t rows = 20, k = 256, blocks = k / 32;
  const Data d = make_data(rows, k, 9, true);
  for_each_simd_level([&](SimdLevel) {
    for (bool bf16 : {true, false}) {
      SCOPED_TRACE(bf16 ? "bf16" : "f32");
      std::vector<uint8_t> plain(static_cast<size_t>(rows * k / 2)), plain_scales(static_cast<size_t>(rows * blocks));
      const int64_t column = rows * 16 + 16;
      std::vector<uint8_t> tiled(static_cast<size_t>(blocks * column), 0xA5), tiled_scales(plain_scales.size());
      Mxfp4ErrorSums plain_sums, tiled_sums;
      const Mxfp4CodeLayout layout{tiled.data(), 16, column};
      if (bf16) {
        quantize_mxfp4_rows_bf16_measured(d.bf16.data(), rows, k, plain.data(), plain_scales.data(), "t", plain_sums);
        quantize_mxfp4_rows_bf16_measured(d.bf16.data(), rows, k, layout, tiled_scales.data(), "t", tiled_sums);
      } else {
        quantize_mxfp4_rows_measured(d.f32.data(), rows, k, plain.data(), plain_scales.data(), "t", plain_sums);
        quantize_mxfp4_rows_measured(d.f32.data(), rows, k, layout, tiled_scales.data(), "t", tiled_sums);
      }
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t b = 0; b < blocks; ++b)
          ASSERT_EQ(0, std::memcmp(tiled.data() + b * column + r * 16, plain.data() + r * k / 2 + b * 16, 16))
              << "row " << r << ", block " << b;
      for (int64_t b = 0; b < blocks; ++b)
        for (int64_t i = rows * 16; i < column; ++i) ASSERT_EQ(tiled[static_cast<size_t>(b * column + i)], 0xA5);
      EXPECT_EQ(tiled_scales, plain_scales);
      EXPECT_EQ(0, std::memcmp(&tiled_sums.error, &plain_sums.error, sizeof(double)));
      EXPECT_EQ(0, std::memcmp(&tiled_sums.reference, &plain_sums.reference, sizeof(double)));
    }
  });
}

TEST(Mxfp4SimdVariants, RowsHashedWhileQuantizedGiveTheirDigestAndTheSameCodes) {
  // Tensors of whole 1 KiB XXH3 blocks, of partial ones and of many (4 x 128, 3 x 352,
  // 20 x 2048 bf16 values), quantized in calls of 1 to 3 rows that hash their stripes on the
  // way: the digest of the bytes, and codes, scales and sums of the plain quantizer.
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (const auto& shape : std::vector<std::pair<int64_t, int64_t>>{{4, 128}, {3, 352}, {20, 2048}}) {
    const int64_t rows = shape.first, k = shape.second;  // named: C++17 lambdas cannot capture bindings
    std::vector<uint16_t> src(static_cast<size_t>(rows * k));
    for (auto& v : src) v = float_to_bf16(normal(rng));
    const std::string want = xxh3_128_hex(src.data(), src.size() * 2);
    for_each_simd_level([&](SimdLevel) {
      std::vector<uint8_t> codes(src.size() / 2), scales(src.size() / 32), plain_codes(codes), plain_scales(scales);
      Mxfp4ErrorSums sums, plain;
      quantize_mxfp4_rows_bf16_measured(src.data(), rows, k, plain_codes.data(), plain_scales.data(), "w", plain);
      Xxh3StripeHash hash(src.size() * 2);
      for (int64_t r = 0, n = 1; r < rows; r += n, n = n % 3 + 1) {
        const int64_t m = std::min(n, rows - r);
        quantize_mxfp4_rows_bf16_measured(src.data() + r * k, m, k, Mxfp4CodeLayout{codes.data() + r * k / 2, k / 2, 16},
                                          scales.data() + r * k / 32, "w", sums, hash, r * k / 32);
      }
      EXPECT_EQ(hash.hex_digest(src.data() + src.size() - 32), want) << rows << " x " << k;
      EXPECT_EQ(codes, plain_codes);
      EXPECT_EQ(scales, plain_scales);
      EXPECT_EQ(sums.error, plain.error);
      EXPECT_EQ(sums.reference, plain.reference);
    });
  }
}

TEST(Mxfp4SimdVariants, ExpertSlicesSummedWhileQuantizedFoldToTheirTensorsDigest) {
  // A tensor of 3 expert slices of whole 1 KiB blocks (4 x 128, 16 x 352 and 2 x 2048 bf16
  // values a slice), each quantized on its own, last first, in calls of 1 to 3 rows that sum
  // its XXH3 blocks on the way (Xxh3PieceSums): folded in order, the tensor's digest (its last
  // stripe left to hex_digest), and the codes, scales and sums of the plain quantizer.
  std::mt19937 rng(6);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (const auto& shape : std::vector<std::pair<int64_t, int64_t>>{{4, 128}, {16, 352}, {2, 2048}}) {
    const int64_t rows = shape.first, k = shape.second, experts = 3, per = rows * k;
    std::vector<uint16_t> src(static_cast<size_t>(experts * per));
    for (auto& v : src) v = float_to_bf16(normal(rng));
    const uint64_t length = src.size() * 2;
    const std::string want = xxh3_128_hex(src.data(), length);
    for_each_simd_level([&](SimdLevel) {
      std::vector<uint8_t> codes(src.size() / 2), scales(src.size() / 32), plain_codes(codes), plain_scales(scales);
      Mxfp4ErrorSums sums, plain;
      quantize_mxfp4_rows_bf16_measured(src.data(), experts * rows, k, plain_codes.data(), plain_scales.data(), "w",
                                        plain);
      const uint64_t blocks_per = static_cast<uint64_t>(per) * 2 / 1024;
      std::vector<uint64_t> block_sums(Xxh3BlockFold::blocks(length) * 8, 0xdeadbeef);
      for (int64_t e = experts - 1; e >= 0; --e) {
        Xxh3PieceSums piece(length, e * blocks_per, blocks_per, block_sums.data() + e * blocks_per * 8);
        for (int64_t r = 0, n = 1; r < rows; r += n, n = n % 3 + 1) {
          const int64_t m = std::min(n, rows - r), row = e * rows + r;
          quantize_mxfp4_rows_bf16_measured(src.data() + row * k, m, k,
                                            Mxfp4CodeLayout{codes.data() + row * k / 2, k / 2, 16},
                                            scales.data() + row * k / 32, "w", sums, piece, r * k / 32);
        }
        piece.finish();
      }
      Xxh3BlockFold fold(length);
      fold.fold(block_sums.data(), Xxh3BlockFold::blocks(length));
      EXPECT_EQ(fold.hex_digest(src.data() + src.size() - 32), want) << rows << " x " << k;
      EXPECT_EQ(codes, plain_codes);
      EXPECT_EQ(scales, plain_scales);
      // Summed expert by expert, last first: the same terms in another order.
      EXPECT_NEAR(sums.error, plain.error, 1e-9 * plain.error);
      EXPECT_NEAR(sums.reference, plain.reference, 1e-9 * plain.reference);
    });
  }
}
