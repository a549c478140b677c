#pragma once
// The safetensors format layer: strict header validation and memory-mapped reading. It knows
// nothing of models. Validation follows huggingface/safetensors `tensor.rs`: the whole header
// is checked in one pass before any tensor is handed out, with checked arithmetic on every
// size; each failure is one line naming the file, the tensor where there is one, and the rule.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/shape.h"
#include "formats/dtype.h"

namespace moeprep::io {

inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference's limit

struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::U8;
  Shape shape;
  uint64_t begin = 0;  // offsets relative to the start of the data area
  uint64_t end = 0;
  uint64_t byte_length() const { return end - begin; }
};

struct ByteView {
  const uint8_t* data = nullptr;
  size_t size = 0;
};

struct Header {
  std::vector<TensorInfo> tensors;  // sorted by begin offset
  std::map<std::string, std::string> metadata;
};

// Validates a header's JSON text against a data area of `data_size` bytes. `context` (the
// file name) starts every error message. Throws Error(BadInput).
Header parse_header(std::string_view json_text, uint64_t data_size, const std::string& context);

// A read-only, memory-mapped safetensors file. Opening validates the whole header; tensor
// bytes are touched only when data() is read.
class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const TensorInfo* find(std::string_view name) const;  // nullptr when absent
  ByteView data(const TensorInfo& tensor) const;
  uint64_t file_size() const { return file_size_; }
  uint64_t data_start() const { return data_start_; }  // 8 + header length
  ByteView whole_file() const;

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  Header header_;
  std::map<std::string, size_t, std::less<>> by_name_;
  const uint8_t* map_ = nullptr;
  int guard_slot_ = -1;  // io/mapped_input_guard.h: a truncation under a read is an error, not SIGBUS
  uint64_t file_size_ = 0;
  uint64_t data_start_ = 0;
};

}  // namespace moeprep::io
