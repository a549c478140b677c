// Manifest::serialize splices the checksum member into the body's text instead of dumping the
// tree twice; the text must stay what adding the member to the tree and dumping it gives, which
// is what Manifest::read checks a file against.
#include <gtest/gtest.h>

#include <string>

#include "core/hash.h"
#include "plan/manifest.h"
#include "plan_test_util.h"

namespace moeprep::plan {
namespace {

Manifest sample_manifest() {
  Manifest m;
  m.tool_version = "0.0-test";
  m.options = {{"threads", 2}, {"gate_mode", "separated"}};  // not in key order: read() keeps the order
  m.source = {{"path", "/tmp/src"}, {"tensors", 2}};
  m.model = {{"family", "qwen3_moe"}, {"experts", 4}};
  ManifestTensor q;
  q.name = "model.layers.0.mlp.experts.w13_weight";
  q.shard = "model-00001-of-00001.safetensors";
  q.dtype = Dtype::U8;
  q.shape = {4, 32, 16};
  q.logical_shape = {4, 32, 16};
  q.data_begin = 0;
  q.data_end = 2048;
  q.xxh3_128 = "0123456789abcdef0123456789abcdef";
  q.transformed = true;
  q.is_shuffled = true;
  q.layout = "aiter_mxfp4_shuffled";
  q.gate_mode = "separated";
  q.role = "w13_weight";
  q.layer = 0;
  q.sources = {{"model.layers.0.mlp.experts.0.gate_proj.weight", Dtype::BF16, {16, 32}, "00112233445566778899aabbccddeeff"},
               {"model.layers.0.mlp.experts.0.up_proj.weight", Dtype::BF16, {16, 32}, "ffeeddccbbaa99887766554433221100"}};
  q.source_transform = "quantize_mxfp4";
  q.quantization_rel_error = 0.09871234567;
  q.steps = nlohmann::ordered_json::array({{{"id", "quantize_mxfp4"}, {"params", {{"block", 32}, {"axis", -1}}}}});
  ManifestTensor c;
  c.name = "model.embed_tokens.weight";
  c.shard = q.shard;
  c.dtype = Dtype::BF16;
  c.shape = c.logical_shape = {8, 16};
  c.data_begin = 2048;
  c.data_end = 2304;
  c.xxh3_128 = "fedcba9876543210fedcba9876543210";
  c.sources = {{c.name, Dtype::BF16, {8, 16}, c.xxh3_128}};
  m.tensors = {q, c};
  m.files = {{"generation_config.json", "aaaabbbbccccddddaaaabbbbccccdddd", 120}};
  m.shards = {{q.shard, 4096, "11112222333344441111222233334444"}};
  m.index_xxh3_128 = "55556666777788885555666677778888";
  return m;
}

TEST(ManifestText, IsTheTreeWithItsChecksumMemberDumped) {
  const Manifest m = sample_manifest();
  nlohmann::ordered_json j = m.to_json();
  const std::string body = j.dump(1) + "\n";
  j["checksum"] = xxh3_128_hex(body.data(), body.size());
  EXPECT_EQ(m.serialize(), j.dump(1) + "\n");
}

TEST(ManifestText, ReadsBackToTheSameText) {
  const testing::TempDir dir;
  const Manifest m = sample_manifest();
  const std::string text = m.serialize();
  testing::write_file(dir.path() / kManifestFileName, text);
  const Manifest back = Manifest::read(dir.path() / kManifestFileName);
  ASSERT_EQ(back.tensors.size(), 2u);
  EXPECT_EQ(back.tensors[0].quantization_rel_error, 0.09871234567);
  EXPECT_EQ(back.tensors[0].sources.size(), 2u);
  EXPECT_EQ(back.serialize(), text);
}

}  // namespace
}  // namespace moeprep::plan
