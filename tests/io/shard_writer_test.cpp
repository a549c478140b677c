#include <cstring>
#include <random>

#include <gtest/gtest.h>

#include "core/hash.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "io_test_util.h"

namespace moeprep::io {
namespace {

using testing::TempDir;
using testing::throws_error;

ShardPlan plan_of(std::vector<PlannedTensor> tensors) {
  ShardPlan plan;
  plan.file_name = "model-00001-of-00001.safetensors";
  plan.tensors = std::move(tensors);
  return plan;
}

std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

TEST(ShardWriter, PiecesOfAnySizeGiveTheSameBytesAndHash) {
  TempDir dir;
  // 9 MiB: more than the writer's buffer, so both the buffered and the direct path run.
  const size_t big = 9u << 20;
  std::string a = random_bytes(big, 1), b = random_bytes(1001, 2);
  ShardPlan plan = plan_of({{"a", Dtype::U8, Shape{static_cast<int64_t>(big)}}, {"b", Dtype::U8, Shape{1001}}});
  ShardWriter writer(dir / "s.safetensors", plan);
  writer.begin_tensor("a");
  // Uneven pieces: tiny, buffer-sized and over-buffer-sized.
  size_t pos = 0;
  for (size_t piece : {size_t{1}, size_t{7}, size_t{4} << 20, size_t{3}, size_t{5} << 20})
    if (pos < big) {
      size_t n = std::min(piece, big - pos);
      writer.write(a.data() + pos, n);
      pos += n;
    }
  writer.write(a.data() + pos, big - pos);
  EXPECT_EQ(writer.end_tensor(), xxh3_128_hex(a.data(), a.size()));
  writer.begin_tensor("b");
  for (char c : b) writer.write(&c, 1);
  EXPECT_EQ(writer.end_tensor(), xxh3_128_hex(b.data(), b.size()));
  uint64_t offset_b = writer.tensor_offset_in_file(1);
  writer.finish();

  auto file = SafetensorsFile::open(dir / "s.safetensors");
  EXPECT_EQ(file->data_start(), writer.data_start());
  EXPECT_EQ(writer.tensor_offset_in_file(0), file->data_start());
  EXPECT_EQ(offset_b, file->data_start() + big);
  ByteView va = file->data(*file->find("a"));
  ByteView vb = file->data(*file->find("b"));
  EXPECT_EQ(std::memcmp(va.data, a.data(), big), 0);
  EXPECT_EQ(std::memcmp(vb.data, b.data(), b.size()), 0);
  EXPECT_EQ(file->file_size(), file->data_start() + big + b.size());
}

TEST(ShardWriter, MoreBytesThanPlannedIsInternalErrorNamingTensor) {
  TempDir dir;
  ShardWriter writer(dir / "s.safetensors", plan_of({{"w", Dtype::BF16, Shape{2}}}));
  writer.begin_tensor("w");
  writer.write("abc", 3);
  EXPECT_TRUE(throws_error([&] { writer.write("xy", 2); }, ErrorKind::Internal,
                           {"tensor 'w'", "5 bytes written, more than the planned 4"}));
}

TEST(ShardWriter, FewerBytesThanPlannedIsInternalErrorNamingTensor) {
  TempDir dir;
  ShardWriter writer(dir / "s.safetensors", plan_of({{"w", Dtype::F32, Shape{2}}}));
  writer.begin_tensor("w");
  writer.write("abc", 3);
  EXPECT_TRUE(throws_error([&] { writer.end_tensor(); }, ErrorKind::Internal,
                           {"tensor 'w'", "3 bytes written, fewer than the planned 8"}));
}

TEST(ShardWriter, TensorsOutOfPlanOrderAreRefused) {
  TempDir dir;
  ShardWriter writer(dir / "s.safetensors", plan_of({{"first", Dtype::U8, Shape{1}}, {"second", Dtype::U8, Shape{1}}}));
  EXPECT_TRUE(throws_error([&] { writer.begin_tensor("second"); }, ErrorKind::Internal,
                           {"tensor 'second' written out of order", "'first' next"}));
  EXPECT_TRUE(throws_error([&] { writer.write("x", 1); }, ErrorKind::Internal, {"outside begin_tensor"}));
  writer.begin_tensor("first");
  writer.write("x", 1);
  writer.end_tensor();
  EXPECT_TRUE(throws_error([&] { writer.finish(); }, ErrorKind::Internal, {"before tensor 'second' was written"}));
  writer.begin_tensor("second");
  writer.write("y", 1);
  writer.end_tensor();
  EXPECT_TRUE(throws_error([&] { writer.begin_tensor("third"); }, ErrorKind::Internal, {"'third' is not in the plan"}));
  writer.finish();
  EXPECT_TRUE(throws_error([&] { writer.finish(); }, ErrorKind::Internal, {"finish() called twice"}));
}

TEST(ShardWriter, FullDiskIsAnIoErrorNamingTheFile) {
  // /dev/full fails every write with ENOSPC.
  if (!std::filesystem::exists("/dev/full")) GTEST_SKIP() << "no /dev/full on this system";
  std::string bytes(100, 'x');
  {
    ShardWriter writer("/dev/full", plan_of({{"w", Dtype::U8, Shape{100}}}));
    writer.begin_tensor("w");
    writer.write(bytes.data(), bytes.size());
    writer.end_tensor();
    EXPECT_TRUE(throws_error([&] { writer.finish(); }, ErrorKind::Io,
                             {"/dev/full: write failed", "No space left on device"}));
  }
  std::string big(5u << 20, 'x');  // over the buffer: the failure comes from write() itself
  ShardWriter writer("/dev/full", plan_of({{"w", Dtype::U8, Shape{static_cast<int64_t>(big.size())}}}));
  writer.begin_tensor("w");
  EXPECT_TRUE(throws_error([&] { writer.write(big.data(), big.size()); }, ErrorKind::Io,
                           {"/dev/full", "No space left on device"}));
}

TEST(ShardWriter, UnwritableDestinationIsAnIoError) {
  TempDir dir;
  auto path = dir / "no-such-dir" / "s.safetensors";
  EXPECT_TRUE(throws_error([&] { ShardWriter w(path, plan_of({{"w", Dtype::U8, Shape{1}}})); }, ErrorKind::Io,
                           {path.string(), "cannot open"}));
}

}  // namespace
}  // namespace moeprep::io
