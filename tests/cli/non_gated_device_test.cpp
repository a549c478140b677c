// verify's device choice for a model with non-gated experts (Nemotron-H's relu^2), on any
// build: the GPU fused MoE runs them, so --device auto takes the GPU when one is present (the
// CPU otherwise, with no note about gating) and --device cuda runs there; without a GPU (CI),
// cuda and hip are refused for the build's or the machine's reason, never for the gating. The
// GPU-only assertions skip where verify finds no GPU.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
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
  // "cuda" or "cpu": what verify --device auto picks on this machine and build.
  std::string auto_device(const std::string& dst) const {
    const Result r = run("verify " + dst + " --source " + source() + " --tokens 1 --device auto --json");
    EXPECT_EQ(r.code, 0) << r.err << r.out;
    if (r.code != 0) return "";
    return nlohmann::json::parse(r.out)["numerics"]["device"].get<std::string>();
  }
};

TEST_F(NonGatedDevice, AutoTakesTheGpuWhenPresentElseTheCpu) {
  const std::string dst = (dir_ / "kr").string();
  ASSERT_EQ(run("convert " + source() + " -o " + dst + " -q").code, 0);
  Result r = run("verify " + dst + " --source " + source() + " --tokens 1,7 --device auto --json");
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["passed"].get<bool>());
  const std::string device = j["numerics"]["device"].get<std::string>();
  EXPECT_TRUE(device == "cuda" || device == "cpu") << device;  // no CPU fallback for the gating
  EXPECT_EQ(j["numerics"]["rows"].size(), 4u);                // two MoE layers x two token counts
  r = run("verify " + dst + " --source " + source() + " --tokens 7");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.find("non-gated"), std::string::npos) << r.out;
  r = run("verify " + dst + " --source " + source() + " --tokens 7 --device cpu --json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["numerics"]["device"], "cpu");
}

TEST_F(NonGatedDevice, CudaRunsTheNonGatedLayersOnTheGpu) {
  const std::string dst = (dir_ / "kr").string();
  ASSERT_EQ(run("convert " + source() + " -o " + dst + " -q").code, 0);
  if (auto_device(dst) != "cuda") GTEST_SKIP() << "no GPU device present: verify --device auto chose the CPU";
  const Result r = run("verify " + dst + " --source " + source() + " --tokens 1,7,64 --device cuda --json");
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["passed"].get<bool>());
  EXPECT_EQ(j["numerics"]["device"], "cuda");
  ASSERT_EQ(j["numerics"]["rows"].size(), 6u);
  for (const auto& row : j["numerics"]["rows"]) {
    std::printf("verify --device cuda (nemotron_h) layer %s T=%s: rel_err %s\n", row["layer"].dump().c_str(),
                row["tokens"].dump().c_str(), row["rel_err"].dump().c_str());
    EXPECT_TRUE(row["passed"].get<bool>()) << row.dump();
  }
}

TEST_F(NonGatedDevice, WithoutAGpuDevicesAreRefusedForTheMachineNotTheGating) {
  const std::string dst = (dir_ / "kr").string();
  ASSERT_EQ(run("convert " + source() + " -o " + dst + " -q").code, 0);
  const bool gpu = auto_device(dst) == "cuda";
  for (const char* device : {"cuda", "hip"}) {
    if (gpu && std::string(device) == "cuda") continue;  // runs: the test above
    const Result r = run("verify " + dst + " --source " + source() + " --tokens 7 --device " + device);
    EXPECT_EQ(r.code, 2) << device << ": " << r.err;  // a usage error, before any stage runs
    EXPECT_NE(r.err.find(std::string("--device ") + device + ": "), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("non-gated"), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "") << device;
  }
}

}  // namespace
