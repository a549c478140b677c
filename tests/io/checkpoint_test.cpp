// Checkpoint::open over the three layouts, and every way an index can disagree with its shards.
#include <cstring>

#include <gtest/gtest.h>

#include "io/checkpoint.h"
#include "io/safetensors_writer.h"
#include "io_test_util.h"

namespace moeprep::io {
namespace {

namespace fs = std::filesystem;
using testing::bad_input;
using testing::TempDir;
using testing::write_bytes;

// Writes a shard whose tensors are U8 vectors filled with their name's first letter.
void write_shard(const fs::path& path, const std::vector<std::pair<std::string, int64_t>>& tensors) {
  ShardPlan plan;
  for (const auto& [name, n] : tensors) plan.tensors.push_back({name, Dtype::U8, Shape{n}});
  ShardWriter writer(path, plan);
  for (const auto& [name, n] : tensors) {
    std::string bytes(static_cast<size_t>(n), name[0]);
    writer.begin_tensor(name);
    writer.write(bytes.data(), bytes.size());
    writer.end_tensor();
  }
  writer.finish();
}

const std::string kShard1 = "model-00001-of-00002.safetensors";
const std::string kShard2 = "model-00002-of-00002.safetensors";

// A good two-shard checkpoint: a, b in shard 1; c in shard 2. 2 + 3 + 4 bytes.
void make_sharded(const fs::path& dir) {
  write_bytes(dir / "config.json", R"({"model_type":"gpt_oss","num_local_experts":4})");
  write_shard(dir / kShard1, {{"a", 2}, {"b", 3}});
  write_shard(dir / kShard2, {{"c", 4}});
  write_index_file(dir / kIndexFileName, {{"a", kShard1}, {"b", kShard1}, {"c", kShard2}}, 9);
}

std::string index_text(const std::string& weight_map, uint64_t total) {
  return R"({"metadata":{"total_size":)" + std::to_string(total) + R"(},"weight_map":{)" + weight_map + "}}";
}

TEST(Checkpoint, OpensShardedDirectory) {
  TempDir dir;
  make_sharded(dir.path());
  Checkpoint ckpt = Checkpoint::open(dir.path());
  EXPECT_TRUE(ckpt.is_directory());
  EXPECT_TRUE(ckpt.has_index());
  ASSERT_TRUE(ckpt.has_config());
  EXPECT_EQ(ckpt.config().at("model_type"), "gpt_oss");
  EXPECT_EQ(ckpt.index().at("metadata").at("total_size"), 9);
  EXPECT_EQ(ckpt.shards().size(), 2u);
  EXPECT_EQ(ckpt.tensor_names(), (std::vector<std::string>{"a", "b", "c"}));
  const LocatedTensor& c = ckpt.find("c");
  EXPECT_EQ(c.file->path().filename(), kShard2);
  ByteView bytes = ckpt.data(c);
  ASSERT_EQ(bytes.size, 4u);
  EXPECT_EQ(std::memcmp(bytes.data, "cccc", 4), 0);
  EXPECT_EQ(ckpt.try_find("d"), nullptr);
  EXPECT_EQ(ckpt.try_find("b")->info->byte_length(), 3u);
  EXPECT_TRUE(bad_input([&] { ckpt.find("missing.weight"); }, {dir.path().string(), "no tensor named 'missing.weight'"}));
}

TEST(Checkpoint, OpensDirectoryWithSingleFile) {
  TempDir dir;
  write_bytes(dir / "config.json", "{}");
  write_shard(dir / kSingleFileName, {{"y", 1}, {"x", 2}});
  Checkpoint ckpt = Checkpoint::open(dir.path());
  EXPECT_FALSE(ckpt.has_index());
  EXPECT_TRUE(ckpt.has_config());
  EXPECT_EQ(ckpt.tensor_names(), (std::vector<std::string>{"x", "y"}));
}

TEST(Checkpoint, OpensSingleFileWithoutConfig) {
  TempDir dir;
  write_shard(dir / "weights.safetensors", {{"w", 5}});
  Checkpoint ckpt = Checkpoint::open(dir / "weights.safetensors");
  EXPECT_FALSE(ckpt.is_directory());
  EXPECT_FALSE(ckpt.has_config());
  EXPECT_TRUE(ckpt.config().is_null());
  EXPECT_EQ(ckpt.root(), dir / "weights.safetensors");
  EXPECT_EQ(ckpt.find("w").info->byte_length(), 5u);
}

TEST(Checkpoint, ReportsBadConfigJsonNamingTheFile) {
  TempDir dir;
  make_sharded(dir.path());
  write_bytes(dir / "config.json", R"({"model_type": "gpt_oss",)");
  auto config = (dir / "config.json").string();
  EXPECT_TRUE(bad_input([&] { Checkpoint::open(dir.path()); }, {config + ": not valid JSON"}));
  write_bytes(dir / "config.json", "[1]");
  EXPECT_TRUE(bad_input([&] { Checkpoint::open(dir.path()); }, {config + ": not a JSON object"}));
}

TEST(Checkpoint, RejectsMissingPathAndEmptyDirectory) {
  TempDir dir;
  EXPECT_TRUE(bad_input([&] { Checkpoint::open(dir / "nope"); }, {"nope: no such file or directory"}));
  EXPECT_TRUE(bad_input([&] { Checkpoint::open(dir.path()); },
                        {dir.path().string(), "no model.safetensors or model.safetensors.index.json"}));
}

TEST(Checkpoint, RejectsBothSingleFileAndIndex) {
  TempDir dir;
  make_sharded(dir.path());
  write_shard(dir / kSingleFileName, {{"a", 2}});
  EXPECT_TRUE(bad_input([&] { Checkpoint::open(dir.path()); }, {"holds both model.safetensors and"}));
}

TEST(Checkpoint, RejectsMissingShard) {
  TempDir dir;
  make_sharded(dir.path());
  fs::remove(dir / kShard2);
  EXPECT_TRUE(bad_input([&] { Checkpoint::open(dir.path()); },
                        {kIndexFileName, "shard '" + kShard2 + "' (listed for tensor 'c') does not exist"}));
}

TEST(Checkpoint, RejectsListedTensorAbsentFromItsShard) {
  TempDir dir;
  make_sharded(dir.path());
  write_bytes(dir / kIndexFileName, index_text(R"("a":")" + kShard1 + R"(","b":")" + kShard1 + R"(","c":")" + kShard2 +
                                                   R"(","d":")" + kShard2 + "\"",
                                               9));
  EXPECT_TRUE(bad_input([&] { Checkpoint::open(dir.path()); },
                        {kIndexFileName, "tensor 'd' is listed for shard '" + kShard2 + "' but that shard does not hold it"}));
}

TEST(Checkpoint, RejectsShardTensorMissingFromIndex) {
  TempDir dir;
  make_sharded(dir.path());
  write_bytes(dir / kIndexFileName, index_text(R"("a":")" + kShard1 + R"(","c":")" + kShard2 + "\"", 6));
  EXPECT_TRUE(bad_input([&] { Checkpoint::open(dir.path()); },
                        {kIndexFileName, "tensor 'b' is in shard '" + kShard1 + "' but not listed in weight_map"}));
}

