// parse_header: one test per rule, each checking the message names the file, the tensor where
// there is one, and the problem.
#include <string>

#include <gtest/gtest.h>

#include "io/safetensors.h"
#include "io_test_util.h"

namespace moeprep::io {
namespace {

using testing::bad_input;

const std::string kFile = "w.safetensors";

Header parse(const std::string& json, uint64_t data_size) { return parse_header(json, data_size, kFile); }

// One tensor "t" of the given entry body, whose data area is `data_size` bytes.
::testing::AssertionResult rejects_entry(const std::string& entry, uint64_t data_size,
                                         const std::vector<std::string>& needles) {
  std::vector<std::string> all = {kFile + ": ", "tensor 't'"};
  all.insert(all.end(), needles.begin(), needles.end());
  return bad_input([&] { parse("{\"t\":" + entry + "}", data_size); }, all);
}

TEST(HeaderValidation, AcceptsValidHeaderAndSortsByOffset) {
  Header h = parse(R"({"__metadata__":{"format":"pt","k":"v"},
      "b":{"dtype":"BF16","shape":[2,2],"data_offsets":[4,12]},
      "a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},
      "z":{"dtype":"F32","shape":[0,3],"data_offsets":[12,12]}})",
                   12);
  ASSERT_EQ(h.tensors.size(), 3u);
  EXPECT_EQ(h.tensors[0].name, "a");
  EXPECT_EQ(h.tensors[1].name, "b");
  EXPECT_EQ(h.tensors[1].dtype, Dtype::BF16);
  EXPECT_EQ(h.tensors[1].shape, (Shape{2, 2}));
  EXPECT_EQ(h.tensors[1].begin, 4u);
  EXPECT_EQ(h.tensors[1].byte_length(), 8u);
  EXPECT_EQ(h.tensors[2].name, "z");
  EXPECT_EQ(h.metadata.at("format"), "pt");
  EXPECT_EQ(h.metadata.at("k"), "v");
}

TEST(HeaderValidation, AcceptsEmptyHeaderOnlyWithEmptyDataArea) {
  EXPECT_TRUE(parse("{}", 0).tensors.empty());
  EXPECT_TRUE(parse("{}   ", 0).tensors.empty());  // writers pad with spaces
  EXPECT_TRUE(bad_input([] { parse("{}", 4); }, {kFile, "4 bytes after the last tensor"}));
}

TEST(HeaderValidation, AcceptsScalarShape) {
  Header h = parse(R"({"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})", 4);
  EXPECT_TRUE(h.tensors[0].shape.empty());
}

TEST(HeaderValidation, RejectsInvalidUtf8) {
  EXPECT_TRUE(bad_input([] { parse("{\"t\xff\":{}}", 0); }, {kFile, "not valid UTF-8", "byte 3"}));
  // An encoded surrogate (ED A0 80) and an overlong '/' (C0 AF) are not UTF-8 either.
  EXPECT_TRUE(bad_input([] { parse("{\"\xed\xa0\x80\":{}}", 0); }, {"not valid UTF-8"}));
  EXPECT_TRUE(bad_input([] { parse("{\"\xc0\xaf\":{}}", 0); }, {"not valid UTF-8"}));
}

TEST(HeaderValidation, RejectsInvalidJson) {
  EXPECT_TRUE(bad_input([] { parse(R"({"t": )", 0); }, {kFile, "not valid JSON"}));
  EXPECT_TRUE(bad_input([] { parse("", 0); }, {kFile, "not valid JSON"}));
  EXPECT_TRUE(bad_input([] { parse("{} {}", 0); }, {kFile, "not valid JSON"}));
  EXPECT_TRUE(bad_input([] { parse(R"({"__metadata__":{},})", 0); }, {kFile, "not valid JSON"}));
  EXPECT_TRUE(bad_input([] { parse("{,}", 0); }, {kFile, "not valid JSON"}));
  // The JSON reader would stop at a NUL and ignore what follows; the header must not.
  EXPECT_TRUE(bad_input([] { parse(std::string("{}\0", 3), 0); }, {kFile, "NUL byte at 2"}));
  EXPECT_TRUE(bad_input([] { parse(std::string("{}\0{\"x\":1}", 10), 0); }, {kFile, "NUL byte"}));
}

