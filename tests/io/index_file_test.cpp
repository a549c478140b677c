#include <gtest/gtest.h>

#include "io/index_file.h"
#include "io/safetensors_writer.h"
#include "io_test_util.h"

namespace moeprep::io {
namespace {

using testing::bad_input;
using testing::TempDir;
using testing::write_bytes;

TEST(IndexFile, WritesSortedTwoSpaceIndentedWithTrailingNewline) {
  TempDir dir;
  auto path = dir / "model.safetensors.index.json";
  write_index_file(path, {{"z.weight", "model-00002-of-00002.safetensors"}, {"a.bias", "model-00001-of-00002.safetensors"}},
                   1234);
  EXPECT_EQ(testing::read_bytes(path),
            "{\n"
            "  \"metadata\": {\n"
            "    \"total_size\": 1234\n"
            "  },\n"
            "  \"weight_map\": {\n"
            "    \"a.bias\": \"model-00001-of-00002.safetensors\",\n"
            "    \"z.weight\": \"model-00002-of-00002.safetensors\"\n"
            "  }\n"
            "}\n");
  IndexFile back = read_index_file(path);
  EXPECT_EQ(back.total_size, 1234u);
  EXPECT_EQ(back.weight_map.size(), 2u);
  EXPECT_EQ(back.weight_map.at("a.bias"), "model-00001-of-00002.safetensors");
}

TEST(IndexFile, AcceptsMissingTotalSizeAndIntegralFloat) {
  TempDir dir;
  auto path = dir / "i.json";
  write_bytes(path, R"({"weight_map":{"a":"s.safetensors"}})");
  EXPECT_FALSE(read_index_file(path).total_size.has_value());
  write_bytes(path, R"({"metadata":{"total_size":16.0},"weight_map":{"a":"s.safetensors"}})");
  EXPECT_EQ(read_index_file(path).total_size, 16u);
}

TEST(IndexFile, RejectsMalformedIndexNamingTheFile) {
  TempDir dir;
  auto path = dir / "i.json";
  auto rejects = [&](const std::string& text, const std::string& needle) {
    write_bytes(path, text);
    return bad_input([&] { read_index_file(path); }, {path.string() + ": ", needle});
  };
  EXPECT_TRUE(rejects("{\"weight_map\": ", "not valid JSON"));
  EXPECT_TRUE(rejects("[]", "not a JSON object"));
  EXPECT_TRUE(rejects("{}", "no weight_map"));
  EXPECT_TRUE(rejects(R"({"weight_map":[]})", "weight_map is not an object"));
  EXPECT_TRUE(rejects(R"({"weight_map":{"a":3}})", "weight_map entry for tensor 'a' is not a string"));
  EXPECT_TRUE(rejects(R"({"weight_map":{"a":"x","a":"y"}})", "duplicate key 'a'"));
  EXPECT_TRUE(rejects(R"({"weight_map":{"":"x"}})", "tensor name is empty"));
  EXPECT_TRUE(rejects(R"({"metadata":[],"weight_map":{}})", "metadata is not an object"));
  EXPECT_TRUE(rejects(R"({"metadata":{"total_size":-1},"weight_map":{}})", "total_size is not a non-negative integer"));
  EXPECT_TRUE(rejects(R"({"metadata":{"total_size":"9"},"weight_map":{}})", "total_size is not a non-negative integer"));
  EXPECT_TRUE(rejects(R"({"metadata":{"total_size":1.5},"weight_map":{}})", "total_size is not a non-negative integer"));
  EXPECT_TRUE(rejects(std::string("{\"weight_map\":{}}\0junk", 21), "NUL byte"));
}

TEST(IndexFile, RejectsShardNamesThatAreNotPlainFileNames) {
  TempDir dir;
  auto path = dir / "i.json";
  for (const std::string shard : {"../evil.safetensors", "/etc/passwd", "sub/dir.safetensors", "", "..", ".",
                                  "back\\\\slash.safetensors", "nul\\u0000.safetensors"}) {
    write_bytes(path, R"({"weight_map":{"t":")" + shard + R"("}})");
    EXPECT_TRUE(bad_input([&] { read_index_file(path); }, {path.string(), "shard for tensor 't'", "is not a plain file name"}))
        << shard;
  }
}

}  // namespace
}  // namespace moeprep::io
