// Small examples worked out by hand from spec/layouts.md.
#include <gtest/gtest.h>

#include <cstring>

#include "layout/steps.h"
#include "layout_test_util.h"

using namespace moeprep;
using namespace moeprep::layout;
using namespace moeprep::layout::testing;

TEST(HandExamples, SeparatedWeightTileOf16RowsBy32Bytes) {
  // One tile of random bytes: rows r = 0..15, bytes b = 0..31. Source (r, b) lands at
  // h * 256 + r * 16 + b % 16 with h = b / 16 (two 16x16 halves).
  std::mt19937_64 rng(1);
  const ByteTensor in = random_tensor(Dtype::U8, {1, 16, 32}, rng);
  const ByteTensor out = make_aiter_shuffle_weight_step(GateMode::Separated, false)->apply(in);
  ASSERT_EQ(out.shape, (Shape{1, 16, 32}));
  for (int r = 0; r < 16; ++r)
    for (int b = 0; b < 32; ++b) {
      const int h = b / 16;
      EXPECT_EQ(out.bytes[h * 256 + r * 16 + b % 16], in.bytes[r * 32 + b]) << "row " << r << " byte " << b;
    }
  // Concretely: the first 16 bytes of the output are row 0's bytes 0..15, the next 16 row 1's
  // bytes 0..15, and byte 256 starts row 0's bytes 16..31.
  EXPECT_EQ(0, std::memcmp(out.bytes.data(), in.bytes.data(), 16));
  EXPECT_EQ(0, std::memcmp(out.bytes.data() + 16, in.bytes.data() + 32, 16));
  EXPECT_EQ(0, std::memcmp(out.bytes.data() + 256, in.bytes.data() + 16, 16));
  EXPECT_EQ(0, std::memcmp(out.bytes.data() + 256 + 15 * 16, in.bytes.data() + 15 * 32 + 16, 16));
}

TEST(HandExamples, DeinterleaveFourRows) {
  // Rows g0, u0, g1, u1 of two bytes each.
  const ByteTensor in{Dtype::U8, {1, 4, 2}, {0x10, 0x11, 0x20, 0x21, 0x30, 0x31, 0x40, 0x41}};
  const auto step = make_deinterleave_gate_up_rows_step();
  const ByteTensor out = step->apply(in);
  EXPECT_EQ(out.shape, (Shape{1, 4, 2}));
  EXPECT_EQ(out.bytes, (std::vector<uint8_t>{0x10, 0x11, 0x30, 0x31, 0x20, 0x21, 0x40, 0x41}));
  EXPECT_EQ(step->undo(out, in.shape, in.dtype).bytes, in.bytes);

  // A BF16 bias [1, 4]: elements are 2 bytes, g0 u0 g1 u1 -> g0 g1 u0 u1.
  const ByteTensor bias{Dtype::BF16, {1, 4}, {0xA0, 0xA1, 0xB0, 0xB1, 0xC0, 0xC1, 0xD0, 0xD1}};
  EXPECT_EQ(step->apply(bias).bytes, (std::vector<uint8_t>{0xA0, 0xA1, 0xC0, 0xC1, 0xB0, 0xB1, 0xD0, 0xD1}));
}

TEST(HandExamples, PadTwoByThreeIntoFourByFour) {
  const ByteTensor in{Dtype::U8, {2, 3}, {1, 2, 3, 4, 5, 6}};
  const auto step = make_pad_step({2, 3}, {4, 4}, 9, {4, 4});
  const ByteTensor out = step->apply(in);
  EXPECT_EQ(out.shape, (Shape{4, 4}));
  EXPECT_EQ(out.bytes, (std::vector<uint8_t>{1, 2, 3, 9, 4, 5, 6, 9, 9, 9, 9, 9, 9, 9, 9, 9}));
  EXPECT_EQ(step->undo(out, in.shape, in.dtype).bytes, in.bytes);
}

TEST(HandExamples, PadGateAndUpHalvesSeparately) {
  // w13 with I = 2 rows per half, Kb = 1 byte: [gate0, gate1, up0, up1] -> I' = 3, Kb' = 2, so
  // each half gains a zero row and every row a zero byte.
  const ByteTensor in{Dtype::U8, {1, 4, 1}, {0x61, 0x62, 0x71, 0x72}};
  const auto step = make_pad_step({1, 2, 2, 1}, {1, 2, 3, 2}, 0, {1, 6, 2});
  const ByteTensor out = step->apply(in);
  EXPECT_EQ(out.shape, (Shape{1, 6, 2}));
  EXPECT_EQ(out.bytes, (std::vector<uint8_t>{0x61, 0, 0x62, 0, 0, 0, 0x71, 0, 0x72, 0, 0, 0}));
  EXPECT_EQ(step->undo(out, in.shape, in.dtype).bytes, in.bytes);
}

TEST(HandExamples, PadValueIsTheElementValue) {
  // F32 bias padded with 0 gets 0.0f; BF16 padded with 1 gets 0x3F80; U8 scales with 127.
  const float f[2] = {1.5f, -2.0f};
  ByteTensor bias{Dtype::F32, {2}, std::vector<uint8_t>(8)};
  std::memcpy(bias.bytes.data(), f, 8);
  const ByteTensor padded = make_pad_step({2}, {3}, 0, {3})->apply(bias);
  float g[3];
  std::memcpy(g, padded.bytes.data(), 12);
  EXPECT_EQ(g[0], 1.5f);
  EXPECT_EQ(g[1], -2.0f);
  EXPECT_EQ(g[2], 0.0f);

  const ByteTensor one = make_pad_step({1}, {2}, 1, {2})->apply(ByteTensor{Dtype::BF16, {1}, {0x00, 0x40}});
  EXPECT_EQ(one.bytes, (std::vector<uint8_t>{0x00, 0x40, 0x80, 0x3F}));

  const ByteTensor scales = make_pad_step({1, 1}, {1, 3}, 127, {1, 3})->apply(ByteTensor{Dtype::U8, {1, 1}, {120}});
  EXPECT_EQ(scales.bytes, (std::vector<uint8_t>{120, 127, 127}));
}

TEST(HandExamples, CastBf16ToF32) {
  // 1.0 (0x3F80), -2.5 (0xC020), smallest subnormal (0x0001), NaN (0x7FC1) keep their bits.
  const ByteTensor in{Dtype::BF16, {4}, {0x80, 0x3F, 0x20, 0xC0, 0x01, 0x00, 0xC1, 0x7F}};
  const auto step = make_cast_bf16_to_f32_step();
  const ByteTensor out = step->apply(in);
  EXPECT_EQ(out.dtype, Dtype::F32);
  uint32_t w[4];
  std::memcpy(w, out.bytes.data(), 16);
  EXPECT_EQ(w[0], 0x3F800000u);
  EXPECT_EQ(w[1], 0xC0200000u);
  EXPECT_EQ(w[2], 0x00010000u);
  EXPECT_EQ(w[3], 0x7FC10000u);
  float f;
  std::memcpy(&f, &w[1], 4);
  EXPECT_EQ(f, -2.5f);
  EXPECT_EQ(step->undo(out, in.shape, in.dtype).bytes, in.bytes);
}