TEST(Checkpoint, RejectsTensorInTwoShards) {
  TempDir dir;
  make_sharded(dir.path());
  write_shard(dir / kShard2, {{"c", 4}, {"a", 2}});
  EXPECT_TRUE(bad_input([&] { Checkpoint::open(dir.path()); },
                        {kIndexFileName, "tensor 'a' is in two shards, '" + kShard1 + "' and '" + kShard2 + "'"}));
}

TEST(Checkpoint, RejectsTensorFoundInOtherShardThanListed) {
  TempDir dir;
  make_sharded(dir.path());
  write_bytes(dir / kIndexFileName, index_text(R"("a":")" + kShard2 + R"(","b":")" + kShard1 + R"(","c":")" + kShard2 + "\"", 9));
  EXPECT_TRUE(bad_input([&] { Checkpoint::open(dir.path()); },
                        {"tensor 'a' is listed for shard '" + kShard2 + "' but found in shard '" + kShard1 + "'"}));
}

TEST(Checkpoint, RejectsWrongTotalSize) {
  TempDir dir;
  make_sharded(dir.path());
  write_index_file(dir / kIndexFileName, {{"a", kShard1}, {"b", kShard1}, {"c", kShard2}}, 10);
  EXPECT_TRUE(bad_input([&] { Checkpoint::open(dir.path()); },
                        {kIndexFileName, "metadata.total_size is 10 but the shards' tensors hold 9 bytes"}));
}

