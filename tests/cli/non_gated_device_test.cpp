// verify's device choice for a model with non-gated experts (Nemotron-H's relu^2), on any
// build: the GPU fused MoE does not run them, so --device cuda and hip are refused with one
// line that names the reason and points to --device cpu, and --device auto runs on the CPU and
// says why in the report.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
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

class NonGatedDevice : public moeprep::cli_testing::CliFixture {
 protected:
  static std::string source() { return testdata("tiny-nemotron-h"); }
};

TEST_F(NonGatedDevice, GpuDevicesAreRefusedNamingTheReason) {
  const std::string dst = (dir_ / "kr").string();
  ASSERT_EQ(run("convert " + source() + " -o " + dst + " -q").code, 0);
  for (const char* device : {"cuda", "hip"}) {
    const Result r = run("verify " + dst + " --source " + source() + " --tokens 7 --device " + device);
    EXPECT_EQ(r.code, 2) << device << ": " << r.err;  // a usage error, before any stage runs
    EXPECT_NE(r.err.find(std::string("--device ") + device +
                         ": the GPU fused MoE does not support non-gated experts (relu2, Nemotron-H) yet; use "
                         "--device cpu"),
              std::string::npos)
        << r.err;
    EXPECT_EQ(r.out, "") << device;
  }
}

TEST_F(NonGatedDevice, AutoRunsOnTheCpuAndSaysWhy) {
  const std::string dst = (dir_ / "kr").string();
  ASSERT_EQ(run("convert " + source() + " -o " + dst + " -q").code, 0);
  Result r = run("verify " + dst + " --source " + source() + " --tokens 1,7 --device auto --json");
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["passed"].get<bool>());
  EXPECT_EQ(j["numerics"]["device"], "cpu (non-gated experts: no GPU kernel for them yet)");
  EXPECT_EQ(j["numerics"]["rows"].size(), 4u);  // two MoE layers x two token counts
  // The table names the device too; --device cpu needs no explanation.
  r = run("verify " + dst + " --source " + source() + " --tokens 7");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("numerics on cpu (non-gated experts: no GPU kernel for them yet)"), std::string::npos) << r.out;
  r = run("verify " + dst + " --source " + source() + " --tokens 7 --device cpu --json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["numerics"]["device"], "cpu");
}

TEST_F(NonGatedDevice, GatedModelsKeepTheirDeviceErrors) {
  // A gated model is not affected: hip is refused for the build's reason, not for gating.
  const std::string src = std::string(MOEPREP_SOURCE_DIR) + "/testdata/tiny-qwen3-moe";
  const std::string dst = (dir_ / "kr").string();
  ASSERT_EQ(run("convert " + src + " -o " + dst + " -q").code, 0);
  const Result r = run("verify " + dst + " --source " + src + " --tokens 7 --device hip");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(r.err.find("non-gated"), std::string::npos) << r.err;
}

}  // namespace
