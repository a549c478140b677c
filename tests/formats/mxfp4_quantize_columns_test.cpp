// The column quantizer (formats/mxfp4_quantize_columns.h) against its definition: the columns
// transposed into rows (transpose_bf16) and quantized by the row quantizer. Codes, scales, error
// sums and error messages must agree exactly, at every SIMD level, for any stride, first column,
// byte alignment and code layout.
#include "simd_levels.h"
#include "formats/mxfp4_quantize_columns.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/hash.h"
#include "core/simd_level.h"
#include "formats/bf16_transpose.h"
#include "formats/mxfp4_quantize.h"

using namespace moeprep;

namespace {

uint16_t bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>(u >> 16);  // truncation keeps exact ties, zeros and subnormals
}

const float kTies[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};

// One block (32 values along k) of a randomly chosen kind. `moderate` keeps the squares finite
// and normal, so that the sums are ordinary numbers whose last bits show any change of order.
void fill_block(std::mt19937& rng, uint16_t* x, bool moderate) {
  std::uniform_int_distribution<int> kind(moderate ? 1 : 0, moderate ? 4 : 9), shift(moderate ? -40 : -133, moderate ? 40 : 125),
      tie(0, 6), pick(0, 31);
  const int s = shift(rng);
  const auto sign = [&] { return rng() % 2 ? 1.0f : -1.0f; };
  switch (kind(rng)) {
    case 0:  // random finite patterns: every exponent, subnormals, both zeros
      for (int i = 0; i < 32; ++i) {
        uint16_t u = static_cast<uint16_t>(rng());
        if ((u & 0x7fff) >= 0x7f80) u &= 0x807f;
        x[i] = u;
      }
      break;
    case 1:  // exact E2M1 ties at one scale, the maximum 6 * 2^s fixing it
      for (int i = 0; i < 32; ++i) x[i] = bf16_bits(std::ldexp(kTies[tie(rng)], s) * sign());
      x[pick(rng)] = bf16_bits(std::ldexp(6.0f, s));
      break;
    case 2:  // saturation: the maximum in (6, 8) * 2^s
      for (int i = 0; i < 32; ++i)
        x[i] = bf16_bits(std::ldexp(4.0f + 4.0f * static_cast<float>(rng() % 1024) / 1024.0f, s) * sign());
      break;
    case 3:  // all zero, either sign
      for (int i = 0; i < 32; ++i) x[i] = rng() % 2 ? 0x0000 : 0x8000;
      break;
    case 4:  // Gaussian weights, as checkpoints hold them
      {
        std::normal_distribution<float> normal(0.0f, std::ldexp(1.0f, s / 8));
        for (int i = 0; i < 32; ++i) x[i] = bf16_bits(normal(rng));
      }
      break;
    case 5:  // bf16 subnormals (exponent field 0): the E8M0 clamp at code 0
      for (int i = 0; i < 32; ++i) x[i] = static_cast<uint16_t>(rng() & 0x807f);
      break;
    case 6:  // maxima just around the clamp and the smallest scales (codes 0..4)
      for (int i = 0; i < 32; ++i) x[i] = static_cast<uint16_t>((rng() & 0x81ff) + ((rng() % 6) << 7));
      break;
    case 7:  // the largest finite magnitudes
      for (int i = 0; i < 32; ++i) x[i] = static_cast<uint16_t>((0x7f7f - rng() % 0x200) | (rng() % 2 ? 0x8000 : 0));
      break;
    case 8:  // ties at the smallest scales, against the boundaries the clamp leaves
      for (int i = 0; i < 32; ++i) x[i] = bf16_bits(std::ldexp(kTies[tie(rng)], -127 - static_cast<int>(rng() % 4)) * sign());
      break;
    default:  // one tiny and one huge value per block
      for (int i = 0; i < 32; ++i) x[i] = bf16_bits(std::ldexp(1.0f, static_cast<int>(rng() % 40) - 20) * sign());
      x[pick(rng)] = bf16_bits(std::ldexp(1.5f, s));
      x[pick(rng)] = 0x0001;
      break;
  }
}

