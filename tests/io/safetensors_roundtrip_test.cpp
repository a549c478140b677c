// Writer -> reader round trip for every dtype of the vocabulary.
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

const Dtype kAllDtypes[] = {
    Dtype::BOOL,    Dtype::F4,      Dtype::F6_E2M3, Dtype::F6_E3M2,     Dtype::U8,          Dtype::I8,
    Dtype::F8_E5M2, Dtype::F8_E4M3, Dtype::F8_E8M0, Dtype::F8_E4M3FNUZ, Dtype::F8_E5M2FNUZ, Dtype::I16,
    Dtype::U16,     Dtype::F16,     Dtype::BF16,    Dtype::I32,         Dtype::U32,         Dtype::F32,
    Dtype::C64,     Dtype::F64,     Dtype::I64,     Dtype::U64,
};

TEST(SafetensorsRoundTrip, EveryDtypeSurvivesWriteAndRead) {
  static_assert(sizeof(kAllDtypes) / sizeof(kAllDtypes[0]) == 22, "the whole vocabulary");
  TempDir dir;
  std::vector<PlannedTensor> planned;
  for (Dtype d : kAllDtypes) {
    // [2, 4, 3] holds 24 elements: a whole number of bytes for 4- and 6-bit types too.
    planned.push_back({std::string("t.") + dtype_name(d), d, Shape{2, 4, 3}});
  }
  planned.push_back({"scalar", Dtype::F32, Shape{}});
  planned.push_back({"empty", Dtype::BF16, Shape{0, 5}});
  auto plans = plan_shards(planned, uint64_t{1} << 30);
  ASSERT_EQ(plans.size(), 1u);
  plans[0].metadata = {{"format", "pt"}, {"producer", "moeprep-test"}};

  std::mt19937 rng(7);
  std::vector<std::string> contents, hashes;
  auto path = dir / plans[0].file_name;
  {
    ShardWriter writer(path, plans[0]);
    for (const PlannedTensor& t : plans[0].tensors) {
      std::string bytes(t.byte_length(), '\0');
      for (char& c : bytes) c = static_cast<char>(rng());
      writer.begin_tensor(t.name);
      writer.write(bytes.data(), bytes.size());
      hashes.push_back(writer.end_tensor());
      contents.push_back(bytes);
    }
    writer.finish();
  }

  auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file->data_start() % 8, 0u);
  EXPECT_EQ(file->metadata(), plans[0].metadata);
  ASSERT_EQ(file->tensors().size(), planned.size());
  for (size_t i = 0; i < planned.size(); ++i) {
    const TensorInfo* info = file->find(planned[i].name);
    ASSERT_NE(info, nullptr) << planned[i].name;
    EXPECT_EQ(info->dtype, planned[i].dtype) << planned[i].name;
    EXPECT_EQ(info->shape, planned[i].shape) << planned[i].name;
    ByteView bytes = file->data(*info);
    ASSERT_EQ(bytes.size, contents[i].size()) << planned[i].name;
    EXPECT_EQ(std::memcmp(bytes.data, contents[i].data(), bytes.size), 0) << planned[i].name;
    EXPECT_EQ(hashes[i], xxh3_128_hex(bytes.data, bytes.size)) << planned[i].name;
  }
  EXPECT_EQ(file->find("t.F4")->byte_length(), 12u);
  EXPECT_EQ(file->find("t.F6_E2M3")->byte_length(), 18u);
  EXPECT_EQ(file->find("t.C64")->byte_length(), 192u);
}

TEST(SafetensorsRoundTrip, MisalignedSubByteShapeIsRefusedByWriterAndReader) {
  // Three 4-bit elements end mid-byte.
  EXPECT_TRUE(testing::bad_input([] { plan_shards({{"odd", Dtype::F4, Shape{3}}}, 1024); },
                                 {"tensor 'odd'", "F4 [3] is not a whole number of bytes"}));
  EXPECT_TRUE(testing::bad_input([] { plan_shards({{"odd6", Dtype::F6_E3M2, Shape{5}}}, 1024); },
                                 {"tensor 'odd6'", "F6_E3M2 [5]"}));
  EXPECT_TRUE(testing::bad_input(
      [] { parse_header(R"({"odd":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", 2, "h"); },
      {"tensor 'odd'", "misaligned"}));
}

}  // namespace
}  // namespace moeprep::io
