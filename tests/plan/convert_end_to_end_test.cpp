// convert + verify on the tiny GPT-OSS checkpoint, both gate modes; determinism.
#include <gtest/gtest.h>

#include "plan/manifest.h"
#include "core/random.h"
#include "plan/fused_scale_recipe.h"
#include "plan/fused_weight_recipe.h"
#include "plan/plan.h"
#include "plan_test_util.h"

namespace moeprep::plan::testing {
namespace {

std::map<std::string, std::string> all_files(const fs::path& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) files[e.path().filename().string()] = read_file(e.path());
  return files;
}

class ConvertBothModes : public ::testing::TestWithParam<layout::GateMode> {};

TEST_P(ConvertBothModes, ConvertThenVerifyPassesEveryStage) {
  TempDir dir;
  const fs::path src = make_tiny(dir);
  ConvertOptions o;
  o.gate_mode = GetParam();
  const ConvertSummary s = convert(src, dir / "dst", o);
  EXPECT_EQ(s.transformed, 12u);  // 2 layers x 6 expert tensors
  EXPECT_GT(s.copied, 10u);
  const VerifyReport r = verify(dir / "dst", &src, {1, 7, 64});
  for (const auto& st : r.stages) {
    EXPECT_EQ(st.status, StageStatus::Passed) << st.name << ": " << failures_text(st);
    EXPECT_GT(st.checked, 0u) << st.name;
  }
  ASSERT_EQ(r.numerics.size(), 6u);
  for (const auto& row : r.numerics) {
    EXPECT_LT(row.rel_err, 1e-2) << "layer " << row.layer << " T=" << row.tokens;
    EXPECT_EQ(row.routing_mismatches, 0);
  }
  EXPECT_TRUE(r.passed());
}

TEST_P(ConvertBothModes, ManifestAndFlagsDescribeEveryTransformedTensor) {
  TempDir dir;
  const fs::path src = make_tiny(dir);
  ConvertOptions o;
  o.gate_mode = GetParam();
  convert(src, dir / "dst", o);
  const Manifest m = Manifest::read(dir / "dst" / kManifestFileName);
  const auto ckpt = io::Checkpoint::open(dir / "dst");
  int shuffled = 0;
  for (const auto& t : m.tensors) {
    if (!t.transformed) {
      ASSERT_EQ(t.sources.size(), 1u);
      EXPECT_EQ(t.sources[0].name, t.name);
      EXPECT_EQ(t.sources[0].xxh3_128, t.xxh3_128) << t.name;
      continue;
    }
    EXPECT_FALSE(t.steps.empty()) << t.name;
    EXPECT_EQ(t.gate_mode, gate_mode_name(GetParam()));
    const auto& meta = ckpt.find(t.name).file->metadata();
    if (t.role == "w13_weight_bias" || t.role == "w2_weight_bias") {
      EXPECT_EQ(t.dtype, Dtype::F32);
      EXPECT_FALSE(t.is_shuffled);
      EXPECT_EQ(meta.count(t.name + ".is_shuffled"), 0u);
    } else {
      ++shuffled;
      EXPECT_TRUE(t.is_shuffled) << t.name;
      EXPECT_EQ(meta.at(t.name + ".is_shuffled"), "true");
      EXPECT_EQ(meta.at(t.name + ".layout"), t.layout);
    }
  }
  EXPECT_EQ(shuffled, 8);
  // Padded sizes: hidden 160 -> 256; intermediate 96 -> 128 (separated) or 256 (interleave).
  const int64_t ip = GetParam() == layout::GateMode::Separated ? 128 : 256;
  const auto* w13 = m.find("model.layers.0.mlp.experts.w13_weight");
  ASSERT_NE(w13, nullptr);
  EXPECT_EQ(w13->shape, (Shape{4, 2 * ip, 128}));
  EXPECT_EQ(w13->logical_shape, (Shape{4, 192, 80}));
  EXPECT_EQ(m.model["hidden_pad"], 256);
  EXPECT_EQ(m.model["intermediate_pad"], ip);
}

INSTANTIATE_TEST_SUITE_P(GateModes, ConvertBothModes,
                         ::testing::Values(layout::GateMode::Separated, layout::GateMode::Interleave),
                         [](const auto& info) { return std::string(gate_mode_name(info.param)); });

TEST(ConvertDeterminism, SameInputAndOptionsGiveIdenticalBytes) {
  TempDir dir;
  const fs::path src = make_tiny(dir);
  ConvertOptions one;
  one.threads = 1;
  ConvertOptions two;
  two.threads = 2;
  convert(src, dir / "a", one);
  convert(src, dir / "b", two);
  const auto a = all_files(dir / "a"), b = all_files(dir / "b");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, bytes] : a) EXPECT_TRUE(b.at(name) == bytes) << name << " differs";
}