// A [k, stride] bf16 matrix as raw bytes starting `misalign` bytes into `bytes`; blocks run
// down the columns.
struct Source {
  std::vector<uint8_t> bytes;
  int64_t k, stride, misalign;
  const uint8_t* at(int64_t row, int64_t col) const { return bytes.data() + misalign + (row * stride + col) * 2; }
  uint8_t* at(int64_t row, int64_t col) { return bytes.data() + misalign + (row * stride + col) * 2; }
  void set(int64_t row, int64_t col, uint16_t v) { std::memcpy(at(row, col), &v, 2); }
};

Source make_source(int64_t k, int64_t stride, int64_t misalign, uint32_t seed, bool moderate) {
  Source s{std::vector<uint8_t>(static_cast<size_t>(k * stride * 2 + misalign)), k, stride, misalign};
  std::mt19937 rng(seed);
  uint16_t block[32];
  for (int64_t c = 0; c < stride; ++c)
    for (int64_t b = 0; b < k / 32; ++b) {
      fill_block(rng, block, moderate);
      for (int i = 0; i < 32; ++i) s.set(b * 32 + i, c, block[i]);
    }
  return s;
}

// Output of one call, in buffers with room around the code blocks (filled with a marker, so
// that stray writes show).
struct Output {
  std::vector<uint8_t> codes, scales;
  Mxfp4ErrorSums sums{1.0, 2.0};  // nonzero: the quantizers add to it
  Mxfp4CodeLayout layout;
};

Output make_output(int64_t cols, int64_t k, int64_t row_stride, int64_t block_stride) {
  Output o{std::vector<uint8_t>(static_cast<size_t>(cols * row_stride + 64), 0xa5),
           std::vector<uint8_t>(static_cast<size_t>(cols * k / 32 + 8), 0x5a), {1.0, 2.0}, {}};
  o.layout = {o.codes.data(), row_stride, block_stride};
  return o;
}

// The definition: the columns transposed into rows, then the row quantizer.
Output by_transposing(const Source& s, int64_t first_col, int64_t cols, int64_t row_stride, int64_t block_stride) {
  Output o = make_output(cols, s.k, row_stride, block_stride);
  std::vector<uint16_t> rows(static_cast<size_t>(cols * s.k));
  transpose_bf16(s.at(0, first_col), s.stride, s.k, cols, rows.data(), s.k);
  quantize_mxfp4_rows_bf16_measured(rows.data(), cols, s.k, o.layout, o.scales.data(), "t", o.sums);
  return o;
}

Output by_columns(const Source& s, int64_t first_col, int64_t cols, int64_t row_stride, int64_t block_stride) {
  Output o = make_output(cols, s.k, row_stride, block_stride);
  quantize_mxfp4_columns_bf16_measured(s.at(0, first_col), s.stride, s.k, cols, o.layout, o.scales.data(), "t",
                                       o.sums);
  return o;
}

using moeprep::testing::for_each_simd_level;

struct Case {
  int64_t k, cols, stride, first_col, misalign;
  bool strided_codes, moderate;
};

void expect_same_as_transposing(const Case& c, uint32_t seed) {
  SCOPED_TRACE("k " + std::to_string(c.k) + ", cols " + std::to_string(c.cols) + ", stride " +
               std::to_string(c.stride) + ", first column " + std::to_string(c.first_col) + ", misalign " +
               std::to_string(c.misalign) + (c.strided_codes ? ", strided codes" : "") +
               (c.moderate ? ", moderate" : ", every kind"));
  const Source s = make_source(c.k, c.stride, c.misalign, seed, c.moderate);
  const int64_t blocks = c.k / 32;
  // Strided: blocks 48 bytes apart and rows with a gap, as the tile-shuffled layouts place them.
  const int64_t block_stride = c.strided_codes ? 48 : 16, row_stride = c.strided_codes ? blocks * 48 + 32 : c.k / 2;
  const SimdLevel before = cap_simd_level(SimdLevel::Baseline);
  const Output want = by_transposing(s, c.first_col, c.cols, row_stride, block_stride);
  cap_simd_level(before);
  if (c.moderate) {  // the sums are ordinary numbers, so their equality below means something
    ASSERT_TRUE(std::isfinite(want.sums.error) && std::isfinite(want.sums.reference));
    if (c.cols >= 17) {
      ASSERT_GT(want.sums.error, 1.0);
    }
  }
  for_each_simd_level([&] {
    const Output got = by_columns(s, c.first_col, c.cols, row_stride, block_stride);
    EXPECT_EQ(got.codes, want.codes);
    EXPECT_EQ(got.scales, want.scales);
    EXPECT_EQ(got.sums.error, want.sums.error);  // exact doubles
    EXPECT_EQ(got.sums.reference, want.sums.reference);
  });
}

