// Recipes: GPT-OSS-shaped w13 weight, scale and bias recipes run end to end, undone, recorded
// and rebuilt; their outputs read back through addressing.h give the source values.
#include <gtest/gtest.h>

#include "layout/addressing.h"
#include "layout/recipe.h"
#include "layout/steps.h"
#include "layout_test_util.h"

using namespace moeprep;
using namespace moeprep::layout;
using namespace moeprep::layout::testing;

namespace {

// E experts, intermediate I padded to I2, hidden H padded to H2 (Kb = H / 2, S = H / 32).
constexpr int64_t E = 3, I = 20, I2 = 32, H = 64, H2 = 256;

Recipe w13_weight_recipe(GateMode mode) {
  return Recipe{{make_view_step({-1, 2 * I, H / 2}), make_deinterleave_gate_up_rows_step(),
                 make_pad_step({-1, 2, I, H / 2}, {-1, 2, I2, H2 / 2}, 0, {-1, 2 * I2, H2 / 2}),
                 make_aiter_shuffle_weight_step(mode, true)}};
}

Recipe w13_scale_recipe(GateMode mode) {
  const int64_t s = H2 / 32;
  const StepPtr shuffle = mode == GateMode::Separated ? make_aiter_shuffle_scale_separated_step(127)
                                                      : make_aiter_shuffle_scale_interleave_step(true, E);
  return Recipe{{make_deinterleave_gate_up_rows_step(),
                 make_pad_step({-1, 2, I, H / 32}, {-1, 2, I2, s}, 127, {-1, 2 * I2, s}),
                 make_view_step({E * 2 * I2, s}), shuffle}};
}

Recipe w13_bias_recipe() {
  return Recipe{{make_deinterleave_gate_up_rows_step(), make_cast_bf16_to_f32_step(),
                 make_pad_step({-1, 2, I}, {-1, 2, I2}, 0, {-1, 2 * I2})}};
}

void check_undo_and_json(const Recipe& r, const ByteTensor& src, const ByteTensor& out) {
  const ByteTensor back = r.undo(out, src.shape, src.dtype);
  EXPECT_EQ(back.shape, src.shape);
  EXPECT_EQ(back.dtype, src.dtype);
  EXPECT_EQ(back.bytes, src.bytes);
  const nlohmann::ordered_json j = r.to_json();
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), r.steps.size());
  EXPECT_EQ(j[0].begin().key(), "id");
  const Recipe rebuilt = Recipe::from_json(nlohmann::ordered_json::parse(j.dump()));
  EXPECT_EQ(rebuilt.to_json().dump(), j.dump());
  EXPECT_EQ(rebuilt.apply(src).bytes, out.bytes);
  EXPECT_EQ(rebuilt.undo(out, src.shape, src.dtype).bytes, src.bytes);
}

}  // namespace

TEST(Recipe, W13WeightsBothModes) {
  for (GateMode mode : {GateMode::Separated, GateMode::Interleave}) {
    SCOPED_TRACE(mode_name(mode));
    std::mt19937_64 rng(41);
    const ByteTensor src = random_tensor(Dtype::U8, {E, 2 * I, H / 32, 16}, rng);  // HF gate_up_proj_blocks
    const Recipe r = w13_weight_recipe(mode);
    EXPECT_EQ(r.output_shape(src.shape), (Shape{E, 2 * I2, H2 / 2}));
    EXPECT_EQ(r.output_dtype(Dtype::U8), Dtype::U8);
    EXPECT_TRUE(r.expert_separable());
    const ByteTensor out = r.apply(src);
    ASSERT_EQ(out.shape, (Shape{E, 2 * I2, H2 / 2}));

    // Gate unit j (HF row 2j) is kernel row j, up unit j (row 2j + 1) is row I2 + j; padding is 0.
    const WeightTileLayout at{mode, true, 2 * I2, H2 / 2};
    auto src_byte = [&](int64_t e, int64_t row, int64_t kb) { return src.bytes[(e * 2 * I + row) * (H / 2) + kb]; };
    for (int64_t e = 0; e < E; ++e)
      for (int64_t n = 0; n < 2 * I2; ++n)
        for (int64_t kb = 0; kb < H2 / 2; ++kb) {
          const int64_t j = n % I2;
          const bool real = j < I && kb < H / 2;
          ASSERT_EQ(out.bytes[at.offset(e, n, kb)], real ? src_byte(e, 2 * j + n / I2, kb) : 0) << e << "," << n << "," << kb;
        }

    // Expert-separable: experts [1, 3) alone give that slice of the output.
    const size_t per_in = src.bytes.size() / E, per_out = out.bytes.size() / E;
    ByteTensor slice{Dtype::U8, {2, 2 * I, H / 32, 16}, {src.bytes.begin() + per_in, src.bytes.end()}};
    const ByteTensor part = r.apply(slice);
    EXPECT_TRUE(std::equal(part.bytes.begin(), part.bytes.end(), out.bytes.begin() + per_out));
    EXPECT_EQ(part.bytes.size(), 2 * per_out);

    check_undo_and_json(r, src, out);
  }
}

