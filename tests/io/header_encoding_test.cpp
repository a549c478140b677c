#include <gtest/gtest.h>

#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "io_test_util.h"

namespace moeprep::io {
namespace {

uint64_t declared_length(const std::string& header) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(header[i]);
  return n;
}

TEST(HeaderEncoding, ExactBytesWithMetadataFirstAndFixedKeyOrder) {
  ShardPlan plan;
  plan.file_name = "s.safetensors";
  plan.tensors = {{"b", Dtype::BF16, Shape{2, 3}}, {"a", Dtype::U8, Shape{5}}};
  plan.metadata = {{"z", "1"}, {"format", "pt"}};
  std::string header = encode_header(plan);
  std::string expected_json =
      R"({"__metadata__":{"format":"pt","z":"1"},)"
      R"("b":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]},)"
      R"("a":{"dtype":"U8","shape":[5],"data_offsets":[12,17]}})";
  ASSERT_EQ(declared_length(header), header.size() - 8);
  EXPECT_EQ(header.substr(8, expected_json.size()), expected_json);
  EXPECT_EQ(header.find_first_not_of(' ', 8 + expected_json.size()), std::string::npos) << "padding is spaces";
  EXPECT_EQ(header, encode_header(plan)) << "deterministic";
}

TEST(HeaderEncoding, NoMetadataObjectWhenMetadataIsEmpty) {
  ShardPlan plan;
  plan.tensors = {{"x", Dtype::F32, Shape{}}};
  std::string header = encode_header(plan);
  EXPECT_EQ(header.substr(8, 2), "{\"");
  EXPECT_EQ(header.find("__metadata__"), std::string::npos);
}

TEST(HeaderEncoding, DataAreaStartsEightByteAlignedForEveryNameLength) {
  for (size_t len = 1; len <= 24; ++len) {
    ShardPlan plan;
    plan.tensors = {{std::string(len, 'n'), Dtype::U8, Shape{3}}};
    if (len % 2) plan.metadata = {{"k", std::string(len, 'v')}};
    std::string header = encode_header(plan);
    EXPECT_EQ(header.size() % 8, 0u) << "name length " << len;
    EXPECT_EQ(declared_length(header) % 8, 0u);
    // What it encodes is what the strict reader accepts.
    Header parsed = parse_header(std::string_view(header).substr(8), 3, "enc");
    ASSERT_EQ(parsed.tensors.size(), 1u);
    EXPECT_EQ(parsed.tensors[0].name, plan.tensors[0].name);
    EXPECT_EQ(parsed.metadata, plan.metadata);
  }
}

TEST(HeaderEncoding, EscapesNamesAndMetadata) {
  ShardPlan plan;
  plan.tensors = {{"quote\"back\\slash", Dtype::U8, Shape{1}}};
  plan.metadata = {{"note", "line\nbreak \"quoted\""}};
  std::string header = encode_header(plan);
  Header parsed = parse_header(std::string_view(header).substr(8), 1, "enc");
  EXPECT_EQ(parsed.tensors[0].name, "quote\"back\\slash");
  EXPECT_EQ(parsed.metadata.at("note"), "line\nbreak \"quoted\"");
}

TEST(HeaderEncoding, RejectsWhatTheReaderWouldRefuse) {
  ShardPlan plan;
  plan.file_name = "s.safetensors";
  plan.tensors = {{"a", Dtype::U8, Shape{1}}, {"a", Dtype::U8, Shape{1}}};
  EXPECT_TRUE(testing::bad_input([&] { encode_header(plan); }, {"s.safetensors", "tensor 'a' planned twice"}));
  plan.tensors = {{"ok", Dtype::U8, Shape{1}}};
  plan.metadata = {{"k", "\xff"}};
  EXPECT_TRUE(testing::bad_input([&] { encode_header(plan); }, {"s.safetensors", "not valid UTF-8"}));
}

}  // namespace
}  // namespace moeprep::io