TEST(Mxfp4QuantizeColumns, SameAsTransposingThenQuantizingRows) {
  uint32_t seed = 1;
  for (const bool moderate : {true, false})
    for (const int64_t k : {32, 96, 2048})
      for (const int64_t cols : {1, 17, 64, 300}) {
        if (k == 2048 && cols != 300 && cols != 17) continue;  // keeps the test fast; 300 spans three chunks
        expect_same_as_transposing({k, cols, cols, 0, 0, false, moderate}, seed++);
        // Inside a wider matrix, from a column that is not the first, at an odd byte address,
        // with the codes strided.
        expect_same_as_transposing({k, cols, cols + 45, 13, 1, true, moderate}, seed++);
      }
  // Groups of 4 slabs and a rest of 2 (k = 192), and more columns than one chunk of partial sums.
  for (const bool moderate : {true, false}) {
    expect_same_as_transposing({192, 64, 70, 3, 1, true, moderate}, seed++);
    expect_same_as_transposing({32, 1100, 1111, 7, 1, false, moderate}, seed++);
  }
  // Rows a whole number of cache lines apart, starting at even offsets within a line: the AVX-512
  // loop takes the columns before the next line boundary as a vector of their own, leading the
  // first chunk (all of them, when few; and with chunks after it).
  for (const int64_t misalign : {2, 18, 40, 62}) {
    for (const int64_t cols : {3, 100}) {
      expect_same_as_transposing({96, cols, 128, 5, misalign, true, true}, seed++);
      expect_same_as_transposing({96, cols, 128, 5, misalign, false, false}, seed++);
    }
    expect_same_as_transposing({32, 1100, 1120, 5, misalign, false, true}, seed++);
  }
}

TEST(Mxfp4QuantizeColumns, AddsToTheSumsOfEarlierCalls) {
  // Two calls over column ranges give the sums of one call over both, as the row quantizer's do.
  const Source s = make_source(96, 80, 0, 77, true);
  const Output whole = by_columns(s, 0, 80, 48, 16);
  Output parts = make_output(80, 96, 48, 16);
  quantize_mxfp4_columns_bf16_measured(s.at(0, 0), 80, 96, 33, parts.layout, parts.scales.data(), "t", parts.sums);
  const Mxfp4CodeLayout rest{parts.codes.data() + 33 * 48, 48, 16};
  quantize_mxfp4_columns_bf16_measured(s.at(0, 33), 80, 96, 47, rest, parts.scales.data() + 33 * 3, "t", parts.sums);
  EXPECT_EQ(parts.codes, whole.codes);
  EXPECT_EQ(parts.scales, whole.scales);
  EXPECT_EQ(parts.sums.error, whole.sums.error);
  EXPECT_EQ(parts.sums.reference, whole.sums.reference);
}

