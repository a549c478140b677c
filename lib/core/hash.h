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

// The XXH3-128 of xxh3_128_hex for an input hashed in 1 KiB blocks computed in any order and on
// any thread, then put together in order. XXH3 adds one term per 64-byte stripe into its
// accumulators and scrambles them after each block of 16 stripes, so a block's terms sum on
// their own (block_sums, from accumulators at zero) and fold() applies the scrambles in order.
// A worker that just read a piece of a tensor hashes it while it is in its cache, instead of the
// thread that needs the digest in order reading it from memory later. For lengths that fit():
// over 240 bytes (shorter inputs take XXH3's other algorithms).
class Xxh3BlockFold {
 public:
  static constexpr uint64_t kBlockBytes = 1024;
  static bool fits(uint64_t length) { return length > 240; }
  // Blocks of an input of `length` bytes: the last may be partial; it takes no last stripe,
  // which hex_digest adds.
  static uint64_t blocks(uint64_t length) { return (length - 1) / kBlockBytes + 1; }
  // The sums of blocks [first, first + count) of an input of `length` bytes, block `first` at
  // `data`: 8 words a block into `out`. Runs the widest vectors the CPU has.
  static void block_sums(uint64_t length, const void* data, uint64_t first, uint64_t count, uint64_t* out);
  explicit Xxh3BlockFold(uint64_t length);
  // The next `count` blocks' sums, in order.
  void fold(const uint64_t* sums, uint64_t count);
  uint64_t folded() const { return folded_; }
  // With every block folded: the digest, given the input's last 64 bytes.
  std::string hex_digest(const void* last_stripe) const;

 private:
  alignas(64) uint64_t acc_[8];
  uint64_t length_, folded_ = 0;
};

// Xxh3BlockFold's block sums made by a reader that goes over a piece of the input 64 bytes at a
// time anyway, as Xxh3StripeHash's reader does (the MXFP4 quantizer), so that a tensor read by
// several workers, each its own piece, is hashed without a pass of its own. The piece is blocks
// [first_block, first_block + blocks) of an input of `length` bytes (Xxh3BlockFold::fits), whose
// sums go to `out`, 8 words a block. The reader accumulates the piece's stripes 0 ..
// regular_stripes() - 1 in order into accumulators(), stripe s with the key at
// Xxh3StripeHash::secret() + (s % 16) * 8, and after each stripe s with s % 16 == 15 stores them
// to block_out(s) and zeroes them (no scramble: Xxh3BlockFold::fold applies it). finish() then
// stores the partial last block.
class Xxh3PieceSums {
 public:
  Xxh3PieceSums(uint64_t length, uint64_t first_block, uint64_t blocks, uint64_t* out);
  int64_t regular_stripes() const { return regular_; }
  uint64_t* accumulators() { return acc_; }  // 8, 64-byte aligned
  uint64_t* block_out(int64_t stripe) { return out_ + stripe / 16 * 8; }
  // `count` stripes of the piece from stripe `first`, whose bytes are at `data`, with the
  // widest vectors the CPU has: for readers whose own loop does not hash (a pass over bytes
  // still in their cache).
  void accumulate(const void* data, int64_t first, int64_t count);
  // With every regular stripe accumulated: the sums of the blocks no 16th stripe stored (the
  // input's last block, partial or without stripes).
  void finish();

 private:
  alignas(64) uint64_t acc_[8] = {};
  uint64_t* out_;
  uint64_t blocks_;
  int64_t regular_;
};

}  // namespace moeprep
