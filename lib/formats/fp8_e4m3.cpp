#include "formats/fp8_e4m3.h"

#include <limits>

namespace moeprep {
namespace {

// 2^e for small |e| by repeated multiplication by 2 or 1/2, exact for every e used here.
constexpr float power_of_two(int e) {
  float v = 1.0f;
  for (; e > 0; --e) v *= 2.0f;
  for (; e < 0; ++e) v *= 0.5f;
  return v;
}

constexpr float decode(int code) {
  const float sign = (code & 0x80) ? -1.0f : 1.0f;
  const int exponent = (code >> 3) & 0xf;
  const int mantissa = code & 7;
  if ((code & 0x7f) == 0x7f) {
    constexpr float nan = std::numeric_limits<float>::quiet_NaN();
    return (code & 0x80) ? -nan : nan;
  }
  if (exponent == 0) return sign * static_cast<float>(mantissa) * power_of_two(-9);
  return sign * static_cast<float>(8 + mantissa) * power_of_two(exponent - 7 - 3);
}

constexpr std::array<float, 256> make_table() {
  std::array<float, 256> table{};
  for (int c = 0; c < 256; ++c) table[c] = decode(c);
  return table;
}

}  // namespace

// Constant-initialized, so it is valid before any dynamic initializer that might use it.
constexpr std::array<float, 256> kFp8E4m3ToFloat = make_table();

}  // namespace moeprep
