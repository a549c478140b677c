#pragma once
// Writing safetensors shards by streaming: the header (with __metadata__) is written first
// from a plan of names, dtypes and shapes, then each tensor's bytes in plan order. The JSON
// is padded with spaces so the data area starts 8-byte aligned. Every tensor is hashed with
// XXH3-128 as it is written.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/hash.h"
#include "core/shape.h"
#include "formats/dtype.h"

namespace moeprep::io {

struct PlannedTensor {
  std::string name;
  Dtype dtype = Dtype::U8;
  Shape shape;
  uint64_t byte_length() const;
};

struct ShardPlan {
  std::string file_name;  // model-00001-of-00003.safetensors
  std::vector<PlannedTensor> tensors;
  std::map<std::string, std::string> metadata;  // __metadata__, string -> string
};

// Splits tensors, in the given order, into shards of at most `max_shard_bytes` of tensor
// data (a single tensor larger than that gets a shard of its own), named
// model-0000K-of-0000N.safetensors.
// "model-%05d-of-%05d.safetensors" for shard `index` (0-based) of `count`.
std::string shard_file_name(size_t index, size_t count);

// An empty tensor list gives one shard with no tensors, so a writer always has a file to
// write. Throws BadInput on an invalid or repeated tensor name, Usage on max_shard_bytes == 0.
std::vector<ShardPlan> plan_shards(const std::vector<PlannedTensor>& tensors, uint64_t max_shard_bytes);

// Where each tensor of a shard plan starts in the data area, plus the data area's size last.
std::vector<uint64_t> planned_data_offsets(const ShardPlan& plan);

// The header bytes (8-byte length + padded JSON) for a shard plan; keys in a fixed order so
// output is deterministic.
std::string encode_header(const ShardPlan& plan);

class ShardWriter {
 public:
  ShardWriter(const std::filesystem::path& path, const ShardPlan& plan);  // writes the header
  ~ShardWriter();  // closes (without fsync) if finish() was not called
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Tensors are written in plan order. write() may be called many times per tensor;
  // end_tensor() checks the byte count equals the planned length and returns the hash.
  void begin_tensor(const std::string& name);
  void write(const void* data, size_t size);
  std::string end_tensor();
  // fsyncs and closes; throws if any tensor was not written.
  void finish();
  uint64_t tensor_offset_in_file(size_t index) const;  // absolute byte offset of tensor i
  const std::filesystem::path& path() const { return path_; }
  uint64_t data_start() const { return data_start_; }  // header bytes, a multiple of 8

 private:
  void flush_buffer();
  std::filesystem::path path_;
  ShardPlan plan_;
  int fd_ = -1;
  size_t next_ = 0;
  bool in_tensor_ = false;
  uint64_t written_in_tensor_ = 0;
  uint64_t data_start_ = 0;
  std::vector<uint64_t> offsets_;
  std::vector<uint8_t> buffer_;
  Xxh3Hasher* hasher_ = nullptr;
};

// model.safetensors.index.json: {"metadata": {"total_size": N}, "weight_map": {...}} with
// names sorted.
void write_index_file(const std::filesystem::path& path, const std::map<std::string, std::string>& weight_map,
                      uint64_t total_size);

}  // namespace moeprep::io
