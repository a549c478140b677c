#include "models/expert_block_sums.h"

#include <string>

#include "core/error.h"
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
}

void ExpertBlockSums::want() {
  std::lock_guard<std::mutex> lock(mutex_);
  wanted_ = !released_;
}

std::optional<Xxh3PieceSums> ExpertBlockSums::piece(int64_t e) {
  if (e < 0 || e >= experts_) throw_internal("ExpertBlockSums: expert " + std::to_string(e));
  std::lock_guard<std::mutex> lock(mutex_);
  if (!wanted_ || released_) return std::nullopt;
  const uint64_t blocks = blocks_per_expert();
  if (sums_.size() == 0) sums_.resize_discarding(static_cast<size_t>(blocks * static_cast<uint64_t>(experts_)) * 64);
  auto* all = reinterpret_cast<uint64_t*>(sums_.data());
  const uint64_t first = blocks * static_cast<uint64_t>(e);
  return Xxh3PieceSums(length(), first, blocks, all + first * 8);
}

void ExpertBlockSums::done(int64_t e) { done_[static_cast<size_t>(e)].store(true, std::memory_order_release); }

void ExpertBlockSums::fold(Xxh3BlockFold& fold, int64_t first, int64_t count, const uint8_t* slice) {
  if (first < 0 || count < 0 || first + count > experts_)
    throw_internal("ExpertBlockSums: experts [" + std::to_string(first) + ", " + std::to_string(first + count) + ")");
  const uint64_t blocks = blocks_per_expert();
  for (int64_t e = first; e < first + count; ++e) {
    const uint64_t first_block = blocks * static_cast<uint64_t>(e);
    if (done_[static_cast<size_t>(e)].load(std::memory_order_acquire)) {
      // Made by a pass that has finished (the caller waited for it), so no lock is needed.
      fold.fold(reinterpret_cast<const uint64_t*>(sums_.data()) + first_block * 8, blocks);
    } else {
      scratch_.resize(static_cast<size_t>(blocks) * 8);
      Xxh3BlockFold::block_sums(length(), slice + per_expert_ * static_cast<uint64_t>(e - first), first_block, blocks,
                                scratch_.data());
      fold.fold(scratch_.data(), blocks);
    }
  }
}

void ExpertBlockSums::release() {
  std::lock_guard<std::mutex> lock(mutex_);
  released_ = true;
  for (int64_t e = 0; e < experts_; ++e) done_[static_cast<size_t>(e)].store(false, std::memory_order_relaxed);
  sums_ = UninitializedBytes();
  scratch_ = {};
}

}  // namespace moeprep::models
