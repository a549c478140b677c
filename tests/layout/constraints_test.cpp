// Shapes, dtypes and params that violate a step's constraints are rejected with a message
// naming the step and the constraint.
#include <gtest/gtest.h>

#include <cstring>

#include "layout/steps.h"
#include "layout_test_util.h"

using namespace moeprep;
using namespace moeprep::layout;
using namespace moeprep::layout::testing;

namespace {
ByteTensor zeros(Dtype dtype, Shape shape) {
  const int64_t n = checked_numel(shape, "t") * dtype_bits(dtype) / 8;
  return ByteTensor{dtype, std::move(shape), std::vector<uint8_t>(static_cast<size_t>(n))};
}
}  // namespace

TEST(StepConstraints, ShuffleWeight) {
  const auto sep = make_aiter_shuffle_weight_step(GateMode::Separated, false);
  expect_error([&] { sep->apply(zeros(Dtype::U8, {1, 24, 32})); },
               {"aiter_shuffle_weight(separated): N=24 is not a multiple of 16"});
  expect_error([&] { sep->output_shape({2, 16, 48}); }, {"aiter_shuffle_weight(separated): Kb=48 is not a multiple of 32"});
  expect_error([&] { sep->output_shape({16, 32}); }, {"aiter_shuffle_weight(separated)", "is not [E, N, Kb]"});
  expect_error([&] { sep->apply(zeros(Dtype::BF16, {1, 16, 32})); }, {"aiter_shuffle_weight(separated)", "BF16", "byte dtype"});

  const auto w13 = make_aiter_shuffle_weight_step(GateMode::Interleave, true);
  expect_error([&] { w13->output_shape({1, 48, 64}); },
               {"aiter_shuffle_weight(interleave, gate_up): N=48 is not a multiple of 32"});
  expect_error([&] { w13->output_shape({1, 32, 96}); },
               {"aiter_shuffle_weight(interleave, gate_up): Kb=96 is not a multiple of 64"});
  const auto w2 = make_aiter_shuffle_weight_step(GateMode::Interleave, false);
  expect_error([&] { w2->output_shape({1, 24, 64}); }, {"aiter_shuffle_weight(interleave, down): N=24 is not a multiple of 16"});
  expect_error([&] { w2->output_shape({1, 16, 32}); }, {"aiter_shuffle_weight(interleave, down): Kb=32 is not a multiple of 64"});
  // 48 rows is fine for w2 (only w13 needs two halves of 16-row tiles).
  EXPECT_EQ(w2->output_shape({1, 48, 64}), (Shape{1, 48, 64}));
}

TEST(StepConstraints, ShuffleScale) {
  const auto sep = make_aiter_shuffle_scale_separated_step();
  expect_error([&] { sep->output_shape({2, 16, 8}); }, {"aiter_shuffle_scale(separated)", "not a 2-D"});
  expect_error([] { make_aiter_shuffle_scale_separated_step(256); }, {"aiter_shuffle_scale(separated)", "pad_value 256"});

  const auto gu = make_aiter_shuffle_scale_interleave_step(true, 2);
  expect_error([&] { gu->output_shape({96, 8}); }, {"aiter_shuffle_scale(interleave, gate_up): rows per expert n=48 is not a multiple of 32"});
  expect_error([&] { gu->output_shape({65, 8}); }, {"aiter_shuffle_scale(interleave, gate_up): rows=65 is not a multiple of experts=2"});
  expect_error([&] { gu->output_shape({64, 12}); }, {"aiter_shuffle_scale(interleave, gate_up): S=12 is not a multiple of 8"});
  const auto down = make_aiter_shuffle_scale_interleave_step(false, 1);
  expect_error([&] { down->output_shape({32, 0}); }, {"aiter_shuffle_scale(interleave, down): 32*S=0 is less than 256"});
  expect_error([] { make_aiter_shuffle_scale_interleave_step(false, 0); }, {"aiter_shuffle_scale(interleave, down): experts=0"});
}

TEST(StepConstraints, DeinterleaveViewCast) {
  const auto de = make_deinterleave_gate_up_rows_step();
  expect_error([&] { de->output_shape({2, 7, 4}); }, {"deinterleave_gate_up_rows: dim 1 = 7 is odd"});
  expect_error([&] { de->output_shape({8}); }, {"deinterleave_gate_up_rows", "at least 2 dims"});
  expect_error([&] { de->apply(ByteTensor{Dtype::F4, {1, 2, 2}, {0, 0}}); }, {"deinterleave_gate_up_rows", "F4", "whole-byte"});
  // The bytes must match shape x dtype.
  expect_error([&] { de->apply(ByteTensor{Dtype::U8, {1, 2, 2}, {0, 0, 0}}); }, {"deinterleave_gate_up_rows", "holds 3 bytes, expected 4"});

  expect_error([] { make_view_step({4, 4})->output_shape({3, 5}); }, {"view: input [3, 5] has 15 elements", "has 16"});
  expect_error([] { make_view_step({-1, 4})->output_shape({3, 5}); }, {"view", "15 elements do not fill"});
  expect_error([] { make_view_step({2, -1}); }, {"view", "only a leading -1"});

  const auto cast = make_cast_bf16_to_f32_step();
  expect_error([&] { cast->apply(zeros(Dtype::F32, {2})); }, {"cast_bf16_to_f32: input dtype is F32, not BF16"});
  // 1.0f + 2^-23 has low bits set: BF16 cannot hold it, and the inverse must say so, not round.
  ByteTensor f32{Dtype::F32, {2}, std::vector<uint8_t>(8)};
  const uint32_t bits[2] = {0x3F800000u, 0x3F800001u};
  std::memcpy(f32.bytes.data(), bits, 8);
  expect_error([&] { cast->undo(f32, {2}, Dtype::BF16); },
               {"cast_bf16_to_f32: cannot undo: F32 element 1", "0x3f800001", "not exactly representable in BF16"});
}

