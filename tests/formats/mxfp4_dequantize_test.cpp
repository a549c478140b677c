#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/e8m0.h"
#include "formats/mxfp4_dequantize.h"

using namespace moeprep;

namespace {

std::string error_of(const std::vector<uint8_t>& codes, const std::vector<uint8_t>& scales,
                     int64_t rows, int64_t k, const std::string& name) {
  std::vector<float> out(rows * k);
  try {
    dequantize_mxfp4_rows(codes.data(), scales.data(), rows, k, out.data(), name);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::BadInput);
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST(Mxfp4Dequantize, EveryCodeAndEveryFiniteScaleIsExact) {
  // One row per scale code 0..252, each holding all 16 codes twice: compare with ldexp.
  const int64_t rows = 253, k = 32;
  std::vector<uint8_t> codes(rows * 16), scales(rows);
  for (int64_t r = 0; r < rows; ++r) {
    scales[r] = static_cast<uint8_t>(r);
    for (int b = 0; b < 16; ++b) codes[r * 16 + b] = static_cast<uint8_t>(b | ((15 - b) << 4));
  }
  std::vector<float> out(rows * k);
  dequantize_mxfp4_rows(codes.data(), scales.data(), rows, k, out.data());
  const double magnitude[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  for (int64_t r = 0; r < rows; ++r) {
    for (int i = 0; i < 32; ++i) {
      const int code = i % 2 == 0 ? i / 2 : 15 - i / 2;
      double want = std::ldexp(magnitude[code & 7], static_cast<int>(r) - 127);
      if (code & 8) want = -want;
      ASSERT_EQ(static_cast<double>(out[r * k + i]), want) << "scale " << r << " code " << code;
      ASSERT_EQ(std::signbit(out[r * k + i]), (code & 8) != 0);
    }
  }
}

TEST(Mxfp4Dequantize, E8m0DecodesExactly) {
  for (int s = 0; s < 255; ++s)
    ASSERT_EQ(static_cast<double>(e8m0_to_float(static_cast<uint8_t>(s))), std::ldexp(1.0, s - 127))
        << s;
}

TEST(Mxfp4Dequantize, LargestScalesStayExactWhereTheyFit) {
  // 2^127 * 1.5 fits in float; 2^126 * 3 fits.
  std::vector<uint8_t> codes(32, 0), scales = {254, 253};
  codes[0] = 0x3b;   // element 0: code 11 = -1.5, element 1: code 3 = 1.5
  codes[16] = 0x05;  // row 1, element 0: code 5 = 3
  std::vector<float> out(64);
  dequantize_mxfp4_rows(codes.data(), scales.data(), 2, 32, out.data());
  EXPECT_EQ(out[0], -1.5f * std::ldexp(1.0f, 127));
  EXPECT_EQ(out[1], 1.5f * std::ldexp(1.0f, 127));
  EXPECT_EQ(out[32], 3.0f * std::ldexp(1.0f, 126));
}

TEST(Mxfp4Dequantize, RejectsNanScaleNamingTensorRowAndBlock) {
  std::vector<uint8_t> codes(2 * 32, 0x11), scales = {127, 127, 127, 255};
  const std::string msg = error_of(codes, scales, 2, 64, "gate_up_proj_scales");
  EXPECT_NE(msg.find("gate_up_proj_scales"), std::string::npos) << msg;
  EXPECT_NE(msg.find("scale code 255"), std::string::npos) << msg;
  EXPECT_NE(msg.find("row 1, block 1"), std::string::npos) << msg;
}

TEST(Mxfp4Dequantize, RejectsOverflowingProducts) {
  std::vector<uint8_t> codes(16, 0), scales = {254};
  codes[3] = 0x40;  // element 7: code 4 = 2, times 2^127 = 2^128
  const std::string msg = error_of(codes, scales, 1, 32, "w");
  EXPECT_NE(msg.find("w: "), std::string::npos) << msg;
  EXPECT_NE(msg.find("element 7"), std::string::npos) << msg;
  EXPECT_NE(msg.find("overflows float32"), std::string::npos) << msg;
}

TEST(Mxfp4Dequantize, RejectsKNotAMultipleOf32) {
  std::vector<uint8_t> codes(8), scales(1);
  const std::string msg = error_of(codes, scales, 1, 16, "short_rows");
  EXPECT_NE(msg.find("short_rows"), std::string::npos) << msg;
  EXPECT_NE(msg.find("divisible by 32"), std::string::npos) << msg;
}