TEST(Recipe, W13ScalesBothModes) {
  for (GateMode mode : {GateMode::Separated, GateMode::Interleave}) {
    SCOPED_TRACE(mode_name(mode));
    std::mt19937_64 rng(42);
    const ByteTensor src = random_tensor(Dtype::U8, {E, 2 * I, H / 32}, rng);
    const Recipe r = w13_scale_recipe(mode);
    EXPECT_EQ(r.expert_separable(), mode == GateMode::Interleave);  // separated pads all rows as one
    const ByteTensor out = r.apply(src);
    const int64_t s = H2 / 32;
    const Shape expected = mode == GateMode::Separated ? Shape{(E * 2 * I2 + 255) / 256 * 256, (s + 7) / 8 * 8}
                                                       : Shape{E * 2 * I2, s};
    EXPECT_EQ(out.shape, expected);
    EXPECT_EQ(r.output_shape(src.shape), expected);

    const ScaleLayout at{mode, true, 2 * I2, out.shape[1]};
    for (int64_t e = 0; e < E; ++e)
      for (int64_t n = 0; n < 2 * I2; ++n)
        for (int64_t g = 0; g < s; ++g) {
          const int64_t j = n % I2;
          const bool real = j < I && g < H / 32;
          const uint8_t want = real ? src.bytes[(e * 2 * I + 2 * j + n / I2) * (H / 32) + g] : 127;
          ASSERT_EQ(out.bytes[at.offset(e, n, g)], want) << e << "," << n << "," << g;
        }
    check_undo_and_json(r, src, out);
  }
}

TEST(Recipe, W13BiasToF32) {
  std::mt19937_64 rng(43);
  ByteTensor src = random_tensor(Dtype::BF16, {E, 2 * I}, rng);
  const Recipe r = w13_bias_recipe();
  EXPECT_EQ(r.output_dtype(Dtype::BF16), Dtype::F32);
  EXPECT_TRUE(r.expert_separable());
  const ByteTensor out = r.apply(src);
  ASSERT_EQ(out.shape, (Shape{E, 2 * I2}));
  ASSERT_EQ(out.dtype, Dtype::F32);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t n = 0; n < 2 * I2; ++n) {
      const int64_t j = n % I2;
      uint32_t got;
      std::memcpy(&got, out.bytes.data() + 4 * (e * 2 * I2 + n), 4);
      uint16_t bf = 0;
      if (j < I) std::memcpy(&bf, src.bytes.data() + 2 * (e * 2 * I + 2 * j + n / I2), 2);
      EXPECT_EQ(got, static_cast<uint32_t>(bf) << 16) << e << "," << n;
    }
  check_undo_and_json(r, src, out);
}

TEST(Recipe, ConstraintErrorsNameTheStep) {
  // Kb = 20 breaks the separated shuffle's multiple of 32 once the padding leaves it unaligned.
  const Recipe r{{make_aiter_shuffle_weight_step(GateMode::Separated, false)}};
  expect_error([&] { r.output_shape({1, 16, 20}); }, {"aiter_shuffle_weight(separated): Kb=20 is not a multiple of 32"});
  expect_error([&] { w13_bias_recipe().output_dtype(Dtype::F32); }, {"cast_bf16_to_f32: input dtype is F32"});
}

TEST(Recipe, FromJsonRejectsMalformedEntries) {
  expect_error([] { Recipe::from_json(nlohmann::ordered_json::object()); }, {"recipe: expected an array of steps"});
  expect_error([] { Recipe::from_json(nlohmann::ordered_json::parse(R"([{"id": "view", "params": {"shape": [4]}}, {"params": {}}])")); },
               {"recipe step 1: expected {\"id\": string"});
  expect_error([] { Recipe::from_json(nlohmann::ordered_json::parse(R"([{"id": "twist", "params": {}}])")); },
               {"recipe step 0: unknown layout step \"twist\""});
  expect_error([] { Recipe::from_json(nlohmann::ordered_json::parse(R"([{"id": "view", "params": {"shape": [4]}, "note": 1}])")); },
               {"recipe step 0: unknown key \"note\""});
  // An empty recipe is the identity (tensors copied unchanged).
  const Recipe empty = Recipe::from_json(nlohmann::ordered_json::array());
  EXPECT_TRUE(empty.steps.empty());
  const ByteTensor t{Dtype::U8, {2}, {7, 8}};
  EXPECT_EQ(empty.apply(t).bytes, t.bytes);
  EXPECT_EQ(empty.undo(t, {2}, Dtype::U8).bytes, t.bytes);
}
