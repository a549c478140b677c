// Property tests: for random shapes that satisfy each step's constraints and random bytes,
// undo(apply(x)) == x, and make_step(id(), params()) rebuilds a step that behaves the same.
#include <gtest/gtest.h>

#include <functional>
#include <tuple>

#include "layout/steps.h"
#include "layout_test_util.h"

using namespace moeprep;
using namespace moeprep::layout;
using namespace moeprep::layout::testing;

namespace {

struct Case {
  StepPtr step;
  ByteTensor input;
};

void check_round_trip_and_rebuild(const Case& c) {
  SCOPED_TRACE(c.step->id() + " " + c.step->params().dump() + " on " + dtype_name(c.input.dtype) + " " +
               shape_to_string(c.input.shape));
  const ByteTensor out = c.step->apply(c.input);
  EXPECT_EQ(out.shape, c.step->output_shape(c.input.shape));
  EXPECT_EQ(out.dtype, c.step->output_dtype(c.input.dtype));
  const ByteTensor back = c.step->undo(out, c.input.shape, c.input.dtype);
  EXPECT_EQ(back.shape, c.input.shape);
  EXPECT_EQ(back.dtype, c.input.dtype);
  EXPECT_EQ(back.bytes, c.input.bytes);

  const StepPtr rebuilt = make_step(c.step->id(), c.step->params());
  EXPECT_EQ(rebuilt->id(), c.step->id());
  EXPECT_EQ(rebuilt->params().dump(), c.step->params().dump());
  EXPECT_EQ(rebuilt->expert_separable(), c.step->expert_separable());
  EXPECT_EQ(rebuilt->apply(c.input).bytes, out.bytes);
}

// The step and input shape for a slice of `count` experts: params that name the expert count
// rebuilt for the slice, as the planner does. Empty: the same step, dim 0 = count.
using SliceBuilder = std::function<std::pair<StepPtr, Shape>(int64_t count)>;

// An expert-separable step converts experts [e0, e1) alone into that slice of the whole output.
void check_expert_slice(const Case& c, int64_t experts, std::mt19937_64& rng, const SliceBuilder& for_slice = {}) {
  ASSERT_TRUE(c.step->expert_separable()) << c.step->id() << " " << c.step->params().dump();
  if (experts < 2) return;
  const int64_t e0 = random_int(rng, 0, experts - 1), e1 = random_int(rng, e0 + 1, experts);
  StepPtr step = c.step;
  Shape shape = c.input.shape;
  if (for_slice) {
    std::tie(step, shape) = for_slice(e1 - e0);
  } else {
    shape[0] = e1 - e0;
  }
  const size_t in_per = c.input.bytes.size() / static_cast<size_t>(experts);
  const ByteTensor slice{c.input.dtype, shape,
                         {c.input.bytes.begin() + e0 * in_per, c.input.bytes.begin() + e1 * in_per}};
  const ByteTensor whole = c.step->apply(c.input);
  const ByteTensor part = step->apply(slice);
  const size_t out_per = whole.bytes.size() / static_cast<size_t>(experts);
  ASSERT_EQ(part.bytes.size(), (e1 - e0) * out_per);
  EXPECT_TRUE(std::equal(part.bytes.begin(), part.bytes.end(), whole.bytes.begin() + e0 * out_per))
      << c.step->id() << " " << c.step->params().dump() << " experts [" << e0 << ", " << e1 << ")";
}

Shape with_dim0(Shape s, int64_t v) {
  s[0] = v;
  return s;
}

}  // namespace

TEST(StepProperties, DeinterleaveAnyTrailingDimsAndDtypes) {
  std::mt19937_64 rng(21);
  const Dtype dtypes[] = {Dtype::U8, Dtype::BF16, Dtype::F32, Dtype::F64};
  for (int t = 0; t < 60; ++t) {
    Shape s{random_int(rng, 1, 4), 2 * random_int(rng, 0, 6)};
    for (int64_t extra = random_int(rng, 0, 2); extra > 0; --extra) s.push_back(random_int(rng, 1, 5));
    Case c{make_deinterleave_gate_up_rows_step(), random_tensor(dtypes[t % 4], s, rng)};
    check_round_trip_and_rebuild(c);
    check_expert_slice(c, s[0], rng);
  }
}