TEST(HeaderValidation, RejectsNonObjectHeader) {
  EXPECT_TRUE(bad_input([] { parse("[1, 2]", 0); }, {kFile, "header is not a JSON object", "an array"}));
  EXPECT_TRUE(bad_input([] { parse("42", 0); }, {"header is not a JSON object", "a number"}));
  EXPECT_TRUE(bad_input([] { parse("\"x\"", 0); }, {"header is not a JSON object", "a string"}));
  EXPECT_TRUE(bad_input([] { parse("null", 0); }, {"header is not a JSON object"}));
}

TEST(HeaderValidation, RejectsUnknownDtype) {
  EXPECT_TRUE(rejects_entry(R"({"dtype":"Q8","shape":[1],"data_offsets":[0,1]})", 1, {"unknown dtype 'Q8'"}));
  EXPECT_TRUE(rejects_entry(R"({"dtype":"f32","shape":[1],"data_offsets":[0,4]})", 4, {"unknown dtype 'f32'"}));
  EXPECT_TRUE(rejects_entry(R"({"dtype":3,"shape":[1],"data_offsets":[0,1]})", 1, {"dtype is not a string"}));
}

TEST(HeaderValidation, RejectsNegativeDimension) {
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":[-1],"data_offsets":[0,0]})", 0,
                            {"shape has a negative dimension -1"}));
}

TEST(HeaderValidation, RejectsFloatDimension) {
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":[1.5],"data_offsets":[0,1]})", 1,
                            {"shape dimension 1.5 is not an integer"}));
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":[2.0],"data_offsets":[0,2]})", 2, {"not an integer"}));
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":[1e3],"data_offsets":[0,1000]})", 1000, {"not an integer"}));
}

TEST(HeaderValidation, RejectsNonNumericDimension) {
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":["4"],"data_offsets":[0,4]})", 4,
                            {"shape is not an array of non-negative integers", "a string"}));
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":[[4]],"data_offsets":[0,4]})", 4,
                            {"shape is not an array of non-negative integers"}));
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":[null],"data_offsets":[0,4]})", 4,
                            {"shape is not an array of non-negative integers"}));
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":4,"data_offsets":[0,4]})", 4, {"shape is not an array"}));
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":{"0":4},"data_offsets":[0,4]})", 4, {"shape is not an array"}));
}

TEST(HeaderValidation, RejectsHugeDimension) {
  // 2^53 + 1: beyond what float64 JSON readers hold exactly.
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":[9007199254740993],"data_offsets":[0,0]})", 0,
                            {"shape dimension 9007199254740993 is larger than 2^53"}));
  // Beyond uint64: the JSON reader sees a float.
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,0]})", 0,
                            {"not an integer"}));
}

TEST(HeaderValidation, RejectsTooManyDimensions) {
  std::string shape = "[1";
  for (int i = 0; i < 64; ++i) shape += ",1";
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":)" + shape + R"(],"data_offsets":[0,1]})", 1,
                            {"more than 64 dimensions"}));
}

TEST(HeaderValidation, RejectsMalformedDataOffsets) {
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":[1],"data_offsets":[0]})", 1,
                            {"data_offsets is not [begin, end]: 1 values"}));
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":[1],"data_offsets":[0,1,2]})", 1,
                            {"data_offsets is not [begin, end]: more than two values"}));
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":[1],"data_offsets":[-1,0]})", 1,
                            {"data_offsets has a negative value -1"}));
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":[1],"data_offsets":[0,1.0]})", 1,
                            {"data_offsets value 1.0 is not an integer"}));
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":[1],"data_offsets":["0","1"]})", 1,
                            {"data_offsets is not [begin, end] of non-negative integers"}));
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":[1],"data_offsets":{"begin":0}})", 1,
                            {"data_offsets is not [begin, end]"}));
}

TEST(HeaderValidation, RejectsBeginAfterEnd) {
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":[0],"data_offsets":[4,0]})", 4,
                            {"data_offsets [4, 0] has begin after end"}));
}

TEST(HeaderValidation, RejectsByteLengthMismatch) {
  EXPECT_TRUE(rejects_entry(R"({"dtype":"BF16","shape":[4],"data_offsets":[0,10]})", 10,
                            {"data_offsets [0, 10] hold 10 bytes but BF16 [4] needs 8"}));
  EXPECT_TRUE(rejects_entry(R"({"dtype":"F4","shape":[4],"data_offsets":[0,4]})", 4,
                            {"hold 4 bytes but F4 [4] needs 2"}));
}

TEST(HeaderValidation, RejectsElementCountOverflow) {
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":[9007199254740992,9007199254740992],"data_offsets":[0,0]})",
                            0, {"element count of shape", "overflows"}));
  // 2^61 elements of 64 bits: the count fits, the bit count does not.
  EXPECT_TRUE(rejects_entry(R"({"dtype":"F64","shape":[9007199254740992,256],"data_offsets":[0,0]})", 0,
                            {"byte length of F64 [9007199254740992, 256] overflows"}));
}

