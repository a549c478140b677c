#pragma once
// A Hugging Face checkpoint: a directory with config.json and either model.safetensors or an
// index (model.safetensors.index.json) over shards, or a single .safetensors file.
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"

namespace moeprep::io {

inline constexpr const char* kIndexFileName = "model.safetensors.index.json";
inline constexpr const char* kSingleFileName = "model.safetensors";
inline constexpr const char* kConfigFileName = "config.json";

struct LocatedTensor {
  const SafetensorsFile* file = nullptr;
  const TensorInfo* info = nullptr;
};

class Checkpoint {
 public:
  // Opens and validates: every shard's header; with an index, that every listed shard exists,
  // every listed tensor is in its shard, every shard tensor is listed, no name is in two
  // shards. Shard names from the index must be plain file names inside the directory.
  static Checkpoint open(const std::filesystem::path& path);

  const std::filesystem::path& root() const { return root_; }  // the directory (or the file)
  bool is_directory() const { return is_directory_; }
  bool has_config() const { return !config_.is_null(); }
  const nlohmann::json& config() const { return config_; }  // null when absent
  bool has_index() const { return has_index_; }
  const nlohmann::json& index() const { return index_; }

  std::vector<std::string> tensor_names() const;  // sorted
  const LocatedTensor* try_find(std::string_view name) const;
  const LocatedTensor& find(std::string_view name) const;  // throws BadInput naming the checkpoint
  ByteView data(const LocatedTensor& t) const { return t.file->data(*t.info); }
  const std::vector<std::unique_ptr<SafetensorsFile>>& shards() const { return shards_; }

 private:
  std::filesystem::path root_;
  bool is_directory_ = false;
  bool has_index_ = false;
  nlohmann::json config_;
  nlohmann::json index_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::vector<std::pair<std::string, LocatedTensor>> sorted_;  // by name
};

}  // namespace moeprep::io
