#include "models/expert_block_sums.h"

#include <algorithm>
#include <string>

#include "core/error.h"
#include "core/huge_pages.h"
#include "formats/mxfp4_quantize.h"

namespace moeprep::models {

namespace {

// Slices of whole XXH3 blocks, of a tensor XXH3's long algorithm hashes.
bool whole_blocks(uint64_t per_expert, int64_t experts) {
  return experts > 0 && per_expert > 0 && per_expert % Xxh3BlockFold::kBlockBytes == 0 &&
         Xxh3BlockFold::fits(per_expert * static_cast<uint64_t>(experts));
}

}  // namespace

bool ExpertBlockSums::usable(uint64_t per_expert, int64_t experts) {
  // The portable stripe accumulation is far slower than the reader's one pass of XXH3.
  return whole_blocks(per_expert, experts) && mxfp4_quantizer_hashes_in_pass();
}

ExpertBlockSums::ExpertBlockSums(uint64_t per_expert, int64_t experts)
    : per_expert_(per_expert), experts_(experts) {
  if (!whole_blocks(per_expert, experts))
    throw_internal("ExpertBlockSums: " + std::to_string(experts) + " slices of " + std::to_string(per_expert) +
                   " bytes");
  done_.reset(new std::atomic<bool>[static_cast<size_t>(experts)]);
  for (int64_t e = 0; e < experts; ++e) done_[static_cast<size_t>(e)].store(false, std::memory_order_relaxed);
  slot_of_.assign(static_cast<size_t>(experts), -1);
  folded_.assign(static_cast<size_t>(experts), false);
}

void ExpertBlockSums::want() {
  std::lock_guard<std::mutex> lock(mutex_);
  wanted_ = !released_;
}

std::optional<Xxh3PieceSums> ExpertBlockSums::piece(int64_t e) {
  if (e < 0 || e >= experts_) throw_internal("ExpertBlockSums: expert " + std::to_string(e));
  std::lock_guard<std::mutex> lock(mutex_);
  const auto i = static_cast<size_t>(e);
  if (!wanted_ || released_ || folded_[i]) return std::nullopt;
  const uint64_t blocks = blocks_per_expert();
  if (slot_of_[i] < 0) {  // a second pass over the expert writes the same sums into its slot
    if (free_slots_.empty()) {
      const size_t slot_bytes = static_cast<size_t>(blocks) * 64;
      const size_t count = std::max<size_t>(1, kHugePageBytes / slot_bytes);
      UninitializedBytes& pages = slot_pages_.emplace_back();
      pages.resize_discarding(count * slot_bytes);
      for (size_t k = count; k-- > 0;) {
        free_slots_.push_back(static_cast<int32_t>(slots_.size()));
        slots_.push_back(reinterpret_cast<uint64_t*>(pages.data() + k * slot_bytes));
      }
    }
    slot_of_[i] = free_slots_.back();
    free_slots_.pop_back();
    peak_in_use_ = std::max(peak_in_use_, slots_.size() - free_slots_.size());
  }
  return Xxh3PieceSums(length(), blocks * static_cast<uint64_t>(e), blocks, slots_[static_cast<size_t>(slot_of_[i])]);
}

void ExpertBlockSums::done(int64_t e) { done_[static_cast<size_t>(e)].store(true, std::memory_order_release); }

void ExpertBlockSums::fold(Xxh3BlockFold& fold, int64_t first, int64_t count, const uint8_t* slice) {
  if (first < 0 || count < 0 || first + count > experts_)
    throw_internal("ExpertBlockSums: experts [" + std::to_string(first) + ", " + std::to_string(first + count) + ")");
  const uint64_t blocks = blocks_per_expert();
  for (int64_t e = first; e < first + count; ++e) {
    const uint64_t first_block = blocks * static_cast<uint64_t>(e);
    const auto i = static_cast<size_t>(e);
    if (done_[i].load(std::memory_order_acquire)) {
      // Made by a pass that has finished (the caller waited for it): only the bookkeeping needs
      // the lock (a worker may be adding a slot for another expert).
      const uint64_t* sums;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        sums = slots_[static_cast<size_t>(slot_of_[i])];
      }
      fold.fold(sums, blocks);
      std::lock_guard<std::mutex> lock(mutex_);
      free_slots_.push_back(slot_of_[i]);
      slot_of_[i] = -1;
      folded_[i] = true;
    } else {
      scratch_.resize(static_cast<size_t>(blocks) * 8);
      Xxh3BlockFold::block_sums(length(), slice + per_expert_ * static_cast<uint64_t>(e - first), first_block, blocks,
                                scratch_.data());
      fold.fold(scratch_.data(), blocks);
      std::lock_guard<std::mutex> lock(mutex_);
      folded_[i] = true;  // a pass that failed part-way keeps its slot until release()
    }
  }
}

void ExpertBlockSums::release() {
  std::lock_guard<std::mutex> lock(mutex_);
  released_ = true;
  for (int64_t e = 0; e < experts_; ++e) done_[static_cast<size_t>(e)].store(false, std::memory_order_relaxed);
  slots_ = {};
  free_slots_ = {};
  slot_pages_ = std::vector<UninitializedBytes>();
  peak_in_use_ = 0;
  slot_of_.assign(static_cast<size_t>(experts_), -1);
  scratch_ = {};
}

}  // namespace moeprep::models