// What a call that put output row i's block b at rows[i] + b * block_stride, in `buffer` (filled
// with the marker 0xa5 first), must leave: the definition's codes there and the marker everywhere
// else, and the definition's scales and sums.
void expect_rows_as_defined(const std::vector<uint8_t*>& rows, int64_t block_stride, const std::vector<uint8_t>& buffer,
                            const std::vector<uint8_t>& scales, const Mxfp4ErrorSums& sums, const Output& want,
                            int64_t k) {
  const auto cols = static_cast<int64_t>(rows.size());
  const int64_t blocks = k / 32;
  std::vector<bool> written(buffer.size());
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* const at = rows[i] + b * block_stride;
      EXPECT_EQ(0, std::memcmp(at, want.codes.data() + i * k / 2 + b * 16, 16)) << i << " " << b;
      for (int64_t j = 0; j < 16; ++j) written[static_cast<size_t>(at + j - buffer.data())] = true;
    }
  for (size_t j = 0; j < buffer.size(); ++j)
    if (!written[j]) {
      EXPECT_EQ(buffer[j], 0xa5) << "stray write at " << j;
    }
  EXPECT_EQ(std::vector<uint8_t>(want.scales.begin(), want.scales.begin() + cols * blocks), scales);
  EXPECT_EQ(sums.error, want.sums.error);
  EXPECT_EQ(sums.reference, want.sums.reference);
}

TEST(Mxfp4QuantizeColumns, WritesEachRowWhereItsPointerSays) {
  // The tile-shuffled destination of interleaved gate/up rows: rows in groups of 16, a row's
  // blocks 256 bytes apart, even source columns to the first half and odd ones to the second.
  const int64_t k = 96, cols = 70, blocks = k / 32, half = cols / 2;
  const Source s = make_source(k, 75, 1, 91, true);
  const SimdLevel before = cap_simd_level(SimdLevel::Baseline);
  const Output want = by_transposing(s, 2, cols, k / 2, 16);
  cap_simd_level(before);
  const auto output_row = [&](int64_t i) { return i % 2 == 0 ? i / 2 : half + i / 2; };
  for_each_simd_level([&] {
    std::vector<uint8_t> codes(static_cast<size_t>((cols + 15) / 16 * 16 * k / 2), 0xa5), scales(cols * blocks);
    std::vector<uint8_t*> rows(cols);
    for (int64_t i = 0; i < cols; ++i) {
      const int64_t n = output_row(i);
      rows[i] = codes.data() + n / 16 * 16 * k / 2 + n % 16 * 16;
    }
    Mxfp4ErrorSums sums{1.0, 2.0};
    quantize_mxfp4_columns_bf16_measured(s.at(0, 2), s.stride, k, cols, rows.data(), 256, scales.data(), "t", sums);
    expect_rows_as_defined(rows, 256, codes, scales, sums, want, k);
  });
}

TEST(Mxfp4QuantizeColumns, WholeCacheLineDestinationsGetTheSameBytes) {
  // Tile-shuffled destinations on a 64-byte boundary, where the AVX-512 loop stores each line of 4
  // rows whole: rows in order, rows of interleaved gate/up sources alternating between two halves,
  // and the same shifted by 16 bytes (no row's line whole: the 16-byte stores). 100 columns: three
  // full vectors and a partial one in the same call, from a source whose rows start on a line.
  const int64_t k = 96, cols = 100, blocks = k / 32, half = cols / 2, tile_rows = 16;
  const Source s = make_source(k, 128, 0, 17, true);
  const auto first_line = [](std::vector<uint8_t>& bytes) {  // the first 64-byte boundary in `bytes`
    return bytes.data() + (64 - reinterpret_cast<uintptr_t>(bytes.data()) % 64) % 64;
  };
  std::vector<uint8_t> source_bytes(s.bytes.size() + 64);
  uint8_t* const src = first_line(source_bytes);
  std::memcpy(src, s.at(0, 0), static_cast<size_t>(k * s.stride * 2));
  const SimdLevel before = cap_simd_level(SimdLevel::Baseline);
  const Output want = by_transposing(s, 0, cols, k / 2, 16);
  cap_simd_level(before);
  const int64_t tile_bytes = tile_rows * 16 * blocks;
  for (const bool interleaved : {false, true})
    for (const int64_t shift : {int64_t{0}, int64_t{16}}) {
      SCOPED_TRACE(std::string(interleaved ? "interleaved" : "in order") + ", shift " + std::to_string(shift));
      const auto output_row = [&](int64_t i) { return !interleaved ? i : i % 2 == 0 ? i / 2 : half + i / 2; };
      for_each_simd_level([&] {
        const size_t size = static_cast<size_t>((cols + tile_rows) / tile_rows * tile_bytes);
        std::vector<uint8_t> buffer(size + 128, 0xa5), scales(static_cast<size_t>(cols * blocks));
        uint8_t* const codes = first_line(buffer) + shift;
        std::vector<uint8_t*> rows(cols);
        for (int64_t i = 0; i < cols; ++i) {
          const int64_t n = output_row(i);
          rows[i] = codes + n / tile_rows * tile_bytes + n % tile_rows * 16;
        }
        Mxfp4ErrorSums sums{1.0, 2.0};
        quantize_mxfp4_columns_bf16_measured(src, s.stride, k, cols, rows.data(), tile_rows * 16, scales.data(), "t",
                                             sums);
        expect_rows_as_defined(rows, tile_rows * 16, buffer, scales, sums, want, k);
      });
    }
}

