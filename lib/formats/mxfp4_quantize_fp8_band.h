#pragma once
// Internal to the FP8 table loops (mxfp4_quantize_fp8_avx512.cpp, mxfp4_quantize_fp8_avx2.cpp):
// the tables of one band of block_n rows, per FP8 scale column, that both loops read. Each loop
// has its own slot type (one scale block's rounding at one E8M0 code, laid out for its
// instructions) and fills it with its own fill_code_slot(slot, magnitude_bits, x, flip), found
// by argument-dependent lookup. The slot types have internal linkage, so each file's
// instantiation is its own and code built for one instruction set never links into the other.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "formats/fp8_e4m3.h"
#include "formats/mxfp4_quantize_kernels.h"

namespace moeprep::mxfp4_fp8_kernels {

constexpr uint8_t kStop = 255;  // an X-table entry: NaN code, or a product that overflows

template <class Slot>
class BandTables {
 public:
  explicit BandTables(int64_t scale_cols)
      : scale_cols_(scale_cols),
        magnitude_bits_(static_cast<size_t>(scale_cols) * 128),
        scale_code_(static_cast<size_t>(scale_cols) * 128),
        slot_of_(static_cast<size_t>(scale_cols) * 256, nullptr),
        multiplier_(static_cast<size_t>(scale_cols)),
        flip_(static_cast<size_t>(scale_cols)),
        scale_code_data_(scale_code_.data()),
        slot_of_data_(slot_of_.data()) {}

  void start_band(const float* scale_row) {
    const float* value = kFp8E4m3ToFloat.data();
    one_multiply_ = true;
    for (int64_t sc = 0; sc < scale_cols_; ++sc) {
      const float s = std::fabs(scale_row[sc]);
      one_multiply_ = one_multiply_ && std::isfinite(s * 0x1p120f);
      multiplier_[sc] = s;
      flip_[sc] = std::signbit(scale_row[sc]) ? 8 : 0;
      int32_t* bits = &magnitude_bits_[sc * 128];
      uint8_t* x = &scale_code_[sc * 128];
      for (int m = 0; m < 127; ++m) {
        const float a = value[m] * s;
        uint32_t u;
        std::memcpy(&u, &a, 4);
        bits[m] = static_cast<int32_t>(u);
        x[m] = u >= 0x7f800000u ? kStop : mxfp4_kernels::scale_code(u, u >> 23);
      }
      bits[127] = 0;
      x[127] = kStop;
    }
    if (one_multiply_)
      for (float& m : multiplier_) m *= 0x1p120f;  // exact: a power of two, no overflow
    for (uint32_t i : built_) slot_of_[i] = nullptr;
    built_.clear();
    used_ = 0;
  }

  // Whether every |s| * 2^120 is finite: then a = fl(f * (|s| * 2^120)) for f = value * 2^-120,
  // one rounding of the same exact product; otherwise a = fl(fl(f * 2^120) * |s|).
  bool one_multiply() const { return one_multiply_; }
  float multiplier(int64_t sc) const { return multiplier_[sc]; }
  // The E8M0 code of a block of scale column sc whose largest magnitude code is m.
  uint8_t scale_code(int64_t sc, uint32_t m) const { return scale_code_data_[sc * 128 + m]; }

  // The slot of scale column sc at E8M0 code x, built on first use; slots never move.
  const Slot* slot(int64_t sc, uint8_t x) {
    const Slot* slot = slot_of_data_[sc * 256 + x];
    return __builtin_expect(slot != nullptr, 1) ? slot : build(sc, x);
  }

 private:
  static constexpr size_t kPage = 64;

  __attribute__((noinline)) const Slot* build(int64_t sc, uint8_t x) {
    if (used_ == pages_.size() * kPage) pages_.emplace_back(new Slot[kPage]);
    Slot& slot = pages_[used_ / kPage][used_ % kPage];
    ++used_;
    fill_code_slot(slot, &magnitude_bits_[sc * 128], x, flip_[sc]);
    slot_of_[sc * 256 + x] = &slot;
    built_.push_back(static_cast<uint32_t>(sc * 256 + x));
    return &slot;
  }

  int64_t scale_cols_;
  std::vector<int32_t> magnitude_bits_;     // bits of a by magnitude code
  std::vector<uint8_t> scale_code_;         // E8M0 code by largest magnitude code
  std::vector<const Slot*> slot_of_;    // slot by E8M0 code, null where not built yet
  std::vector<uint32_t> built_;             // the slot_of_ entries set in this band
  std::vector<std::unique_ptr<Slot[]>> pages_;
  size_t used_ = 0;
  std::vector<float> multiplier_;
  std::vector<uint8_t> flip_;
  bool one_multiply_ = true;
  // The data of scale_code_ and slot_of_, which never move, for the inlined lookups.
  const uint8_t* scale_code_data_;
  const Slot* const* slot_of_data_;
};

// Each thread's tables of the last band it met, kept from call to call: convert quantizes 16
// rows a call (a group of the tile-shuffled layout), 8 calls a band of 128 rows, and rebuilding
// the tables each time had cost 14.0 against 8.9 ms per 33 MB (dev VM). They are reused only for
// a scale row of the same bits. `scratch` is the loop's own per-thread working memory.
template <class Slot, class Scratch>
struct BandTableCache {
  std::unique_ptr<BandTables<Slot>> tables;
  std::vector<float> scale_row;  // compared bit for bit
  Scratch scratch;

  BandTables<Slot>& tables_for(const float* row, int64_t scale_cols) {
    const size_t n = static_cast<size_t>(scale_cols);
    if (tables && scale_row.size() == n && std::memcmp(scale_row.data(), row, n * sizeof(float)) == 0) return *tables;
    if (!tables || scale_row.size() != n) tables = std::make_unique<BandTables<Slot>>(scale_cols);
    scale_row.assign(row, row + scale_cols);
    tables->start_band(row);
    return *tables;
  }
};

}  // namespace moeprep::mxfp4_fp8_kernels
