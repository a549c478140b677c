#include <gtest/gtest.h>

#include "core/error.h"
#include "plan/options.h"

namespace moeprep::plan {
namespace {

TEST(ByteSizes, UnitsAndErrors) {
  EXPECT_EQ(parse_byte_size("123"), 123u);
  EXPECT_EQ(parse_byte_size("5GB"), 5000000000u);
  EXPECT_EQ(parse_byte_size("500MB"), 500000000u);
  EXPECT_EQ(parse_byte_size("1GiB"), 1073741824u);
  EXPECT_EQ(parse_byte_size("1.5kb"), 1500u);
  for (const char* bad : {"", "GB", "5XB", "-1", "0"}) {
    try {
      parse_byte_size(bad);
      FAIL() << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Usage);
      EXPECT_NE(std::string(e.what()).find("size"), std::string::npos) << e.what();
    }
  }
}

TEST(GateModes, NamesRoundTrip) {
  EXPECT_EQ(gate_mode_from_name("separated"), layout::GateMode::Separated);
  EXPECT_EQ(gate_mode_from_name("interleave"), layout::GateMode::Interleave);
  EXPECT_STREQ(gate_mode_name(layout::GateMode::Interleave), "interleave");
  EXPECT_THROW(gate_mode_from_name("interleaved"), Error);
}

TEST(PadDefaults, FollowTheGateMode) {
  ConvertOptions o;
  EXPECT_EQ(o.effective_pad_hidden(), 256);
  EXPECT_EQ(o.effective_pad_intermediate(), 128);
  o.gate_mode = layout::GateMode::Interleave;
  EXPECT_EQ(o.effective_pad_intermediate(), 256);
  o.pad_intermediate = 512;
  EXPECT_EQ(o.effective_pad_intermediate(), 512);
}

}  // namespace
}  // namespace moeprep::plan