TEST(ConvertDeterminism, ShippedTinyCheckpointIsWhatTheGeneratorMakes) {
  TempDir dir;
  const fs::path fresh = make_tiny(dir);
  const fs::path shipped = fs::path(MOEPREP_SOURCE_DIR) / "testdata" / "tiny-gpt-oss";
  const auto a = all_files(fresh), b = all_files(shipped);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, bytes] : a) EXPECT_TRUE(b.at(name) == bytes) << name;
  uint64_t total = 0;
  for (const auto& [name, bytes] : b) total += bytes.size();
  EXPECT_LT(total, 2u << 20);
  EXPECT_TRUE(fs::exists(shipped / io::kIndexFileName));
}

TEST(ConvertSharding, MaxShardSizeBoundsEveryShard) {
  TempDir dir;
  const fs::path src = make_tiny(dir);
  ConvertOptions o;
  o.max_shard_size = 300 * 1000;
  const ConvertSummary s = convert(src, dir / "dst", o);
  EXPECT_GE(s.shards, 3u);
  const auto ckpt = io::Checkpoint::open(dir / "dst");
  for (const auto& shard : ckpt.shards()) {
    uint64_t data = 0;
    for (const auto& t : shard->tensors()) data += t.byte_length();
    if (shard->tensors().size() > 1) {
      EXPECT_LE(data, o.max_shard_size) << shard->path();
    }
  }
  EXPECT_TRUE(verify(dir / "dst", &src).passed());
}

TEST(ConvertPlan, DryRunPlanListsStepsAndShapes) {
  TempDir dir;
  const fs::path src = make_tiny(dir);
  const auto ckpt = io::Checkpoint::open(src);
  const ConvertPlan p = build_plan(ckpt, ConvertOptions{});
  const auto j = p.to_json();
  EXPECT_EQ(j["model"]["hidden_pad"], 256);
  bool saw_w13 = false;
  for (const auto& shard : j["shards"])
    for (const auto& t : shard["tensors"])
      if (t["name"] == "model.layers.1.mlp.experts.w13_weight") {
        saw_w13 = true;
        EXPECT_EQ(t["sources"], nlohmann::ordered_json::array({"model.layers.1.mlp.experts.gate_up_proj_blocks"}));
        std::vector<std::string> ids;
        for (const auto& s : t["steps"]) ids.push_back(s["id"]);
        EXPECT_EQ(ids, (std::vector<std::string>{"view", "deinterleave_gate_up_rows", "pad", "aiter_shuffle_weight"}));
        EXPECT_EQ(t["out"], "U8 [4, 256, 128]");
      }
  EXPECT_TRUE(saw_w13);
  EXPECT_FALSE(fs::exists(dir / "dst"));
}

TEST(ConvertStreaming, ChunkedExecutionEqualsWholeTensors) {
  // Tensors bigger than the chunk bound are streamed a slice of experts at a time; the bytes
  // must equal a conversion where each tensor is processed whole.
  TempDir dir;
  models::gpt_oss::SynthOptions so;
  so.experts = 8;
  so.layers = 1;
  so.hidden = 512;
  so.intermediate = 256;
  const fs::path src = make_tiny(dir, "src", so);
  const auto ckpt = io::Checkpoint::open(src);
  const ConvertPlan p = build_plan(ckpt, ConvertOptions{});
  for (const auto& job : p.jobs) {
    if (!job.transformed || !job.spec.recipe.expert_separable()) continue;
    io::ByteView in = ckpt.data(ckpt.find(job.source_tensors().front()));
    ByteTensor whole{job.spec.in_dtype, job.spec.in_shape, std::vector<uint8_t>(in.data, in.data + in.size)};
    const ByteTensor expect = job.spec.recipe.apply(whole);
    std::vector<uint8_t> got;
    for (int64_t e = 0; e < p.dims.experts; e += 3) {
      const int64_t n = std::min<int64_t>(3, p.dims.experts - e);
      const RecipeSpec spec = recipe_for_experts(p, job, n);
      const uint64_t per = in.size / p.dims.experts;
      ByteTensor part{spec.in_dtype, spec.in_shape, std::vector<uint8_t>(in.data + per * e, in.data + per * (e + n))};
      const ByteTensor out = spec.recipe.apply(part);
      got.insert(got.end(), out.bytes.begin(), out.bytes.end());
    }
    EXPECT_TRUE(got == expect.bytes) << job.output_name;
  }
}

}  // namespace
}  // namespace moeprep::plan::testing

