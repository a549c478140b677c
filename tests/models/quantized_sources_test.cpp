// The quantizing canonical sources: blocks and scales equal the formats library's quantizer on
// the same rows, the scale-only path agrees with it on edge values, the recorded error is the
// relative Frobenius error, and each way of reading expert rows gives the right matrix.
#include <algorithm>
#include <cmath>
#include <cstring>

#include <gtest/gtest.h>

#include "core/error.h"
#include "core/hash.h"
#include "core/random.h"
#include "formats/bf16.h"
#include "formats/fp8_block_dequant.h"
#include "formats/mxfp4_dequantize.h"
#include "formats/mxfp4_quantize.h"
#include "models/adapter.h"
#include "models/adapter_support.h"
#include "models/mxfp4_sources.h"
#include "models_test_util.h"

namespace moeprep::models::testing {
namespace {

// Every expert's scales out of the hand-off, as a copy; false when it has not all of them.
bool take_all(ScaleHandoff& h, int64_t experts, std::vector<uint8_t>& out) {
  return h.use_range(0, experts, [&](const uint8_t* bytes, size_t size) { out.assign(bytes, bytes + size); });
}

std::vector<uint16_t> random_bf16(size_t n, uint64_t seed, double sd = 0.05) {
  SplitMix64 rng(seed);
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = float_to_bf16(static_cast<float>(rng.normal() * sd));
  return v;
}

// E experts of n random bf16 values each: expert e from seed first_seed + e, with standard
// deviation sd(e).
template <typename Sd>
std::vector<std::vector<uint16_t>> random_experts(int64_t E, size_t n, uint64_t first_seed, Sd sd) {
  std::vector<std::vector<uint16_t>> experts;
  for (int64_t e = 0; e < E; ++e) experts.push_back(random_bf16(n, first_seed + e, sd(e)));
  return experts;
}
std::vector<std::vector<uint16_t>> random_experts(int64_t E, size_t n, uint64_t first_seed) {
  return random_experts(E, n, first_seed, [](int64_t) { return 0.05; });
}

// Rows held in memory, as an adapter would read them from a checkpoint.
// `reads`, when given, counts the expert reads.
ExpertRowsPtr memory_rows(std::vector<std::vector<uint16_t>> experts, int64_t rows, int64_t cols,
                          std::shared_ptr<int> reads = nullptr) {
  auto m = std::make_shared<ExpertRows>();
  m->experts = static_cast<int64_t>(experts.size());
  m->rows = rows;
  m->cols = cols;
  for (size_t e = 0; e < experts.size(); ++e) {
    m->tensors.push_back("t" + std::to_string(e));
    m->labels.push_back("tensor t" + std::to_string(e));
  }
  m->read_bf16 = [experts, reads, cols](int64_t e, int64_t row, int64_t count, uint16_t* out) {
    if (reads && row == 0) ++*reads;
    std::memcpy(out, experts[e].data() + row * cols, static_cast<size_t>(count * cols) * 2);
  };
  return m;
}

TEST(QuantizedSources, BlocksAndScalesEqualTheQuantizerAndRecordItsError) {
  const int64_t E = 3, N = 8, K = 96;
  const auto experts = random_experts(E, N * K, 10);
  const auto rows = memory_rows(experts, N, K);
  const CanonicalSource blocks = mxfp4_blocks_source(rows);
  const CanonicalSource scales = mxfp4_scales_source(rows);
  EXPECT_EQ(blocks.shape, (Shape{E, N, K / 32, 16}));
  EXPECT_EQ(scales.shape, (Shape{E, N, K / 32}));
  EXPECT_EQ(blocks.transform, "quantize_mxfp4");
  EXPECT_EQ(blocks.tensors, (std::vector<std::string>{"t0", "t1", "t2"}));

  // A slice of two experts, starting at expert 1.
  const ByteTensor b = blocks.assemble(1, 2);
  const ByteTensor s = scales.assemble(1, 2);
  ASSERT_EQ(b.shape, (Shape{2, N, K / 32, 16}));
  ASSERT_EQ(s.shape, (Shape{2, N, K / 32}));
  double err2 = 0, ref2 = 0;
  for (int e = 1; e < 3; ++e) {
    std::vector<uint8_t> codes(N * K / 2), sc(N * K / 32);
    quantize_mxfp4_rows_bf16(experts[e].data(), N, K, codes.data(), sc.data(), "x");
    EXPECT_EQ(0, std::memcmp(codes.data(), b.bytes.data() + (e - 1) * codes.size(), codes.size())) << e;
    EXPECT_EQ(0, std::memcmp(sc.data(), s.bytes.data() + (e - 1) * sc.size(), sc.size())) << e;
    std::vector<float> ref(N * K), deq(N * K);
    for (size_t i = 0; i < ref.size(); ++i) ref[i] = bf16_to_float(experts[e][i]);
    dequantize_mxfp4_rows(codes.data(), sc.data(), N, K, deq.data());
    for (size_t i = 0; i < ref.size(); ++i) {
      err2 += (double(deq[i]) - ref[i]) * (double(deq[i]) - ref[i]);
      ref2 += double(ref[i]) * ref[i];
    }
  }
  ASSERT_TRUE(blocks.quantization);
  EXPECT_NEAR(blocks.quantization->relative_error(), std::sqrt(err2 / ref2), 1e-6);
  // Gaussian weights lose about a tenth of their norm to MXFP4.
  EXPECT_GT(blocks.quantization->relative_error(), 0.05);
  EXPECT_LT(blocks.quantization->relative_error(), 0.2);
}

// Convert assembles an expert's codes before its scales: the scales the quantizing pass found
// are handed over instead of reading and scanning the rows again, once each.
TEST(QuantizedSources, ScalesAfterBlocksComeFromTheQuantizingPassWithoutReadingAgain) {
  const int64_t E = 3, N = 8, K = 96;
  const auto experts = random_experts(E, N * K, 30);
  auto reads = std::make_shared<int>(0);
  const auto rows = memory_rows(experts, N, K, reads);
  const ByteTensor fresh = mxfp4_scales_source(rows).assemble(0, E);  // nothing handed over yet
  EXPECT_EQ(*reads, E);
  mxfp4_blocks_source(rows).assemble(0, E);
  EXPECT_EQ(*reads, 2 * E);
  const ByteTensor handed = mxfp4_scales_source(rows).assemble(0, E);
  EXPECT_EQ(*reads, 2 * E);  // no third read
  EXPECT_EQ(handed.bytes, fresh.bytes);
  mxfp4_scales_source(rows).assemble(0, E);  // taken once: read again
  EXPECT_EQ(*reads, 3 * E);
}

TEST(QuantizedSources, ScalesOfSomeExpertsAreCopiedOutOfTheHandOffAndTheRestStayKept) {
  // Scale units of a few experts take those experts' scales (a copy each); a unit of all
  // experts takes the whole buffer only while every expert is kept, else reads what is not.
  const int64_t E = 4, N = 8, K = 64;
  const auto experts = random_experts(E, N * K, 50);
  auto reads = std::make_shared<int>(0);
  const auto rows = memory_rows(experts, N, K, reads);
  const ByteTensor fresh = mxfp4_scales_source(rows).assemble(0, E);
  mxfp4_blocks_source(rows).assemble(0, E);
  *reads = 0;
  const size_t per = static_cast<size_t>(N * K / 32);
  const ByteTensor middle = mxfp4_scales_source(rows).assemble(1, 2);
  EXPECT_EQ(*reads, 0);
  EXPECT_TRUE(std::equal(middle.bytes.begin(), middle.bytes.end(), fresh.bytes.begin() + per));
  const ByteTensor all = mxfp4_scales_source(rows).assemble(0, E);  // experts 1 and 2 were taken
  EXPECT_EQ(*reads, 2);
  EXPECT_EQ(all.bytes, fresh.bytes);
}

TEST(QuantizedSources, ScaleHandOffKeepsSlotsUntilTakenOnceWholeOrOneByOne) {
  ScaleHandoff h;
  std::vector<uint8_t> out;
  uint8_t one[2] = {0, 0};
  EXPECT_FALSE(h.take(0, one, 2));
  EXPECT_FALSE(take_all(h, 3, out));
  for (int64_t e = 0; e < 3; ++e) {
    uint8_t* slot = h.slot(e, 3, 2);
    slot[0] = static_cast<uint8_t>(10 * e);
    slot[1] = static_cast<uint8_t>(10 * e + 1);
    if (e < 2) {
      EXPECT_FALSE(take_all(h, 3, out));  // expert 2 is not handed over yet
    }
    h.put(e);
  }
  ASSERT_TRUE(take_all(h, 3, out));
  EXPECT_EQ(out, (std::vector<uint8_t>{0, 1, 10, 11, 20, 21}));
  EXPECT_FALSE(h.take(1, one, 2));  // taken whole: nothing kept
  // One by one, while another expert's slot is still being written.
  for (int64_t e = 0; e < 2; ++e) {
    h.slot(e, 3, 2)[0] = static_cast<uint8_t>(7 + e);
    h.put(e);
  }
  uint8_t* pending = h.slot(2, 3, 2);
  EXPECT_FALSE(take_all(h, 3, out));
  EXPECT_FALSE(h.take(1, one, 3));  // not the slots' size: nothing taken
  ASSERT_TRUE(h.take(1, one, 2));
  EXPECT_EQ(one[0], 8);
  EXPECT_FALSE(h.take(1, one, 2));
  ASSERT_TRUE(h.take(0, one, 2));
  EXPECT_EQ(one[0], 7);
  pending[1] = 5;  // the buffer outlives the taken experts while a slot is being written
  h.put(2);
  ASSERT_TRUE(h.take(2, one, 2));
  EXPECT_EQ(one[1], 5);
  try {
    h.slot(0, 3, 4);
    h.slot(1, 3, 2);  // another size than the buffer's
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("scale hand-off: slots of 2 bytes for 3 experts"), std::string::npos)
        << e.what();
  }
}

TEST(QuantizedSources, ScaleHandOffSlotsHandedBackByAFailedPassLeaveItUsable) {
  ScaleHandoff h;
  std::vector<uint8_t> out;
  h.slot(0, 2, 1)[0] = 3;
  h.put(0);
  {
    // A pass over expert 0 again and one over expert 1, both failing: their slots go back and
    // expert 0's scales, perhaps half overwritten, are no longer kept.
    ScaleHandoff::SlotGuard again(h, 0, 2, 1);
    ScaleHandoff::SlotGuard other(h, 1, 2, 1);
    again.data()[0] = 9;
  }
  uint8_t one = 0;
  EXPECT_FALSE(h.take(0, &one, 1));
  EXPECT_FALSE(take_all(h, 2, out));
  for (int64_t e = 0; e < 2; ++e) {
    ScaleHandoff::SlotGuard slot(h, e, 2, 1);
    slot.data()[0] = static_cast<uint8_t>(20 + e);
    slot.put();
  }
  ASSERT_TRUE(take_all(h, 2, out));  // nothing is still being written
  EXPECT_EQ(out, (std::vector<uint8_t>{20, 21}));
}

TEST(QuantizedSources, AThrowingQuantizingPassLeavesTheScaleHandOffUsable) {
  // Expert 1 holds a NaN: the blocks pass over experts 0-1 throws while expert 1's slot is
  // being written. Once the NaN is gone, a full pass hands every expert's scales over whole.
  const int64_t E = 2, N = 4, K = 64;
  auto experts = random_experts(E, N * K, 80);
  const uint16_t kept = experts[1][70];
  experts[1][70] = 0x7fc0;
  auto bad = std::make_shared<bool>(true);
  auto reads = std::make_shared<int>(0);
  auto m = std::const_pointer_cast<ExpertRows>(memory_rows(experts, N, K, reads));
  const auto read = m->read_bf16;
  m->read_bf16 = [read, bad, kept](int64_t e, int64_t row, int64_t count, uint16_t* out) {
    read(e, row, count, out);
    if (e == 1 && !*bad && row == 0) out[70] = kept;
  };
  const ExpertRowsPtr rows = m;
  const std::string message = bad_input_message([&] { mxfp4_blocks_source(rows).assemble(0, E); });
  EXPECT_NE(message.find("NaN"), std::string::npos) << message;
  *bad = false;
  const ByteTensor codes = mxfp4_blocks_source(rows).assemble(0, E);
  std::vector<uint8_t> all;
  ASSERT_TRUE(take_all(*rows->scale_handoff, rows->experts, all));
  std::vector<uint8_t> want_codes(codes.bytes.size()), want_scales(all.size());
  experts[1][70] = kept;
  for (int64_t e = 0; e < E; ++e)
    quantize_mxfp4_rows_bf16(experts[e].data(), N, K, want_codes.data() + e * N * K / 2,
                             want_scales.data() + e * N * K / 32, "t");
  EXPECT_EQ(codes.bytes, want_codes);
  EXPECT_EQ(all, want_scales);
}

TEST(QuantizedSources, ScalesSourceUsesHandedOverScalesWhereTheyLieForAnySlice) {
  // After a blocks pass over every expert, the scales source offers any run of them where they
  // lie (convert cuts a large scales tensor into slices), once each: the hand-off then lets
  // them go. They are the bytes assemble() would have made.
  const int64_t E = 3, N = 8, K = 64;
  const auto experts = random_experts(E, N * K, 90);
  auto reads = std::make_shared<int>(0);
  const auto rows = memory_rows(experts, N, K, reads);
  const CanonicalSource scales = mxfp4_scales_source(rows);
  ASSERT_TRUE(scales.use_assembled);
  const auto fail = [](const uint8_t*, size_t) { FAIL() << "nothing is handed over for this slice"; };
  EXPECT_FALSE(scales.use_assembled(0, E, fail));
  mxfp4_blocks_source(rows).assemble(0, E);
  std::vector<uint8_t> want(static_cast<size_t>(E * N * K / 32)), codes(static_cast<size_t>(N * K / 2));
  for (int64_t e = 0; e < E; ++e)
    quantize_mxfp4_rows_bf16(experts[e].data(), N, K, codes.data(), want.data() + e * N * K / 32, "t");
  const size_t per = static_cast<size_t>(N * K / 32);
  std::vector<uint8_t> tail;
  ASSERT_TRUE(scales.use_assembled(1, E - 1, [&](const uint8_t* bytes, size_t size) { tail.assign(bytes, bytes + size); }));
  EXPECT_EQ(tail, std::vector<uint8_t>(want.begin() + per, want.end()));
  EXPECT_FALSE(scales.use_assembled(0, E, fail));      // experts 1 and 2 are gone
  EXPECT_FALSE(scales.use_assembled(E - 1, 1, fail));  // used once
  std::vector<uint8_t> head;
  ASSERT_TRUE(scales.use_assembled(0, 1, [&](const uint8_t* bytes, size_t size) { head.assign(bytes, bytes + size); }));
  EXPECT_EQ(head, std::vector<uint8_t>(want.begin(), want.begin() + per));
  const int before = *reads;
  EXPECT_EQ(scales.assemble(0, E).bytes, want);  // recomputed from the rows
  EXPECT_EQ(*reads, before + E);
}

TEST(QuantizedSources, ScaleHandOffLendsARangeOnceAndForgetsItEvenWhenItsUseThrows) {
  ScaleHandoff h;
  for (int64_t e = 0; e < 2; ++e) {
    h.slot(e, 4, 1)[0] = static_cast<uint8_t>(40 + e);
    h.put(e);
  }
  uint8_t* pending = h.slot(2, 4, 1);  // expert 2 is being written, expert 3 never was
  const auto fail = [](const uint8_t*, size_t) { FAIL() << "not every expert of the range is kept"; };
  EXPECT_FALSE(h.use_range(1, 2, fail));
  EXPECT_FALSE(h.use_range(3, 1, fail));
  EXPECT_FALSE(h.use_range(-1, 2, fail));
  EXPECT_FALSE(h.use_range(1, 4, fail));  // past the last expert
  EXPECT_FALSE(h.use_range(0, 0, fail));
  try {
    h.use_range(1, 1, [&](const uint8_t* bytes, size_t size) {
      EXPECT_EQ(size, 1u);
      EXPECT_EQ(bytes[0], 41);
      uint8_t one = 0;
      EXPECT_FALSE(h.take(1, &one, 1));  // lent: not to be taken meanwhile
      EXPECT_THROW(h.slot(1, 4, 1), Error);
      throw std::runtime_error("use failed");
    });
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "use failed");
  }
  uint8_t one = 0;
  EXPECT_FALSE(h.take(1, &one, 1));  // forgotten all the same
  pending[0] = 42;
  h.put(2);
  std::vector<uint8_t> got;
  ASSERT_TRUE(h.use_range(2, 1, [&](const uint8_t* bytes, size_t size) { got.assign(bytes, bytes + size); }));
  EXPECT_EQ(got, std::vector<uint8_t>{42});
  // Expert 0 written again: its earlier scales are not lent or taken while the pass runs.
  h.slot(0, 4, 1)[0] = 50;
  EXPECT_FALSE(h.use_range(0, 1, fail));
  EXPECT_FALSE(h.take(0, &one, 1));
  h.put(0);
  ASSERT_TRUE(h.take(0, &one, 1));  // the buffer outlived the ranges lent before
  EXPECT_EQ(one, 50);
}

