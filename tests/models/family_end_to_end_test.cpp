// Every quantizing family end to end through the library: the shipped tiny checkpoint is what
// the generator makes; convert + verify pass all five stages with the default threshold; the
// manifest names every source tensor, the transform and the quantization error; and a layout
// error makes the numerics stage fail.
#include <cstring>

#include <gtest/gtest.h>

#include "core/hash.h"
#include "models/detect.h"
#include "plan/manifest.h"
#include "models_test_util.h"

namespace moeprep::models::testing {
namespace {

using plan::ConvertOptions;
using plan::InjectedFault;
using plan::StageStatus;
using plan::testing::convert;
using plan::testing::failures_text;
using plan::testing::stage;
using plan::testing::verify;

struct FamilyCase {
  const char* family;
  const char* model_type;         // config.json's
  const char* w13_name;           // a kernel-ready tensor of the first MoE layer
  int64_t moe_layers;             // how many layers are converted
  const char* transform;          // source_transform of the weights
  bool shipped;                   // testdata/tiny-<family> exists
  bool interleaved;               // canonical w13 rows in (gate, up) pairs
};

const FamilyCase kFamilies[] = {
    {"gpt_oss_bf16", "gpt_oss", "model.layers.0.mlp.experts.w13_weight", 2, "quantize_mxfp4", true, true},
    {"qwen3_moe", "qwen3_moe", "model.layers.0.mlp.experts.w13_weight", 2, "quantize_mxfp4", true, false},
    {"qwen2_moe", "qwen2_moe", "model.layers.0.mlp.experts.w13_weight", 2, "quantize_mxfp4", true, false},
    {"mixtral", "mixtral", "model.layers.0.block_sparse_moe.experts.w13_weight", 2, "quantize_mxfp4", true, false},
    {"deepseek_v3", "deepseek_v3", "model.layers.1.mlp.experts.w13_weight", 2, "dequantize_fp8_block+quantize_mxfp4",
     true, false},
    {"deepseek_v3_bf16", "deepseek_v3", "model.layers.1.mlp.experts.w13_weight", 2, "quantize_mxfp4", false, false},
    {"gemma4", "gemma4", "model.language_model.layers.0.experts.w13_weight", 2, "quantize_mxfp4", true, false},
};

class Family : public ::testing::TestWithParam<FamilyCase> {};

std::map<std::string, std::string> all_files(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out[e.path().filename().string()] = plan::testing::read_file(e.path());
  return out;
}

TEST_P(Family, ShippedTinyCheckpointIsWhatTheGeneratorMakes) {
  const FamilyCase& fc = GetParam();
  TempDir dir;
  const fs::path fresh = make_family(dir, fc.family);
  const fs::path again = make_family(dir, fc.family, "again");
  const auto a = all_files(fresh), b = all_files(again);
  EXPECT_TRUE(a == b) << "regenerating " << fc.family << " changed its bytes";
  if (!fc.shipped) return;
  const auto shipped = all_files(shipped_tiny(fc.family));
  ASSERT_EQ(a.size(), shipped.size()) << shipped_tiny(fc.family);
  uint64_t total = 0;
  for (const auto& [name, bytes] : a) {
    ASSERT_TRUE(shipped.count(name)) << name;
    EXPECT_TRUE(shipped.at(name) == bytes) << fc.family << ": " << name << " differs from the generator's";
    total += bytes.size();
  }
  EXPECT_LT(total, 420u * 1000) << fc.family;
  EXPECT_GE(a.size(), 4u);  // two shards, the index and config.json
}

TEST_P(Family, ConvertThenVerifyPassesEveryStageWithTheDefaultThreshold) {
  const FamilyCase& fc = GetParam();
  TempDir dir;
  const fs::path src = fc.shipped ? shipped_tiny(fc.family) : make_family(dir, fc.family);
  const auto ckpt = io::Checkpoint::open(src);
  EXPECT_EQ(detect_model(ckpt).family, fc.model_type);
  ConvertOptions o;
  o.threads = 2;
  const plan::ConvertSummary s = convert(src, dir / "dst", o);
  EXPECT_EQ(s.transformed, static_cast<uint64_t>(fc.moe_layers * (fc.interleaved ? 6 : 4)));

  // The default token counts, T=1 included: the tight check is against the converted MXFP4
  // weights; the error against the unquantized source (MXFP4's own rounding, widest at T=1 on
  // layers this small: up to 0.31) has its own, looser bound.
  const plan::VerifyReport r = verify(dir / "dst", &src, {1, 7, 64, 512});
  for (const auto& st : r.stages)
    EXPECT_EQ(st.status, StageStatus::Passed) << fc.family << " " << st.name << ":\n" << failures_text(st);
  EXPECT_DOUBLE_EQ(r.threshold, plan::kDefaultThreshold);
  EXPECT_EQ(r.numerics.size(), static_cast<size_t>(fc.moe_layers * 4));
  for (const auto& row : r.numerics) {
    EXPECT_LT(row.rel_err, 1e-2) << fc.family << " layer " << row.layer << " T=" << row.tokens;
    // MXFP4's own rounding of Gaussian weights: clearly above zero, below the source bound.
    EXPECT_GT(row.rel_err_source, 0.05) << fc.family << " layer " << row.layer << " T=" << row.tokens;
    EXPECT_LT(row.rel_err_source, plan::kSourceThreshold) << fc.family << " layer " << row.layer << " T=" << row.tokens;
    EXPECT_EQ(row.routing_mismatches, 0);
  }
  // Round trip: one check per output tensor, the transformed ones against a fresh quantization.
  const plan::Manifest m = plan::Manifest::read(dir / "dst" / plan::kManifestFileName);
  EXPECT_EQ(stage(r, "round_trip").checked, m.tensors.size());
}

TEST_P(Family, ManifestRecordsSourcesTransformAndQuantizationError) {
  const FamilyCase& fc = GetParam();
  TempDir dir;
  const fs::path src = fc.shipped ? shipped_tiny(fc.family) : make_family(dir, fc.family);
  convert(src, dir / "dst");
  const plan::Manifest m = plan::Manifest::read(dir / "dst" / plan::kManifestFileName);
  const plan::ManifestTensor* w13 = m.find(fc.w13_name);
  ASSERT_NE(w13, nullptr) << fc.w13_name;
  EXPECT_EQ(w13->source_transform, fc.transform);
  EXPECT_GT(w13->quantization_rel_error, 0.05);
  EXPECT_LT(w13->quantization_rel_error, 0.2);
  int quantized = 0, copied = 0;
  for (const auto& t : m.tensors) {
    if (!t.transformed) {
      ++copied;
      EXPECT_TRUE(t.source_transform.empty()) << t.name;
      continue;
    }
    if (t.role == "w13_weight_bias" || t.role == "w2_weight_bias") {
      EXPECT_TRUE(t.source_transform.empty()) << t.name;  // biases are read as they are
      continue;
    }
    ++quantized;
    EXPECT_EQ(t.source_transform, fc.transform) << t.name;
    // Each weight and scale names every expert tensor it was made from.
    const auto ckpt = io::Checkpoint::open(src);
    const int64_t experts = detect_model(ckpt).experts;
    const size_t per_expert = std::string(fc.transform).find("fp8") != std::string::npos ? 2 : 1;
    const bool stacked = std::string(fc.family) != "gemma4" && std::string(fc.family) != "gpt_oss_bf16";
    const size_t expect = stacked ? per_expert * experts * (t.role.rfind("w13", 0) == 0 ? 2 : 1) : 1;
    EXPECT_EQ(t.sources.size(), expect) << t.name;
    // Each source digest is the tensor's own XXH3-128, wherever it was taken: in the quantizing
    // pass (per-expert tensors), slice by slice by the executor (tensors holding every expert),
    // or in a pass of its own.
    for (const auto& source : t.sources) {
      const io::ByteView bytes = ckpt.data(ckpt.find(source.name));
      EXPECT_EQ(source.xxh3_128, xxh3_128_hex(bytes.data, bytes.size)) << t.name << " <- " << source.name;
    }
    if (t.role == "w13_weight" || t.role == "w2_weight") {
      EXPECT_GT(t.quantization_rel_error, 0.05) << t.name;
      EXPECT_LT(t.quantization_rel_error, 0.2) << t.name;
    } else {
      EXPECT_LT(t.quantization_rel_error, 0) << t.name;  // scales carry no error of their own
    }
  }
  EXPECT_EQ(quantized, fc.moe_layers * 4);
  EXPECT_GT(copied, 0);
  // Non-expert tensors (router, attention, shared experts, dense layers) are copied unchanged.
  const auto out = io::Checkpoint::open(dir / "dst");
  const auto in = io::Checkpoint::open(src);
  for (const auto& name : out.tensor_names())
    if (const auto* t = m.find(name); t && !t->transformed) {
      const auto a = in.data(in.find(name)), b = out.data(out.find(name));
      ASSERT_EQ(a.size, b.size) << name;
      EXPECT_EQ(0, std::memcmp(a.data, b.data, a.size)) << name;
    }
}

TEST_P(Family, OutputIsTheSameWhateverTheThreadCount) {
  const FamilyCase& fc = GetParam();
  TempDir dir;
  const fs::path src = fc.shipped ? shipped_tiny(fc.family) : make_family(dir, fc.family);
  ConvertOptions one, three;
  one.threads = 1;
  three.threads = 3;
  convert(src, dir / "a", one);
  convert(src, dir / "b", three);
  const auto a = all_files(dir / "a"), b = all_files(dir / "b");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, bytes] : a) EXPECT_TRUE(b.at(name) == bytes) << fc.family << ": " << name << " differs";
}

