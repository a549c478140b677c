#pragma once
// Helpers for the end-to-end tests: a temporary directory, a tiny GPT-OSS checkpoint made by
// the project's generator, convert and verify through the library, and shard rewriting for
// corruption tests.
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "io/checkpoint.h"
#include "io/io_test_util.h"
#include "io/safetensors_writer.h"
#include "models/gpt_oss_synth.h"
#include "plan/convert.h"
#include "plan/verify.h"

namespace moeprep::plan::testing {

namespace fs = std::filesystem;

using io::testing::TempDir;

inline fs::path make_tiny(const TempDir& dir, const std::string& name = "src",
                          models::gpt_oss::SynthOptions o = models::gpt_oss::SynthOptions{}) {
  const fs::path p = dir / name;
  models::gpt_oss::write_synthetic_checkpoint(p, o, false);
  return p;
}

inline ConvertSummary convert(const fs::path& src, const fs::path& dst, ConvertOptions o = ConvertOptions{},
                              bool force = false) {
  ConvertRequest r;
  r.source = src;
  r.destination = dst;
  r.options = o;
  r.replace_existing = force;
  NullProgress p;
  return convert_checkpoint(r, p);
}

inline VerifyReport verify(const fs::path& dst, const fs::path* src, std::vector<int64_t> tokens = {1, 7}) {
  VerifyOptions o;
  if (src) o.source = *src;
  o.token_counts = tokens;
  NullProgress p;
  return verify_checkpoint(dst, o, p);
}

inline const StageReport& stage(const VerifyReport& r, const std::string& name) {
  for (const auto& s : r.stages)
    if (s.name == name) return s;
  throw std::runtime_error("no stage " + name);
}

inline std::string failures_text(const StageReport& s) {
  std::string all;
  for (const auto& f : s.failures) all += f + "\n";
  return all;
}

inline std::string read_file(const fs::path& p) { return io::testing::read_bytes(p); }
inline void write_file(const fs::path& p, const std::string& s) { io::testing::write_bytes(p, s); }

// Rewrites one shard with its tensors (minus `drop`) and metadata edited by `edit`.
template <typename EditMetadata>
void rewrite_shard(const fs::path& shard_path, const std::string& drop, EditMetadata edit) {
  std::map<std::string, std::string> meta;
  std::vector<std::pair<io::PlannedTensor, std::string>> tensors;
  {
    auto f = io::SafetensorsFile::open(shard_path);
    meta = f->metadata();
    for (const auto& t : f->tensors()) {
      if (t.name == drop) continue;
      const io::ByteView b = f->data(t);
      tensors.push_back({{t.name, t.dtype, t.shape}, std::string(reinterpret_cast<const char*>(b.data), b.size)});
    }
  }
  edit(meta);
  io::ShardPlan plan;
  plan.file_name = shard_path.filename().string();
  plan.metadata = meta;
  for (const auto& [pt, bytes] : tensors) plan.tensors.push_back(pt);
  const fs::path tmp = shard_path.string() + ".rewrite";
  {
    io::ShardWriter w(tmp, plan);
    for (const auto& [pt, bytes] : tensors) {
      w.begin_tensor(pt.name);
      w.write(bytes.data(), bytes.size());
      w.end_tensor();
    }
    w.finish();
  }
  fs::rename(tmp, shard_path);
}

// The shard that holds `tensor` in a checkpoint directory.
inline fs::path shard_of(const fs::path& dir, const std::string& tensor) {
  auto c = io::Checkpoint::open(dir);
  return c.find(tensor).file->path();
}

}  // namespace moeprep::plan::testing
