// XXH3-128 gives the same digest at every SIMD level this CPU runs (core/simd_level.h), one
// shot or streamed in any pieces, and the published digests of known inputs.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/hash.h"
#include "core/simd_level.h"
#include "simd_levels.h"

using namespace moeprep;

using moeprep::testing::for_each_simd_level;

namespace {

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

std::string streamed(const std::vector<uint8_t>& data, uint32_t seed) {
  std::mt19937 rng(seed);
  Xxh3Hasher h;
  size_t at = 0;
  while (at < data.size()) {
    // Now and then a piece of 1 MiB or more: read from memory, it takes AVX2's loop where the CPU
    // has AVX-512, on the same state as the pieces before and after it.
    const size_t draw = rng() % 7;
    const size_t piece = std::min<size_t>(data.size() - at, draw == 0   ? (size_t{1} << 20) + rng() % (size_t{1} << 20)
                                                            : draw == 1 ? rng() % 70000
                                                                        : rng() % 300);
    h.update(data.data() + at, piece);
    at += piece;
  }
  return h.hex_digest();
}

}  // namespace

TEST(Xxh3, KnownDigests) {
  // XXH3-128 of the empty input and of "abc", as xxhsum -H2 prints them.
  EXPECT_EQ(xxh3_128_hex("", 0), "99aa06d3014798d86001c324468d497f");
  EXPECT_EQ(xxh3_128_hex("abc", 3), "06b05ab6733a618578af5f94892f3950");
  Xxh3Hasher h;
  EXPECT_EQ(h.hex_digest(), "99aa06d3014798d86001c324468d497f");
}

TEST(Xxh3, EveryLevelGivesTheBaselineDigestOneShotAndStreamed) {
  // Lengths 0..10000 at random (every size class of XXH3: <= 16, <= 128, <= 240, longer,
  // several stripes and blocks), all of 0..300, and a few MB.
  std::mt19937 rng(11);
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 300; ++n) lengths.push_back(n);
  for (int i = 0; i < 200; ++i) lengths.push_back(rng() % 10001);
  lengths.push_back(1024);
  lengths.push_back(10000);
  lengths.push_back((3u << 20) + 17);
  lengths.push_back(8u << 20);
  const std::vector<uint8_t> pool = random_bytes((8u << 20) + 64, 5);

  const SimdLevel before = cap_simd_level(SimdLevel::Baseline);
  std::vector<std::string> want;
  for (size_t i = 0; i < lengths.size(); ++i) want.push_back(xxh3_128_hex(pool.data() + i % 64, lengths[i]));
  for (SimdLevel level : supported_simd_levels()) {
    cap_simd_level(level);
    SCOPED_TRACE(simd_level_name(level));
    for (size_t i = 0; i < lengths.size(); ++i) {
      ASSERT_EQ(xxh3_128_hex(pool.data() + i % 64, lengths[i]), want[i]) << "length " << lengths[i];
      if (lengths[i] <= 10000 || i + 1 == lengths.size()) {
        const std::vector<uint8_t> copy(pool.begin() + static_cast<long>(i % 64),
                                        pool.begin() + static_cast<long>(i % 64 + lengths[i]));
        ASSERT_EQ(streamed(copy, static_cast<uint32_t>(i)), want[i]) << "streamed, length " << lengths[i];
      }
    }
  }
  cap_simd_level(before);
}

TEST(Xxh3, AHasherGivesTheSameDigestWhenTheLevelChangesBetweenUpdates) {
  const std::vector<uint8_t> data = random_bytes(100000, 9);
  const std::string want = xxh3_128_hex(data.data(), data.size());
  const SimdLevel before = simd_level();
  Xxh3Hasher h;
  h.update(data.data(), 50000);
  cap_simd_level(SimdLevel::Baseline);
  h.update(data.data() + 50000, 50000);
  EXPECT_EQ(h.hex_digest(), want);
  cap_simd_level(before);
}

TEST(SimdLevel, NamesAndTheEnvironmentCap) {
  EXPECT_STREQ(simd_level_name(SimdLevel::Baseline), "baseline");
  EXPECT_STREQ(simd_level_name(SimdLevel::Avx2), "avx2");
  EXPECT_STREQ(simd_level_name(SimdLevel::Avx512), "avx512");
  const SimdLevel before = cap_simd_level(SimdLevel::Avx512);
  // Capping above what the CPU has gives what it has.
  EXPECT_EQ(simd_level(), cpu_simd_level());
  EXPECT_EQ(cap_simd_level(SimdLevel::Baseline), cpu_simd_level());
  EXPECT_EQ(simd_level(), SimdLevel::Baseline);
  cap_simd_level(before);
}

TEST(Xxh3, StripesAccumulatedInAnyPiecesGiveTheDigestOfTheBytes) {
  // Every length from the first that fits to past three scramble blocks, whole 1 KiB blocks
  // (the last stripe ends a block) and partial ones; stripes taken in pieces of 1 to 37.
  const std::vector<uint8_t> data = random_bytes(4096 + 64, 11);
  for (uint64_t length = 256; length <= data.size(); length += 64) {
    ASSERT_TRUE(Xxh3StripeHash::fits(length));
    Xxh3StripeHash h(length);
    const int64_t regular = h.regular_stripes();
    ASSERT_EQ(regular, static_cast<int64_t>(length / 64) - 1);
    for (int64_t s = 0, piece = 1; s < regular; s += piece, piece = piece % 37 + 1)
      h.accumulate(data.data() + s * 64, s, std::min(piece, regular - s));
    EXPECT_EQ(h.hex_digest(data.data() + length - 64), xxh3_128_hex(data.data(), length)) << length;
  }
  EXPECT_FALSE(Xxh3StripeHash::fits(240));  // XXH3's mid-size algorithm
  EXPECT_FALSE(Xxh3StripeHash::fits(300));
  EXPECT_THROW(Xxh3StripeHash(192), Error);
  Xxh3StripeHash h(256);
  EXPECT_THROW(h.accumulate(data.data(), 2, 2), Error);  // past the regular stripes
}

