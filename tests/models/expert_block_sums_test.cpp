// ExpertBlockSums keeps an expert's sums only from its pass to its fold: a slot serves one
// expert after another, so the memory is that of the experts in flight, not of the tensor.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "core/hash.h"
#include "models/expert_block_sums.h"

namespace moeprep::models {
namespace {

std::vector<uint8_t> bytes_of(size_t n) {
  std::vector<uint8_t> b(n);
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (auto& v : b) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    v = static_cast<uint8_t>(x);
  }
  return b;
}

void sum_expert(ExpertBlockSums& sums, int64_t e, const uint8_t* slice) {
  auto piece = sums.piece(e);
  ASSERT_TRUE(piece);
  piece->accumulate(slice, 0, piece->regular_stripes());
  piece->finish();
  sums.done(e);
}

TEST(ExpertBlockSums, ASlotServesExpertAfterExpertAndTheFoldIsTheDigest) {
  constexpr uint64_t kPer = 3 * 1024;
  constexpr int64_t kExperts = 8;
  const std::vector<uint8_t> data = bytes_of(kPer * kExperts);
  ExpertBlockSums sums(kPer, kExperts);
  sums.want();
  Xxh3BlockFold fold(sums.length());
  // Two experts in flight at a time, folded in order, as the executor does with its units.
  sum_expert(sums, 0, data.data());
  for (int64_t e = 0; e < kExperts; ++e) {
    if (e + 1 < kExperts) sum_expert(sums, e + 1, data.data() + kPer * (e + 1));
    sums.fold(fold, e, 1, data.data() + kPer * e);
  }
  EXPECT_EQ(sums.peak_slots_in_use(), 2u);
  EXPECT_EQ(fold.hex_digest(data.data() + data.size() - 64), xxh3_128_hex(data.data(), data.size()));
  EXPECT_FALSE(sums.piece(3));  // folded: a second pass over it sums nothing
}

TEST(ExpertBlockSums, AnExpertWithoutSumsIsFoldedFromItsBytesAndTakesNoSlot) {
  constexpr uint64_t kPer = 2 * 1024;
  constexpr int64_t kExperts = 4;
  const std::vector<uint8_t> data = bytes_of(kPer * kExperts);
  ExpertBlockSums sums(kPer, kExperts);
  Xxh3BlockFold fold(sums.length());
  sums.fold(fold, 0, 1, data.data());  // before want(): no pass summed it
  sums.want();
  sum_expert(sums, 1, data.data() + kPer);
  sum_expert(sums, 2, data.data() + 2 * kPer);  // a second slot: expert 1 is not folded yet
  sums.fold(fold, 1, 2, data.data() + kPer);
  sum_expert(sums, 3, data.data() + 3 * kPer);  // reuses one
  sums.fold(fold, 3, 1, data.data() + 3 * kPer);
  EXPECT_EQ(sums.peak_slots_in_use(), 2u);
  EXPECT_EQ(fold.hex_digest(data.data() + data.size() - 64), xxh3_128_hex(data.data(), data.size()));
  sums.release();
  EXPECT_EQ(sums.peak_slots_in_use(), 0u);
}

}  // namespace
}  // namespace moeprep::models
