#pragma once
#include <cstdint>

#include "core/hd.h"

namespace moeprep {

// E8M0 block scale: value = 2^(s - 127); s = 255 encodes NaN and must never be used to scale.
inline constexpr uint8_t kE8m0Nan = 255;
inline constexpr uint8_t kE8m0One = 127;

MOEPREP_HD bool e8m0_is_nan(uint8_t s) { return s == kE8m0Nan; }

// Exact for every finite code: builds the float's exponent field directly. Codes 0 and 1
// (2^-127, 2^-126) would be subnormal / the smallest normal; handled through division.
MOEPREP_HD float e8m0_to_float(uint8_t s) {
  if (s == 0) return 5.877471754111438e-39f;  // 2^-127, a float subnormal
  union {
    uint32_t u;
    float f;
  } bits;
  bits.u = static_cast<uint32_t>(s) << 23;
  return bits.f;
}

}  // namespace moeprep
