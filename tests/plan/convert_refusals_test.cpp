// Inputs convert must refuse, and failures that must leave the destination absent or intact.
#include <gtest/gtest.h>

#include "core/error.h"
#include "plan/manifest.h"
#include "plan_test_util.h"

namespace moeprep::plan::testing {
namespace {

void expect_bad_input(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    FAIL() << "no error; expected one containing: " << needle;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::BadInput) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

void edit_config(const fs::path& src, const std::function<void(nlohmann::json&)>& edit) {
  auto j = nlohmann::json::parse(read_file(src / "config.json"));
  edit(j);
  write_file(src / "config.json", j.dump(2));
}

bool no_staging_left(const fs::path& parent) {
  for (const auto& e : fs::directory_iterator(parent))
    if (e.path().filename().string().find(".moeprep-tmp-") != std::string::npos) return false;
  return true;
}

TEST(ConvertRefuses, AnAlreadyConvertedDirectory) {
  TempDir dir;
  const fs::path src = make_tiny(dir);
  convert(src, dir / "once");
  expect_bad_input([&] { convert(dir / "once", dir / "twice"); }, "already kernel-ready");
  EXPECT_FALSE(fs::exists(dir / "twice"));
}

TEST(ConvertRefuses, ShuffledTensorsWithoutAManifest) {
  TempDir dir;
  const fs::path src = make_tiny(dir);
  convert(src, dir / "once");
  fs::remove(dir / "once" / kManifestFileName);
  expect_bad_input([&] { convert(dir / "once", dir / "twice"); }, "already kernel-ready");
}

TEST(ConvertRefuses, APartiallyConvertedCheckpoint) {
  TempDir dir;
  const fs::path src = make_tiny(dir);
  // Mark one original tensor as shuffled in its shard metadata, as a half-finished engine
  // conversion would.
  const std::string name = "model.layers.1.mlp.experts.gate_up_proj_blocks";
  rewrite_shard(shard_of(src, name), "", [&](auto& meta) { meta[name + ".is_shuffled"] = "true"; });
  expect_bad_input([&] { convert(src, dir / "dst"); }, "partially converted");
}

TEST(ConvertRefuses, ADenseModel) {
  TempDir dir;
  const fs::path src = make_tiny(dir);
  edit_config(src, [](auto& j) {
    j["model_type"] = "llama";
    j.erase("num_local_experts");
  });
  expect_bad_input([&] { convert(src, dir / "dst"); }, "not a mixture-of-experts model");
}

TEST(ConvertRefuses, AnUnsupportedMoeModelListingSupportedOnes) {
  TempDir dir;
  const fs::path src = make_tiny(dir);
  edit_config(src, [](auto& j) { j["model_type"] = "jamba"; });
  expect_bad_input([&] { convert(src, dir / "dst"); },
                   "unsupported MoE model_type 'jamba' (supported: deepseek_v3, gemma4, gemma4_text, gpt_oss, mixtral, "
                   "nemotron_h, qwen2_moe, qwen3_moe)");
}

TEST(ConvertRefuses, AnUnknownTensorInsideAnExpertBlock) {
  TempDir dir;
  const fs::path src = make_tiny(dir);
  // Rename a tensor by rewriting the shard and index.
  // A tensor that is copied through today, renamed into the expert block.
  const std::string old_name = "model.layers.0.input_layernorm.weight";
  const fs::path shard = shard_of(src, old_name);
  {
    auto f = io::SafetensorsFile::open(shard);
    io::ShardPlan plan;
    plan.file_name = shard.filename().string();
    plan.metadata = f->metadata();
    std::vector<std::string> bytes;
    for (const auto& t : f->tensors()) {
      plan.tensors.push_back({t.name == old_name ? "model.layers.0.mlp.experts.mystery" : t.name, t.dtype, t.shape});
      const auto b = f->data(t);
      bytes.emplace_back(reinterpret_cast<const char*>(b.data), b.size);
    }
    io::ShardWriter w(shard.string() + ".new", plan);
    for (size_t i = 0; i < plan.tensors.size(); ++i) {
      w.begin_tensor(plan.tensors[i].name);
      w.write(bytes[i].data(), bytes[i].size());
      w.end_tensor();
    }
    w.finish();
  }
  fs::rename(shard.string() + ".new", shard);
  std::string index = read_file(src / io::kIndexFileName);
  index.replace(index.find(old_name), old_name.size(), "model.layers.0.mlp.experts.mystery");
  write_file(src / io::kIndexFileName, index);
  expect_bad_input([&] { convert(src, dir / "dst"); }, "'model.layers.0.mlp.experts.mystery' inside an MoE expert block");
}

TEST(ConvertRefuses, AnExpertTensorWhoseShapeDisagreesWithConfig) {
  TempDir dir;
  const fs::path src = make_tiny(dir);
  edit_config(src, [](auto& j) { j["intermediate_size"] = 64; });
  expect_bad_input([&] { convert(src, dir / "dst"); }, "'model.layers.0.mlp.experts.gate_up_proj_blocks' is U8 [4, 192, 5, 16], expected U8 [4, 128, 5, 16] from config.json");
}

TEST(ConvertRefuses, PaddingThatBreaksALayoutConstraint) {
  TempDir dir;
  const fs::path src = make_tiny(dir);
  ConvertOptions o;
  o.pad_hidden = 96;
  expect_bad_input([&] { convert(src, dir / "dst", o); }, "--pad-hidden 96 is not a multiple of 64");
  o.pad_hidden = 0;
  o.gate_mode = layout::GateMode::Interleave;
  o.pad_intermediate = 128;
  expect_bad_input([&] { convert(src, dir / "dst", o); }, "--pad-intermediate 128 is not a multiple of 256");
}

TEST(ConvertOutput, AnExistingDestinationIsNeverTouchedWithoutForce) {
  TempDir dir;
  const fs::path src = make_tiny(dir);
  fs::create_directories(dir / "dst");
  write_file(dir / "dst" / "keep.txt", "precious");
  try {
    convert(src, dir / "dst");
    FAIL() << "expected refusal";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exists"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_file(dir / "dst" / "keep.txt"), "precious");
  convert(src, dir / "dst", ConvertOptions{}, /*force=*/true);
  EXPECT_FALSE(fs::exists(dir / "dst" / "keep.txt"));
  EXPECT_TRUE(verify(dir / "dst", &src).passed());
  EXPECT_TRUE(no_staging_left(dir.path()));
}

TEST(ConvertOutput, AnInterruptedRunLeavesNothing) {
  TempDir dir;
  const fs::path src = make_tiny(dir);
  ConvertRequest r;
  r.source = src;
  r.destination = dir / "dst";
  std::atomic<bool> cancel{true};
  r.cancel = &cancel;
  NullProgress p;
  try {
    convert_checkpoint(r, p);
    FAIL() << "expected interruption";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("interrupted"), std::string::npos);
  }
  EXPECT_FALSE(fs::exists(dir / "dst"));
  EXPECT_TRUE(no_staging_left(dir.path()));
}

TEST(ConvertOutput, AFailureWithForceKeepsTheOldDestination) {
  TempDir dir;
  const fs::path src = make_tiny(dir);
  convert(src, dir / "dst");
  const std::string before = read_file(dir / "dst" / kManifestFileName);
  ConvertRequest r;
  r.source = src;
  r.destination = dir / "dst";
  r.replace_existing = true;
  std::atomic<bool> cancel{true};
  r.cancel = &cancel;
  NullProgress p;
  EXPECT_THROW(convert_checkpoint(r, p), Error);
  EXPECT_EQ(read_file(dir / "dst" / kManifestFileName), before);
  EXPECT_TRUE(verify(dir / "dst", &src).passed());
}

TEST(ConvertOutput, StagingLeftByAKilledRunIsRemovedByTheNextRun) {
  TempDir dir;
  const fs::path src = make_tiny(dir);
  // A staging directory of a process that no longer exists (pid 2^22 + 1 is above pid_max's
  // default and cannot be alive).
  const fs::path stale = dir / "dst.moeprep-tmp-4194305-0";
  fs::create_directories(stale);
  write_file(stale / "model-00001-of-00001.safetensors", "partial");
  convert(src, dir / "dst");
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(verify(dir / "dst", &src).passed());
}

}  // namespace
}  // namespace moeprep::plan::testing
