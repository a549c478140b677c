#include <gtest/gtest.h>

#include "core/error.h"
#include "core/hash.h"
#include "core/shape.h"

using namespace moeprep;

TEST(Shape, NumelAndOverflow) {
  EXPECT_EQ(checked_numel({2, 3, 4}, "t"), 24);
  EXPECT_EQ(checked_numel({}, "t"), 1);
  EXPECT_EQ(checked_numel({5, 0, 7}, "t"), 0);
  try {
    checked_numel({1LL << 40, 1LL << 40}, "x.bin: tensor 'w'");
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::BadInput);
    EXPECT_NE(std::string(e.what()).find("x.bin: tensor 'w'"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("overflows"), std::string::npos);
  }
  EXPECT_THROW(checked_numel({-1}, "t"), Error);
}

TEST(Hash, Xxh3StreamingEqualsOneShot) {
  std::string data(100000, 'a');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 131 + 7);
  Xxh3Hasher h;
  h.update(data.data(), 12345);
  h.update(data.data() + 12345, data.size() - 12345);
  EXPECT_EQ(h.hex_digest(), xxh3_128_hex(data.data(), data.size()));
  EXPECT_EQ(h.hex_digest().size(), 32u);
  // Known value: XXH3-128 of the empty input (xxhsum -H2 of an empty file).
  EXPECT_EQ(xxh3_128_hex("", 0), "99aa06d3014798d86001c324468d497f");
}
