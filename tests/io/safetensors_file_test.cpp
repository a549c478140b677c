// SafetensorsFile::open: the checks made on the file before the header is parsed, and
// reading tensors through the mapping.
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include <gtest/gtest.h>

#include "io/safetensors.h"
#include "io_test_util.h"

namespace moeprep::io {
namespace {

using testing::bad_input;
using testing::le64;
using testing::safetensors_bytes;
using testing::TempDir;
using testing::write_bytes;

TEST(SafetensorsFile, ReadsTensorsThroughTheMapping) {
  TempDir dir;
  auto path = dir / "m.safetensors";
  std::string header = R"({"__metadata__":{"format":"pt"},"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},)"
                       R"("b":{"dtype":"I16","shape":[2],"data_offsets":[3,7]}})";
  write_bytes(path, safetensors_bytes(header, std::string("abc") + "\x01\x02\x03\x04"));
  auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file->path(), path);
  EXPECT_EQ(file->data_start(), 8 + header.size());
  EXPECT_EQ(file->file_size(), 8 + header.size() + 7);
  EXPECT_EQ(file->metadata().at("format"), "pt");
  ASSERT_EQ(file->tensors().size(), 2u);
  const TensorInfo* b = file->find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dtype, Dtype::I16);
  ByteView bytes = file->data(*b);
  ASSERT_EQ(bytes.size, 4u);
  EXPECT_EQ(std::memcmp(bytes.data, "\x01\x02\x03\x04", 4), 0);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(file->data(*file->find("a")).data), 3), "abc");
  EXPECT_EQ(file->find("c"), nullptr);
  ByteView whole = file->whole_file();
  EXPECT_EQ(whole.size, file->file_size());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(whole.data) + 8, header.size()), header);
}

TEST(SafetensorsFile, RefusesTensorInfoOfAnotherFile) {
  TempDir dir;
  write_bytes(dir / "a.safetensors", safetensors_bytes(R"({"t":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "xy"));
  auto file = SafetensorsFile::open(dir / "a.safetensors");
  TensorInfo foreign;
  foreign.name = "t";
  foreign.begin = 0;
  foreign.end = 4000;
  EXPECT_TRUE(testing::throws_error([&] { file->data(foreign); }, ErrorKind::Internal,
                                    {"tensor 't' does not belong to this file"}));
}

TEST(SafetensorsFile, RejectsFileShorterThanEightBytes) {
  TempDir dir;
  for (size_t size : {0, 1, 7}) {
    auto path = dir / ("short" + std::to_string(size));
    write_bytes(path, std::string(size, '\0'));
    EXPECT_TRUE(bad_input([&] { SafetensorsFile::open(path); },
                          {path.string() + ": file is " + std::to_string(size) + " bytes, shorter than the 8-byte"}));
  }
}

TEST(SafetensorsFile, RejectsHeaderLengthPastEndOfFile) {
  TempDir dir;
  auto path = dir / "x.safetensors";
  write_bytes(path, le64(100) + "{}");
  EXPECT_TRUE(bad_input([&] { SafetensorsFile::open(path); },
                        {path.string(), "header length 100 runs past the end of the file (10 bytes)"}));
}

TEST(SafetensorsFile, RejectsHeaderLengthOverLimitBeforeReadingIt) {
  TempDir dir;
  auto path = dir / "x.safetensors";
  // Declared lengths of 2^60 and just over 100 MB in a tiny file: refused from the number alone.
  for (uint64_t declared : {uint64_t{1} << 60, kMaxHeaderBytes + 1, ~uint64_t{0}}) {
    write_bytes(path, le64(declared) + "{}");
    EXPECT_TRUE(bad_input([&] { SafetensorsFile::open(path); },
                          {path.string(), "header length " + std::to_string(declared) + " exceeds the limit of 100000000"}));
  }
}

TEST(SafetensorsFile, RejectsHeaderErrorsWithFileName) {
  TempDir dir;
  auto path = dir / "bad.safetensors";
  write_bytes(path, safetensors_bytes(R"({"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,4]}})", "abcd"));
  EXPECT_TRUE(bad_input([&] { SafetensorsFile::open(path); }, {path.string() + ": tensor 'w'", "needs 6"}));
}

TEST(SafetensorsFile, RejectsDirectoriesAndFifos) {
  TempDir dir;
  EXPECT_TRUE(bad_input([&] { SafetensorsFile::open(dir.path()); }, {dir.path().string(), "not a regular file"}));
  auto fifo = dir / "pipe";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_TRUE(bad_input([&] { SafetensorsFile::open(fifo); }, {fifo.string(), "not a regular file"}));
}

TEST(SafetensorsFile, MissingFileIsAnIoError) {
  TempDir dir;
  auto path = dir / "absent.safetensors";
  EXPECT_TRUE(testing::throws_error([&] { SafetensorsFile::open(path); }, ErrorKind::Io,
                                    {path.string(), "cannot open", "No such file"}));
}

// Opening must read the header only. A 1 GiB sparse data area shows it: none of its pages is
// resident after open (mincore), and then reading one tensor byte faults in just that page.
TEST(SafetensorsFile, DoesNotTouchTensorBytesUntilAsked) {
  TempDir dir;
  auto path = dir / "sparse.safetensors";
  const uint64_t data = uint64_t{1} << 30;
  std::string header = R"({"big":{"dtype":"U8","shape":[)" + std::to_string(data) + R"(],"data_offsets":[0,)" +
                       std::to_string(data) + "]}}";
  header.append((8 - header.size() % 8) % 8, ' ');
  write_bytes(path, le64(header.size()) + header);
  std::filesystem::resize_file(path, 8 + header.size() + data);

  auto file = SafetensorsFile::open(path);
  ByteView bytes = file->data(*file->find("big"));
  ASSERT_EQ(bytes.size, data);
  long page = ::sysconf(_SC_PAGESIZE);
  // Pages 64 MiB into the data area, beyond any readahead the header read could start.
  auto first = (reinterpret_cast<uintptr_t>(bytes.data) + (64u << 20)) / page * page;
  size_t span = 64 * static_cast<size_t>(page);
  std::vector<unsigned char> resident(64);
  ASSERT_EQ(::mincore(reinterpret_cast<void*>(first), span, resident.data()), 0);
  for (unsigned char r : resident) EXPECT_EQ(r & 1, 0) << "a data page was read by open()";
  volatile uint8_t probe = *reinterpret_cast<const uint8_t*>(first);
  EXPECT_EQ(probe, 0);
  ASSERT_EQ(::mincore(reinterpret_cast<void*>(first), span, resident.data()), 0);
  EXPECT_EQ(resident[0] & 1, 1);
}

}  // namespace
}  // namespace moeprep::io
