#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace moeprep {

// XXH3-128 of tensor bytes, written as 32 lowercase hex digits (high 64 bits first, the
// canonical big-endian form xxhsum prints). Runs the widest vectors the CPU has
// (core/simd_level.h); the digest is the same on every path.
class Xxh3Hasher {
 public:
  Xxh3Hasher();
  ~Xxh3Hasher();
  Xxh3Hasher(const Xxh3Hasher&) = delete;
  Xxh3Hasher& operator=(const Xxh3Hasher&) = delete;
  void update(const void* data, size_t size);
  std::string hex_digest() const;

 private:
  void* state_;
};

std::string xxh3_128_hex(const void* data, size_t size);

}  // namespace moeprep