namespace moeprep::plan::testing {
namespace {

// The one-pass weight path must give exactly the recipe's bytes: every mode, interleaved and
// separated sources, padded and unpadded sizes.
TEST(FusedWeightRecipe, EqualsTheStepByStepRecipe) {
  SplitMix64 rng(7);
  for (auto mode : {layout::GateMode::Separated, layout::GateMode::Interleave})
    for (bool interleaved : {true, false})
      for (auto [H, I] : {std::pair<int64_t, int64_t>{160, 96}, {256, 256}, {512, 384}}) {
        ConvertOptions o;
        o.gate_mode = mode;
        const ExpertDims d = padded_dims(3, H, I, o);
        for (ExpertRole role : {ExpertRole::W13Weight, ExpertRole::W2Weight}) {
          const RecipeSpec spec = aiter_recipe(role, d, o, interleaved);
          ByteTensor in{spec.in_dtype, spec.in_shape, {}};
          in.bytes.resize(static_cast<size_t>(checked_numel(spec.in_shape, "t")));
          for (auto& b : in.bytes) b = static_cast<uint8_t>(rng.next());
          const ByteTensor expect = spec.recipe.apply(in);
          ASSERT_TRUE(has_fused_weight_recipe(role, d, o))
              << gate_mode_name(mode) << " H=" << H << " I=" << I << " " << role_name(role);
          std::vector<uint8_t> fresh(expect.bytes.size());
          write_weight_recipe_fused(role, d, o, interleaved, in.bytes.data(), in.bytes.size(), fresh.data(),
                                    fresh.size());
          EXPECT_TRUE(fresh == expect.bytes)
              << gate_mode_name(mode) << " interleaved=" << interleaved << " H=" << H << " I=" << I << " "
              << role_name(role);
          // Convert reuses output buffers: every byte, padding included, must be written.
          std::vector<uint8_t> reused(expect.bytes.size(), 0xA5);
          write_weight_recipe_fused(role, d, o, interleaved, in.bytes.data(), in.bytes.size(), reused.data(),
                                    reused.size());
          EXPECT_TRUE(reused == expect.bytes) << "stale bytes survived: " << gate_mode_name(mode) << " H=" << H
                                              << " I=" << I << " " << role_name(role);
        }
      }
}

// The same for the scales: both modes, interleaved and separated sources, padded and unpadded,
// whole tensors and expert slices, into a buffer holding stale bytes.
TEST(FusedScaleRecipe, EqualsTheStepByStepRecipe) {
  SplitMix64 rng(11);
  for (auto mode : {layout::GateMode::Separated, layout::GateMode::Interleave})
    for (bool interleaved : {true, false})
      for (auto [H, I] : {std::pair<int64_t, int64_t>{160, 96}, {256, 256}, {512, 384}})
        for (int64_t experts : {1, 3}) {
          ConvertOptions o;
          o.gate_mode = mode;
          const ExpertDims d = padded_dims(experts, H, I, o);
          for (ExpertRole role : {ExpertRole::W13Scale, ExpertRole::W2Scale}) {
            const RecipeSpec spec = aiter_recipe(role, d, o, interleaved);
            ByteTensor in{spec.in_dtype, spec.in_shape, {}};
            in.bytes.resize(static_cast<size_t>(checked_numel(spec.in_shape, "t")));
            for (auto& b : in.bytes) b = static_cast<uint8_t>(rng.next());
            const ByteTensor expect = spec.recipe.apply(in);
            ASSERT_TRUE(has_fused_scale_recipe(role, d, o, interleaved))
                << gate_mode_name(mode) << " H=" << H << " I=" << I << " " << role_name(role);
            std::vector<uint8_t> reused(expect.bytes.size(), 0xA5);
            write_scale_recipe_fused(role, d, o, interleaved, in.bytes.data(), in.bytes.size(), reused.data(),
                                     reused.size());
            EXPECT_TRUE(reused == expect.bytes) << gate_mode_name(mode) << " interleaved=" << interleaved
                                                << " H=" << H << " I=" << I << " E=" << experts << " "
                                                << role_name(role);
          }
        }
}

TEST(FusedScaleRecipe, NotUsedForInjectedFaultsOrOtherRoles) {
  ConvertOptions o;
  const ExpertDims d = padded_dims(2, 160, 96, o);
  EXPECT_FALSE(has_fused_scale_recipe(ExpertRole::W13Weight, d, o, true));
  o.fault = InjectedFault::SkipScaleDeinterleave;
  EXPECT_FALSE(has_fused_scale_recipe(ExpertRole::W13Scale, d, o, true));
}

TEST(FusedWeightRecipe, NotUsedForInjectedFaultsOrOtherRoles) {
  ConvertOptions o;
  const ExpertDims d = padded_dims(2, 160, 96, o);
  EXPECT_FALSE(has_fused_weight_recipe(ExpertRole::W13Scale, d, o));
  o.fault = InjectedFault::SkipGateUpDeinterleave;
  EXPECT_FALSE(has_fused_weight_recipe(ExpertRole::W13Weight, d, o));
}

}  // namespace
}  // namespace moeprep::plan::testing
