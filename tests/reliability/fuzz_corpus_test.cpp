// The fuzz seed corpus replayed through the same entry points as the libFuzzer targets
// (tests/fuzz/fuzz_inputs.h), in the ordinary build: each seed is accepted or refused exactly as
// testdata/fuzz-corpus/expected.json records, refusals are BadInput with a message that names
// the problem, and nothing else escapes. Inputs that crashed a target (crash-*) stay here as
// regression tests.
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "fuzz/fuzz_inputs.h"

namespace moeprep::fuzz {
namespace {

namespace fs = std::filesystem;

const fs::path kCorpus = fs::path(MOEPREP_SOURCE_DIR) / "testdata" / "fuzz-corpus";

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

using Entry = std::function<Outcome(const uint8_t*, size_t)>;

// Which entry points see the seeds of each corpus directory (the targets that use it).
const std::map<std::string, std::vector<std::pair<std::string, Entry>>>& entry_points() {
  static const std::map<std::string, std::vector<std::pair<std::string, Entry>>> m = {
      {"safetensors", {{"header", header_input}, {"inspect", inspect_input}}},
      {"config", {{"config", config_input}}},
      {"index", {{"index", index_input}}},
      {"manifest", {{"manifest", manifest_input}}},
  };
  return m;
}

nlohmann::json expected() { return nlohmann::json::parse(read_bytes(kCorpus / "expected.json")); }

TEST(FuzzCorpus, EverySeedHasAnExpectedOutcomeAndTheCorpusIsSmall) {
  const nlohmann::json exp = expected();
  uint64_t total = 0;
  size_t seeds = 0;
  for (const auto& [dir, entries] : entry_points()) {
    for (const auto& e : fs::directory_iterator(kCorpus / dir)) {
      const std::string key = dir + "/" + e.path().filename().string();
      EXPECT_TRUE(exp.contains(key)) << key << " has no entry in expected.json (rerun make-seeds)";
      total += fs::file_size(e.path());
      ++seeds;
    }
  }
  for (const auto& [key, value] : exp.items()) EXPECT_TRUE(fs::exists(kCorpus / key)) << key << " is missing";
  EXPECT_GE(seeds, 60u);
  EXPECT_LT(total, 1u << 20) << "the seed corpus must stay under 1 MB";
}

TEST(FuzzCorpus, EachSeedIsAcceptedOrRefusedAsRecorded) {
  const nlohmann::json exp = expected();
  size_t accepted = 0, refused = 0;
  for (const auto& [key, want] : exp.items()) {
    const std::string dir = key.substr(0, key.find('/'));
    ASSERT_TRUE(entry_points().count(dir)) << key;
    const std::string bytes = read_bytes(kCorpus / key);
    const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
    const bool want_accepted = want["accepted"].get<bool>();
    const std::string name = fs::path(key).filename().string();
    EXPECT_EQ(want_accepted, name.rfind("ok-", 0) == 0 || (name.rfind("crash-", 0) == 0 && want_accepted)) << key;
    for (const auto& [target, entry] : entry_points().at(dir)) {
      const Outcome got = entry(data, bytes.size());
      if (want_accepted) {
        EXPECT_TRUE(got.accepted) << key << " via " << target << ": refused: " << got.message;
        ++accepted;
        continue;
      }
      ++refused;
      ASSERT_FALSE(got.accepted) << key << " via " << target << " was accepted";
      EXPECT_EQ(got.kind, ErrorKind::BadInput) << key << " via " << target << ": " << got.message;
      const std::string needle = want["message"].get<std::string>();
      EXPECT_NE(got.message.find(needle), std::string::npos)
          << key << " via " << target << ": message lacks \"" << needle << "\": " << got.message;
    }
  }
  EXPECT_GT(accepted, 5u);
  EXPECT_GT(refused, 50u);
}

}  // namespace
}  // namespace moeprep::fuzz
