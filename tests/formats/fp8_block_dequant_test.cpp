#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/bf16.h"
#include "formats/fp8_block_dequant.h"
#include "formats/fp8_e4m3.h"

using namespace moeprep;

namespace {

struct BlockScaled {
  int64_t n, k, srows, scols;
  std::vector<uint8_t> weight;
  std::vector<float> scale;
};

// Random finite FP8 codes and power-of-two-free scales (so each product is rounded).
BlockScaled make(int64_t n, int64_t k, int64_t block, uint32_t seed) {
  std::mt19937 rng(seed);
  BlockScaled t{n, k, (n + block - 1) / block, (k + block - 1) / block, {}, {}};
  t.weight.resize(n * k);
  for (auto& w : t.weight) {
    w = static_cast<uint8_t>(rng());
    if (fp8_e4m3_is_nan(w)) w = 0x7e;
  }
  std::uniform_real_distribution<float> u(1e-4f, 1e-2f);
  t.scale.resize(t.srows * t.scols);
  for (auto& s : t.scale) s = u(rng);
  return t;
}

std::string error_of(const BlockScaled& t, const std::string& name) {
  std::vector<float> out(t.n * t.k);
  try {
    fp8_block_dequant(t.weight.data(), t.n, t.k, t.scale.data(), t.srows, t.scols, out.data(),
                      name);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::BadInput);
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST(Fp8BlockDequant, RaggedEdgesUseTheRightBlockScale) {
  // 300 x 200: blocks of 128 leave partial blocks of 44 rows and 72 columns.
  BlockScaled t = make(300, 200, 128, 11);
  ASSERT_EQ(t.srows, 3);
  ASSERT_EQ(t.scols, 2);
  std::vector<float> out(t.n * t.k);
  fp8_block_dequant(t.weight.data(), t.n, t.k, t.scale.data(), t.srows, t.scols, out.data(), "w");
  for (int64_t i = 0; i < t.n; ++i)
    for (int64_t j = 0; j < t.k; ++j) {
      const float want =
          fp8_e4m3_to_float(t.weight[i * t.k + j]) * t.scale[(i / 128) * 2 + j / 128];
      ASSERT_EQ(out[i * t.k + j], want) << i << "," << j;
    }
  // Spot checks of the corners of the grid by hand.
  EXPECT_EQ(out[299 * 200 + 199], fp8_e4m3_to_float(t.weight[299 * 200 + 199]) * t.scale[5]);
  EXPECT_EQ(out[127 * 200 + 128], fp8_e4m3_to_float(t.weight[127 * 200 + 128]) * t.scale[1]);
  EXPECT_EQ(out[128 * 200 + 127], fp8_e4m3_to_float(t.weight[128 * 200 + 127]) * t.scale[2]);
}

TEST(Fp8BlockDequant, SmallBlocksAndBf16ScalesMatchFloatScales) {
  BlockScaled t = make(37, 23, 8, 5);
  std::vector<uint16_t> scale16(t.scale.size());
  for (size_t i = 0; i < t.scale.size(); ++i) {
    scale16[i] = float_to_bf16(t.scale[i]);
    t.scale[i] = bf16_to_float(scale16[i]);
  }
  std::vector<float> a(t.n * t.k), b(t.n * t.k);
  fp8_block_dequant(t.weight.data(), t.n, t.k, t.scale.data(), t.srows, t.scols, a.data(), "w",
                    8, 8);
  fp8_block_dequant_bf16_scales(t.weight.data(), t.n, t.k, scale16.data(), t.srows, t.scols,
                                b.data(), "w", 8, 8);
  EXPECT_EQ(a, b);
  for (int64_t i = 0; i < t.n; ++i)
    for (int64_t j = 0; j < t.k; ++j)
      ASSERT_EQ(a[i * t.k + j],
                fp8_e4m3_to_float(t.weight[i * t.k + j]) * t.scale[(i / 8) * t.scols + j / 8]);
}

TEST(Fp8BlockDequant, RejectsNanWeightNamingTensorAndPosition) {
  BlockScaled t = make(130, 129, 128, 3);
  t.weight[129 * 129 + 128] = 0xff;
  const std::string msg = error_of(t, "model.layers.5.mlp.experts.7.up_proj.weight");
  EXPECT_NE(msg.find("model.layers.5.mlp.experts.7.up_proj.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("NaN"), std::string::npos) << msg;
  EXPECT_NE(msg.find("row 129, column 128"), std::string::npos) << msg;
}

TEST(Fp8BlockDequant, RejectsWrongScaleGridAndNonFiniteScale) {
  BlockScaled t = make(256, 129, 128, 4);
  t.scols = 1;  // should be ceil(129 / 128) = 2
  std::string msg = error_of(t, "q_proj.weight");
  EXPECT_NE(msg.find("q_proj.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("shape [2, 1], expected [2, 2]"), std::string::npos) << msg;

  t = make(256, 129, 128, 4);
  t.scale[3] = std::nanf("");
  msg = error_of(t, "kv_proj.weight");
  EXPECT_NE(msg.find("kv_proj.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("block [1, 1] is not finite"), std::string::npos) << msg;
}