TEST_P(Family, ALayoutErrorFailsTheNumericsStage) {
  const FamilyCase& fc = GetParam();
  TempDir dir;
  const fs::path src = fc.shipped ? shipped_tiny(fc.family) : make_family(dir, fc.family);
  for (InjectedFault fault : {InjectedFault::OtherGateModeTiles, InjectedFault::SkipScaleDeinterleave}) {
    if (fault == InjectedFault::SkipScaleDeinterleave && !fc.interleaved) continue;  // no-op without pairs
    ConvertOptions o;
    o.fault = fault;
    const fs::path dst = dir / ("dst" + std::to_string(static_cast<int>(fault)));
    convert(src, dst, o);
    const plan::VerifyReport r = verify(dst, &src, {1, 7, 64});
    const auto& n = stage(r, "numerics");
    EXPECT_EQ(n.status, StageStatus::Failed) << fc.family;
    EXPECT_NE(failures_text(n).find("exceeds 2.0e-02"), std::string::npos) << failures_text(n);
    // Tiles of the other gate mode read mostly padding: the output is lost (about 1, lower
    // for GPT-OSS, whose biases survive). Scales of gate rows applied to up rows and back
    // rescale blocks by powers of two: about 0.4 to 0.9 on Gaussian weights.
    const double least = fault == InjectedFault::OtherGateModeTiles ? 0.75 : 0.35;
    for (const auto& row : r.numerics) {
      EXPECT_GT(row.rel_err, least) << fc.family << " layer " << row.layer << " T=" << row.tokens;
      EXPECT_FALSE(row.passed);
    }
  }
}

