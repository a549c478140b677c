#pragma once
// Whether huge pages back a buffer, for the tests of buffers that ask for them: read from
// /proc/self/smaps, and skipped where the system leaves no such choice to a program.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "core/huge_pages.h"

namespace moeprep::test {

// The kernel's setting, e.g. "always [madvise] never" -> "madvise"; "" where there is none.
inline std::string thp_mode() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t open = text.find('['), close = text.find(']');
  return open == std::string::npos || close == std::string::npos ? "" : text.substr(open + 1, close - open - 1);
}

// AnonHugePages of the smaps entry holding `p`, in kB; -1 where it cannot be read.
inline long anon_huge_kb_at(const void* p) {
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

// Whether the system backs a fresh, advised, 2 MiB-aligned page with a huge page right now. It
// need not: with memory fragmented (right after a large allocation was freed, say) the fault
// falls back to small pages. The control that tells that apart from advice not given.
inline bool fresh_advised_page_gets_huge_page() {
  void* map = mmap(nullptr, 2 * kHugePageBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (map == MAP_FAILED) return false;
  auto* page = reinterpret_cast<uint8_t*>(huge_page_ceil(reinterpret_cast<uintptr_t>(map)));
  madvise(page, kHugePageBytes, MADV_HUGEPAGE);  // not prefer_huge_pages: the control must not depend on the code under test
  page[0] = 1;
  const long kb = anon_huge_kb_at(page);
  munmap(map, 2 * kHugePageBytes);
  return kb >= 2048;
}

// Where the system lets a program ask for huge pages, at least one backs the mapping at `p`;
// skipped elsewhere, and where a fresh advised control page gets none either (the system has
// none to give at that moment, which is not the code's doing).
inline void expect_huge_pages_at(const void* p, const std::string& what) {
  const std::string mode = thp_mode();
  if (mode != "madvise" && mode != "always") GTEST_SKIP() << "transparent huge pages are '" << mode << "' here";
  const long kb = anon_huge_kb_at(p);
  if (kb < 0) GTEST_SKIP() << "no /proc/self/smaps";
  if (kb < 2048 && !fresh_advised_page_gets_huge_page())
    GTEST_SKIP() << what << " has no huge page, and neither has a fresh advised control page: the system has none "
                 << "to give right now (THP '" << mode << "')";
  EXPECT_GE(kb, 2048) << what << " has no huge page, where a fresh advised control page gets one (THP '" << mode
                      << "')";
}

}  // namespace moeprep::test
