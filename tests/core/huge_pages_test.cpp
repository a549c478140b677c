// prefer_huge_pages is advice: the buffer reads back what was written whatever the system does,
// and where transparent huge pages are left to the program ("madvise") or always on, the
// advised buffer is backed by some.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

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