TEST(QuantizedSources, ExpertsReadPieceByPieceQuantizeAsOneCallOverTheWholeExpert) {
  // Experts that are not mapped in place are read piece_rows() rows at a time: with K = 4096 a
  // piece is 32 rows, so 72 rows come in three pieces (32, 32, 8). Codes, scales and the
  // recorded error must be those of one call over each whole expert.
  const int64_t E = 2, N = 72, K = 4096;
  const auto experts = random_experts(E, N * K, 60);
  auto reads = std::make_shared<int>(0);
  const auto rows = memory_rows(experts, N, K, reads);
  ASSERT_EQ(rows->piece_rows(2), 32);
  const CanonicalSource blocks = mxfp4_blocks_source(rows);
  const ByteTensor b = blocks.assemble(0, E);
  std::vector<uint8_t> all_scales;
  ASSERT_TRUE(take_all(*rows->scale_handoff, rows->experts, all_scales));
  EXPECT_EQ(*reads, E);  // each expert read once, piece by piece
  double err2 = 0, ref2 = 0;  // per expert, then added in expert order, as QuantizationStats does
  for (int64_t e = 0; e < E; ++e) {
    std::vector<uint8_t> codes(N * K / 2), sc(N * K / 32);
    Mxfp4ErrorSums sums;
    quantize_mxfp4_rows_bf16_measured(experts[e].data(), N, K, codes.data(), sc.data(), "x", sums);
    err2 += sums.error;
    ref2 += sums.reference;
    EXPECT_EQ(0, std::memcmp(codes.data(), b.bytes.data() + e * codes.size(), codes.size())) << e;
    EXPECT_EQ(0, std::memcmp(sc.data(), all_scales.data() + e * sc.size(), sc.size())) << e;
  }
  EXPECT_EQ(blocks.quantization->relative_error(), std::sqrt(err2 / ref2));
  // The scales-only path reads the same pieces.
  const ByteTensor s = mxfp4_scales_source(rows).assemble(0, E);
  EXPECT_EQ(s.bytes, all_scales);
}