TEST(Xxh3, BlockSumsComputedInAnyOrderAndFoldedInOrderGiveTheDigestOfTheBytes) {
  // Lengths from the first that fits past three blocks: whole blocks (the last block's last
  // stripe is the input's last), partial ones, lengths not a multiple of 64 (the last stripe
  // overlaps the one before); blocks summed back to front in pieces of 1 to 3, at every SIMD
  // level this CPU runs, and folded in pieces of 1 to 2.
  const std::vector<uint8_t> data = random_bytes(3 * 1024 + 200, 12);
  for_each_simd_level([&] {
    for (uint64_t length = 241; length <= data.size(); length += length < 1100 ? 1 : 37) {
      ASSERT_TRUE(Xxh3BlockFold::fits(length));
      const uint64_t blocks = Xxh3BlockFold::blocks(length);
      ASSERT_EQ(blocks, (length - 1) / 1024 + 1);
      std::vector<uint64_t> sums(blocks * 8, 0xdeadbeef);
      for (uint64_t end = blocks, piece = 1; end > 0; end -= std::min(piece, end), piece = piece % 3 + 1) {
        const uint64_t first = end - std::min(piece, end);
        Xxh3BlockFold::block_sums(length, data.data() + first * 1024, first, end - first, sums.data() + first * 8);
      }
      Xxh3BlockFold h(length);
      for (uint64_t b = 0; b < blocks; b += 2) h.fold(sums.data() + b * 8, std::min<uint64_t>(2, blocks - b));
      EXPECT_EQ(h.folded(), blocks);
      ASSERT_EQ(h.hex_digest(data.data() + length - 64), xxh3_128_hex(data.data(), length)) << length;
    }
  });
  EXPECT_FALSE(Xxh3BlockFold::fits(240));
  EXPECT_THROW(Xxh3BlockFold(240), Error);
  uint64_t sums[16];
  EXPECT_THROW(Xxh3BlockFold::block_sums(2048, data.data(), 1, 2, sums), Error);  // past the last block
  Xxh3BlockFold h(2048);
  EXPECT_THROW(h.hex_digest(data.data() + 2048 - 64), Error);  // nothing folded yet
  Xxh3BlockFold::block_sums(2048, data.data(), 0, 2, sums);
  EXPECT_THROW(h.fold(sums, 3), Error);
  h.fold(sums, 2);
  EXPECT_EQ(h.hex_digest(data.data() + 2048 - 64), xxh3_128_hex(data.data(), 2048));
}

TEST(Xxh3, PieceSumsAccumulatedStripeByStripeAndFoldedGiveTheDigestOfTheBytes) {
  // Inputs cut into pieces of 1 or 2 blocks, each accumulated in runs of 1 to 5 stripes as a
  // reader would, then finished: the last piece's partial block (or a block with no regular
  // stripe, at lengths of 1024 n + 1 .. 64) comes from finish(). Folded in order, the digest,
  // at every SIMD level this CPU runs.
  const std::vector<uint8_t> data = random_bytes(4 * 1024 + 100, 13);
  for_each_simd_level([&] {
    for (uint64_t length = 241; length <= data.size(); length += length < 1300 ? 7 : 61) {
      const uint64_t blocks = Xxh3BlockFold::blocks(length);
      std::vector<uint64_t> sums(blocks * 8, 0xdeadbeef);
      for (uint64_t first = 0, n = 1; first < blocks; first += n, n = n % 2 + 1) {
        n = std::min(n, blocks - first);
        Xxh3PieceSums piece(length, first, n, sums.data() + first * 8);
        EXPECT_LE(piece.regular_stripes(), static_cast<int64_t>(n * 16));
        for (int64_t s = 0, run = 1; s < piece.regular_stripes(); s += run, run = run % 5 + 1) {
          run = std::min<int64_t>(run, piece.regular_stripes() - s);
          piece.accumulate(data.data() + first * 1024 + s * 64, s, run);
        }
        piece.finish();
      }
      Xxh3BlockFold fold(length);
      fold.fold(sums.data(), blocks);
      ASSERT_EQ(fold.hex_digest(data.data() + length - 64), xxh3_128_hex(data.data(), length)) << length;
    }
  });
  uint64_t sums[16];
  EXPECT_THROW(Xxh3PieceSums(2048, 1, 2, sums), Error);  // past the last block
  EXPECT_THROW(Xxh3PieceSums(240, 0, 1, sums), Error);   // XXH3's mid-size algorithm
  Xxh3PieceSums piece(2048, 1, 1, sums);
  EXPECT_EQ(piece.regular_stripes(), 15);  // the input's last stripe is hex_digest's
  EXPECT_THROW(piece.accumulate(data.data(), 10, 6), Error);
}
