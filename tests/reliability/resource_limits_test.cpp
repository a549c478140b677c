// Resource limits: files that declare absurd sizes (a 2^60-byte header, the header length 10^9
// tensors would need, 2^60-byte tensors, element counts that overflow, 10^6 dimensions, an
// index claiming 2^60 bytes, a config with 10^9 experts) are refused before anything of that
// size is allocated. Peak memory is measured in the child (wait4's ru_maxrss) and must stay
// small; every figure is printed for tests/fuzz/RESULTS.md.
#include <iostream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "reliability_util.h"

namespace moeprep::reliability {
namespace {

constexpr long kLimitKb = 64 * 1024;

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// A file whose length prefix declares `declared_length` (a lie, for some cases).
std::string file_with(uint64_t declared_length, const std::string& header, const std::string& data) {
  return le64(declared_length) + header + data;
}
std::string file_with(const std::string& header, const std::string& data) {
  return file_with(header.size(), header, data);
}

struct Case {
  std::string name;
  std::string bytes;
  std::string message;  // the refusal must hold it
};

std::vector<Case> hostile_files() {
  const std::string one = R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})";
  std::vector<Case> cases = {
      {"header length 2^60", file_with(uint64_t{1} << 60, one, "abcd"), "exceeds the limit"},
      {"header length for 10^9 tensors (55 GB)", file_with(55'000'000'000ull, one, "abcd"), "exceeds the limit"},
      {"header length at the limit, file of 60 bytes", file_with(100'000'000, one, "abcd"), "runs past the end"},
      {"tensor of 2^60 bytes",
       file_with(R"({"a":{"dtype":"U8","shape":[4503599627370496,256],"data_offsets":[0,1152921504606846976]}})",
                 "abcd"),
       "run past the data area"},
      {"10^9 x 10^9 x 10^9 elements",
       file_with(R"({"a":{"dtype":"F32","shape":[1000000000,1000000000,1000000000],"data_offsets":[0,4]}})", "abcd"),
       "overflow"},
      {"10^9 elements declared for 4 bytes",
       file_with(R"({"a":{"dtype":"U8","shape":[1000000000,1],"data_offsets":[0,4]}})", "abcd"), "needs 1000000000"},
  };
  // A shape of 10^6 dimensions (2 MB of "1,"): refused at the 65th.
  std::string dims = "[";
  for (int i = 0; i < 1'000'000; ++i) dims += i ? ",1" : "1";
  dims += "]";
  cases.push_back({"10^6 dimensions",
                   file_with(R"({"a":{"dtype":"U8","shape":)" + dims + R"(,"data_offsets":[0,1]}})", "a"),
                   "more than 64 dimensions"});
  return cases;
}

TEST(ResourceLimits, AbsurdDeclaredSizesAreRefusedWithLittleMemory) {
  TempDir dir;
  const ChildResult baseline = run_moeprep({"inspect", tiny_checkpoint().string(), "--json"}, dir.path());
  ASSERT_TRUE(baseline.exited && baseline.code == 0) << describe(baseline);
  std::cout << "[figure] peak RSS of 'moeprep inspect' on the tiny checkpoint (baseline): <= " << baseline.max_rss_kb
            << " KiB (test process held " << baseline.parent_rss_kb << " KiB at fork)\n";
  for (const Case& c : hostile_files()) {
    const fs::path file = dir / "hostile.safetensors";
    spit(file, c.bytes);
    const ChildResult r = run_moeprep({"inspect", file.string()}, dir.path());
    EXPECT_TRUE(r.exited && r.code == 3) << c.name << ": " << describe(r);
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.name << ": " << r.err;
    EXPECT_LT(r.max_rss_kb, kLimitKb) << c.name;
    std::cout << "[figure] " << c.name << " (" << c.bytes.size() << "-byte file): refused, peak RSS <= "
              << r.max_rss_kb << " KiB (test process held " << r.parent_rss_kb << " KiB at fork)\n";
  }
}

TEST(ResourceLimits, AbsurdIndexAndConfigAreRefusedWithLittleMemory) {
  TempDir dir;
  struct Edit {
    std::string name, file, key;
    nlohmann::json value;
    std::string message;  // the refusal must hold it
  };
  // The config values are checked against the tensors the shards really hold before anything
  // is sized from them.
  const std::vector<Edit> edits = {
      {"index total_size 2^60", "model.safetensors.index.json", "total_size", uint64_t{1} << 60,
       "model.safetensors.index.json: metadata.total_size is 1152921504606846976"},
      {"config num_local_experts 10^9", "config.json", "num_local_experts", 1'000'000'000,
       "[1000000000, 160] from config.json"},
      {"config hidden_size 2^40", "config.json", "hidden_size", uint64_t{1} << 40, "1099511627776] from config.json"},
      {"config intermediate_size 2^40", "config.json", "intermediate_size", uint64_t{1} << 40, "from config.json"},
      {"config num_hidden_layers 10^9", "config.json", "num_hidden_layers", 1'000'000'000,
       "tensor 'model.layers.2.mlp.router.weight' is missing"},
  };
  for (const Edit& e : edits) {
    const fs::path src = dir / "src";
    fs::remove_all(src);
    fs::copy(tiny_checkpoint(), src, fs::copy_options::recursive);
    auto j = nlohmann::json::parse(slurp(src / e.file));
    if (e.key == "total_size") j["metadata"]["total_size"] = e.value;
    else j[e.key] = e.value;
    spit(src / e.file, j.dump(2));
    const fs::path dst = dir / "out";
    const ChildResult r = run_moeprep({"convert", src.string(), "-o", dst.string(), "-q"}, dir.path());
    EXPECT_TRUE(r.exited && r.code == 3) << e.name << ": " << describe(r);
    EXPECT_NE(r.err.find(e.message), std::string::npos) << e.name << ": " << r.err;
    EXPECT_LT(r.max_rss_kb, kLimitKb) << e.name;
    EXPECT_FALSE(fs::exists(dst));
    std::cout << "[figure] convert with " << e.name << ": refused, peak RSS <= " << r.max_rss_kb << " KiB: " << r.err;
  }
}

// Not absurd, only large: a header near the 100 MB limit that really lists ~10^6 (empty)
// tensors is valid and is parsed; memory then grows with what the header really holds, which
// the figure records. Kept at 10 MB here to keep the test fast.
TEST(ResourceLimits, ManyRealTensorsCostMemoryInProportion) {
  TempDir dir;
  std::string header = "{";
  constexpr int kTensors = 150'000;
  for (int i = 0; i < kTensors; ++i) {
    if (i) header += ',';
    header += "\"t" + std::to_string(i) + "\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}";
  }
  header += "}";
  const fs::path file = dir / "many.safetensors";
  spit(file, le64(header.size()) + header);
  // The reader alone: convert parses the header, then refuses a file without config.json.
  const ChildResult parsed = run_moeprep({"convert", file.string(), "-o", (dir / "out").string()}, dir.path());
  ASSERT_TRUE(parsed.exited && parsed.code == 3) << describe(parsed);
  EXPECT_NE(parsed.err.find("no config.json"), std::string::npos) << parsed.err;
  const ChildResult r = run_moeprep({"inspect", file.string(), "--json"}, dir.path());
  ASSERT_TRUE(r.exited && r.code == 0) << describe(r);
  EXPECT_NE(r.out.find("\"t149999\""), std::string::npos);
  std::cout << "[figure] valid header of " << header.size() / 1000 << " KB listing " << kTensors
            << " tensors: reading it peaks at " << parsed.max_rss_kb << " KiB (" << parsed.max_rss_kb * 1024 / kTensors
            << " bytes per tensor), inspect --json at " << r.max_rss_kb << " KiB (" << r.max_rss_kb * 1024 / kTensors
            << " bytes per tensor)\n";
  // Proportional, not explosive: under a kilobyte per listed tensor to read the header, about
  // two with inspect's JSON document and its text.
  EXPECT_LT(parsed.max_rss_kb * 1024 / kTensors, 1024);
  EXPECT_LT(r.max_rss_kb * 1024 / kTensors, 2048);
}

}  // namespace
}  // namespace moeprep::reliability