TEST(HeaderValidation, RejectsMisalignedSubByteTensor) {
  EXPECT_TRUE(rejects_entry(R"({"dtype":"F4","shape":[3],"data_offsets":[0,2]})", 2,
                            {"F4 [3] is 12 bits, not a whole number of bytes (misaligned)"}));
  EXPECT_TRUE(rejects_entry(R"({"dtype":"F6_E2M3","shape":[2],"data_offsets":[0,2]})", 2, {"misaligned"}));
  EXPECT_TRUE(rejects_entry(R"({"dtype":"F6_E3M2","shape":[1,5],"data_offsets":[0,4]})", 4, {"misaligned"}));
  // Four F6 elements are exactly three bytes.
  EXPECT_EQ(parse(R"({"t":{"dtype":"F6_E3M2","shape":[2,2],"data_offsets":[0,3]}})", 3).tensors[0].byte_length(), 3u);
}

TEST(HeaderValidation, RejectsOffsetsBeyondDataArea) {
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":[16],"data_offsets":[0,16]})", 8,
                            {"data_offsets [0, 16] run past the data area of 8 bytes"}));
}

TEST(HeaderValidation, RejectsAbsurdDeclaredSizeWithoutAllocating) {
  // 2^60 bytes declared over an empty data area: refused from the numbers alone.
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":[1073741824,1073741824],"data_offsets":[0,1152921504606846976]})",
                            0, {"run past the data area of 0 bytes"}));
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":[1],"data_offsets":[0,18446744073709551615]})", 1,
                            {"run past the data area"}));
}

TEST(HeaderValidation, RejectsOverlappingTensors) {
  EXPECT_TRUE(bad_input(
      [] {
        parse(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},
                  "b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}})",
              12);
      },
      {kFile, "tensor 'b' (bytes 4..12) overlaps tensor 'a' (bytes 0..8)"}));
  // A zero-length tensor inside another one overlaps it too.
  EXPECT_TRUE(bad_input(
      [] {
        parse(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},
                  "e":{"dtype":"U8","shape":[0],"data_offsets":[3,3]}})",
              8);
      },
      {"tensor 'e'", "overlaps tensor 'a'"}));
  // The same bytes claimed twice.
  EXPECT_TRUE(bad_input(
      [] {
        parse(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},
                  "b":{"dtype":"I8","shape":[8],"data_offsets":[0,8]}})",
              8);
      },
      {"tensor 'b'", "overlaps tensor 'a'"}));
}

TEST(HeaderValidation, AcceptsZeroLengthTensorsAtBoundaries) {
  Header h = parse(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},
                      "b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},
                      "c":{"dtype":"U8","shape":[0],"data_offsets":[4,4]}})",
                   4);
  EXPECT_EQ(h.tensors.size(), 3u);
}

TEST(HeaderValidation, RejectsHoleAtStart) {
  EXPECT_TRUE(bad_input([] { parse(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", 8); },
                        {kFile, "hole in the data area: bytes 0..4 before tensor 'a'"}));
}

TEST(HeaderValidation, RejectsHoleBetweenTensors) {
  EXPECT_TRUE(bad_input(
      [] {
        parse(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},
                  "b":{"dtype":"U8","shape":[4],"data_offsets":[6,10]}})",
              10);
      },
      {kFile, "hole in the data area: bytes 4..6 before tensor 'b'"}));
}

