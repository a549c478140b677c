#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "formats/fp8_e4m3.h"

using namespace moeprep;

namespace {

// From the OCP OFP8 definition of E4M3, in double with ldexp: bias 7, subnormals at exponent
// field 0, S.1111.111 the only NaNs, no infinities.
double decode_from_definition(int code, bool* is_nan) {
  const int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
  *is_nan = e == 15 && m == 7;
  const double magnitude = e == 0 ? std::ldexp(m / 8.0, 1 - 7) : std::ldexp(1.0 + m / 8.0, e - 7);
  return s ? -magnitude : magnitude;
}

}  // namespace

TEST(Fp8E4m3, TableMatchesTheDefinitionForAll256Codes) {
  int nans = 0;
  for (int c = 0; c < 256; ++c) {
    bool is_nan = false;
    const double want = decode_from_definition(c, &is_nan);
    const float got = fp8_e4m3_to_float(static_cast<uint8_t>(c));
    EXPECT_EQ(fp8_e4m3_is_nan(static_cast<uint8_t>(c)), is_nan) << c;
    if (is_nan) {
      ++nans;
      EXPECT_TRUE(std::isnan(got)) << c;
      EXPECT_EQ(std::signbit(got), c >= 128) << c;
    } else {
      EXPECT_EQ(static_cast<double>(got), want) << c;
      EXPECT_EQ(std::signbit(got), c >= 128) << c;  // includes -0 for 0x80
    }
  }
  EXPECT_EQ(nans, 2);
}

TEST(Fp8E4m3, LandmarkValues) {
  EXPECT_EQ(fp8_e4m3_to_float(0x00), 0.0f);
  EXPECT_EQ(fp8_e4m3_to_float(0x38), 1.0f);
  EXPECT_EQ(fp8_e4m3_to_float(0x7e), 448.0f);   // largest finite
  EXPECT_EQ(fp8_e4m3_to_float(0xfe), -448.0f);
  EXPECT_EQ(fp8_e4m3_to_float(0x01), 0.001953125f);  // 2^-9, smallest subnormal
  EXPECT_EQ(fp8_e4m3_to_float(0x07), 0.013671875f);  // 7 * 2^-9, largest subnormal
  EXPECT_EQ(fp8_e4m3_to_float(0x08), 0.015625f);     // 2^-6, smallest normal
  EXPECT_EQ(fp8_e4m3_to_float(0x78), 256.0f);        // 0x78 is finite: no infinities
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_float(0x7f)));
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_float(0xff)));
}