TEST(QuantizedSources, SlicesEqualTheWholeAndTheErrorDoesNotDependOnSlicing) {
  // The executor assembles slices of experts from several threads in any order; bytes and the
  // recorded error must be those of one whole assembly.
  const int64_t E = 5, N = 4, K = 64;
  const auto experts = random_experts(E, N * K, 50, [](int64_t e) { return 0.01 * (e + 1); });
  const auto rows = memory_rows(experts, N, K);
  const CanonicalSource whole = mxfp4_blocks_source(rows), sliced = mxfp4_blocks_source(rows);
  const ByteTensor all = whole.assemble(0, E);
  std::vector<uint8_t> parts;
  for (const auto& [first, count] : std::vector<std::pair<int, int>>{{3, 2}, {0, 1}, {1, 2}}) {
    const ByteTensor b = sliced.assemble(first, count);
    parts.resize(all.bytes.size());
    std::memcpy(parts.data() + first * N * K / 2, b.bytes.data(), b.bytes.size());
  }
  EXPECT_EQ(parts, all.bytes);
  EXPECT_EQ(sliced.quantization->relative_error(), whole.quantization->relative_error());
  sliced.assemble(1, 3);  // assembled again: replaces, does not count twice
  EXPECT_EQ(sliced.quantization->relative_error(), whole.quantization->relative_error());
}

