// prefer_huge_pages is advice: the buffer reads back what was written whatever the system does,
// and where transparent huge pages are left to the program ("madvise") or always on, the
// advised buffer is backed by some.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "core/huge_pages.h"

using namespace moeprep;

namespace {

// The kernel's setting, e.g. "always [madvise] never" -> "madvise"; "" where there is none.
std::string thp_mode() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t open = text.find('['), close = text.find(']');
  return open == std::string::npos || close == std::string::npos ? "" : text.substr(open + 1, close - open - 1);
}

// AnonHugePages of the smaps entry holding `p`, in kB; -1 where it cannot be read.
long anon_huge_kb_at(const void* p) {
  std::ifstream in("/proc/self/smaps");
  const auto at = reinterpret_cast<uintptr_t>(p);
  std::string line;
  bool inside = false;
  while (std::getline(in, line)) {
    uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
      inside = lo <= at && at < hi;
      continue;
    }
    if (inside && line.rfind("AnonHugePages:", 0) == 0) return std::strtol(line.c_str() + 14, nullptr, 10);
  }
  return -1;
}

// Where the system lets a program ask for huge pages, at least one backs the mapping at `p`;
// skipped elsewhere.
void expect_huge_pages_at(const void* p, const std::string& what) {
  const std::string mode = thp_mode();
  if (mode != "madvise" && mode != "always") GTEST_SKIP() << "transparent huge pages are '" << mode << "' here";
  const long kb = anon_huge_kb_at(p);
  if (kb < 0) GTEST_SKIP() << "no /proc/self/smaps";
  EXPECT_GE(kb, 2048) << what << " has no huge page (THP '" << mode << "')";
}

}  // namespace

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
