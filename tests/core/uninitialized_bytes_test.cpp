// UninitializedBytes: what convert's unit buffers rely on. Within its capacity a buffer keeps
// its bytes; past it the storage is new, whole huge pages, advised, and nothing is copied or
// zero-filled (the sanitizer build fills it with 0xA5 instead, so that unwritten bytes show).
#include <gtest/gtest.h>

#include <cstdint>
#include <utility>

#include "core/huge_pages.h"
#include "core/uninitialized_bytes.h"
#include "thp_probe.h"

using namespace moeprep;

TEST(UninitializedBytes, KeepsItsBytesWithinItsCapacity) {
  UninitializedBytes b;
  EXPECT_EQ(b.size(), 0u);
  EXPECT_EQ(b.capacity(), 0u);
  EXPECT_EQ(b.data(), nullptr);
  b.resize_discarding(1000);
  ASSERT_NE(b.data(), nullptr);
  for (size_t i = 0; i < 1000; ++i) b.data()[i] = static_cast<uint8_t>(i * 13 + 1);
  const uint8_t* storage = b.data();
  b.resize_discarding(10);
  b.resize_discarding(b.capacity());
  EXPECT_EQ(b.data(), storage);
  EXPECT_EQ(b.size(), b.capacity());
  for (size_t i = 0; i < 1000; ++i) ASSERT_EQ(b.data()[i], static_cast<uint8_t>(i * 13 + 1)) << i;
}

TEST(UninitializedBytes, GrowsOntoWholeAlignedHugePages) {
  UninitializedBytes b;
  constexpr size_t kSize = (size_t{8} << 20) + 777;
  b.resize_discarding(kSize);
  ASSERT_EQ(b.size(), kSize);
  EXPECT_EQ(b.capacity() % kHugePageBytes, 0u);
  EXPECT_GE(b.capacity(), kSize);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % kHugePageBytes, 0u);
#ifdef MOEPREP_POISON_UNINITIALIZED
  for (size_t i = 0; i < b.capacity(); ++i) ASSERT_EQ(b.data()[i], 0xA5) << i;
#endif
  for (size_t i = 0; i < kSize; ++i) b.data()[i] = static_cast<uint8_t>(i * 7 + 3);
  for (size_t i = 0; i < kSize; ++i) ASSERT_EQ(b.data()[i], static_cast<uint8_t>(i * 7 + 3)) << i;
  test::expect_huge_pages_at(b.data() + kSize / 2, "an 8 MiB unit buffer");
}

TEST(UninitializedBytes, MovedFromIsEmpty) {
  UninitializedBytes a;
  a.resize_discarding(100);
  a.data()[99] = 42;
  const size_t capacity = a.capacity();
  UninitializedBytes b(std::move(a));
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(a.size(), 0u);
  EXPECT_EQ(a.capacity(), 0u);
  EXPECT_EQ(b.size(), 100u);
  EXPECT_EQ(b.capacity(), capacity);
  EXPECT_EQ(b.data()[99], 42);
  UninitializedBytes c;
  c = std::move(b);
  EXPECT_EQ(b.capacity(), 0u);
  EXPECT_EQ(c.data()[99], 42);
}