TEST(QuantizedSources, CodesWrittenWhereTheCallerSaysEqualTheAssembledSlice) {
  // assemble_codes: the executor's destination (here: blocks stored column by column per
  // expert, spans of 1 to 3 rows that cut the expert's rows anywhere) gets the assembled bytes,
  // and the error, digests and scale hand-off are those of assemble().
  const int64_t E = 4, N = 7, K = 96, blocks = K / 32;
  const auto experts = random_experts(E, N * K, 70, [](int64_t e) { return 0.02 * (e + 1); });
  const auto rows = memory_rows(experts, N, K), again = memory_rows(experts, N, K);
  const CanonicalSource assembled = mxfp4_blocks_source(rows), placed = mxfp4_blocks_source(again);
  ASSERT_TRUE(placed.assemble_codes);
  const ByteTensor want = assembled.assemble(1, 3);
  std::vector<uint8_t> got(want.bytes.size(), 0xA5);
  std::vector<int64_t> asked;
  placed.assemble_codes(1, 3, [&](int64_t e, int64_t row) {
    asked.push_back(e * N + row);
    return CodeRowSpan{got.data() + (e * blocks * N + row) * 16, 1 + row % 3, 16, N * 16};
  });
  for (int64_t e = 0; e < 3; ++e)
    for (int64_t r = 0; r < N; ++r)
      for (int64_t b = 0; b < blocks; ++b)
        ASSERT_EQ(0, std::memcmp(got.data() + (e * blocks * N + b * N + r) * 16,
                                 want.bytes.data() + ((e * N + r) * blocks + b) * 16, 16))
            << "expert " << e << ", row " << r << ", block " << b;
  // Spans of 1 + row % 3 rows: rows 0, 1 (and 2), 3, 4 (and 5), 6 of each expert.
  EXPECT_EQ(asked, (std::vector<int64_t>{0, 1, 3, 4, 6, 7, 8, 10, 11, 13, 14, 15, 17, 18, 20}));
  EXPECT_EQ(placed.quantization->relative_error(), assembled.quantization->relative_error());
  for (int64_t e = 1; e < 4; ++e) {
    std::vector<uint8_t> a(N * blocks), b(N * blocks);
    ASSERT_TRUE(rows->scale_handoff->take(e, a.data(), a.size()));
    ASSERT_TRUE(again->scale_handoff->take(e, b.data(), b.size()));
    EXPECT_EQ(a, b) << e;
  }
}