TEST(FamilyCopies, SharedExpertsRoutersAndDenseLayersAreCopiedThrough) {
  const struct {
    const char* family;
    std::vector<std::string> copied;
  } cases[] = {
      {"qwen2_moe",
       {"model.layers.1.mlp.shared_expert.gate_proj.weight", "model.layers.1.mlp.shared_expert_gate.weight",
        "model.layers.1.mlp.gate.weight"}},
      {"qwen3_moe", {"model.layers.1.mlp.down_proj.weight", "model.layers.2.mlp.gate.weight"}},
      {"deepseek_v3",
       {"model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.gate_proj.weight_scale_inv",
        "model.layers.2.mlp.shared_experts.down_proj.weight", "model.layers.2.mlp.shared_experts.down_proj.weight_scale_inv",
        "model.layers.2.mlp.gate.e_score_correction_bias"}},
      {"gemma4",
       {"model.language_model.layers.0.mlp.up_proj.weight", "model.language_model.layers.0.router.per_expert_scale",
        "model.language_model.layers.0.router.scale"}},
      {"mixtral", {"model.layers.0.block_sparse_moe.gate.weight"}},
  };
  for (const auto& c : cases) {
    TempDir dir;
    convert(shipped_tiny(c.family), dir / "dst");
    const plan::Manifest m = plan::Manifest::read(dir / "dst" / plan::kManifestFileName);
    for (const auto& name : c.copied) {
      const plan::ManifestTensor* t = m.find(name);
      ASSERT_NE(t, nullptr) << c.family << ": " << name;
      EXPECT_FALSE(t->transformed) << name;
      ASSERT_EQ(t->sources.size(), 1u);
      EXPECT_EQ(t->sources[0].name, name);
    }
    // No expert tensor of the source survives under its own name.
    for (const auto& t : m.tensors) {
      if (t.transformed) continue;
      EXPECT_EQ(t.name.find(".experts.0."), std::string::npos) << c.family << ": " << t.name;
      EXPECT_EQ(t.name.find("experts.gate_up_proj"), std::string::npos) << c.family << ": " << t.name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Families, Family, ::testing::ValuesIn(kFamilies),
                         [](const auto& info) { return std::string(info.param.family); });

}  // namespace
}  // namespace moeprep::models::testing
