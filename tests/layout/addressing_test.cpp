// layout/addressing.h (what the kernels use) against the steps (what the converter writes):
// for every logical coordinate, the byte at the computed offset of the shuffled output is the
// input byte at that coordinate, and no two coordinates share an offset.
#include <gtest/gtest.h>

#include "layout/addressing.h"
#include "layout/steps.h"
#include "layout_test_util.h"

using namespace moeprep;
using namespace moeprep::layout;
using namespace moeprep::layout::testing;

TEST(Addressing, WeightTileLayoutMatchesShuffleWeight) {
  std::mt19937_64 rng(31);
  for (int t = 0; t < 24; ++t) {
    const GateMode mode = t % 3 == 0 ? GateMode::Separated : GateMode::Interleave;
    const bool gate_up = t % 3 != 2;  // separated runs with gate_up true and false alike
    const int64_t e = random_int(rng, 1, 3);
    const int64_t n = mode == GateMode::Separated ? 16 * random_int(rng, 1, 4)
                                                  : (gate_up ? 32 * random_int(rng, 1, 3) : 16 * random_int(rng, 1, 4));
    const int64_t kb = mode == GateMode::Separated ? 32 * random_int(rng, 1, 4) : 64 * random_int(rng, 1, 3);
    SCOPED_TRACE(std::string(mode_name(mode)) + (gate_up ? " gate_up" : " down") + " [" + std::to_string(e) +
                 ", " + std::to_string(n) + ", " + std::to_string(kb) + "]");
    const ByteTensor in = random_tensor(Dtype::U8, {e, n, kb}, rng);
    const ByteTensor out = make_aiter_shuffle_weight_step(mode, gate_up)->apply(in);
    const WeightTileLayout layout{mode, gate_up, n, kb};
    std::vector<bool> hit(out.bytes.size(), false);
    for (int64_t ei = 0; ei < e; ++ei)
      for (int64_t ni = 0; ni < n; ++ni)
        for (int64_t k = 0; k < kb; ++k) {
          const int64_t off = layout.offset(ei, ni, k);
          ASSERT_TRUE(off >= 0 && off < static_cast<int64_t>(out.bytes.size())) << ei << "," << ni << "," << k;
          ASSERT_FALSE(hit[off]) << "offset " << off << " reused at " << ei << "," << ni << "," << k;
          hit[off] = true;
          ASSERT_EQ(out.bytes[off], in.bytes[(ei * n + ni) * kb + k]) << ei << "," << ni << "," << k;
        }
  }
}

TEST(Addressing, ScaleLayoutMatchesSeparatedScaleShuffle) {
  std::mt19937_64 rng(32);
  for (int t = 0; t < 16; ++t) {
    // Rows m = e * N + n of a [E * N, S] input; N and S need not be aligned (padding).
    const int64_t e = random_int(rng, 1, 4), n = random_int(rng, 1, 100), s = random_int(rng, 1, 20);
    const ByteTensor in = random_tensor(Dtype::U8, {e * n, s}, rng);
    const ByteTensor out = make_aiter_shuffle_scale_separated_step()->apply(in);
    const int64_t s_pad = out.shape[1];
    ASSERT_EQ(s_pad, (s + 7) / 8 * 8);
    const ScaleLayout layout{GateMode::Separated, t % 2 == 0, n, s_pad};
    std::vector<bool> hit(out.bytes.size(), false);
    for (int64_t ei = 0; ei < e; ++ei)
      for (int64_t ni = 0; ni < n; ++ni)
        for (int64_t g = 0; g < s; ++g) {
          const int64_t off = layout.offset(ei, ni, g);
          ASSERT_TRUE(off >= 0 && off < static_cast<int64_t>(out.bytes.size()));
          ASSERT_FALSE(hit[off]);
          hit[off] = true;
          ASSERT_EQ(out.bytes[off], in.bytes[(ei * n + ni) * s + g]) << ei << "," << ni << "," << g;
        }
    // Everything else is padding.
    for (size_t i = 0; i < out.bytes.size(); ++i)
      if (!hit[i]) {
        ASSERT_EQ(out.bytes[i], 127) << "byte " << i;
      }
  }
}

TEST(Addressing, ScaleLayoutMatchesInterleaveScaleShuffle) {
  std::mt19937_64 rng(33);
  for (int t = 0; t < 16; ++t) {
    const bool gate_up = t % 2 == 0;
    const int64_t e = random_int(rng, 1, 3), n = 32 * random_int(rng, 1, 3), s = 8 * random_int(rng, 1, 3);
    const ByteTensor in = random_tensor(Dtype::U8, {e * n, s}, rng);
    const ByteTensor out = make_aiter_shuffle_scale_interleave_step(gate_up, e)->apply(in);
    const ScaleLayout layout{GateMode::Interleave, gate_up, n, s};
    std::vector<bool> hit(out.bytes.size(), false);
    for (int64_t ei = 0; ei < e; ++ei)
      for (int64_t ni = 0; ni < n; ++ni)
        for (int64_t g = 0; g < s; ++g) {
          const int64_t off = layout.offset(ei, ni, g);
          ASSERT_TRUE(off >= 0 && off < static_cast<int64_t>(out.bytes.size()));
          ASSERT_FALSE(hit[off]);
          hit[off] = true;
          ASSERT_EQ(out.bytes[off], in.bytes[(ei * n + ni) * s + g]) << ei << "," << ni << "," << g;
        }
  }
}