TEST(QuantizedSources, SquaredErrorIsTheSameForBf16AndFloatRows) {
  // The BF16 sum has its own (vector) implementation; both must measure the same error, and
  // equal a plain double-precision sum over dequantized values.
  const int64_t rows = 16, K = 256;
  const auto x = random_bf16(rows * K, 99, 0.3);
  std::vector<uint8_t> codes(rows * K / 2), scales(rows * K / 32);
  quantize_mxfp4_rows_bf16(x.data(), rows, K, codes.data(), scales.data(), "x");
  std::vector<float> xf(x.size()), deq(x.size());
  for (size_t i = 0; i < x.size(); ++i) xf[i] = bf16_to_float(x[i]);
  dequantize_mxfp4_rows(codes.data(), scales.data(), rows, K, deq.data());
  double err2 = 0, ref2 = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    err2 += (double(deq[i]) - xf[i]) * (double(deq[i]) - xf[i]);
    ref2 += double(xf[i]) * xf[i];
  }
  const SquaredError a = mxfp4_squared_error(x.data(), codes.data(), scales.data(), rows, K);
  const SquaredError b = mxfp4_squared_error(xf.data(), codes.data(), scales.data(), rows, K);
  EXPECT_NEAR(a.error, err2, 1e-5 * err2);
  EXPECT_NEAR(a.reference, ref2, 1e-5 * ref2);
  // Both sum the same float terms in the same fixed order.
  EXPECT_EQ(a.error, b.error);
  EXPECT_EQ(a.reference, b.reference);
}

TEST(QuantizedSources, RecordedErrorIsTheSeparatePassSumsExactly) {
  // The blocks source measures the error while quantizing; it must be the sums a separate
  // pass over its own output gives, bit for bit, per expert.
  const int64_t E = 3, N = 12, K = 160;
  const auto experts = random_experts(E, N * K, 70, [](int64_t e) { return 0.02 * (e + 1); });
  const auto rows = memory_rows(experts, N, K);
  const CanonicalSource blocks = mxfp4_blocks_source(rows);
  const ByteTensor b = blocks.assemble(0, E);
  for (int e = 0; e < E; ++e) {
    std::vector<uint8_t> sc(N * K / 32), codes(N * K / 2);
    quantize_mxfp4_rows_bf16(experts[e].data(), N, K, codes.data(), sc.data(), "x");
    const SquaredError want =
        mxfp4_squared_error(experts[e].data(), b.bytes.data() + e * N * K / 2, sc.data(), N, K);
    const auto& got = blocks.quantization->per_expert.at(e);
    EXPECT_EQ(got.first, want.error) << e;
    EXPECT_EQ(got.second, want.reference) << e;
  }
}