TEST(HeaderValidation, RejectsTrailingData) {
  EXPECT_TRUE(bad_input([] { parse(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", 7); },
                        {kFile, "3 bytes after the last tensor", "tensors end at 4"}));
}

TEST(HeaderValidation, RejectsDuplicateTensorNames) {
  EXPECT_TRUE(bad_input(
      [] {
        parse(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},
                  "a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})",
              8);
      },
      {kFile, "duplicate tensor name 'a'"}));
}

TEST(HeaderValidation, RejectsBadMetadata) {
  EXPECT_TRUE(bad_input([] { parse(R"({"__metadata__":[1]})", 0); }, {kFile, "__metadata__ is not an object"}));
  EXPECT_TRUE(bad_input([] { parse(R"({"__metadata__":"x"})", 0); }, {"__metadata__ is not an object"}));
  EXPECT_TRUE(bad_input([] { parse(R"({"__metadata__":0})", 0); }, {"__metadata__ is not an object"}));
  EXPECT_TRUE(bad_input([] { parse(R"({"__metadata__":{"k":1}})", 0); },
                        {kFile, "__metadata__ value of key 'k' is not a string", "a number"}));
  EXPECT_TRUE(bad_input([] { parse(R"({"__metadata__":{"k":null}})", 0); }, {"key 'k' is not a string"}));
  EXPECT_TRUE(bad_input([] { parse(R"({"__metadata__":{"k":{"x":"y"}}})", 0); }, {"key 'k' is not a string"}));
  EXPECT_TRUE(bad_input([] { parse(R"({"__metadata__":{"k":["y"]}})", 0); }, {"key 'k' is not a string"}));
  EXPECT_TRUE(bad_input([] { parse(R"({"__metadata__":{"k":"a","k":"b"}})", 0); },
                        {"__metadata__ has duplicate key 'k'"}));
  EXPECT_TRUE(bad_input([] { parse(R"({"__metadata__":{},"__metadata__":{}})", 0); },
                        {"__metadata__ appears twice"}));
}

TEST(HeaderValidation, AcceptsNullMetadataAsAbsentLikeTheReference) {
  Header h = parse(R"({"__metadata__":null,"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1);
  EXPECT_TRUE(h.metadata.empty());
  EXPECT_EQ(h.tensors.size(), 1u);
  EXPECT_TRUE(bad_input([] { parse(R"({"__metadata__":null,"__metadata__":{}})", 0); }, {"__metadata__ appears twice"}));
}

TEST(HeaderValidation, RejectsEntryThatIsNotAnObject) {
  EXPECT_TRUE(rejects_entry("5", 0, {"entry is not an object", "a number"}));
  EXPECT_TRUE(rejects_entry(R"(["U8",[1],[0,1]])", 1, {"entry is not an object", "an array"}));
  EXPECT_TRUE(rejects_entry("null", 0, {"entry is not an object"}));
}

TEST(HeaderValidation, RejectsUnknownKey) {
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":[1],"data_offsets":[0,1],"offset":0})", 1,
                            {"unknown key 'offset'"}));
}

TEST(HeaderValidation, RejectsMissingKeys) {
  EXPECT_TRUE(rejects_entry(R"({"shape":[1],"data_offsets":[0,1]})", 1, {"missing key 'dtype'"}));
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","data_offsets":[0,1]})", 1, {"missing key 'shape'"}));
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","shape":[1]})", 1, {"missing key 'data_offsets'"}));
  EXPECT_TRUE(rejects_entry("{}", 0, {"missing key 'dtype'"}));
}

TEST(HeaderValidation, RejectsDuplicateKeyInEntry) {
  EXPECT_TRUE(rejects_entry(R"({"dtype":"U8","dtype":"I8","shape":[1],"data_offsets":[0,1]})", 1,
                            {"duplicate key 'dtype'"}));
}

TEST(HeaderValidation, RejectsBadTensorNames) {
  EXPECT_TRUE(bad_input([] { parse(R"({"":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})", 0); },
                        {kFile, "tensor name is empty"}));
  EXPECT_TRUE(bad_input([] { parse(R"({"a\u0000b":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})", 0); },
                        {kFile, "tensor name 'a\\x00b' contains a NUL character"}));
  EXPECT_TRUE(bad_input([] { parse(R"({"a\nb":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})", 0); },
                        {kFile, "tensor name 'a\\x0ab' contains a control character"}));
  std::string long_name(1025, 'n');
  EXPECT_TRUE(bad_input([&] { parse("{\"" + long_name + R"(":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})", 0); },
                        {kFile, "is 1025 bytes, over the limit of 1024"}));
  std::string longest(1024, 'n');
  EXPECT_EQ(parse("{\"" + longest + R"(":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})", 0).tensors[0].name,
            longest);
}

TEST(HeaderValidation, AcceptsUnicodeNames) {
  Header h = parse(R"({"gewicht_\u00fc_\u2603":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1);
  EXPECT_EQ(h.tensors[0].name, "gewicht_\xc3\xbc_\xe2\x98\x83");
}

TEST(HeaderValidation, RejectsHeaderOverTheSizeLimit) {
  // Checked from the length before any parsing.
  std::string big(kMaxHeaderBytes + 1, ' ');
  EXPECT_TRUE(bad_input([&] { parse(big, 0); }, {kFile, "exceeds the limit of 100000000"}));
}

}  // namespace
}  // namespace moeprep::io
