#include "core/hash.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <new>

#include "core/error.h"
#include "core/simd_level.h"
#include "core/hash_variant.h"

// The default target's XXH3 (SSE2 on x86-64); the wider ones are in hash_avx*.cpp.
#define MOEPREP_XXH3_VARIANT baseline
#include "core/hash_variant.inc"

namespace moeprep {
namespace {

// Inputs of at least this many bytes in one call are read from memory, not from a cache.
constexpr size_t kFromMemoryBytes = size_t{1} << 20;

// The variant for `size` bytes at a time. From memory, AVX-512's loop is the slower one: its
// 64-byte loads split a cache line each wherever the input is not 64-byte aligned (safetensors
// does not align tensors), and even aligned it read less than AVX2's. Dev VM's EPYC (Zen 4),
// GB/s, one thread, 1 GiB from memory at offsets 0 / 8: AVX2 30.6 / 28.9, AVX-512 23.7 / 17.1;
// 16-256 KiB in L1/L2: AVX2 58 / 45, AVX-512 74-77 / 65-67. GPT-OSS BF16's convert, which hashes
// its sources' slices from memory, used 6% less CPU with AVX2's loop (eleventh session).
const xxh3_variant::Functions& functions(size_t size = 0) {
  switch (simd_level()) {
#if defined(MOEPREP_X86_SIMD)
    case SimdLevel::Avx512: return size >= kFromMemoryBytes ? xxh3_variant::avx2() : xxh3_variant::avx512();
    case SimdLevel::Avx2: return xxh3_variant::avx2();
#endif
    default: return xxh3_variant::baseline();
  }
}

std::string to_hex(xxh3_variant::Digest h) {
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(h.high),
                static_cast<unsigned long long>(h.low));
  return buf;
}

// The end of XXH3_hashLong_128b with the default secret: the last stripe's terms added to a copy
// of the accumulators, which are merged into the two halves.
std::string long_digest(const uint64_t* accumulators, uint64_t length, const void* last_stripe) {
  alignas(64) uint64_t acc[8];
  std::memcpy(acc, accumulators, sizeof acc);
  XXH3_accumulate_512_scalar(acc, last_stripe,
                             XXH3_kSecret + sizeof(XXH3_kSecret) - XXH_STRIPE_LEN - XXH_SECRET_LASTACC_START);
  xxh3_variant::Digest d;
  d.low = XXH3_mergeAccs(acc, XXH3_kSecret + XXH_SECRET_MERGEACCS_START, length * XXH_PRIME64_1);
  d.high = XXH3_mergeAccs(acc, XXH3_kSecret + sizeof(XXH3_kSecret) - sizeof(acc) - XXH_SECRET_MERGEACCS_START,
                          ~(length * XXH_PRIME64_2));
  return to_hex(d);
}

}  // namespace

// A hasher's XXH3 state is xxhash's one struct whatever the variant (its layout does not depend
// on XXH_VECTOR), so each update may take the variant that suits its size; the state is made
// and freed by the variant it was made with.
struct HasherState {
  const xxh3_variant::Functions* functions;
  void* xxh3;
};

Xxh3Hasher::Xxh3Hasher() {
  const xxh3_variant::Functions& f = functions();
  void* xxh3 = f.create();
  if (!xxh3) throw std::bad_alloc();
  state_ = new HasherState{&f, xxh3};
}

Xxh3Hasher::~Xxh3Hasher() {
  auto* s = static_cast<HasherState*>(state_);
  s->functions->destroy(s->xxh3);
  delete s;
}

void Xxh3Hasher::update(const void* data, size_t size) {
  auto* s = static_cast<HasherState*>(state_);
  functions(size).update(s->xxh3, data, size);
}

std::string Xxh3Hasher::hex_digest() const {
  const auto* s = static_cast<const HasherState*>(state_);
  return to_hex(s->functions->digest(s->xxh3));
}

std::string xxh3_128_hex(const void* data, size_t size) { return to_hex(functions(size).oneshot(data, size)); }

// XXH3_hashLong_128b_internal of xxhash.h with the default secret, cut at its stripes.
Xxh3StripeHash::Xxh3StripeHash(uint64_t length) : acc_ XXH3_INIT_ACC, length_(length) {
  if (!fits(length)) throw_internal("Xxh3StripeHash: " + std::to_string(length) + " bytes");
}

