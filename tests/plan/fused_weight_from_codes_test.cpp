// The one-pass weight writer fed by a code producer (write_weight_recipe_fused_from_codes, the
// path of quantizing sources) gives exactly the bytes of the step-by-step recipe: every gate
// mode, interleaved and separated gate/up sources, gated and non-gated experts, padded and
// unpadded sizes, into a buffer holding stale bytes.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/random.h"
#include "core/shape.h"
#include "plan/aiter_recipes.h"
#include "plan/fused_weight_recipe.h"

namespace moeprep::plan::testing {
namespace {

// Copies canonical codes [E, rows, kb] through the destination, as a quantizing source would
// write them, taking each span whole; returns how many spans were asked for.
int64_t produce_from(const ByteTensor& in, const models::CodeRowDestination& to) {
  const int64_t E = in.shape[0], rows = in.shape[1], kb = in.shape[2] * in.shape[3];
  int64_t spans = 0;
  for (int64_t e = 0; e < E; ++e)
    for (int64_t s = 0; s < rows; ++spans) {
      const models::CodeRowSpan span = to(e, s);
      EXPECT_GT(span.rows, 0);
      for (int64_t i = 0; i < span.rows && s < rows; ++i, ++s)
        for (int64_t b = 0; b < kb / 16; ++b)
          std::memcpy(span.data + i * span.row_stride + b * span.block_stride,
                      in.bytes.data() + (e * rows + s) * kb + b * 16, 16);
    }
  return spans;
}

TEST(FusedWeightFromCodes, EqualsTheStepByStepRecipe) {
  SplitMix64 rng(17);
  for (auto mode : {layout::GateMode::Separated, layout::GateMode::Interleave})
    for (bool gated : {true, false})
      for (bool interleaved : {true, false}) {
        if (!gated && interleaved) continue;  // non-gated experts have no gate/up pairs
        for (auto [H, I] : {std::pair<int64_t, int64_t>{160, 96}, {256, 256}, {512, 384}}) {
          ConvertOptions o;
          o.gate_mode = mode;
          const ExpertDims d = padded_dims(3, H, I, o, gated);
          for (ExpertRole role : {ExpertRole::W13Weight, ExpertRole::W2Weight}) {
            const std::string what = std::string(gate_mode_name(mode)) + (gated ? " gated" : " non-gated") +
                                     " interleaved=" + std::to_string(interleaved) + " H=" + std::to_string(H) +
                                     " I=" + std::to_string(I) + " " + role_name(role);
            const RecipeSpec spec = aiter_recipe(role, d, o, interleaved);
            ByteTensor in{spec.in_dtype, spec.in_shape, {}};
            in.bytes.resize(static_cast<size_t>(checked_numel(spec.in_shape, "t")));
            for (auto& b : in.bytes) b = static_cast<uint8_t>(rng.next());
            const ByteTensor expect = spec.recipe.apply(in);
            ASSERT_TRUE(has_fused_weight_recipe(role, d, o)) << what;
            std::vector<uint8_t> out(expect.bytes.size(), 0xA5);
            int64_t spans = 0;
            write_weight_recipe_fused_from_codes(role, d, o, interleaved, out.data(), out.size(),
                                                 [&](const models::CodeRowDestination& to) {
                                                   spans = produce_from(in, to);
                                                 });
            EXPECT_TRUE(out == expect.bytes) << what;
            // Separated gate/up sources go 16 rows at a time, up to the end of a half; pairs
            // of gate/up rows one row at a time.
            const int64_t rows = in.shape[1];
            const int64_t groups = role == ExpertRole::W2Weight || !gated ? (rows + 15) / 16 : 2 * ((I + 15) / 16);
            EXPECT_EQ(spans, 3 * (interleaved && role == ExpertRole::W13Weight && gated ? rows : groups)) << what;
          }
        }
      }
}

TEST(FusedWeightFromCodes, RowsOutsideTheTensorAreRefused) {
  ConvertOptions o;
  const ExpertDims d = padded_dims(2, 256, 256, o);
  std::vector<uint8_t> out(static_cast<size_t>(2 * d.w13_rows_pad() * d.hidden_pad / 2));
  for (auto [e, row] : {std::pair<int64_t, int64_t>{2, 0}, {0, 512}, {-1, 0}}) {
    try {
      write_weight_recipe_fused_from_codes(ExpertRole::W13Weight, d, o, false, out.data(), out.size(),
                                           [&](const models::CodeRowDestination& to) { to(e, row); });
      FAIL() << "expected an error for expert " << e << ", row " << row;
    } catch (const Error& err) {
      EXPECT_NE(std::string(err.what()).find("code row " + std::to_string(row) + " of expert " + std::to_string(e)),
                std::string::npos)
          << err.what();
    }
  }
}

}  // namespace
}  // namespace moeprep::plan::testing