TEST(StepProperties, ShuffleWeightBothModes) {
  std::mt19937_64 rng(22);
  for (int t = 0; t < 60; ++t) {
    const int64_t e = random_int(rng, 1, 3);
    StepPtr step;
    Shape s;
    switch (t % 3) {
      case 0:
        step = make_aiter_shuffle_weight_step(GateMode::Separated, false);
        s = {e, 16 * random_int(rng, 1, 4), 32 * random_int(rng, 1, 4)};
        break;
      case 1:
        step = make_aiter_shuffle_weight_step(GateMode::Interleave, true);
        s = {e, 32 * random_int(rng, 1, 3), 64 * random_int(rng, 1, 3)};
        break;
      default:
        step = make_aiter_shuffle_weight_step(GateMode::Interleave, false);
        s = {e, 16 * random_int(rng, 1, 4), 64 * random_int(rng, 1, 3)};
    }
    Case c{step, random_tensor(Dtype::U8, s, rng)};
    check_round_trip_and_rebuild(c);
    check_expert_slice(c, e, rng);
    // Every tile here spans several rows, so the shuffle really moves bytes.
    EXPECT_NE(step->apply(c.input).bytes, c.input.bytes);
  }
}

TEST(StepProperties, ShuffleScaleBothModes) {
  std::mt19937_64 rng(23);
  for (int t = 0; t < 60; ++t) {
    if (t % 3 == 0) {
      const int pad = static_cast<int>(random_int(rng, 0, 255));
      Case c{make_aiter_shuffle_scale_separated_step(pad),
             random_tensor(Dtype::U8, {random_int(rng, 1, 600), random_int(rng, 1, 20)}, rng)};
      check_round_trip_and_rebuild(c);
      EXPECT_FALSE(c.step->expert_separable());
    } else {
      const bool gate_up = t % 3 == 1;
      const int64_t e = random_int(rng, 1, 3);
      const int64_t n = 32 * random_int(rng, 1, 3), groups = 8 * random_int(rng, 1, 3);
      Case c{make_aiter_shuffle_scale_interleave_step(gate_up, e), random_tensor(Dtype::U8, {e * n, groups}, rng)};
      check_round_trip_and_rebuild(c);
      check_expert_slice(c, e, rng, [&](int64_t count) {
        return std::make_pair(make_aiter_shuffle_scale_interleave_step(gate_up, count), Shape{count * n, groups});
      });
    }
  }
}

TEST(StepProperties, PadRandomShapesAndDtypes) {
  std::mt19937_64 rng(24);
  const Dtype dtypes[] = {Dtype::U8, Dtype::BF16, Dtype::F32, Dtype::I32};
  for (int t = 0; t < 80; ++t) {
    const size_t nd = static_cast<size_t>(random_int(rng, 1, 4));
    Shape view(nd), padded(nd);
    for (size_t d = 0; d < nd; ++d) {
      view[d] = random_int(rng, 1, 5);
      padded[d] = view[d] + random_int(rng, 0, 3);
    }
    const bool infer = t % 2 == 1;
    padded[0] = view[0];  // the expert dim is not padded
    // Store the padded array flattened after the leading dim, as the planner does for w13.
    Shape out_shape{padded[0], checked_numel(Shape(padded.begin() + 1, padded.end()), "t")};
    const Shape in_shape = view;
    if (infer) view[0] = padded[0] = out_shape[0] = -1;
    const Dtype dtype = dtypes[t % 4];
    const double value = dtype == Dtype::U8 ? 127 : (dtype == Dtype::I32 ? -7 : 0.5);
    Case c{make_pad_step(view, padded, value, out_shape), random_tensor(dtype, in_shape, rng)};
    check_round_trip_and_rebuild(c);
    if (infer) {
      check_expert_slice(c, in_shape[0], rng);
    } else {
      check_expert_slice(c, in_shape[0], rng, [&](int64_t count) {
        return std::make_pair(make_pad_step(with_dim0(view, count), with_dim0(padded, count), value,
                                            with_dim0(out_shape, count)),
                              with_dim0(in_shape, count));
      });
    }
  }
}

