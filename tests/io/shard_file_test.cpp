// ShardFile: pieces written in any order from several threads give the same file as the
// streaming ShardWriter; writes outside the data area are refused.
#include <thread>

#include <gtest/gtest.h>

#include "core/error.h"
#include "io/shard_file.h"
#include "io_test_util.h"

namespace moeprep::io::testing {
namespace {

TEST(ShardFile, OutOfOrderParallelWritesEqualTheStreamingWriter) {
  TempDir dir;
  ShardPlan plan;
  plan.file_name = "model-00001-of-00001.safetensors";
  plan.metadata["format"] = "pt";
  plan.tensors = {{"a", Dtype::U8, {1000}}, {"b", Dtype::F32, {3, 7}}, {"c", Dtype::BF16, {513}}};
  std::vector<std::string> bytes;
  for (const auto& t : plan.tensors) {
    std::string b(t.byte_length(), '\0');
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<char>(i * 31 + t.name[0]);
    bytes.push_back(b);
  }
  {
    ShardWriter w(dir / "stream.safetensors", plan);
    for (size_t i = 0; i < plan.tensors.size(); ++i) {
      w.begin_tensor(plan.tensors[i].name);
      w.write(bytes[i].data(), bytes[i].size());
      w.end_tensor();
    }
    w.finish();
  }
  {
    ShardFile f(dir / "parallel.safetensors", plan);
    std::vector<std::thread> threads;
    for (size_t i = plan.tensors.size(); i-- > 0;)  // last tensor first, each in two pieces
      threads.emplace_back([&, i] {
        const size_t half = bytes[i].size() / 2;
        f.write_at(f.tensor_offset(i) + half, bytes[i].data() + half, bytes[i].size() - half);
        f.write_at(f.tensor_offset(i), bytes[i].data(), half);
      });
    for (auto& t : threads) t.join();
    f.finish();
  }
  EXPECT_EQ(read_bytes(dir / "parallel.safetensors"), read_bytes(dir / "stream.safetensors"));
}

TEST(ShardFile, RefusesWritesOutsideTheDataArea) {
  TempDir dir;
  ShardPlan plan;
  plan.file_name = "x.safetensors";
  plan.tensors = {{"a", Dtype::U8, {16}}};
  ShardFile f(dir / "x.safetensors", plan);
  const std::string data(8, 'x');
  f.write_at(8, data.data(), 8);
  try {
    f.write_at(9, data.data(), 8);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Internal);
    EXPECT_NE(std::string(e.what()).find("outside the data area"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace moeprep::io::testing
