#include "formats/mxfp4_dequantize.h"

#include <cmath>

#include "core/error.h"
#include "formats/e2m1.h"
#include "formats/e8m0.h"

namespace moeprep {
namespace {

constexpr int64_t kBlock = 32;

std::string block_position(int64_t row, int64_t block) {
  return "row " + std::to_string(row) + ", block " + std::to_string(block);
}

}  // namespace

void dequantize_mxfp4_rows(const uint8_t* codes, const uint8_t* scales, int64_t rows, int64_t k,
                           float* out, const std::string& context) {
  if (rows < 0 || k < 0 || k % kBlock != 0)
    throw_bad_input(context + ": MXFP4 dequantization needs a non-negative shape with K " +
                    "divisible by 32, got [" + std::to_string(rows) + ", " + std::to_string(k) +
                    "]");
  const int64_t blocks = k / kBlock;
  float value[16];
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t s = scales[r * blocks + b];
      if (e8m0_is_nan(s))
        throw_bad_input(context + ": MXFP4 scale code 255 (E8M0 NaN) at " + block_position(r, b));
      // A 16-entry table per block turns each nibble into one load.
      const float scale = e8m0_to_float(s);
      for (int c = 0; c < 16; ++c) value[c] = e2m1_to_float(static_cast<uint8_t>(c)) * scale;
      const uint8_t* packed = codes + r * (k / 2) + b * (kBlock / 2);
      float* dst = out + r * k + b * kBlock;
      for (int i = 0; i < kBlock / 2; ++i) {
        dst[2 * i] = value[e2m1_low(packed[i])];
        dst[2 * i + 1] = value[e2m1_high(packed[i])];
      }
      // Only 2^126 and 2^127 times 2 or more leave the float range.
      if (s >= 253) {
        for (int i = 0; i < kBlock; ++i)
          if (std::isinf(dst[i]))
            throw_bad_input(context + ": MXFP4 value at " + block_position(r, b) + " (element " +
                            std::to_string(b * kBlock + i) + ") overflows float32: scale 2^" +
                            std::to_string(static_cast<int>(s) - 127));
      }
    }
  }
}

}  // namespace moeprep