TEST(StepProperties, ViewAndCast) {
  std::mt19937_64 rng(25);
  for (int t = 0; t < 20; ++t) {
    const int64_t e = random_int(rng, 1, 4), a = random_int(rng, 1, 6), b = random_int(rng, 1, 6);
    Case flat{make_view_step({e * a, b}), random_tensor(Dtype::U8, {e, a, b}, rng)};
    check_round_trip_and_rebuild(flat);
    check_expert_slice(flat, e, rng, [&](int64_t count) {
      return std::make_pair(make_view_step({count * a, b}), Shape{count, a, b});
    });
    Case inferred{make_view_step({-1, a * b}), random_tensor(Dtype::F32, {e, a, b}, rng)};
    EXPECT_EQ(inferred.step->output_shape({e, a, b}), (Shape{e, a * b}));
    check_round_trip_and_rebuild(inferred);
    check_expert_slice(inferred, e, rng);
    Case cast{make_cast_bf16_to_f32_step(), random_tensor(Dtype::BF16, {e, a, b}, rng)};
    check_round_trip_and_rebuild(cast);
    check_expert_slice(cast, e, rng);
  }
}

TEST(StepProperties, StepsThatAreNotExpertSeparable) {
  // The separated scale shuffle pads all experts' rows as one matrix: 2 experts of 64 rows
  // make one 256-row block, but each expert alone would be padded to 256 rows of its own.
  const auto sep = make_aiter_shuffle_scale_separated_step();
  EXPECT_FALSE(sep->expert_separable());
  EXPECT_EQ(sep->output_shape({128, 8}), (Shape{256, 8}));
  EXPECT_EQ(sep->output_shape({64, 8}), (Shape{256, 8}));
  // Padding dim 0 adds whole experts at the end; a slice would get them in the middle.
  EXPECT_FALSE(make_pad_step({2, 4}, {3, 4}, 0, {3, 4})->expert_separable());
  EXPECT_TRUE(make_pad_step({2, 4}, {2, 5}, 0, {2, 5})->expert_separable());
}

TEST(StepProperties, RegistryKnowsEveryStep) {
  const auto ids = registered_step_ids();
  for (const char* id : {"view", "deinterleave_gate_up_rows", "pad", "aiter_shuffle_weight", "aiter_shuffle_scale",
                         "cast_bf16_to_f32"})
    EXPECT_NE(std::find(ids.begin(), ids.end(), id), ids.end()) << id;
  // Param key order is fixed (the manifest is compared as text).
  EXPECT_EQ(make_pad_step({-1, 2}, {-1, 4}, 127, {-1, 4})->params().dump(),
            R"({"view":[-1,2],"padded":[-1,4],"value":127,"out_shape":[-1,4]})");
  EXPECT_EQ(make_aiter_shuffle_scale_interleave_step(true, 4)->params().dump(),
            R"({"gate_mode":"interleave","gate_up":true,"experts":4})");
  EXPECT_EQ(make_aiter_shuffle_weight_step(GateMode::Interleave, false)->params().dump(),
            R"({"gate_mode":"interleave","gate_up":false})");
  // The separated mode ignores gate_up (as AITER does): accepted, not recorded.
  EXPECT_EQ(make_step("aiter_shuffle_weight", {{"gate_mode", "separated"}, {"gate_up", true}})->params().dump(),
            R"({"gate_mode":"separated"})");
}
