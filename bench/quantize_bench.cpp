// Throughput of MXFP4 quantization on a realistic expert tensor: 4 experts of 2880 x 2880
// (GPT-OSS hidden = intermediate = 2880), bf16 weights drawn from N(0, 0.02). Reported as
// bytes of input per second; with 2 threads each thread takes half of the rows, and the
// rate is the total over real (wall) time. The argument is the SIMD level
// (core/simd_level.h: 0 baseline, 1 AVX2, 2 AVX-512); levels the CPU lacks are skipped.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/hash.h"
#include "core/hash_variant.h"
#include "core/uninitialized_bytes.h"
#include "core/simd_level.h"
#include "formats/bf16.h"
#include "formats/bf16_transpose.h"
#include "formats/fp8_block_dequant.h"
#include "formats/mxfp4_dequantize.h"
#include "formats/mxfp4_quantize.h"
#include "formats/mxfp4_quantize_columns.h"
#include "formats/mxfp4_quantize_fp8.h"

using namespace moeprep;

namespace {

constexpr int64_t kExperts = 4;
constexpr int64_t kDim = 2880;
constexpr int64_t kRows = kExperts * kDim;
constexpr int64_t kCols = kDim;

struct Data {
  std::vector<uint16_t> bf16;
  std::vector<float> f32;
  std::vector<uint8_t> codes;
  std::vector<uint8_t> scales;
  std::vector<uint8_t> fp8;
  std::vector<float> fp8_scales;
};

const Data& data() {
  static const Data d = [] {
    Data d;
    std::mt19937 rng(42);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    d.bf16.resize(kRows * kCols);
    d.f32.resize(kRows * kCols);
    for (size_t i = 0; i < d.bf16.size(); ++i) {
      d.bf16[i] = float_to_bf16(normal(rng));
      d.f32[i] = bf16_to_float(d.bf16[i]);
    }
    d.codes.resize(kRows * kCols / 2);
    d.scales.resize(kRows * kCols / 32);
    quantize_mxfp4_rows_bf16(d.bf16.data(), kRows, kCols, d.codes.data(), d.scales.data(), "w");
    d.fp8.resize(kRows * kCols);
    for (auto& c : d.fp8) c = static_cast<uint8_t>(rng() % 0x7f) | (rng() % 2 ? 0x80 : 0);
    d.fp8_scales.assign(((kRows + 127) / 128) * ((kCols + 127) / 128), 1.5e-3f);
    return d;
  }();
  return d;
}

// Rows [begin, end) of this thread's share.
struct Share {
  int64_t begin, rows;
};

Share share(const benchmark::State& state, int64_t multiple) {
  const int64_t units = kRows / multiple;
  const int64_t t = state.thread_index(), n = state.threads();
  const int64_t b = units * t / n, e = units * (t + 1) / n;
  return {b * multiple, (e - b) * multiple};
}

// Runs the benchmark at the level of its argument; false (and skipped) where the CPU lacks it.
bool use_level(benchmark::State& state) {
  const auto level = static_cast<SimdLevel>(state.range(0));
  if (level > cpu_simd_level()) {
    state.SkipWithError("this CPU lacks the SIMD level");
    return false;
  }
  cap_simd_level(level);
  state.SetLabel(simd_level_name(level));
  return true;
}

void BM_QuantizeMxfp4Bf16(benchmark::State& state) {
  if (!use_level(state)) return;
  const Data& d = data();
  const Share s = share(state, 1);
  std::vector<uint8_t> codes(s.rows * kCols / 2), scales(s.rows * kCols / 32);
  for (auto _ : state) {
    quantize_mxfp4_rows_bf16(d.bf16.data() + s.begin * kCols, s.rows, kCols, codes.data(),
                             scales.data(), "w");
    benchmark::DoNotOptimize(codes.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * s.rows * kCols * 2);
}

// The convert path: codes, scales and the error sums in one pass.
void BM_QuantizeMxfp4Bf16Measured(benchmark::State& state) {
  if (!use_level(state)) return;
  const Data& d = data();
  const Share s = share(state, 1);
  std::vector<uint8_t> codes(s.rows * kCols / 2), scales(s.rows * kCols / 32);
  for (auto _ : state) {
    Mxfp4ErrorSums sums;
    quantize_mxfp4_rows_bf16_measured(d.bf16.data() + s.begin * kCols, s.rows, kCols, codes.data(), scales.data(),
                                      "w", sums);
    benchmark::DoNotOptimize(sums);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * s.rows * kCols * 2);
}

// The same into the tile-shuffled weight layout, as convert writes quantized weights since
// issue #6's follow-up: 16 rows a group, a row's 16-byte blocks 256 bytes apart. `hashed`: the
// loop also hashes its rows as XXH3 stripes (core/hash.h, Xxh3StripeHash), as convert quantizes
// an expert's own tensors since issue #6's third follow-up; where the level has no such loop,
// the stripes are hashed portably after quantizing (slow; convert then hashes 64 KiB at a time
// with Xxh3Hasher instead).
// `max_rows` caps each thread's rows (a multiple of 16): 96 rows of 2880 are 553 KB of source
// and 138 KB of codes, within a core's L2 on the dev VM's EPYC (1 MB) and on Sapphire Rapids
// (2 MB), so that the loop's own cost shows without the memory's.
void quantize_tiled(benchmark::State& state, bool hashed, int64_t max_rows = kRows) {
  if (!use_level(state)) return;
  const Data& d = data();
  Share s = share(state, 1);
  s.rows = std::min(s.rows, max_rows);
  std::vector<uint8_t> codes(s.rows * kCols / 2), scales(s.rows * kCols / 32);
  constexpr int64_t kGroup = 16;
  for (auto _ : state) {
    Mxfp4ErrorSums sums;
    Xxh3StripeHash hash(static_cast<uint64_t>(s.rows * kCols) * 2);
    for (int64_t r = 0; r < s.rows; r += kGroup) {
      const int64_t n = std::min(kGroup, s.rows - r);
      const uint16_t* rows = d.bf16.data() + (s.begin + r) * kCols;
      const Mxfp4CodeLayout layout{codes.data() + r * kCols / 2, 16, 256};
      uint8_t* row_scales = scales.data() + r * kCols / 32;
      if (hashed) {
        quantize_mxfp4_rows_bf16_measured(rows, n, kCols, layout, row_scales, "w", sums, hash, r * kCols / 32);
      } else {
        quantize_mxfp4_rows_bf16_measured(rows, n, kCols, layout, row_scales, "w", sums);
      }
    }
    if (hashed) benchmark::DoNotOptimize(hash.hex_digest(d.bf16.data() + (s.begin + s.rows) * kCols - 32));
    benchmark::DoNotOptimize(sums);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * s.rows * kCols * 2);
}
void BM_QuantizeMxfp4Bf16MeasuredTiled(benchmark::State& state) { quantize_tiled(state, false); }
void BM_QuantizeMxfp4Bf16MeasuredTiledHashed(benchmark::State& state) { quantize_tiled(state, true); }
void BM_QuantizeMxfp4Bf16MeasuredTiledHashedInL2(benchmark::State& state) { quantize_tiled(state, true, 96); }

void BM_Mxfp4BlockScalesBf16(benchmark::State& state) {
  if (!use_level(state)) return;
  const Data& d = data();
  const Share s = share(state, 1);
  std::vector<uint8_t> scales(s.rows * kCols / 32);
  for (auto _ : state) {
    mxfp4_block_scales_bf16(d.bf16.data() + s.begin * kCols, s.rows, kCols, scales.data(), "w");
    benchmark::DoNotOptimize(scales.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * s.rows * kCols * 2);
}

// XXH3-128 of the BF16 tensor, as convert hashes the source for the manifest.
void BM_Xxh3(benchmark::State& state) {
  if (!use_level(state)) return;
  const Data& d = data();
  const Share s = share(state, 1);
  for (auto _ : state) benchmark::DoNotOptimize(xxh3_128_hex(d.bf16.data() + s.begin * kCols, s.rows * kCols * 2));
  state.SetBytesProcessed(state.iterations() * s.rows * kCols * 2);
}

// Each XXH3 loop over 256 MiB (past any cache) at a 64-byte aligned start and 8 bytes past one
// (safetensors puts tensors anywhere): why calls of 1 MiB or more take AVX2's loop where the CPU
// has AVX-512 (core/hash.cpp). Arguments: level, offset. On the device host's Xeon every loop
// reads 6.8-7.6 GB/s (memory-bound, bench/RESULTS.md); on the dev VM's EPYC this buffer read
// 3.6-15 GB/s from run to run at every level (its guest memory is slow to stream at times),
// where a standalone 1 GiB test read AVX2 24-31 GB/s, AVX-512 16-24.
void BM_Xxh3LoopFromMemory(benchmark::State& state) {
  const auto level = static_cast<SimdLevel>(state.range(0));
  if (level > cpu_simd_level()) {
    state.SkipWithError("this CPU lacks the SIMD level");
    return;
  }
  constexpr size_t kBytes = size_t{256} << 20;
  static const UninitializedBytes input = [] {
    UninitializedBytes b;
    b.resize_discarding(kBytes + 64);
    for (size_t i = 0; i < b.size(); ++i) b.data()[i] = static_cast<uint8_t>(i * 131 + (i >> 13));
    return b;
  }();
  const xxh3_variant::Functions& loop =
#if defined(MOEPREP_X86_SIMD)
      level == SimdLevel::Avx512 ? xxh3_variant::avx512() : level == SimdLevel::Avx2 ? xxh3_variant::avx2() :
#endif
                                                                                     xxh3_variant::baseline();
  const uint8_t* start = input.data() + state.range(1);
  for (auto _ : state) benchmark::DoNotOptimize(loop.oneshot(start, kBytes));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBytes));
  state.SetLabel(std::string(simd_level_name(level)) + (state.range(1) % 64 == 0 ? ", aligned" : ", unaligned"));
}

void BM_QuantizeMxfp4F32(benchmark::State& state) {
  if (!use_level(state)) return;
  const Data& d = data();
  const Share s = share(state, 1);
  std::vector<uint8_t> codes(s.rows * kCols / 2), scales(s.rows * kCols / 32);
  for (auto _ : state) {
    quantize_mxfp4_rows(d.f32.data() + s.begin * kCols, s.rows, kCols, codes.data(),
                        scales.data(), "w");
    benchmark::DoNotOptimize(codes.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * s.rows * kCols * 4);
}

// Bytes of MXFP4 input (codes + scales) per second.
void BM_DequantizeMxfp4(benchmark::State& state) {
  const Data& d = data();
  const Share s = share(state, 1);
  std::vector<float> out(s.rows * kCols);
  for (auto _ : state) {
    dequantize_mxfp4_rows(d.codes.data() + s.begin * kCols / 2,
                          d.scales.data() + s.begin * kCols / 32, s.rows, kCols, out.data());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * s.rows * (kCols / 2 + kCols / 32));
}

// Bytes of FP8 input per second; the share is whole 128-row scale blocks.
void BM_Fp8BlockDequant(benchmark::State& state) {
  const Data& d = data();
  const Share s = share(state, 128 * 3);  // 11520 rows = 30 groups of 384
  const int64_t scols = (kCols + 127) / 128;
  std::vector<float> out(s.rows * kCols);
  for (auto _ : state) {
    fp8_block_dequant(d.fp8.data() + s.begin * kCols, s.rows, kCols,
                      d.fp8_scales.data() + (s.begin / 128) * scols, (s.rows + 127) / 128, scols,
                      out.data(), "w");
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * s.rows * kCols);
}

// FP8 block-scaled weights (DeepSeek-V3) to MXFP4 with the error sums, in bytes of FP8 input
// per second: the direct quantizer, and its definition (each 384 rows dequantized to floats,
// then the float quantizer), the way convert took before it.
// `rows_per_call` rows a call (0: the whole share in one).
void quantize_fp8_share(benchmark::State& state, int64_t rows_per_call) {
  if (!use_level(state)) return;
  const Data& d = data();
  const Share s = share(state, 128 * 3);
  const int64_t scols = (kCols + 127) / 128, step = rows_per_call > 0 ? rows_per_call : s.rows;
  std::vector<uint8_t> codes(s.rows * kCols / 2), scales(s.rows * kCols / 32);
  state.SetLabel(std::string(simd_level_name(simd_level())) + (mxfp4_fp8_quantizer_uses_tables() ? ", tables" : ""));
  for (auto _ : state) {
    Mxfp4ErrorSums sums;
    for (int64_t r = s.begin; r < s.begin + s.rows; r += step)
      quantize_mxfp4_rows_fp8_measured(d.fp8.data() + r * kCols, r, std::min(step, s.begin + s.rows - r), kCols,
                                       d.fp8_scales.data(), scols, 128, 128,
                                       Mxfp4CodeLayout{codes.data() + (r - s.begin) * kCols / 2, kCols / 2, 16},
                                       scales.data() + (r - s.begin) * kCols / 32, "w", sums);
    benchmark::DoNotOptimize(sums);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * s.rows * kCols);
}

void BM_QuantizeMxfp4Fp8Measured(benchmark::State& state) { quantize_fp8_share(state, 0); }

// The same 16 rows a call, as convert calls it for the tile-shuffled layout (a group of 16 rows
// a code span).
void BM_QuantizeMxfp4Fp8MeasuredIn16RowCalls(benchmark::State& state) { quantize_fp8_share(state, 16); }

void BM_QuantizeMxfp4Fp8MeasuredByDequantization(benchmark::State& state) {
  if (!use_level(state)) return;
  const Data& d = data();
  const Share s = share(state, 128 * 3);
  const int64_t scols = (kCols + 127) / 128, chunk = 128 * 3;
  std::vector<uint8_t> codes(s.rows * kCols / 2), scales(s.rows * kCols / 32);
  std::vector<float> floats(chunk * kCols);
  for (auto _ : state) {
    Mxfp4ErrorSums sums;
    for (int64_t r = s.begin; r < s.begin + s.rows; r += chunk) {
      fp8_block_dequant(d.fp8.data() + r * kCols, chunk, kCols, d.fp8_scales.data() + (r / 128) * scols, chunk / 128,
                        scols, floats.data(), "w");
      quantize_mxfp4_rows_measured(floats.data(), chunk, kCols, codes.data() + (r - s.begin) * kCols / 2,
                                   scales.data() + (r - s.begin) * kCols / 32, "w", sums);
    }
    benchmark::DoNotOptimize(sums);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * s.rows * kCols);
}

// GPT-OSS BF16 experts as transformers stores them, inputs-first: experts of [K, N] bf16,
// quantized as the N rows of each expert's transpose. From memory: 12 experts of [2048, 1536]
// (75 MB, beyond the L3). In L2: one expert of [2048, 128] (512 KiB) read again each iteration,
// the loop's arithmetic and its software prefetches alone (dev VM's Zen 4: 11.6-11.7 GB/s since
// 61bf7c3, 8.8-9.1 before, against 14 for the row loop's BM_..TiledHashedInL2; bench/RESULTS.md).
struct ColumnShape {
  int64_t experts, k, n;
};
constexpr ColumnShape kColumnsFromMemory{12, 2048, 1536}, kColumnsInL2{1, 2048, 128};
// GPT-OSS BF16's down_proj from memory: rows 4 KiB apart, so that the lines of one vector of columns
// down a group of slabs all fall in one L1 set (the column loop's worst case for reading them twice).
constexpr ColumnShape kDownProjFromMemory{12, 768, 2048};

const UninitializedBytes& column_source(const ColumnShape& shape) {
  // On huge pages, as convert's mapped sources are where the page cache holds 2 MiB folios:
  // on 4 KiB pages every row of a slab is another page, and the walk measures the TLB.
  static std::map<int64_t, UninitializedBytes> sources;
  const int64_t elements = shape.experts * shape.k * shape.n;
  UninitializedBytes& b = sources[elements];
  if (b.size() == 0) {
    b.resize_discarding(static_cast<size_t>(elements) * sizeof(uint16_t));
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    for (int64_t i = 0; i < elements; ++i) {
      const uint16_t x = float_to_bf16(normal(rng));
      std::memcpy(b.data() + 2 * i, &x, sizeof x);
    }
  }
  return b;
}

// Arguments: SIMD level, columns per call.
void quantize_columns(benchmark::State& state, const ColumnShape& shape, bool by_transposing) {
  if (!use_level(state)) return;
  const int64_t per_call = state.range(1), expert_elements = shape.k * shape.n;
  const uint8_t* src = column_source(shape).data();
  std::vector<uint8_t> codes(static_cast<size_t>(shape.experts * expert_elements / 2)),
      scales(static_cast<size_t>(shape.experts * expert_elements / 32));
  std::vector<uint16_t> rows(static_cast<size_t>(per_call * shape.k));
  for (auto _ : state) {
    Mxfp4ErrorSums sums;
    for (int64_t e = 0; e < shape.experts; ++e)
      for (int64_t c = 0; c < shape.n; c += per_call) {
        const int64_t n = std::min(per_call, shape.n - c);
        const uint8_t* from = src + (e * expert_elements + c) * 2;
        const int64_t row = e * shape.n + c;
        const Mxfp4CodeLayout layout{codes.data() + row * shape.k / 2, shape.k / 2, 16};
        uint8_t* row_scales = scales.data() + row * shape.k / 32;
        if (by_transposing) {
          transpose_bf16(from, shape.n, shape.k, n, rows.data(), shape.k);
          quantize_mxfp4_rows_bf16_measured(rows.data(), n, shape.k, layout, row_scales, "w", sums);
        } else {
          quantize_mxfp4_columns_bf16_measured(from, shape.n, shape.k, n, layout, row_scales, "w", sums);
        }
      }
    benchmark::DoNotOptimize(sums);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * shape.experts * expert_elements * 2);
}
void BM_QuantizeMxfp4ColumnsBf16Measured(benchmark::State& state) {
  quantize_columns(state, kColumnsFromMemory, false);
}
void BM_QuantizeMxfp4ColumnsBf16MeasuredInL2(benchmark::State& state) { quantize_columns(state, kColumnsInL2, false); }
void BM_QuantizeMxfp4ColumnsBf16MeasuredDownProj(benchmark::State& state) {
  quantize_columns(state, kDownProjFromMemory, false);
}
// The baseline: transpose_bf16 a piece of columns at a time, then the row quantizer.
void BM_QuantizeMxfp4TransposedBf16Measured(benchmark::State& state) {
  quantize_columns(state, kColumnsFromMemory, true);
}

}  // namespace

#define MOEPREP_THROUGHPUT_BENCHMARK(fn) \
  BENCHMARK(fn)->Unit(benchmark::kMillisecond)->UseRealTime()->Threads(1)->Threads(2)
#define MOEPREP_LEVELS_BENCHMARK(fn) \
  BENCHMARK(fn)->Unit(benchmark::kMillisecond)->UseRealTime()->DenseRange(0, 2)->Threads(1)->Threads(2)

MOEPREP_LEVELS_BENCHMARK(BM_QuantizeMxfp4Bf16);
MOEPREP_LEVELS_BENCHMARK(BM_QuantizeMxfp4Bf16Measured);
MOEPREP_LEVELS_BENCHMARK(BM_QuantizeMxfp4Bf16MeasuredTiled);
MOEPREP_LEVELS_BENCHMARK(BM_QuantizeMxfp4Bf16MeasuredTiledHashed);
MOEPREP_LEVELS_BENCHMARK(BM_QuantizeMxfp4Bf16MeasuredTiledHashedInL2);
MOEPREP_LEVELS_BENCHMARK(BM_Mxfp4BlockScalesBf16);
MOEPREP_LEVELS_BENCHMARK(BM_Xxh3);
BENCHMARK(BM_Xxh3LoopFromMemory)->ArgsProduct({{0, 1, 2}, {0, 8}})->Unit(benchmark::kMillisecond)->UseRealTime();
MOEPREP_LEVELS_BENCHMARK(BM_QuantizeMxfp4F32);
MOEPREP_THROUGHPUT_BENCHMARK(BM_DequantizeMxfp4);
MOEPREP_THROUGHPUT_BENCHMARK(BM_Fp8BlockDequant);
MOEPREP_LEVELS_BENCHMARK(BM_QuantizeMxfp4Fp8Measured);
MOEPREP_LEVELS_BENCHMARK(BM_QuantizeMxfp4Fp8MeasuredIn16RowCalls);
MOEPREP_LEVELS_BENCHMARK(BM_QuantizeMxfp4Fp8MeasuredByDequantization);

BENCHMARK(BM_QuantizeMxfp4ColumnsBf16Measured)->Unit(benchmark::kMillisecond)->ArgsProduct({{0, 1, 2}, {64, 256, 1536}});
BENCHMARK(BM_QuantizeMxfp4ColumnsBf16MeasuredInL2)->Unit(benchmark::kMillisecond)->ArgsProduct({{0, 1, 2}, {128}});
BENCHMARK(BM_QuantizeMxfp4ColumnsBf16MeasuredDownProj)->Unit(benchmark::kMillisecond)->ArgsProduct({{0, 1, 2}, {2048}});
BENCHMARK(BM_QuantizeMxfp4TransposedBf16Measured)->Unit(benchmark::kMillisecond)->ArgsProduct({{0, 1, 2}, {64}});

BENCHMARK_MAIN();
