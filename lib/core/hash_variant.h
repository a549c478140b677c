#pragma once
// Internal to lib/core: the XXH3-128 functions compiled once per instruction-set level
// (hash.cpp: the default target's SSE2, hash_avx2.cpp, hash_avx512.cpp, each with its own
// flags), so that hashing a checkpoint's tensors uses the CPU's widest vectors. XXH3 gives
// the same digest on every path by design; only the speed differs.
#include <cstddef>
#include <cstdint>

namespace moeprep::xxh3_variant {

struct Digest {
  uint64_t high = 0, low = 0;
};

struct Functions {
  void* (*create)();  // a reset streaming state
  void (*destroy)(void* state);
  void (*update)(void* state, const void* data, size_t size);
  Digest (*digest)(const void* state);
  Digest (*oneshot)(const void* data, size_t size);
  // Xxh3BlockFold's step: `blocks` blocks' sums added to acc (8 words, 64-byte aligned) in order,
  // XXH3's scramble after each of the first `scrambled`.
  void (*fold)(uint64_t* acc, const uint64_t* sums, size_t blocks, size_t scrambled);
  // Xxh3PieceSums::accumulate: `count` stripes from the piece's stripe `first` at data into acc
  // (64-byte aligned), stored to out + (block) * 8 and zeroed after each block's 16th.
  void (*piece_stripes)(uint64_t* acc, const void* data, size_t first, size_t count, uint64_t* out);
};

const Functions& baseline();
#if defined(MOEPREP_X86_SIMD)
const Functions& avx2();
const Functions& avx512();
#endif

}  // namespace moeprep::xxh3_variant
