#include "plan/fused_scale_recipe.h"

#include <vector>

#include "core/error.h"
#include "layout/addressing.h"
#include "plan/fused_recipe_rows.h"

namespace moeprep::plan {
namespace {

constexpr uint8_t kScalePad = 127;  // E8M0 2^0, what the recipe's pad steps write

struct ScaleGeometry {
  ExpertRowMap rows;
  int64_t src_groups = 0;
  int64_t out_groups = 0;  // S': the shuffle's padded group count
};

ScaleGeometry geometry(const RecipeSpec& spec, ExpertRole role, const ExpertDims& d) {
  const bool w13 = role == ExpertRole::W13Scale;
  return {expert_row_map(w13, d), (w13 ? d.hidden : d.intermediate) / 32,
          spec.out_shape.size() == 2 ? spec.out_shape[1] : 0};
}

}  // namespace

bool has_fused_scale_recipe(ExpertRole role, const ExpertDims& d, const ConvertOptions& o, bool gate_up_interleaved) {
  if (o.fault != InjectedFault::None) return false;  // faults exist to run the steps as written
  if (role != ExpertRole::W13Scale && role != ExpertRole::W2Scale) return false;
  const RecipeSpec spec = aiter_recipe(role, d, o, gate_up_interleaved);
  const ScaleGeometry g = geometry(spec, role, d);
  // The shuffle may pad rows too (separated: to 32); the fused path covers shapes where it
  // does not, which is every shape the planner's pad multiples allow.
  return spec.out_shape.size() == 2 && spec.out_shape[0] == d.experts * g.rows.out_rows && g.out_groups >= g.src_groups;
}

void write_scale_recipe_fused(ExpertRole role, const ExpertDims& d, const ConvertOptions& o, bool gate_up_interleaved,
                              const uint8_t* in, size_t in_size, uint8_t* out, size_t out_size) {
  if (!has_fused_scale_recipe(role, d, o, gate_up_interleaved))
    throw_internal("fused scale recipe: no fused path for this tensor");
  const RecipeSpec spec = aiter_recipe(role, d, o, gate_up_interleaved);
  const ScaleGeometry g = geometry(spec, role, d);
  const ExpertRowMap& m = g.rows;
  const int64_t E = d.experts;
  check_fused_buffer("fused scale recipe", "input", in_size, E * m.src_rows * g.src_groups);
  check_fused_buffer("fused scale recipe", "output", out_size, E * m.out_rows * g.out_groups);
  const layout::ScaleLayout sl{o.gate_mode, m.w13, m.out_rows, g.out_groups};
  // In both gate modes the offset splits into a part of the row and a part of the group
  // (addressing.h: no term mixes n and s), so one table of group offsets serves every row.
  std::vector<int64_t> group_offset(static_cast<size_t>(g.out_groups));
  for (int64_t s = 0; s < g.out_groups; ++s) group_offset[static_cast<size_t>(s)] = sl.offset(0, 0, s);
  for (int64_t e = 0; e < E; ++e) {
    for (int64_t n = 0; n < m.out_rows; ++n) {
      const int64_t src_row = m.source_row(n, gate_up_interleaved);
      uint8_t* row_out = out + sl.offset(e, n, 0);
      int64_t s = 0;
      if (src_row >= 0) {
        const uint8_t* row_in = in + (e * m.src_rows + src_row) * g.src_groups;
        for (; s < g.src_groups; ++s) row_out[group_offset[static_cast<size_t>(s)]] = row_in[s];
      }
      for (; s < g.out_groups; ++s) row_out[group_offset[static_cast<size_t>(s)]] = kScalePad;
    }
  }
}

}  // namespace moeprep::plan
