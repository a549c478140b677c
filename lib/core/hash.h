#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace moeprep {

// XXH3-128 of tensor bytes, written as 32 lowercase hex digits (high 64 bits first, the
// canonical big-endian form xxhsum prints). Runs the widest vectors the CPU has
// (core/simd_level.h), except that a call of 1 MiB or more, read from memory, runs AVX2's loop
// where the CPU has AVX-512 (hash.cpp says why); the digest is the same on every path.
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

// The XXH3-128 of xxh3_128_hex for a reader that goes over the bytes 64 at a time anyway and
// accumulates them in its own loop (the MXFP4 quantizer: a block of 32 bf16 values is one XXH3
// stripe), so that hashing a tensor costs no pass of its own. For lengths that fit(): a multiple
// of 64 over 240 bytes (shorter inputs take XXH3's other algorithms). The reader accumulates
// stripes 0 .. regular_stripes() - 1 in order, stripe s with the key at secret() + (s % 16) * 8,
// scrambling after each stripe s with s % 16 == 15 (key secret() + 128), as accumulate() does;
// hex_digest takes the last stripe.
class Xxh3StripeHash {
 public:
  static bool fits(uint64_t length) { return length > 240 && length % 64 == 0; }
  explicit Xxh3StripeHash(uint64_t length);
  uint64_t* accumulators() { return acc_; }  // 8, 64-byte aligned
  static const uint8_t* secret();            // XXH3's default secret, 192 bytes
  int64_t regular_stripes() const { return static_cast<int64_t>(length_ / 64) - 1; }
  // Portable: `count` regular stripes starting with stripe `first`, whose bytes are at `data`.
  void accumulate(const void* data, int64_t first, int64_t count);
  // With every regular stripe accumulated: the digest, given the last 64 bytes.
  std::string hex_digest(const void* last_stripe) const;

 private:
  alignas(64) uint64_t acc_[8];
  uint64_t length_;
};

}  // namespace moeprep