TEST(Checkpoint, RejectsHostileShardNames) {
  TempDir dir;
  make_sharded(dir.path());
  // Refused from the name alone, before any file is looked at.
  for (const std::string& shard : std::vector<std::string>{"../outside.safetensors", "/etc/passwd", "./" + kShard1, "sub/x.safetensors", "..",
                                  "x\\u0000y", ""}) {
    write_bytes(dir / kIndexFileName, index_text(R"("a":")" + shard + "\"", 2));
    EXPECT_TRUE(bad_input([&] { Checkpoint::open(dir.path()); }, {kIndexFileName, "is not a plain file name"})) << shard;
  }
}

TEST(Checkpoint, RejectsSymlinkEscapingTheDirectory) {
  TempDir outside, dir;
  make_sharded(dir.path());
  write_shard(outside / "elsewhere.safetensors", {{"c", 4}});
  fs::remove(dir / kShard2);
  fs::create_symlink(outside / "elsewhere.safetensors", dir / kShard2);
  EXPECT_TRUE(bad_input([&] { Checkpoint::open(dir.path()); },
                        {dir.path().string(), "shard '" + kShard2 + "' is a symlink resolving outside the checkpoint"}));
  // A relative link climbing out is the same escape.
  fs::remove(dir / kShard2);
  fs::create_symlink(fs::path("..") / outside.path().filename() / "elsewhere.safetensors", dir / kShard2);
  EXPECT_TRUE(bad_input([&] { Checkpoint::open(dir.path()); }, {"resolving outside the checkpoint"}));
  // So is model.safetensors itself.
  TempDir single;
  fs::create_symlink(outside / "elsewhere.safetensors", single / kSingleFileName);
  EXPECT_TRUE(bad_input([&] { Checkpoint::open(single.path()); }, {"resolving outside the checkpoint"}));
}

TEST(Checkpoint, AcceptsSymlinkInsideTheDirectory) {
  TempDir dir;
  make_sharded(dir.path());
  fs::create_directories(dir / "blobs");
  fs::rename(dir / kShard2, dir / "blobs" / "abc123");
  fs::create_symlink(fs::path("blobs") / "abc123", dir / kShard2);
  EXPECT_EQ(Checkpoint::open(dir.path()).tensor_names().size(), 3u);
}

TEST(Checkpoint, AcceptsHuggingFaceHubCacheLayout) {
  // models--org--name/snapshots/<rev>/<file> -> ../../blobs/<hash>, as the hub cache stores it.
  TempDir cache;
  fs::path repo = cache / "models--org--m";
  fs::path snapshot = repo / "snapshots" / "0123abcd";
  fs::create_directories(snapshot);
  fs::create_directories(repo / "blobs");
  write_shard(repo / "blobs" / "f00d", {{"w", 3}});
  fs::create_symlink(fs::path("..") / ".." / "blobs" / "f00d", snapshot / kSingleFileName);
  EXPECT_EQ(Checkpoint::open(snapshot).find("w").info->byte_length(), 3u);
}

TEST(Checkpoint, RejectsDanglingShardSymlink) {
  TempDir dir;
  make_sharded(dir.path());
  fs::remove(dir / kShard2);
  fs::create_symlink(dir / "gone.safetensors", dir / kShard2);
  EXPECT_TRUE(bad_input([&] { Checkpoint::open(dir.path()); }, {"shard '" + kShard2 + "' is a dangling symlink"}));
}

TEST(Checkpoint, ShardHeaderErrorsNameTheShard) {
  TempDir dir;
  make_sharded(dir.path());
  write_bytes(dir / kShard2, testing::safetensors_bytes(R"({"c":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", "cc"));
  EXPECT_TRUE(bad_input([&] { Checkpoint::open(dir.path()); }, {kShard2 + ": tensor 'c'", "run past the data area"}));
}

}  // namespace
}  // namespace moeprep::io