std::string error_text(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::BadInput);
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return {};
}

TEST(Mxfp4QuantizeColumns, RejectsNanAndInfAsTheRowQuantizerDoes) {
  struct Bad {
    int64_t row, col;
    uint16_t bits;
  };
  // The first output row holding one is named, at its first such element along k, wherever the
  // others lie (a later column's NaN earlier in k, a later chunk of columns).
  const std::vector<std::vector<Bad>> placements = {
      {{40, 3, 0x7fc0}},
      {{40, 3, 0xff80}, {2, 5, 0x7fc0}},
      {{70, 200, 0x7f80}, {1, 250, 0xffff}, {90, 200, 0x7fc1}},
      {{95, 299, 0x7f81}},
      {{0, 0, 0xff80}, {0, 1, 0x7fc0}},
  };
  const std::vector<std::string> named = {"NaN at row 3, block 1 (element 40)", "Inf at row 3, block 1 (element 40)",
                                          "Inf at row 200, block 2 (element 70)",
                                          "NaN at row 299, block 2 (element 95)", "Inf at row 0, block 0 (element 0)"};
  for (size_t p = 0; p < placements.size(); ++p) {
    Source s = make_source(96, 310, 1, 5 + static_cast<uint32_t>(p), true);
    for (const Bad& b : placements[p]) s.set(b.row, b.col, b.bits);
    for_each_simd_level([&] {
      Output want = make_output(300, 96, 48, 16), got = make_output(300, 96, 48, 16);
      std::vector<uint16_t> rows(300 * 96);
      transpose_bf16(s.at(0, 0), s.stride, 96, 300, rows.data(), 96);
      const std::string expected = error_text([&] {
        quantize_mxfp4_rows_bf16_measured(rows.data(), 300, 96, want.layout, want.scales.data(), "experts[2]",
                                          want.sums);
      });
      const std::string message = error_text([&] {
        quantize_mxfp4_columns_bf16_measured(s.at(0, 0), s.stride, 96, 300, got.layout, got.scales.data(),
                                             "experts[2]", got.sums);
      });
      EXPECT_EQ(message, expected);
      EXPECT_NE(message.find("experts[2]: MXFP4 quantization: " + named[p]), std::string::npos) << message;
      // A failed call leaves the sums as they were.
      EXPECT_EQ(got.sums.error, 1.0);
      EXPECT_EQ(got.sums.reference, 2.0);
    });
  }
}

TEST(Mxfp4QuantizeColumns, RejectsAKNotDivisibleBy32AsTheRowQuantizerDoes) {
  std::vector<uint8_t> src(48 * 4 * 2), codes(64), scales(8);
  std::vector<uint16_t> rows(4 * 48);
  Mxfp4ErrorSums sums;
  const std::string expected = error_text(
      [&] { quantize_mxfp4_rows_bf16_measured(rows.data(), 4, 48, {codes.data(), 24, 16}, scales.data(), "w", sums); });
  const std::string message = error_text([&] {
    quantize_mxfp4_columns_bf16_measured(src.data(), 4, 48, 4, {codes.data(), 24, 16}, scales.data(), "w", sums);
  });
  EXPECT_EQ(message, expected);
  EXPECT_NE(message.find("divisible by 32, got K=48"), std::string::npos) << message;
}

}  // namespace

