// Bit rot: one flipped bit anywhere in a converted directory (a shard's length prefix, JSON
// header, __metadata__ or data area; the index; moeprep.json; a copied file) must fail verify,
// and the report must say where: the tensor for a flip in its bytes, the shard for a flip in
// its header, the file otherwise. Flips are seeded; every one is counted.
#include <iostream>
#include <random>

#include <gtest/gtest.h>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "plan/verify.h"
#include "reliability_util.h"

namespace moeprep::reliability {
namespace {

struct Area {
  std::string label;
  fs::path file;
  uint64_t begin = 0, end = 0;  // byte range the flips land in
};

struct ShardLayout {
  fs::path path;
  uint64_t data_start = 0;
  uint64_t meta_begin = 0, meta_end = 0;  // "__metadata__":{...} inside the header
  std::vector<io::TensorInfo> tensors;
};

ShardLayout layout_of(const fs::path& shard) {
  ShardLayout l;
  l.path = shard;
  auto f = io::SafetensorsFile::open(shard);
  l.data_start = f->data_start();
  l.tensors = f->tensors();
  const std::string head = slurp(shard).substr(0, l.data_start);
  l.meta_begin = head.find("\"__metadata__\":{");
  l.meta_end = head.find('}', l.meta_begin) + 1;
  return l;
}

void flip(const fs::path& file, uint64_t offset, int bit) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.get(c);
  c = static_cast<char>(c ^ (1 << bit));
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(c);
}

std::vector<std::string> all_failures(const plan::VerifyReport& r) {
  std::vector<std::string> lines;
  for (const auto& s : r.stages)
    for (const auto& f : s.failures) lines.push_back(s.name + ": " + f);
  return lines;
}

TEST(BitRot, EverySingleBitFlipIsDetectedAndLocated) {
  TempDir dir;
  const fs::path dst = dir / "kr";
  // Several shards, so that a report naming the wrong shard would be noticed.
  const ChildResult conv = run_moeprep(
      {"convert", tiny_checkpoint().string(), "-o", dst.string(), "-q", "--max-shard-size", "300KB"}, dir.path());
  ASSERT_TRUE(conv.exited && conv.code == 0) << describe(conv);
  plan::VerifyOptions vo;
  plan::NullProgress progress;
  ASSERT_TRUE(plan::verify_checkpoint(dst, vo, progress).passed());

  std::vector<ShardLayout> shards;
  {
    const io::Checkpoint opened = io::Checkpoint::open(dst);
    for (const auto& s : opened.shards()) shards.push_back(layout_of(s->path()));
  }
  ASSERT_GE(shards.size(), 2u);

  struct Tally {
    int tried = 0, detected = 0, located = 0;
  };
  std::map<std::string, Tally> tally;
  std::mt19937_64 rng(0xb17f11b);
  auto pick = [&](uint64_t begin, uint64_t end) { return begin + rng() % (end - begin); };

  // Each flip: where, and the text a failure line must hold to count as located.
  auto try_flip = [&](const std::string& area, const fs::path& file, uint64_t offset, const std::string& must_name,
                      const std::vector<std::string>& must_not_name) {
    const int bit = static_cast<int>(rng() % 8);
    flip(file, offset, bit);
    const plan::VerifyReport r = plan::verify_checkpoint(dst, vo, progress);
    flip(file, offset, bit);
    Tally& t = tally[area];
    ++t.tried;
    const auto lines = all_failures(r);
    const std::string where = area + " flip at " + file.filename().string() + "+" + std::to_string(offset) + " bit " +
                              std::to_string(bit);
    if (r.passed()) {
      ADD_FAILURE() << where << ": not detected";
      return;
    }
    ++t.detected;
    bool named = false, misnamed = false;
    for (const auto& l : lines) {
      named = named || l.find(must_name) != std::string::npos;
      for (const auto& other : must_not_name) misnamed = misnamed || l.find(other) != std::string::npos;
    }
    if (named && !misnamed) ++t.located;
    else
      ADD_FAILURE() << where << ": failures do not name " << must_name << " alone:\n" << ::testing::PrintToString(lines);
  };

  for (size_t si = 0; si < shards.size(); ++si) {
    const ShardLayout& s = shards[si];
    const std::string name = s.path.filename().string();
    std::vector<std::string> other_shards;
    for (const auto& o : shards)
      if (o.path != s.path) other_shards.push_back(o.path.filename().string());
    for (int i = 0; i < 8; ++i) try_flip("length prefix", s.path, pick(0, 8), name, other_shards);
    for (int i = 0; i < 40; ++i) {
      uint64_t off = pick(8, s.data_start);
      if (off >= s.meta_begin && off < s.meta_end) off = pick(8, s.meta_begin);  // metadata has its own count
      try_flip("JSON header", s.path, off, name, other_shards);
    }
    for (int i = 0; i < 40; ++i) try_flip("__metadata__", s.path, pick(s.meta_begin, s.meta_end), name, other_shards);
    for (int i = 0; i < 80; ++i) {
      const uint64_t off = pick(s.data_start, fs::file_size(s.path));
      const io::TensorInfo* hit = nullptr;
      for (const auto& t : s.tensors)
        if (off - s.data_start >= t.begin && off - s.data_start < t.end) hit = &t;
      ASSERT_NE(hit, nullptr);
      // Exactly this tensor: its name, quoted, in its shard; no other tensor is blamed.
      std::vector<std::string> others = other_shards;
      for (const auto& t : s.tensors)
        if (t.name != hit->name) others.push_back("tensor '" + t.name + "'");
      try_flip("tensor data", s.path, off, name + ": tensor '" + hit->name + "'", others);
    }
  }
  const fs::path index = dst / "model.safetensors.index.json";
  for (int i = 0; i < 40; ++i) try_flip("index", index, pick(0, fs::file_size(index)), index.filename().string(), {});
  const fs::path manifest = dst / "moeprep.json";
  for (int i = 0; i < 60; ++i) try_flip("moeprep.json", manifest, pick(0, fs::file_size(manifest)), "moeprep.json", {});
  const fs::path config = dst / "config.json";
  for (int i = 0; i < 20; ++i) try_flip("config.json", config, pick(0, fs::file_size(config)), "config.json", {});

  int tried = 0, detected = 0, located = 0;
  std::cout << "[figure] single-bit flips in a converted tiny checkpoint (" << shards.size() << " shards):\n";
  for (const auto& [area, t] : tally) {
    std::cout << "[figure]   " << area << ": detected " << t.detected << "/" << t.tried << ", located " << t.located
              << "/" << t.tried << "\n";
    tried += t.tried;
    detected += t.detected;
    located += t.located;
  }
  std::cout << "[figure]   total: detected " << detected << "/" << tried << ", located " << located << "/" << tried
            << "\n";
  EXPECT_EQ(detected, tried);
  EXPECT_EQ(located, tried);
  EXPECT_GE(tried, 500);
  // Every flip was undone: the directory verifies again.
  EXPECT_TRUE(plan::verify_checkpoint(dst, vo, progress).passed());
}

}  // namespace
}  // namespace moeprep::reliability
