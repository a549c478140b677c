#pragma once
// Helpers for the model-family tests: synthetic checkpoints of each family, and small edits
// (an extra tensor, a config change) for the refusal tests.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/safetensors_writer.h"
#include "models/synth_families.h"
#include "plan/plan_test_util.h"

namespace moeprep::models::testing {

using plan::testing::TempDir;
namespace fs = std::filesystem;

// "qwen3_moe" -> testdata/tiny-qwen3-moe
inline fs::path shipped_tiny(const std::string& family) {
  std::string dir = family;
  for (char& ch : dir)
    if (ch == '_') ch = '-';
  return fs::path(MOEPREP_SOURCE_DIR) / "testdata" / ("tiny-" + dir);
}

inline fs::path make_family(const TempDir& dir, const std::string& family, const std::string& name = "src") {
  const fs::path p = dir / name;
  write_synthetic_family(family, p, default_synth_options(family), false);
  return p;
}

// Adds a tensor (zero bytes) to a checkpoint directory in a shard of its own, listed in the
// index, so that the checkpoint still opens.
inline void add_tensor(const fs::path& dir, const std::string& name, Dtype dtype, const Shape& shape) {
  std::map<std::string, std::string> weight_map;
  uint64_t total = 0;
  {
    const auto c = io::Checkpoint::open(dir);
    for (const auto& n : c.tensor_names()) {
      const auto& t = c.find(n);
      weight_map[n] = t.file->path().filename().string();
      total += t.info->byte_length();
    }
  }
  io::ShardPlan plan;
  plan.file_name = "extra.safetensors";
  plan.tensors.push_back({name, dtype, shape});
  io::ShardWriter w(dir / plan.file_name, plan);
  w.begin_tensor(name);
  const std::vector<uint8_t> zeros(plan.tensors[0].byte_length(), 0);
  w.write(zeros.data(), zeros.size());
  w.end_tensor();
  w.finish();
  weight_map[name] = plan.file_name;
  io::write_index_file(dir / io::kIndexFileName, weight_map, total + zeros.size());
}

// Removes a tensor from a checkpoint directory (its shard rewritten, the index updated).
inline void remove_tensor(const fs::path& dir, const std::string& name) {
  plan::testing::rewrite_shard(plan::testing::shard_of(dir, name), name, [](auto&) {});
  std::map<std::string, std::string> weight_map;
  uint64_t total = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".safetensors") continue;
    const auto f = io::SafetensorsFile::open(e.path());
    for (const auto& t : f->tensors()) {
      weight_map[t.name] = e.path().filename().string();
      total += t.byte_length();
    }
  }
  io::write_index_file(dir / io::kIndexFileName, weight_map, total);
}

// Rewrites config.json through `edit`.
template <typename Edit>
void edit_config(const fs::path& dir, Edit edit) {
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(plan::testing::read_file(dir / io::kConfigFileName));
  edit(j);
  plan::testing::write_file(dir / io::kConfigFileName, j.dump(2) + "\n");
}

// The BadInput message a callable throws ("" when it does not throw).
template <typename F>
std::string bad_input_message(F f) {
  try {
    f();
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::BadInput) return e.what();
    return std::string("wrong kind: ") + e.what();
  }
  return "";
}

}  // namespace moeprep::models::testing