TEST(Mxfp4QuantizeColumns, WholeRowsHashedWhileQuantizedFoldToTheirTensorsDigest) {
  // Expert slices of a tensor holding 3, each [k, cols] quantized by one hashed call, last
  // first: k with a partial last group (96: 3 slabs; 416: 3 groups and a rest of 1), one chunk
  // of columns and several (1100), odd byte addresses and 64-byte ones (the loop's head
  // columns). Folded in order, the tensor's digest; codes, scales and sums those of the plain
  // call, at every SIMD level.
  uint32_t seed = 40;
  for (const auto& [k, cols] : std::vector<std::pair<int64_t, int64_t>>{{96, 64}, {416, 48}, {64, 1104}})
    for (const int64_t misalign : {0, 1, 18}) {
      SCOPED_TRACE("k " + std::to_string(k) + ", cols " + std::to_string(cols) + ", misalign " +
                   std::to_string(misalign));
      const int64_t experts = 3, per = k * cols * 2;
      ASSERT_EQ(per % 1024, 0);
      const Source s = make_source(experts * k, cols, misalign, seed++, true);
      const uint64_t length = static_cast<uint64_t>(experts * per);
      const std::string want = xxh3_128_hex(s.at(0, 0), length);
      std::vector<Output> plain;
      for (int64_t e = 0; e < experts; ++e) {
        plain.push_back(make_output(cols, k, k / 2, 16));
        quantize_mxfp4_columns_bf16_measured(s.at(e * k, 0), cols, k, cols, plain.back().layout,
                                             plain.back().scales.data(), "t", plain.back().sums);
      }
      for_each_simd_level([&] {
        const uint64_t blocks_per = static_cast<uint64_t>(per) / 1024;
        std::vector<uint64_t> sums(Xxh3BlockFold::blocks(length) * 8, 0xdeadbeef);
        for (int64_t e = experts - 1; e >= 0; --e) {
          Output o = make_output(cols, k, k / 2, 16);
          std::vector<uint8_t*> rows(static_cast<size_t>(cols));
          for (int64_t i = 0; i < cols; ++i) rows[static_cast<size_t>(i)] = o.codes.data() + i * k / 2;
          Xxh3PieceSums piece(length, e * blocks_per, blocks_per, sums.data() + e * blocks_per * 8);
          quantize_mxfp4_columns_bf16_measured(s.at(e * k, 0), cols, k, cols, rows.data(), 16, o.scales.data(), "t",
                                               o.sums, piece);
          piece.finish();
          EXPECT_EQ(o.codes, plain[static_cast<size_t>(e)].codes) << e;
          EXPECT_EQ(o.scales, plain[static_cast<size_t>(e)].scales) << e;
          EXPECT_EQ(o.sums.error, plain[static_cast<size_t>(e)].sums.error) << e;
        }
        Xxh3BlockFold fold(length);
        fold.fold(sums.data(), Xxh3BlockFold::blocks(length));
        EXPECT_EQ(fold.hex_digest(s.at(0, 0) + length - 64), want);
      });
    }
  // A call over part of the rows cannot hash them.
  const Source s = make_source(32, 40, 0, 1, true);
  Output o = make_output(39, 32, 16, 16);
  std::vector<uint8_t*> rows(40, o.codes.data());
  uint64_t sums[8];
  Xxh3PieceSums piece(32 * 40 * 2, 0, 3, sums);
  EXPECT_THROW(quantize_mxfp4_columns_bf16_measured(s.at(0, 0), 40, 32, 39, rows.data(), 16, o.scales.data(), "t",
                                                    o.sums, piece),
               Error);
}
