// Tensor names that read as absolute paths or climb with ".." are refused by the header
// parser, naming the tensor; interior '/' (TensorFlow's "dense/kernel:0") is fine.
#include <gtest/gtest.h>

#include "io/safetensors.h"
#include "io_test_util.h"

namespace moeprep::io::testing {
namespace {

std::string header_with(const std::string& name) {
  return R"({")" + name + R"(":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})";
}

TEST(TensorNames, PathLikeNamesAreRefused) {
  for (const std::string name : {"/abs/name", "..", "../x", "a/../b", "a/.."}) {
    EXPECT_TRUE(bad_input([&] { parse_header(header_with(name), 2, "f.safetensors"); },
                          {"f.safetensors", "tensor name '" + name + "' looks like"}))
        << name;
  }
}

TEST(TensorNames, InteriorSlashesAndDotsAreNames) {
  for (const std::string name : {"dense/kernel:0", "a/b/c", "a..b", "...", "a/./b", "x."}) {
    const Header h = parse_header(header_with(name), 2, "f.safetensors");
    ASSERT_EQ(h.tensors.size(), 1u);
    EXPECT_EQ(h.tensors[0].name, name);
  }
}

}  // namespace
}  // namespace moeprep::io::testing
