#pragma once
// A byte buffer that is neither zero-filled nor copied when it grows, and whose storage is whole
// aligned huge pages: for outputs written whole before anything reads them (convert's unit
// buffers). A std::vector<uint8_t> zero-fills what it grows into, copies its old bytes when it
// moves, and its storage starts anywhere, so only the huge pages inside it could be advised. In
// GPT-OSS's convert on the dev VM that cost 6020 page faults instead of 1432 and a third of the
// CPU time (medians of 9, bench/quantize_convert.sh: MXFP4 path 0.437 -> 0.274 s, BF16 0.742 ->
// 0.471 s), for bytes that the layout steps overwrite at once.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>

namespace moeprep {

class UninitializedBytes {
 public:
  UninitializedBytes() = default;
  // A moved-from buffer is empty (size and capacity 0), as a moved-from vector is.
  UninitializedBytes(UninitializedBytes&& other) noexcept { *this = std::move(other); }
  UninitializedBytes& operator=(UninitializedBytes&& other) noexcept {
    data_ = std::move(other.data_);
    size_ = std::exchange(other.size_, 0);
    capacity_ = std::exchange(other.capacity_, 0);
    return *this;
  }

  uint8_t* data() { return data_.get(); }
  const uint8_t* data() const { return data_.get(); }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }

  // Makes the buffer `size` bytes long. Within the capacity the bytes are left as they are;
  // past it the storage is replaced (on huge pages where the system allows) and every byte is
  // unspecified. Builds with MOEPREP_POISON_UNINITIALIZED (the sanitizer build) fill fresh
  // storage with 0xA5, so that a writer that leaves bytes unwritten produces wrong output there
  // rather than the zeros a fresh page happens to hold.
  void resize_discarding(size_t size);

 private:
  // The storage is its own mapping (uninitialized_bytes.cpp says why), unmapped whole.
  struct Unmap {
    size_t bytes;  // value-initialized (0) in an empty buffer
    void operator()(uint8_t* p) const;
  };
  std::unique_ptr<uint8_t, Unmap> data_;
  size_t size_ = 0, capacity_ = 0;
};

}  // namespace moeprep