TEST(QuantizedSources, PerExpertTensorsAreHashedOnceWhileBeingRead) {
  // Stacked per-expert tensors are hashed as the quantizing sources read them, once for the
  // blocks and scales sources together, with the digest the manifest would compute; a tensor
  // shared by all experts is left to the executor.
  TempDir dir;
  const fs::path q = make_family(dir, "qwen3_moe", "qwen");
  const auto qc = io::Checkpoint::open(q);
  std::vector<std::vector<std::string>> parts;
  for (int e = 0; e < 4; ++e) {
    const std::string p = "model.layers.2.mlp.experts." + std::to_string(e) + ".";
    parts.push_back({p + "gate_proj.weight", p + "up_proj.weight"});
  }
  const auto rows = stacked_bf16_rows(qc, parts, {64, 64}, 64, "test");
  const CanonicalSource blocks = mxfp4_blocks_source(rows), scales = mxfp4_scales_source(rows);
  ASSERT_TRUE(blocks.source_digest);
  ASSERT_TRUE(scales.source_digest);
  const std::string gate1 = parts[1][0];
  EXPECT_EQ(blocks.source_digest(gate1), "");  // not read yet
  scales.assemble(1, 2);
  const io::ByteView bytes = qc.data(qc.find(gate1));
  const std::string want = xxh3_128_hex(bytes.data, bytes.size);
  EXPECT_EQ(blocks.source_digest(gate1), want);
  EXPECT_EQ(scales.source_digest(gate1), want);
  EXPECT_EQ(blocks.source_digest(parts[0][1]), "");
  blocks.assemble(0, 4);
  for (const auto& per_expert : parts)
    for (const auto& name : per_expert) {
      const io::ByteView b = qc.data(qc.find(name));
      EXPECT_EQ(scales.source_digest(name), xxh3_128_hex(b.data, b.size)) << name;
    }
  EXPECT_EQ(blocks.source_digest("model.layers.2.mlp.gate.weight"), "");

  // Hashed span by span inside the quantizing pass (the executor's spans of a few rows): the
  // same digests as one pass over each tensor.
  const auto again = stacked_bf16_rows(qc, parts, {64, 64}, 64, "test");
  const CanonicalSource placed = mxfp4_blocks_source(again);
  std::vector<uint8_t> codes(static_cast<size_t>(4 * 128 * 64 / 2));
  placed.assemble_codes(0, 4, [&](int64_t e, int64_t row) {
    return CodeRowSpan{codes.data() + (e * 128 + row) * 32, 1 + row % 5, 32, 16};
  });
  for (const auto& per_expert : parts)
    for (const auto& name : per_expert) {
      const io::ByteView b = qc.data(qc.find(name));
      EXPECT_EQ(placed.source_digest(name), xxh3_128_hex(b.data, b.size)) << name;
    }

  const fs::path g = make_family(dir, "gpt_oss_bf16", "gptoss");
  const auto gc = io::Checkpoint::open(g);
  const auto sliced = sliced_bf16_rows(gc, "model.layers.1.mlp.experts.gate_up_proj", 4, 64, 128, "test");
  const CanonicalSource shared = mxfp4_blocks_source(sliced);
  shared.assemble(0, 4);
  EXPECT_FALSE(shared.source_digest);
}

TEST(QuantizedSources, SlicesOfATensorHoldingEveryExpertAreSummedByTheirPassOnceAskedFor) {
  // Gemma4-like [E, rows, cols] slices: the quantizing pass sums an expert's XXH3 blocks only
  // once the executor wants them; an expert whose pass made none (before that) is summed from
  // its bytes when folded; the fold in expert order is the tensor's digest; after release,
  // passes make none.
  TempDir dir;
  const fs::path g = make_family(dir, "gpt_oss_bf16", "gptoss");
  const auto gc = io::Checkpoint::open(g);
  const std::string name = "model.layers.1.mlp.experts.gate_up_proj";
  const auto sliced = sliced_bf16_rows(gc, name, 4, 64, 128, "test");
  if (!mxfp4_quantizer_hashes_in_pass()) {
    EXPECT_FALSE(sliced->block_sums);  // the portable accumulation would cost more than a pass
    return;
  }
  ASSERT_TRUE(sliced->block_sums);
  const CanonicalSource blocks = mxfp4_blocks_source(sliced);
  ASSERT_TRUE(blocks.ordered_block_sums);
  const std::shared_ptr<ExpertBlockSums> sums = blocks.ordered_block_sums(name);
  ASSERT_EQ(sums, sliced->block_sums);
  EXPECT_FALSE(blocks.ordered_block_sums("model.layers.1.mlp.experts.down_proj"));
  EXPECT_FALSE(sums->piece(0));  // not wanted yet
  std::vector<uint8_t> codes(static_cast<size_t>(4 * 64 * 128 / 2));
  const auto to = [&](int64_t e, int64_t row) {
    return CodeRowSpan{codes.data() + (e * 64 + row) * 64, 1 + row % 5, 64, 16};
  };
  blocks.assemble_codes(2, 2, to);  // no sums made
  sums->want();
  blocks.assemble_codes(0, 2, to);  // spans of 1 to 5 rows, summed in the pass
  const io::ByteView whole = gc.data(gc.find(name));
  ASSERT_EQ(whole.size, sums->length());
  Xxh3BlockFold fold(sums->length());
  sums->fold(fold, 0, 1, whole.data);
  sums->fold(fold, 1, 3, whole.data + whole.size / 4);
  EXPECT_EQ(fold.hex_digest(whole.data + whole.size - 64), xxh3_128_hex(whole.data, whole.size));
  sums->release();
  EXPECT_FALSE(sums->piece(1));
  sums->want();  // released for good
  EXPECT_FALSE(sums->piece(1));
  // Slices of no whole number of XXH3 blocks are left to the executor's own pass.
  EXPECT_FALSE(ExpertBlockSums::usable(1000, 4));
  EXPECT_THROW(ExpertBlockSums(1000, 4), Error);
  // A count of 0 names itself (it once threw std::bad_array_new_length from the allocation).
  try {
    ExpertBlockSums none(1024, 0);
    ADD_FAILURE() << "0 slices accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ExpertBlockSums: 0 slices of 1024 bytes"), std::string::npos) << e.what();
  }
}

