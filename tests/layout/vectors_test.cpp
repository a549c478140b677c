// Every vector of testdata/layouts-small.json (computed from the view/permute definitions in
// spec/layouts.md), forward and inverse.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "layout/step.h"

using namespace moeprep;
using namespace moeprep::layout;

namespace {

std::vector<uint8_t> from_hex(const std::string& hex) {
  std::vector<uint8_t> out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return out;
}

nlohmann::ordered_json load_vectors() {
  std::ifstream f(MOEPREP_SOURCE_DIR "/testdata/layouts-small.json");
  EXPECT_TRUE(f.good()) << "cannot open testdata/layouts-small.json";
  return nlohmann::ordered_json::parse(f);
}

}  // namespace

TEST(LayoutVectors, EveryVectorForwardAndInverse) {
  const auto doc = load_vectors();
  const auto& vectors = doc.at("vectors");
  ASSERT_GE(vectors.size(), 7u);
  std::set<std::string> steps_seen;
  for (size_t i = 0; i < vectors.size(); ++i) {
    const auto& v = vectors[i];
    SCOPED_TRACE("vector " + std::to_string(i) + ": " + v.at("step").get<std::string>() + " " + v.at("params").dump());
    const StepPtr step = make_step(v.at("step").get<std::string>(), v.at("params"));
    // The step records exactly the params it was built from.
    EXPECT_EQ(step->params().dump(), v.at("params").dump());
    steps_seen.insert(step->id());

    const ByteTensor in{Dtype::U8, v.at("in_shape").get<Shape>(), from_hex(v.at("in_hex").get<std::string>())};
    const Shape out_shape = v.at("out_shape").get<Shape>();
    const std::vector<uint8_t> expected = from_hex(v.at("out_hex").get<std::string>());
    ASSERT_EQ(static_cast<int64_t>(in.bytes.size()), checked_numel(in.shape, "vector"));

    EXPECT_EQ(step->output_shape(in.shape), out_shape);
    const ByteTensor out = step->apply(in);
    EXPECT_EQ(out.shape, out_shape);
    EXPECT_EQ(out.dtype, Dtype::U8);
    EXPECT_EQ(out.bytes, expected);

    const ByteTensor back = step->undo(ByteTensor{Dtype::U8, out_shape, expected}, in.shape, Dtype::U8);
    EXPECT_EQ(back.shape, in.shape);
    EXPECT_EQ(back.bytes, in.bytes);
  }
  EXPECT_TRUE(steps_seen.count("deinterleave_gate_up_rows"));
  EXPECT_TRUE(steps_seen.count("aiter_shuffle_weight"));
  EXPECT_TRUE(steps_seen.count("aiter_shuffle_scale"));
}
