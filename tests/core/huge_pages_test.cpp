// prefer_huge_pages is advice: the buffer reads back what was written whatever the system does,
// and where transparent huge pages are left to the program ("madvise") or always on, the
// advised buffer is backed by some.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstdint>
#include <functional>
#include <cstdlib>
#include <memory>
#include <string>

#include "core/huge_pages.h"
#include "thp_probe.h"

using namespace moeprep;
using moeprep::test::expect_huge_pages_at;

TEST(HugePages, AdvisedBufferKeepsItsBytesAndGetsHugePagesWhereTheSystemAllows) {
  // Fresh pages of a mapping of its own, starting off a huge-page boundary. A buffer from new[]
  // may be heap memory touched before (glibc serves large blocks from its heap once one has been
  // freed), whose small pages the advice does not replace: that made this test fail in a
  // process that had run others first.
  constexpr size_t kSize = (size_t{8} << 20) + 12345;  // not a whole number of huge pages
  constexpr size_t kMapped = kSize + 3 * kHugePageBytes;
  void* map = mmap(nullptr, kMapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(map, MAP_FAILED);
  const std::unique_ptr<void, std::function<void(void*)>> unmap(map, [](void* p) { munmap(p, kMapped); });
  uint8_t* const buffer = reinterpret_cast<uint8_t*>(huge_page_ceil(reinterpret_cast<uintptr_t>(map))) + 3 * 4096 + 16;
  prefer_huge_pages(buffer, kSize);
  for (size_t i = 0; i < kSize; ++i) buffer[i] = static_cast<uint8_t>(i * 7 + 3);
  for (size_t i = 0; i < kSize; ++i) ASSERT_EQ(buffer[i], static_cast<uint8_t>(i * 7 + 3)) << i;
  // Smaller than a huge page, and empty: nothing to advise, nothing to break.
  uint8_t small[100] = {};
  prefer_huge_pages(small, sizeof small);
  prefer_huge_pages(nullptr, 0);
  EXPECT_EQ(small[99], 0);

  expect_huge_pages_at(buffer + kSize / 2, "an 8 MiB advised buffer");
}
