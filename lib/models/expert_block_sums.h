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
  // The most experts whose sums were held at once (each from its piece() to its fold()).
  size_t peak_slots_in_use() const { return peak_in_use_; }

 private:
  uint64_t blocks_per_expert() const { return per_expert_ / Xxh3BlockFold::kBlockBytes; }

  const uint64_t per_expert_;
  const int64_t experts_;
  std::unique_ptr<std::atomic<bool>[]> done_;
  std::mutex mutex_;
  bool wanted_ = false, released_ = false;
  // An expert's sums (64 bytes a block) live in a slot from its piece() until fold() has taken
  // them, and the slot then serves a later expert: passes run only a few units ahead of the
  // fold (17 and 37 slots at most for Gemma4's 128 experts at the bench shape). One buffer for the
  // whole tensor had taken 64 bytes a KiB of it, fresh pages the kernel zeroed (50 MB for
  // GPT-OSS BF16's gate_up_proj at the bench shape).
  // Slots are carved from buffers of whole huge pages, as many as fit in one: on the dev VM a
  // slot of its own on small pages cost more in page faults and TLB misses than the whole-tensor
  // buffer it replaced (Gemma4: +0.12 s CPU).
  std::vector<UninitializedBytes> slot_pages_;
  std::vector<uint64_t*> slots_;  // each blocks_per_expert() * 8 words, in slot_pages_
  std::vector<int32_t> free_slots_;
  size_t peak_in_use_ = 0;
  std::vector<int32_t> slot_of_;  // per expert: its slot, or -1
  std::vector<bool> folded_;      // per expert: fold() has taken it, so no pass sums it again
  std::vector<uint64_t> scratch_;  // fold's sums of an expert without them
};

}  // namespace moeprep::models
