#pragma once
// The XXH3 of a checkpoint tensor that holds every expert in order ([E, ...], Gemma4's experts),
// made from block sums (core/hash.h, Xxh3BlockFold) that the workers quantizing each expert's
// slice accumulate in their own loop (Xxh3PieceSums), and folded in expert order by the reader
// that needs the digest. Without them that reader hashed the whole tensor a second time, from
// memory, on one thread.
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "core/hash.h"
#include "core/uninitialized_bytes.h"

namespace moeprep::models {

class ExpertBlockSums {
 public:
  // Whether a tensor of `experts` slices of `per_expert` bytes can be summed so: each slice
  // whole XXH3 blocks (1 KiB), and a quantizer that hashes in its loop.
  static bool usable(uint64_t per_expert, int64_t experts);
  ExpertBlockSums(uint64_t per_expert, int64_t experts);

  uint64_t length() const { return per_expert_ * static_cast<uint64_t>(experts_); }
  // Asks the quantizing passes to sum their slices from now on. Until then (verify's passes, or
  // a tensor whose digest is known) piece() gives nothing and no memory is taken.
  void want();
  // Expert e's piece for its quantizing pass to accumulate and finish(), then done(e); nothing
  // when not wanted or already released.
  std::optional<Xxh3PieceSums> piece(int64_t e);
  void done(int64_t e);
  // Folds experts [first, first + count) in order, their bytes at `slice`: the sums their passes
  // made, and for an expert without them (its slice read by no quantizing pass yet) sums made
  // here from its bytes.
  void fold(Xxh3BlockFold& fold, int64_t first, int64_t count, const uint8_t* slice);
  // The sums are no longer needed: their memory goes, and piece() gives nothing from now on.
  void release();

 private:
  uint64_t blocks_per_expert() const { return per_expert_ / Xxh3BlockFold::kBlockBytes; }

  const uint64_t per_expert_;
  const int64_t experts_;
  std::unique_ptr<std::atomic<bool>[]> done_;
  std::mutex mutex_;
  bool wanted_ = false, released_ = false;
  UninitializedBytes sums_;  // 64 bytes a block, made when the first piece is asked for
  std::vector<uint64_t> scratch_;  // fold's sums of an expert without them
};

}  // namespace moeprep::models
