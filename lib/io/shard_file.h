#pragma once
// A shard written by several threads at once: the header is written first, from the plan; then
// each piece of tensor data goes straight to its planned offset (pwrite), in any order. The
// caller hashes the bytes in order itself. The stream-shaped ShardWriter is the simpler tool;
// this one lets convert's workers write as their units complete, in any order, so that no one
// thread does every write(2); the writes themselves go one at a time (write_at).
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <vector>

#include "io/safetensors_writer.h"

namespace moeprep::io {

class ShardFile {
 public:
  ShardFile(const std::filesystem::path& path, const ShardPlan& plan);  // writes the header
  ~ShardFile();  // closes (without fsync) unless finish() was called
  ShardFile(const ShardFile&) = delete;
  ShardFile& operator=(const ShardFile&) = delete;

  // Offset of tensor `index` (plan order) within the data area.
  uint64_t tensor_offset(size_t index) const { return offsets_[index]; }
  uint64_t data_start() const { return data_start_; }
  const std::filesystem::path& path() const { return path_; }
  // Writes [data, data + size) at `data_offset` within the data area. Thread-safe. Throws Io
  // naming the file (disk full, ...); Internal when the range is outside the data area.
  void write_at(uint64_t data_offset, const void* data, size_t size);
  // fsyncs and closes.
  void finish();

 private:
  void reserve_space(uint64_t file_size);

  std::filesystem::path path_;
  int fd_ = -1;
  uint64_t data_start_ = 0;
  std::vector<uint64_t> offsets_;  // one more than tensors: the end of the data area last
  std::mutex write_mutex_;  // write_at's
};

}  // namespace moeprep::io
