#include "plan/fused_weight_recipe.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "layout/addressing.h"
#include "plan/fused_recipe_rows.h"

namespace moeprep::plan {
namespace {

// Rows (shared with the scales) and 16-byte runs of one role, logical and physical.
struct WeightGeometry {
  ExpertRowMap rows;
  int64_t src_kb = 0, out_kb = 0;
};

WeightGeometry geometry(ExpertRole role, const ExpertDims& d) {
  const bool w13 = role == ExpertRole::W13Weight;
  return {expert_row_map(w13, d), (w13 ? d.hidden : d.intermediate) / 2, (w13 ? d.hidden_pad : d.intermediate_pad) / 2};
}

// In both gate modes a tile holds 16 rows x 16-byte runs contiguously, and run j of a row sits
// 256 bytes after run j - 1 (addressing.h: (kb / 16) * 256 + (n % 16) * 16 + kb % 16 within the
// row group), so a group of 16 output rows is written as one sequential stream of 256-byte
// blocks, each gathered from 16 source rows.
constexpr int64_t kTileRows = 16, kRun = 16, kBlock = kTileRows * kRun;

// The inverse of ExpertRowMap::source_row: the output row of source row s.
int64_t output_row(const ExpertRowMap& m, int64_t s, bool gate_up_interleaved) {
  if (!m.w13) return s;
  const int64_t half = gate_up_interleaved ? s % 2 : s / m.half_rows;
  const int64_t j = gate_up_interleaved ? s / 2 : s % m.half_rows;
  return half * m.out_half + j;
}

}  // namespace

bool has_fused_weight_recipe(ExpertRole role, const ExpertDims& d, const ConvertOptions& o) {
  if (o.fault != InjectedFault::None) return false;  // faults exist to run the steps as written
  if (role != ExpertRole::W13Weight && role != ExpertRole::W2Weight) return false;
  const WeightGeometry g = geometry(role, d);
  // Whole runs and whole row groups; always true for MXFP4 shapes the planner accepts.
  return g.src_kb % kRun == 0 && g.out_kb % kRun == 0 && g.rows.out_rows % kTileRows == 0 &&
         (!g.rows.w13 || g.rows.out_half % kTileRows == 0);
}

void write_weight_recipe_fused(ExpertRole role, const ExpertDims& d, const ConvertOptions& o, bool gate_up_interleaved,
                               const uint8_t* in, size_t in_size, uint8_t* out, size_t out_size) {
  if (!has_fused_weight_recipe(role, d, o)) throw_internal("fused weight recipe: no fused path for this tensor");
  const WeightGeometry g = geometry(role, d);
  const ExpertRowMap& m = g.rows;
  const int64_t E = d.experts;
  check_fused_buffer("fused weight recipe", "input", in_size, E * m.src_rows * g.src_kb);
  check_fused_buffer("fused weight recipe", "output", out_size, E * m.out_rows * g.out_kb);
  const layout::WeightTileLayout tiles{o.gate_mode, m.w13, m.out_rows, g.out_kb};
  static const uint8_t kZeroRun[kRun] = {};  // padding codes are 0x00
  const int64_t src_runs = g.src_kb / kRun, out_runs = g.out_kb / kRun;
  for (int64_t e = 0; e < E; ++e) {
    for (int64_t r0 = 0; r0 < m.out_rows; r0 += kTileRows) {
      const uint8_t* rows[kTileRows];
      for (int64_t i = 0; i < kTileRows; ++i) {
        const int64_t src_row = m.source_row(r0 + i, gate_up_interleaved);
        rows[i] = src_row < 0 ? nullptr : in + (e * m.src_rows + src_row) * g.src_kb;
      }
      uint8_t* block = out + tiles.offset(e, r0, 0);
      for (int64_t j = 0; j < out_runs; ++j, block += kBlock) {
        for (int64_t i = 0; i < kTileRows; ++i) {
          const uint8_t* run = rows[i] && j < src_runs ? rows[i] + j * kRun : kZeroRun;
          std::memcpy(block + i * kRun, run, kRun);
        }
      }
    }
  }
}

void write_weight_recipe_fused_from_codes(ExpertRole role, const ExpertDims& d, const ConvertOptions& o,
                                          bool gate_up_interleaved, uint8_t* out, size_t out_size,
                                          const std::function<void(const models::CodeRowDestination&)>& produce) {
  if (!has_fused_weight_recipe(role, d, o)) throw_internal("fused weight recipe: no fused path for this tensor");
  const WeightGeometry g = geometry(role, d);
  const ExpertRowMap& m = g.rows;
  const int64_t E = d.experts;
  check_fused_buffer("fused weight recipe", "output", out_size, E * m.out_rows * g.out_kb);
  const layout::WeightTileLayout tiles{o.gate_mode, m.w13, m.out_rows, g.out_kb};
  const int64_t src_runs = g.src_kb / kRun, out_runs = g.out_kb / kRun;
  // Padding first: whole rows without a source row, and the runs past the source's K.
  for (int64_t e = 0; e < E; ++e)
    for (int64_t n = 0; n < m.out_rows; ++n) {
      const int64_t from = m.source_row(n, gate_up_interleaved) < 0 ? 0 : src_runs;
      if (from == out_runs) continue;
      uint8_t* row = out + tiles.offset(e, n, 0);
      for (int64_t j = from; j < out_runs; ++j) std::memset(row + j * kBlock, 0, kRun);
    }
  // Consecutive source rows land 16 bytes apart within a group of 16 output rows, unless they
  // come from alternating halves (interleaved gate/up sources) or cross into the next half.
  produce([&](int64_t e, int64_t s) {
    if (e < 0 || e >= E || s < 0 || s >= m.src_rows)
      throw_internal("fused weight recipe: code row " + std::to_string(s) + " of expert " + std::to_string(e) +
                     " outside [" + std::to_string(E) + ", " + std::to_string(m.src_rows) + "]");
    const int64_t n = output_row(m, s, gate_up_interleaved);
    int64_t rows = kTileRows - n % kTileRows;
    if (m.w13 && gate_up_interleaved) rows = 1;
    else if (m.w13) rows = std::min(rows, m.half_rows - s % m.half_rows);
    else rows = std::min(rows, m.src_rows - s);
    return models::CodeRowSpan{out + tiles.offset(e, n, 0), rows, kRun, kBlock};
  });
}

}  // namespace moeprep::plan
