#pragma once
// moeprep.json: what convert did, per output tensor and for the run (layouts.md section 8).
// Written once, beside the shards; verify trusts nothing that it does not state.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/shape.h"
#include "formats/dtype.h"

namespace moeprep::plan {

inline constexpr const char* kManifestFileName = "moeprep.json";
inline constexpr const char* kManifestFormat = "moeprep-manifest";
inline constexpr int kManifestVersion = 1;

struct ManifestSourceTensor {
  std::string name;
  Dtype dtype = Dtype::U8;
  Shape shape;
  std::string xxh3_128;
};

struct ManifestTensor {
  std::string name;
  std::string shard;
  Dtype dtype = Dtype::U8;
  Shape shape;          // physical
  Shape logical_shape;  // before padding and shuffling (equal to shape when copied)
  uint64_t data_begin = 0, data_end = 0;  // data_offsets in the shard
  std::string xxh3_128;
  bool transformed = false;
  bool is_shuffled = false;
  std::string layout;      // layout id; empty for copied tensors
  std::string gate_mode;   // empty for copied tensors
  std::string role;        // w13_weight, ...; empty for copied tensors
  int64_t layer = -1;
  // The checkpoint tensors it is made from (copied tensors: itself) and, for tensors made from
  // an assembled canonical source, how (e.g. "quantize_mxfp4"); empty when read as is.
  std::vector<ManifestSourceTensor> sources;
  std::string source_transform;
  double quantization_rel_error = -1;  // ||dequant(q) - w|| / ||w|| when quantized, else -1
  nlohmann::ordered_json steps = nlohmann::ordered_json::array();  // [{"id":..., "params":...}]
};

struct ManifestFile {
  std::string name;
  std::string xxh3_128;
  uint64_t bytes = 0;
};

struct ManifestShard {
  std::string file;
  uint64_t bytes = 0;               // whole file
  std::string header_xxh3_128;      // the 8-byte length and the JSON header, padding included
};

struct Manifest {
  std::string tool_version;
  nlohmann::ordered_json options;  // ConvertOptions::to_json()
  nlohmann::ordered_json source;   // path, config/index hashes, totals
  nlohmann::ordered_json model;    // family, sizes, padded sizes, router, activation
  std::vector<ManifestTensor> tensors;  // in output order
  std::vector<ManifestFile> files;      // extra files copied through
  std::vector<ManifestShard> shards;
  std::string index_xxh3_128;           // model.safetensors.index.json as written

  nlohmann::ordered_json to_json() const;
  // Throws BadInput naming `context` and the key on any missing or mistyped field.
  static Manifest from_json(const nlohmann::ordered_json& j, const std::string& context);
  static Manifest read(const std::filesystem::path& path);
  // The file's text: to_json() with a trailing "checksum" (XXH3-128 of the text without it),
  // so that any change to the manifest itself is detected by read().
  std::string serialize() const;
  const ManifestTensor* find(const std::string& name) const;
};

}  // namespace moeprep::plan
