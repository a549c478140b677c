#pragma once
// What the fused-MoE GPU tests share: the thresholds they judge by and a fixture that skips,
// saying why, on a machine without a GPU.
#include <gtest/gtest.h>

#include <string>

#include "kernels/fused_moe.h"

namespace moeprep::gpu::testing {

constexpr double kThreshold = 2e-2;              // validation.md
constexpr double kKernelLayoutTolerance = 1e-3;  // same arithmetic up to fp32 summation order

class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!gpu_available(&why)) GTEST_SKIP() << why;
  }
};

}  // namespace moeprep::gpu::testing
