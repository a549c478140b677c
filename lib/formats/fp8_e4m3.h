#pragma once
#include <array>
#include <cstdint>

#include "core/hd.h"

namespace moeprep {

// OCP 8-bit floating point E4M3 (PyTorch float8_e4m3fn, safetensors F8_E4M3): sign, 4
// exponent bits with bias 7, 3 mantissa bits. No infinities: 0x7F and 0xFF are the only
// NaNs, so the largest magnitude is 1.75 * 2^8 = 448. Exponent field 0 holds subnormals
// m/8 * 2^-6 (the smallest is 2^-9).
MOEPREP_HD bool fp8_e4m3_is_nan(uint8_t code) { return (code & 0x7f) == 0x7f; }

// Every code's exact float value (NaN codes map to a quiet NaN with the code's sign),
// computed at compile time from the definition above.
extern const std::array<float, 256> kFp8E4m3ToFloat;

inline float fp8_e4m3_to_float(uint8_t code) { return kFp8E4m3ToFloat[code]; }

}  // namespace moeprep