TEST(StepConstraints, Pad) {
  expect_error([] { make_pad_step({2, 3}, {2, 2}, 0, {2, 2}); }, {"pad: padded dim 1 = 2 is smaller than the view's 3"});
  expect_error([] { make_pad_step({2, 3}, {2, 3, 1}, 0, {6}); }, {"pad: view and padded differ in rank"});
  expect_error([] { make_pad_step({2, 3}, {4, 4}, 0, {15}); }, {"pad: out_shape does not hold the padded array's elements"});
  expect_error([] { make_pad_step({-1, 3}, {4, 4}, 0, {-1, 4}); }, {"pad: a leading -1", "alike"});
  const auto step = make_pad_step({2, 3}, {4, 4}, 0, {4, 4});
  expect_error([&] { step->output_shape({7}); }, {"pad: input [7] has 7 elements, the view [2, 3] has 6"});
  expect_error([] { make_pad_step({1}, {2}, 300, {2})->apply(zeros(Dtype::U8, {1})); },
               {"pad: value 300 for dtype U8", "not an integer in [0, 255]"});
  expect_error([] { make_pad_step({1}, {2}, 0.1, {2})->apply(zeros(Dtype::BF16, {1})); },
               {"pad: value 0.1 for dtype BF16 is not exact in BF16"});
  // Undo refuses a tensor whose padding was changed.
  ByteTensor out = step->apply(zeros(Dtype::U8, {2, 3}));
  out.bytes[7] = 1;
  expect_error([&] { step->undo(out, {2, 3}, Dtype::U8); }, {"pad: cannot undo: padding element at byte 7 is not the pad value 0"});
}

TEST(StepConstraints, UndoChecksItsInput) {
  const auto de = make_deinterleave_gate_up_rows_step();
  expect_error([&] { de->undo(zeros(Dtype::U8, {1, 4, 2}), {1, 4, 3}, Dtype::U8); },
               {"deinterleave_gate_up_rows: cannot undo: got U8 [1, 4, 2]", "makes U8 [1, 4, 3]"});
  // The separated scale shuffle pads [40, 5] to [256, 8] with 127; a changed pad scale is
  // refused (a pad of 255 would be a NaN scale in the kernel).
  const auto sep = make_aiter_shuffle_scale_separated_step();
  ByteTensor out = sep->apply(zeros(Dtype::U8, {40, 5}));
  const ScaleLayout at{GateMode::Separated, false, 256, 8};
  EXPECT_EQ(out.bytes[at.offset(0, 100, 0)], 127);
  EXPECT_EQ(out.bytes[at.offset(0, 3, 6)], 127);
  EXPECT_EQ(out.bytes[at.offset(0, 3, 4)], 0);
  out.bytes[at.offset(0, 3, 6)] = 255;
  expect_error([&] { sep->undo(out, {40, 5}, Dtype::U8); },
               {"aiter_shuffle_scale(separated): cannot undo: padding scale at (3, 6)", "not pad_value 127"});
}

TEST(StepConstraints, RegistryParams) {
  expect_error([] { make_step("shuffle_everything", nlohmann::ordered_json::object()); },
               {"unknown layout step \"shuffle_everything\"", "known: view, deinterleave_gate_up_rows, pad"});
  expect_error([] { make_step("aiter_shuffle_weight", {{"gate_mode", "zigzag"}, {"gate_up", true}}); },
               {"aiter_shuffle_weight: unknown gate_mode \"zigzag\"", "separated, interleave"});
  expect_error([] { make_step("aiter_shuffle_weight", {{"gate_mode", "interleave"}}); },
               {"aiter_shuffle_weight: param \"gate_up\" is missing"});
  expect_error([] { make_step("aiter_shuffle_weight", {{"gate_mode", "interleave"}, {"gate_up", 1}}); },
               {"aiter_shuffle_weight: param \"gate_up\" must be true or false"});
  expect_error([] { make_step("deinterleave_gate_up_rows", {{"axis", 1}}); },
               {"deinterleave_gate_up_rows: unknown param \"axis\""});
  expect_error([] { make_step("view", {{"shape", {2, -3}}}); }, {"view: param \"shape\" must hold integers >= 0"});
  expect_error([] { make_step("pad", {{"view", {2}}, {"padded", {3}}}); }, {"pad: param \"value\" is missing"});
  expect_error([] { make_step("aiter_shuffle_scale", {{"gate_mode", "interleave"}, {"gate_up", true}}); },
               {"aiter_shuffle_scale: param \"experts\" is missing"});
  expect_error([] { make_step("aiter_shuffle_scale", {{"gate_mode", "separated"}, {"experts", 2}}); },
               {"aiter_shuffle_scale(separated): params gate_up and experts belong to the interleave mode"});
  expect_error([] { make_step("cast_bf16_to_f32", nlohmann::ordered_json::array()); },
               {"cast_bf16_to_f32: params must be a JSON object"});
}
