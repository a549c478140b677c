// The command line as users and pipelines meet it: exit codes, one-line errors on stderr,
// --json that parses, nothing written on failure.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_test_support.h"

namespace {

namespace fs = std::filesystem;
using moeprep::cli_testing::Result;

class CliTest : public moeprep::cli_testing::CliFixture {
 protected:
  std::string tiny() const { return testdata("tiny-gpt-oss"); }
};

TEST_F(CliTest, VersionAndHelp) {
  Result r = run("--version");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("moeprep 0."), std::string::npos) << r.out;
  for (const char* cmd : {"convert", "verify", "inspect", "generate"}) {
    r = run(std::string(cmd) + " --help");
    EXPECT_EQ(r.code, 0) << cmd;
    EXPECT_NE(r.out.find("--json"), std::string::npos) << cmd << r.out;
  }
}

TEST_F(CliTest, UsageErrorsExitWithTwo) {
  EXPECT_EQ(run("").code, 2);
  Result r = run("convert " + tiny() + " -o x --gate-mode sideways");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("moeprep: error:"), std::string::npos) << r.err;
  EXPECT_EQ(run("frobnicate").code, 2);
  EXPECT_EQ(run("convert " + tiny() + " -o " + (dir_ / "x").string() + " --max-shard-size 5XB").code, 2);
  EXPECT_FALSE(fs::exists(dir_ / "x"));
}

TEST_F(CliTest, ConvertVerifyInspectRoundTrip) {
  const std::string dst = (dir_ / "kr").string();
  Result r = run("convert " + tiny() + " -o " + dst + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["transformed_tensors"], 12);
  r = run("verify " + dst + " --source " + tiny() + " --tokens 1,7 --json");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["passed"].get<bool>());
  EXPECT_EQ(j["stages"].size(), 5u);
  EXPECT_EQ(j["numerics"]["rows"].size(), 4u);
  r = run("inspect " + dst + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["kind"], "converted");
  EXPECT_EQ(j["totals"]["expert_tensors_kernel_ready"], 12);
  r = run("inspect " + tiny());
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("hf-original"), std::string::npos);
}

TEST_F(CliTest, BadInputExitsWithThreeAndNamesTheProblem) {
  Result r = run("convert " + (dir_ / "nope").string() + " -o " + (dir_ / "out").string());
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_NE(r.err.find("nope"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  fs::create_directories(dir_ / "exists");
  r = run("convert " + tiny() + " -o " + (dir_ / "exists").string());
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_TRUE(fs::is_empty(dir_ / "exists"));
  // An already converted directory.
  ASSERT_EQ(run("convert " + tiny() + " -o " + (dir_ / "kr").string() + " -q").code, 0);
  r = run("convert " + (dir_ / "kr").string() + " -o " + (dir_ / "kr2").string());
  EXPECT_EQ(r.code, 3);
  EXPECT_NE(r.err.find("already kernel-ready"), std::string::npos) << r.err;
}

TEST_F(CliTest, VerifyFailureExitsWithOne) {
  const fs::path dst = dir_ / "kr";
  ASSERT_EQ(run("convert " + tiny() + " -o " + dst.string() + " -q").code, 0);
  // Flip one byte in the middle of the (single) shard's data.
  const fs::path shard = dst / "model-00001-of-00001.safetensors";
  std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(fs::file_size(shard) / 2));
  char c = 0;
  f.read(&c, 1);
  f.seekp(static_cast<std::streamoff>(fs::file_size(shard) / 2));
  c = static_cast<char>(c ^ 1);
  f.write(&c, 1);
  f.close();
  Result r = run("verify " + dst.string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("integrity   failed"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("XXH3-128"), std::string::npos) << r.out;
}

TEST_F(CliTest, DryRunWritesNothing) {
  const std::string dst = (dir_ / "never").string();
  Result r = run("convert " + tiny() + " -o " + dst + " --dry-run");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("aiter_shuffle_weight"), std::string::npos);
  EXPECT_FALSE(fs::exists(dst));
}

TEST_F(CliTest, DeviceThatIsNotThereIsAUsageError) {
  const std::string dst = (dir_ / "kr").string();
  ASSERT_EQ(run("convert " + tiny() + " -o " + dst + " -q").code, 0);
  Result r = run("verify " + dst + " --source " + tiny() + " --device hip");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("HIP"), std::string::npos) << r.err;
}

}  // namespace
