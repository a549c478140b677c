#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "formats/bf16_transpose.h"

using namespace moeprep;

namespace {

// A block of a larger matrix, from a source at an odd byte address, against the definition.
void check_block(int64_t src_rows, int64_t src_cols, int64_t r0, int64_t c0, int64_t rows, int64_t cols,
                 size_t byte_offset) {
  std::mt19937 rng(static_cast<uint32_t>(src_rows * 131 + src_cols * 7 + rows + byte_offset));
  std::vector<uint16_t> m(static_cast<size_t>(src_rows * src_cols));
  for (auto& v : m) v = static_cast<uint16_t>(rng());
  std::vector<uint8_t> bytes(m.size() * 2 + byte_offset);
  std::memcpy(bytes.data() + byte_offset, m.data(), m.size() * 2);
  const int64_t dst_stride = rows + 3;  // wider than the block: the stride is honoured
  std::vector<uint16_t> dst(static_cast<size_t>(cols * dst_stride), 0xdead);
  transpose_bf16(bytes.data() + byte_offset + (r0 * src_cols + c0) * 2, src_cols, rows, cols, dst.data(), dst_stride);
  for (int64_t c = 0; c < cols; ++c) {
    for (int64_t r = 0; r < rows; ++r)
      ASSERT_EQ(dst[c * dst_stride + r], m[(r0 + r) * src_cols + c0 + c]) << "r " << r << " c " << c;
    for (int64_t r = rows; r < dst_stride; ++r) ASSERT_EQ(dst[c * dst_stride + r], 0xdead) << "wrote past row " << r;
  }
}

TEST(Bf16Transpose, TilesAndEdgesMatchTheDefinition) {
  check_block(64, 96, 0, 0, 64, 96, 0);     // whole 8 x 8 tiles only
  check_block(64, 96, 8, 16, 40, 64, 1);    // a block inside, unaligned source
  check_block(37, 29, 3, 5, 31, 19, 1);     // both edges ragged
  check_block(5, 7, 0, 0, 5, 7, 0);         // smaller than a tile
  check_block(128, 64, 0, 8, 128, 8, 1);    // one tile column, as a chunk of 8 expert rows reads it
}

TEST(Bf16Transpose, EmptyBlocksWriteNothing) {
  std::vector<uint16_t> dst(4, 7);
  const uint8_t src[8] = {};
  transpose_bf16(src, 2, 0, 2, dst.data(), 2);
  transpose_bf16(src, 2, 2, 0, dst.data(), 2);
  EXPECT_EQ(dst, (std::vector<uint16_t>(4, 7)));
}

}  // namespace