TEST(QuantizedSources, ScaleOnlyPathMatchesTheQuantizerOnEdgeValues) {
  // Blocks of zeros, negative zeros, bf16 subnormals, the largest finite bf16, exact powers of
  // two and values just below them: the scale path only looks at the block maximum, and must
  // still choose what the quantizer chooses.
  const uint16_t patterns[] = {0x0000, 0x8000, 0x0001, 0x807f, 0x0080, 0x7f7f, 0xff7f, 0x3f80,
                               0x3f7f, 0xbfff, 0x4000, 0x40c0, 0x40bf, 0x0040, 0x3c00, 0xc2c8};
  const int64_t K = 32;
  std::vector<uint16_t> src;
  for (uint16_t p : patterns) {
    for (int i = 0; i < K; ++i) src.push_back(i == 7 ? p : static_cast<uint16_t>(p & 0x8000));
  }
  for (uint16_t p : patterns)  // a full block of the pattern
    for (int i = 0; i < K; ++i) src.push_back(p);
  const int64_t rows = static_cast<int64_t>(src.size()) / K;
  std::vector<uint8_t> codes(src.size() / 2), expect(rows), got(rows), got_f32(rows);
  quantize_mxfp4_rows_bf16(src.data(), rows, K, codes.data(), expect.data(), "edge");
  mxfp4_scales_only(src.data(), rows, K, got.data(), "edge");
  EXPECT_EQ(got, expect);
  std::vector<float> f(src.size());
  for (size_t i = 0; i < f.size(); ++i) f[i] = bf16_to_float(src[i]);
  mxfp4_scales_only(f.data(), rows, K, got_f32.data(), "edge");
  EXPECT_EQ(got_f32, expect);
}

TEST(QuantizedSources, NonFiniteValuesFailBothPathsNamingTheExpertTensors) {
  auto experts = std::vector<std::vector<uint16_t>>{random_bf16(4 * 64, 3), random_bf16(4 * 64, 4)};
  experts[1][2 * 64 + 40] = 0x7fc0;  // NaN in row 2, block 1 of expert 1
  const auto rows = memory_rows(experts, 4, 64);
  const std::string a = bad_input_message([&] { mxfp4_blocks_source(rows).assemble(0, 2); });
  const std::string b = bad_input_message([&] { mxfp4_scales_source(rows).assemble(0, 2); });
  EXPECT_NE(a.find("tensor t1 (expert 1"), std::string::npos) << a;
  EXPECT_NE(a.find("NaN"), std::string::npos) << a;
  EXPECT_NE(b.find("tensor t1 (expert 1"), std::string::npos) << b;
  EXPECT_NE(b.find("NaN"), std::string::npos) << b;
  EXPECT_NO_THROW(mxfp4_blocks_source(rows).assemble(0, 1));
}

TEST(QuantizedSources, Fp8ExpertsQuantizedFromTheirBytesEqualTheDequantizedFloatPath) {
  // The FP8 rows carry fp8_parts, so the pass quantizes straight from the mapped FP8 bytes; the
  // same rows without it go through floats dequantized a piece at a time. Codes, scales and the
  // recorded error must not tell them apart.
  TempDir dir;
  const auto dc = io::Checkpoint::open(make_family(dir, "deepseek_v3", "ds"));
  std::vector<std::vector<std::string>> parts, scales;
  for (int e = 0; e < 8; ++e) {
    const std::string p = "model.layers.1.mlp.experts." + std::to_string(e) + ".";
    parts.push_back({p + "gate_proj.weight", p + "up_proj.weight"});
    scales.push_back({p + "gate_proj.weight_scale_inv", p + "up_proj.weight_scale_inv"});
  }
  const auto direct = stacked_fp8_rows(dc, parts, scales, {32, 32}, 160, 128, 128, "test");
  ASSERT_TRUE(direct->fp8_parts);
  auto via_floats = std::make_shared<ExpertRows>(*direct);
  via_floats->fp8_parts = nullptr;
  via_floats->scale_handoff = std::make_shared<ScaleHandoff>();
  via_floats->digests = std::make_shared<TensorDigests>();
  const CanonicalSource a = mxfp4_blocks_source(direct), b = mxfp4_blocks_source(via_floats);
  EXPECT_EQ(a.assemble(0, 8).bytes, b.assemble(0, 8).bytes);
  EXPECT_EQ(a.quantization->relative_error(), b.quantization->relative_error());
  std::vector<uint8_t> scales_a, scales_b;
  ASSERT_TRUE(take_all(*direct->scale_handoff, direct->experts, scales_a));
  ASSERT_TRUE(take_all(*via_floats->scale_handoff, via_floats->experts, scales_b));
  EXPECT_EQ(scales_a, scales_b);
  EXPECT_GT(a.quantization->relative_error(), 0.05);
}

TEST(QuantizedSources, TransposedExpertsQuantizedAsTheyLieEqualTheTransposingPath) {
  // GPT-OSS BF16 experts carry mapped_columns, so the pass quantizes the stored [K, N] matrix
  // column by column; without it they are transposed a piece at a time into rows first. The
  // codes (through a tile-like destination whose spans are 16 rows), scales and error agree.
  TempDir dir;
  const auto gc = io::Checkpoint::open(make_family(dir, "gpt_oss_bf16", "gptoss"));
  const std::string gu = "model.layers.1.mlp.experts.gate_up_proj";  // [E, H, 2I] = [4, 64, 128]
  const auto direct = transposed_bf16_rows(gc, gu, 4, 128, 64, "test");
  ASSERT_TRUE(direct->mapped_columns);
  auto transposing = std::make_shared<ExpertRows>(*direct);
  transposing->mapped_columns = nullptr;
  transposing->scale_handoff = std::make_shared<ScaleHandoff>();
  transposing->digests = std::make_shared<TensorDigests>();
  auto codes_of = [](const ExpertRowsPtr& rows, const CanonicalSource& src) {
    // Rows in spans of 16, each row's 2 blocks 16 bytes apart but rows 48 bytes apart.
    std::vector<uint8_t> out(4 * 128 * 48, 0xee);
    src.assemble_codes(0, 4, [&](int64_t e, int64_t row) {
      const int64_t rest = std::min<int64_t>(16 - row % 16, rows->rows - row);
      return CodeRowSpan{out.data() + (e * 128 + row) * 48, rest, 48, 16};
    });
    return out;
  };
  const CanonicalSource a = mxfp4_blocks_source(direct), b = mxfp4_blocks_source(transposing);
  const auto codes_a = codes_of(direct, a), codes_b = codes_of(transposing, b);
  EXPECT_EQ(codes_a, codes_b);
  EXPECT_NE(codes_a, std::vector<uint8_t>(codes_a.size(), 0xee));
  EXPECT_EQ(a.quantization->relative_error(), b.quantization->relative_error());
  std::vector<uint8_t> scales_a, scales_b;
  ASSERT_TRUE(take_all(*direct->scale_handoff, direct->experts, scales_a));
  ASSERT_TRUE(take_all(*transposing->scale_handoff, transposing->experts, scales_b));
  EXPECT_EQ(scales_a, scales_b);
}