const uint8_t* Xxh3StripeHash::secret() { return XXH3_kSecret; }

void Xxh3StripeHash::accumulate(const void* data, int64_t first, int64_t count) {
  if (first < 0 || count < 0 || first + count > regular_stripes())
    throw_internal("Xxh3StripeHash: stripes [" + std::to_string(first) + ", " + std::to_string(first + count) +
                   ") of " + std::to_string(regular_stripes()));
  const auto* p = static_cast<const uint8_t*>(data);
  for (int64_t s = first; s < first + count; ++s, p += XXH_STRIPE_LEN) {
    XXH3_accumulate_512_scalar(acc_, p, XXH3_kSecret + (s % 16) * XXH_SECRET_CONSUME_RATE);
    if (s % 16 == 15) XXH3_scrambleAcc_scalar(acc_, XXH3_kSecret + sizeof(XXH3_kSecret) - XXH_STRIPE_LEN);
  }
}

std::string Xxh3StripeHash::hex_digest(const void* last_stripe) const {
  return long_digest(acc_, length_, last_stripe);
}

// XXH3_hashLong_internal_loop of xxhash.h with the default secret (192 bytes: 16 stripes a
// block), cut at its blocks: the blocks as one piece of the input.
void Xxh3BlockFold::block_sums(uint64_t length, const void* data, uint64_t first, uint64_t count, uint64_t* out) {
  Xxh3PieceSums piece(length, first, count, out);
  piece.accumulate(data, 0, piece.regular_stripes());
  piece.finish();
}

Xxh3BlockFold::Xxh3BlockFold(uint64_t length) : acc_ XXH3_INIT_ACC, length_(length) {
  if (!fits(length)) throw_internal("Xxh3BlockFold: " + std::to_string(length) + " bytes");
}

void Xxh3BlockFold::fold(const uint64_t* sums, uint64_t count) {
  const uint64_t all = blocks(length_);
  if (folded_ + count > all)
    throw_internal("Xxh3BlockFold: " + std::to_string(folded_ + count) + " blocks folded of " + std::to_string(all));
  // Every block but the last is scrambled (the last is the partial one, even when whole). The
  // folding thread reads the sums from memory (64 bytes a KiB of input) and, where it used
  // xxhash's scalar scramble, spent 5% of Gemma4's convert samples on it (dev VM).
  const uint64_t scrambled = std::min(count, all - 1 - std::min(folded_, all - 1));
  functions().fold(acc_, sums, static_cast<size_t>(count), static_cast<size_t>(scrambled));
  folded_ += count;
}

Xxh3PieceSums::Xxh3PieceSums(uint64_t length, uint64_t first_block, uint64_t blocks, uint64_t* out)
    : out_(out), blocks_(blocks) {
  if (!Xxh3BlockFold::fits(length) || first_block + blocks > Xxh3BlockFold::blocks(length) ||
      first_block + blocks < first_block)
    throw_internal("Xxh3PieceSums: blocks [" + std::to_string(first_block) + ", " + std::to_string(first_block + blocks) +
                   ") of " + std::to_string(length) + " bytes");
  const uint64_t regular = (length - 1) / XXH_STRIPE_LEN;  // of the whole input
  regular_ = static_cast<int64_t>(std::min(regular, (first_block + blocks) * 16) - std::min(regular, first_block * 16));
}

void Xxh3PieceSums::accumulate(const void* data, int64_t first, int64_t count) {
  if (first < 0 || count < 0 || first + count > regular_)
    throw_internal("Xxh3PieceSums: stripes [" + std::to_string(first) + ", " + std::to_string(first + count) + ") of " +
                   std::to_string(regular_));
  functions().piece_stripes(acc_, data, static_cast<size_t>(first), static_cast<size_t>(count), out_);
}

void Xxh3PieceSums::finish() {
  for (uint64_t b = static_cast<uint64_t>(regular_) / 16; b < blocks_; ++b) {
    std::memcpy(out_ + b * 8, acc_, sizeof acc_);
    std::memset(acc_, 0, sizeof acc_);
  }
}

std::string Xxh3BlockFold::hex_digest(const void* last_stripe) const {
  if (folded_ != blocks(length_))
    throw_internal("Xxh3BlockFold: digest after " + std::to_string(folded_) + " of " + std::to_string(blocks(length_)) +
                   " blocks");
  return long_digest(acc_, length_, last_stripe);
}

}  // namespace moeprep
