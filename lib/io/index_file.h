#pragma once
// model.safetensors.index.json, read side (the write side, write_index_file, is declared in
// safetensors_writer.h next to the shard writer that produces what it lists).
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace moeprep::io {

struct IndexFile {
  std::map<std::string, std::string> weight_map;  // tensor name -> shard file name
  std::optional<uint64_t> total_size;             // metadata.total_size when present
  nlohmann::json json;                            // the whole document
};

// Reads and checks the index's own shape: an object whose weight_map maps valid tensor names
// to plain file names, and whose metadata.total_size, if present, is a non-negative integer.
// Throws BadInput naming the file. Whether the shards agree is Checkpoint::open's business.
IndexFile read_index_file(const std::filesystem::path& path);

}  // namespace moeprep::io
