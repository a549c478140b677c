// ShardWriter: streams one shard. Bytes are gathered in a buffer of a few MiB so the kernel
// sees large writes however small the caller's pieces; pieces larger than the buffer go
// straight from the caller's memory. Each tensor is hashed as its bytes pass through.
#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include "core/error.h"
#include "io/mapped_input_guard.h"
#include "io/names.h"
#include "io/posix_file.h"
#include "io/safetensors_writer.h"

namespace moeprep::io {
namespace {

constexpr size_t kBufferBytes = size_t{4} << 20;

}  // namespace

ShardWriter::ShardWriter(const std::filesystem::path& path, const ShardPlan& plan) : path_(path), plan_(plan) {
  std::string header = encode_header(plan_);
  data_start_ = header.size();
  offsets_ = planned_data_offsets(plan_);
  fd_ = open_or_throw(path_, O_WRONLY | O_CREAT | O_TRUNC).release();
  buffer_.reserve(kBufferBytes);
  buffer_.assign(header.begin(), header.end());
}

ShardWriter::~ShardWriter() {
  delete hasher_;
  if (fd_ >= 0) ::close(fd_);
}

void ShardWriter::begin_tensor(const std::string& name) {
  if (in_tensor_)
    throw_internal(path_.string() + ": tensor '" + printable(name) + "' begun while tensor '" +
                   printable(plan_.tensors[next_].name) + "' is still open");
  if (next_ >= plan_.tensors.size())
    throw_internal(path_.string() + ": tensor '" + printable(name) + "' is not in the plan (all " +
                   std::to_string(plan_.tensors.size()) + " planned tensors are written)");
  if (plan_.tensors[next_].name != name)
    throw_internal(path_.string() + ": tensor '" + printable(name) + "' written out of order, the plan has '" +
                   printable(plan_.tensors[next_].name) + "' next");
  if (fd_ < 0) throw_internal(path_.string() + ": tensor '" + printable(name) + "' begun after finish()");
  in_tensor_ = true;
  written_in_tensor_ = 0;
  delete hasher_;
  hasher_ = nullptr;
  hasher_ = new Xxh3Hasher();
}

void ShardWriter::write(const void* data, size_t size) {
  if (!in_tensor_) throw_internal(path_.string() + ": write() outside begin_tensor()/end_tensor()");
  const PlannedTensor& t = plan_.tensors[next_];
  uint64_t planned = offsets_[next_ + 1] - offsets_[next_];
  if (size > planned - written_in_tensor_)
    throw_internal(path_.string() + ": tensor '" + printable(t.name) + "': " +
                   std::to_string(written_in_tensor_ + size) + " bytes written, more than the planned " +
                   std::to_string(planned));
  // Bytes read from an input that was truncated meanwhile are zeros, not the input: stop here.
  throw_if_mapped_input_changed();
  hasher_->update(data, size);
  written_in_tensor_ += size;
  if (buffer_.size() + size <= kBufferBytes) {
    const auto* p = static_cast<const uint8_t*>(data);
    buffer_.insert(buffer_.end(), p, p + size);
    return;
  }
  flush_buffer();
  if (size >= kBufferBytes) {
    try {
      write_all(fd_, data, size, path_.string());
    } catch (const Error&) {
      throw_if_mapped_range_shrank(data, size);  // EFAULT from a truncated input: say so
      throw;
    }
  } else {
    const auto* p = static_cast<const uint8_t*>(data);
    buffer_.assign(p, p + size);
  }
}

std::string ShardWriter::end_tensor() {
  if (!in_tensor_) throw_internal(path_.string() + ": end_tensor() without begin_tensor()");
  const PlannedTensor& t = plan_.tensors[next_];
  uint64_t planned = offsets_[next_ + 1] - offsets_[next_];
  if (written_in_tensor_ != planned)
    throw_internal(path_.string() + ": tensor '" + printable(t.name) + "': " + std::to_string(written_in_tensor_) +
                   " bytes written, fewer than the planned " + std::to_string(planned));
  std::string digest = hasher_->hex_digest();
  delete hasher_;
  hasher_ = nullptr;
  in_tensor_ = false;
  ++next_;
  return digest;
}

void ShardWriter::finish() {
  if (fd_ < 0) throw_internal(path_.string() + ": finish() called twice");
  if (in_tensor_ || next_ != plan_.tensors.size())
    throw_internal(path_.string() + ": finish() before tensor '" + printable(plan_.tensors[next_].name) +
                   "' was written");
  flush_buffer();
  throw_if_mapped_input_changed();
  UniqueFd fd(fd_);
  fd_ = -1;
  fsync_or_throw(fd.get(), path_.string());
  fd.close_or_throw(path_.string());
}

uint64_t ShardWriter::tensor_offset_in_file(size_t index) const {
  if (index >= plan_.tensors.size())
    throw_internal(path_.string() + ": tensor index " + std::to_string(index) + " out of range (" +
                   std::to_string(plan_.tensors.size()) + " tensors)");
  return data_start_ + offsets_[index];
}

void ShardWriter::flush_buffer() {
  if (buffer_.empty()) return;
  write_all(fd_, buffer_.data(), buffer_.size(), path_.string());
  buffer_.clear();
}

}  // namespace moeprep::io
