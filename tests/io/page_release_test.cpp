// Releasing and advising mapped pages: which bytes each call reaches. Private anonymous memory
// shows a release as zeros (MADV_DONTNEED discards it), so the ranges can be checked byte for
// byte; a file mapping would read the same bytes back from the page cache.
#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "io/page_release.h"

namespace moeprep::io {
namespace {

constexpr size_t kHuge = size_t{2} << 20;

// 8 MiB of private anonymous memory starting on a 2 MiB boundary, every byte 0xAB.
class AlignedRegion {
 public:
  AlignedRegion() {
    raw_size_ = 5 * kHuge;
    raw_ = mmap(nullptr, raw_size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw_ == MAP_FAILED) raw_ = nullptr;
    const uintptr_t p = (reinterpret_cast<uintptr_t>(raw_) + kHuge - 1) / kHuge * kHuge;
    base_ = reinterpret_cast<uint8_t*>(p);
    if (raw_) std::memset(base_, 0xAB, size());
  }
  ~AlignedRegion() {
    if (raw_) munmap(raw_, raw_size_);
  }
  bool ok() const { return raw_ != nullptr; }
  uint8_t* base() const { return base_; }
  static size_t size() { return 4 * kHuge; }
  // Offsets [first, end) that read zero; the others must still read 0xAB.
  std::string changed_bytes(size_t first, size_t end) const {
    for (size_t i = 0; i < size(); ++i) {
      const uint8_t want = i >= first && i < end ? 0 : 0xAB;
      if (base_[i] != want) return "byte " + std::to_string(i) + " is " + std::to_string(base_[i]);
    }
    return "";
  }

 private:
  void* raw_ = nullptr;
  size_t raw_size_ = 0;
  uint8_t* base_ = nullptr;
};

TEST(PageRelease, WholePagesInsideTheRangeGoAndPartPagesStay) {
  AlignedRegion r;
  ASSERT_TRUE(r.ok());
  release_mapped_pages({r.base() + 4096 + 100, 3 * 4096});
  // Pages 2 and 3 lie wholly inside [4196, 16484); pages 1 and 4 only in part.
  EXPECT_EQ(r.changed_bytes(2 * 4096, 4 * 4096), "");
}

TEST(PageRelease, AroundWidensToTheHugePagesAroundTheRange) {
  AlignedRegion r;
  ASSERT_TRUE(r.ok());
  const ByteView mapping{r.base(), AlignedRegion::size()};
  // 1.5 MiB .. 3.25 MiB: the huge pages [0, 2 MiB) and [2 MiB, 4 MiB) around it go whole.
  release_mapped_pages_around({r.base() + 3 * kHuge / 4, 7 * kHuge / 8}, mapping);
  EXPECT_EQ(r.changed_bytes(0, 2 * kHuge), "");
}

TEST(PageRelease, AroundNeverLeavesTheMapping) {
  AlignedRegion r;
  ASSERT_TRUE(r.ok());
  // The mapping begins and ends inside huge pages: widening stops at its first and last whole
  // 4 KiB page, and the bytes outside it (another mapping's, in a process) stay.
  const ByteView mapping{r.base() + kHuge + 8192, kHuge / 2 - 8192 + 4096 + 10};
  release_mapped_pages_around({r.base() + kHuge + 100000, 1000}, mapping);
  EXPECT_EQ(r.changed_bytes(kHuge + 8192, kHuge + kHuge / 2 + 4096), "");
  // An empty range releases nothing.
  release_mapped_pages_around({r.base() + 100000, 0}, {r.base(), AlignedRegion::size()});
  EXPECT_EQ(r.changed_bytes(kHuge + 8192, kHuge + kHuge / 2 + 4096), "");
}

}  // namespace
}  // namespace moeprep::io
