// validation.md's mutation list: every corruption of a good conversion makes verify fail,
// naming the tensor and the check. Layout bugs whose metadata is consistent (made on purpose
// by the planner's injected faults) must also fail the numerics stage on its own.
#include <gtest/gtest.h>

#include "core/error.h"
#include "plan/manifest.h"
#include "plan_test_util.h"

namespace moeprep::plan::testing {
namespace {

const std::string kW13 = "model.layers.1.mlp.experts.w13_weight";

struct Converted {
  TempDir dir;
  fs::path src, dst;
  explicit Converted(ConvertOptions o = ConvertOptions{}) {
    src = make_tiny(dir);
    dst = dir / "dst";
    convert(src, dst, o);
  }
};

void expect_stage_names(const VerifyReport& r, const std::string& stage_name, const std::string& needle) {
  const StageReport& s = stage(r, stage_name);
  EXPECT_EQ(s.status, StageStatus::Failed) << stage_name;
  EXPECT_NE(failures_text(s).find(needle), std::string::npos) << stage_name << " failures:\n" << failures_text(s);
  EXPECT_FALSE(r.passed());
}

TEST(VerifyDetects, OneFlippedByteInEveryTensor) {
  Converted c;
  const Manifest m = Manifest::read(c.dst / kManifestFileName);
  std::string pristine;
  for (const auto& t : m.tensors) {
    const fs::path shard = c.dst / t.shard;
    pristine = read_file(shard);
    std::string bytes = pristine;
    const auto f = io::SafetensorsFile::open(shard);
    const uint64_t at = f->data_start() + t.data_begin + (t.data_end - t.data_begin) / 2;
    bytes[at] = static_cast<char>(bytes[at] ^ 0x10);
    write_file(shard, bytes);
    const VerifyReport r = verify(c.dst, nullptr);
    expect_stage_names(r, "integrity", "tensor '" + t.name + "'");
    write_file(shard, pristine);
  }
  EXPECT_TRUE(verify(c.dst, nullptr).passed());
}

TEST(VerifyDetects, IsShuffledDroppedFromTheMetadata) {
  Converted c;
  rewrite_shard(c.dst / shard_of(c.dst, kW13).filename(), "", [](auto& meta) { meta.erase(kW13 + ".is_shuffled"); });
  expect_stage_names(verify(c.dst, nullptr), "flags", "'" + kW13 + "': is_shuffled is missing");
}

TEST(VerifyDetects, ALayoutIdChangedInTheMetadata) {
  Converted c;
  rewrite_shard(shard_of(c.dst, kW13), "", [](auto& meta) { meta[kW13 + ".layout"] = "aiter/interleave/w13_weight"; });
  expect_stage_names(verify(c.dst, nullptr), "flags", "'" + kW13 + "': layout in the shard metadata");
}

TEST(VerifyDetects, ATensorMissingFromAShard) {
  Converted c;
  rewrite_shard(shard_of(c.dst, kW13), kW13, [](auto&) {});
  expect_stage_names(verify(c.dst, nullptr), "structure", kW13);
}

TEST(VerifyDetects, AnAlteredManifest) {
  Converted c;
  std::string text = read_file(c.dst / kManifestFileName);
  const size_t at = text.find("\"is_shuffled\": true");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 19, "\"is_shuffled\":false");
  write_file(c.dst / kManifestFileName, text);
  expect_stage_names(verify(c.dst, nullptr), "structure", "checksum mismatch");
}

TEST(VerifyDetects, ASourceThatChangedSinceConversion) {
  Converted c;
  const std::string name = "model.layers.0.mlp.experts.gate_up_proj_scales";
  const fs::path shard = shard_of(c.src, name);
  std::string bytes = read_file(shard);
  const auto f = io::SafetensorsFile::open(shard);
  const uint64_t at = f->data_start() + f->find(name)->begin;
  bytes[at] = static_cast<char>(bytes[at] + 1);
  write_file(shard, bytes);
  expect_stage_names(verify(c.dst, &c.src), "round_trip", "source tensor '" + name + "' differs");
}

// Faults made on purpose with consistent metadata: structure and integrity still pass, and
// the numerics stage (CPU) fails on its own.
struct FaultCase {
  const char* name;
  InjectedFault fault;
  layout::GateMode mode;
  const char* earlier_stage;  // the earlier stage that also notices, naming the tensor
  const char* earlier_needle;
};

class VerifyNumericsCatches : public ::testing::TestWithParam<FaultCase> {};

TEST_P(VerifyNumericsCatches, ALayoutBugWithConsistentMetadata) {
  const FaultCase& fc = GetParam();
  ConvertOptions o;
  o.gate_mode = fc.mode;
  o.fault = fc.fault;
  Converted c(o);
  const VerifyReport r = verify(c.dst, &c.src, {7, 64});
  EXPECT_EQ(stage(r, "integrity").status, StageStatus::Passed) << failures_text(stage(r, "integrity"));
  const StageReport& n = stage(r, "numerics");
  EXPECT_EQ(n.status, StageStatus::Failed) << fc.name;
  EXPECT_NE(failures_text(n).find("model.layers."), std::string::npos) << failures_text(n);
  expect_stage_names(r, fc.earlier_stage, fc.earlier_needle);
  // Numbers: every row that ran is far above the threshold.
  for (const auto& row : r.numerics) EXPECT_GT(row.rel_err, 0.05) << fc.name << " layer " << row.layer;
}

const FaultCase kFaults[] = {
    {"GateUpLeftInterleaved", InjectedFault::SkipGateUpDeinterleave, layout::GateMode::Separated, "flags",
     "w13_weight': recorded steps are not those of layout"},
    {"ScalesNotDeinterleaved", InjectedFault::SkipScaleDeinterleave, layout::GateMode::Separated, "flags",
     "w13_weight_scale': recorded steps are not those of layout"},
    {"InterleaveTilesLabelledSeparated", InjectedFault::OtherGateModeTiles, layout::GateMode::Separated, "flags",
     "w13_weight': recorded steps are not those of layout 'aiter/separated/w13_weight'"},
    {"SeparatedTilesLabelledInterleave", InjectedFault::OtherGateModeTiles, layout::GateMode::Interleave, "flags",
     "w13_weight': recorded steps are not those of layout 'aiter/interleave/w13_weight'"},
    {"ScaleShuffleSkipped", InjectedFault::SkipScaleShuffle, layout::GateMode::Separated, "flags",
     "w13_weight_scale': recorded steps are not those of layout"},
    {"BiasLeftBf16", InjectedFault::BiasLeftBf16, layout::GateMode::Separated, "structure",
     "w13_weight_bias': is BF16"},
};

INSTANTIATE_TEST_SUITE_P(Faults, VerifyNumericsCatches, ::testing::ValuesIn(kFaults),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(VerifyRoundTrip, PassesForFaultyButHonestlyRecordedSteps) {
  // The round trip undoes the steps as recorded: a conversion that skipped a step but says so
  // round-trips exactly. That is why the numerics stage exists.
  ConvertOptions o;
  o.fault = InjectedFault::SkipGateUpDeinterleave;
  Converted c(o);
  const VerifyReport r = verify(c.dst, &c.src, {1});
  EXPECT_EQ(stage(r, "round_trip").status, StageStatus::Passed) << failures_text(stage(r, "round_trip"));
  EXPECT_EQ(stage(r, "numerics").status, StageStatus::Failed);
}

TEST(VerifyOptionsParsing, LayerLists) {
  EXPECT_EQ(parse_layer_list("0,5-7"), (std::vector<int64_t>{0, 5, 6, 7}));
  EXPECT_EQ(parse_layer_list("3"), (std::vector<int64_t>{3}));
  EXPECT_THROW(parse_layer_list("7-5"), Error);
  EXPECT_THROW(parse_layer_list("a"), Error);
  EXPECT_THROW(parse_layer_list(""), Error);
  EXPECT_THROW(parse_layer_list("1,,2"), Error);
}

TEST(VerifyOptionsParsing, SelectedLayersOnly) {
  Converted c;
  VerifyOptions o;
  o.source = c.src;
  o.layers = {1};
  o.token_counts = {3};
  NullProgress p;
  const VerifyReport r = verify_checkpoint(c.dst, o, p);
  ASSERT_EQ(r.numerics.size(), 1u);
  EXPECT_EQ(r.numerics[0].layer, 1);
  o.layers = {9};
  const VerifyReport bad = verify_checkpoint(c.dst, o, p);
  expect_stage_names(bad, "numerics", "layer 9 has no MoE tensors");
}

}  // namespace
}  // namespace moeprep::plan::testing