TEST(QuantizedSources, ExpertRowsReadStackedSlicedTransposedAndFp8Layouts) {
  // One synthetic checkpoint of each storage style, read back through ExpertRows and compared
  // with the tensors' own bytes.
  TempDir dir;
  const fs::path q = make_family(dir, "qwen3_moe", "qwen");
  const fs::path g = make_family(dir, "gpt_oss_bf16", "gptoss");
  const fs::path d = make_family(dir, "deepseek_v3", "ds");
  auto bf16_of = [](const io::Checkpoint& c, const std::string& name) { return copy_tensor<uint16_t>(c, name); };

  const auto qc = io::Checkpoint::open(q);
  std::vector<std::vector<std::string>> qparts;
  for (int e = 0; e < 4; ++e) {
    const std::string p = "model.layers.2.mlp.experts." + std::to_string(e) + ".";
    qparts.push_back({p + "gate_proj.weight", p + "up_proj.weight"});
  }
  const std::string x = "model.layers.2.mlp.experts.3.";
  const auto stacked = stacked_bf16_rows(qc, qparts, {64, 64}, 64, "test");
  std::vector<uint16_t> got(128 * 64);
  stacked->read_bf16(3, 0, 128, got.data());
  auto gate = bf16_of(qc, x + "gate_proj.weight"), up = bf16_of(qc, x + "up_proj.weight");
  gate.insert(gate.end(), up.begin(), up.end());
  EXPECT_EQ(got, gate);
  // A range across the gate/up seam reads the same rows.
  std::vector<uint16_t> part(40 * 64);
  stacked->read_bf16(3, 50, 40, part.data());
  EXPECT_TRUE(std::equal(part.begin(), part.end(), got.begin() + 50 * 64));

  const auto gc = io::Checkpoint::open(g);
  const std::string gu = "model.layers.1.mlp.experts.gate_up_proj";  // [E, H, 2I] = [4, 64, 128]
  const auto all = bf16_of(gc, gu);
  const auto transposed = transposed_bf16_rows(gc, gu, 4, 128, 64, "test");
  std::vector<uint16_t> t(128 * 64);
  transposed->read_bf16(2, 0, 128, t.data());
  for (int n = 0; n < 128; ++n)
    for (int k = 0; k < 64; ++k) ASSERT_EQ(t[n * 64 + k], all[(2 * 64 + k) * 128 + n]) << n << "," << k;
  std::vector<uint16_t> t_part(37 * 64);  // rows 40-76: not a whole number of 8-row tiles
  transposed->read_bf16(2, 40, 37, t_part.data());
  EXPECT_TRUE(std::equal(t_part.begin(), t_part.end(), t.begin() + 40 * 64));
  const auto sliced = sliced_bf16_rows(gc, gu, 4, 64, 128, "test");
  std::vector<uint16_t> s(64 * 128);
  sliced->read_bf16(3, 0, 64, s.data());
  EXPECT_TRUE(std::equal(s.begin(), s.end(), all.begin() + 3 * 64 * 128));

  const auto dc = io::Checkpoint::open(d);
  std::vector<std::vector<std::string>> dparts, dscales;
  for (int e = 0; e < 8; ++e) {
    const std::string p = "model.layers.1.mlp.experts." + std::to_string(e) + ".down_proj.";
    dparts.push_back({p + "weight"});
    dscales.push_back({p + "weight_scale_inv"});
  }
  const std::string y = "model.layers.1.mlp.experts.5.down_proj.";  // [H, I] = [160, 32], scales [2, 1]
  const auto fp8 = stacked_fp8_rows(dc, dparts, dscales, {160}, 32, 128, 128, "test");
  EXPECT_TRUE(fp8->from_fp8);
  EXPECT_EQ(quantize_transform_name(*fp8), "dequantize_fp8_block+quantize_mxfp4");
  std::vector<float> deq(160 * 32), expect(160 * 32);
  fp8->read_float(5, deq.data());
  const auto w = copy_tensor<uint8_t>(dc, y + "weight");
  const auto sc = copy_tensor<float>(dc, y + "weight_scale_inv");
  fp8_block_dequant(w.data(), 160, 32, sc.data(), 2, 1, expect.data(), "ref");
  EXPECT_EQ(deq, expect);
  std::vector<float> deq_part(100 * 32);  // rows 37-136: across the two row blocks' seam
  fp8->read_f32(5, 37, 100, deq_part.data());
  EXPECT_TRUE(std::equal(deq_part.begin(), deq_part.end(), expect.begin() + 37 * 32));
  EXPECT_NE(sc[0], sc[1]);  // the two row blocks have their own scales
}

}  // namespace
}  // namespace moeprep::models::testing
