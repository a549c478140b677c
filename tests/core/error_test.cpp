// Error's promise that what() is one line, whatever text a message quotes.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"

namespace moeprep {
namespace {

TEST(Error, ControlCharactersInAMessageBecomeEscapes) {
  const Error e(ErrorKind::BadInput, std::string("config.json: model_type 'a\nb\r\tc\x7f") + '\0' + "d' is unknown");
  EXPECT_STREQ(e.what(), "config.json: model_type 'a\\x0ab\\x0d\\x09c\\x7f\\x00d' is unknown");
  EXPECT_EQ(e.kind(), ErrorKind::BadInput);
}

TEST(Error, PrintableTextIsKeptAsItIs) {
  const std::string text = "w.safetensors: tensor 'model.layers.0.mlp.experts.gate_up_proj' is \"F8\" \\ 100% \xc3\xa9";
  EXPECT_EQ(escape_control_characters(text), text);
  try {
    throw_bad_input(text);
    FAIL() << "throw_bad_input returned";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), text);
  }
}

}  // namespace
}  // namespace moeprep
