#pragma once
#include <cstdint>

#include "core/hd.h"

namespace moeprep {

// FP4 E2M1 (OCP Microscaling): sign, 2 exponent bits (bias 1), 1 mantissa bit; no Inf/NaN.
// Code -> value: 0,0.5,1,1.5,2,3,4,6 and their negatives for codes 8..15.
MOEPREP_HD float e2m1_to_float(uint8_t code) {
  const float magnitude[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  float v = magnitude[code & 7];
  return (code & 8) ? -v : v;
}

// Two E2M1 codes per byte: element 2b in the low nibble, element 2b+1 in the high nibble.
MOEPREP_HD uint8_t e2m1_low(uint8_t byte) { return byte & 0xF; }
MOEPREP_HD uint8_t e2m1_high(uint8_t byte) { return byte >> 4; }

}  // namespace moeprep
