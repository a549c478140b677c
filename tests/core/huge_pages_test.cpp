// prefer_huge_pages is advice: the buffer reads back what was written whatever the system does,
// and where transparent huge pages are left to the program ("madvise") or always on, the
// advised buffer is backed by some.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/huge_pages.h"
#include "thp_probe.h"

using namespace moeprep;
using moeprep::test::expect_huge_pages_at;

TEST(HugePages, AdvisedBufferKeepsItsBytesAndGetsHugePagesWhereTheSystemAllows) {
  constexpr size_t kSize = (size_t{8} << 20) + 12345;  // not a whole number of huge pages
  std::unique_ptr<uint8_t[]> buffer(new uint8_t[kSize]);
  prefer_huge_pages(buffer.get(), kSize);
  for (size_t i = 0; i < kSize; ++i) buffer[i] = static_cast<uint8_t>(i * 7 + 3);
  for (size_t i = 0; i < kSize; ++i) ASSERT_EQ(buffer[i], static_cast<uint8_t>(i * 7 + 3)) << i;
  // Smaller than a huge page, and empty: nothing to advise, nothing to break.
  uint8_t small[100] = {};
  prefer_huge_pages(small, sizeof small);
  prefer_huge_pages(nullptr, 0);
  EXPECT_EQ(small[99], 0);

  expect_huge_pages_at(buffer.get() + kSize / 2, "an 8 MiB advised buffer");
}

TEST(HugePages, ResizeOnHugePagesIsResize) {
  // Grown past its capacity: the old bytes kept, the new ones zero, as std::vector::resize; and
  // the fresh storage advised, where the system allows huge pages.
  std::vector<uint8_t> v(1000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>(i * 13 + 1);
  constexpr size_t kSize = (size_t{8} << 20) + 777;
  resize_on_huge_pages(v, kSize);
  ASSERT_EQ(v.size(), kSize);
  for (size_t i = 0; i < 1000; ++i) ASSERT_EQ(v[i], static_cast<uint8_t>(i * 13 + 1)) << i;
  for (size_t i = 1000; i < kSize; ++i) ASSERT_EQ(v[i], 0) << i;
  // Shrunk, and grown within its capacity: plain resize.
  resize_on_huge_pages(v, 10);
  ASSERT_EQ(v.size(), 10u);
  EXPECT_EQ(v[9], static_cast<uint8_t>(9 * 13 + 1));
  resize_on_huge_pages(v, 20);
  ASSERT_EQ(v.size(), 20u);
  EXPECT_EQ(v[19], 0);

  expect_huge_pages_at(v.data() + kSize / 2, "an 8 MiB buffer grown on huge pages");
}
