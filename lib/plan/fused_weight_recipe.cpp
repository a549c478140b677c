#include "plan/fused_weight_recipe.h"

#include <cstring>

#include "core/error.h"
#include "layout/addressing.h"

namespace moeprep::plan {

std::optional<ByteTensor> apply_weight_recipe_fused(ExpertRole role, const ExpertDims& d, const ConvertOptions& o,
                                                    bool gate_up_interleaved, const uint8_t* in, size_t in_size) {
  if (o.fault != InjectedFault::None) return std::nullopt;  // faults exist to run the steps as written
  if (role != ExpertRole::W13Weight && role != ExpertRole::W2Weight) return std::nullopt;
  const bool w13 = role == ExpertRole::W13Weight;
  const int64_t E = d.experts;
  // Logical source rows and bytes per row, and the physical (padded) ones.
  const int64_t half_rows = w13 ? d.intermediate : 0;               // gate (and up) rows per expert
  const int64_t src_rows = w13 ? 2 * d.intermediate : d.hidden;
  const int64_t src_kb = (w13 ? d.hidden : d.intermediate) / 2;
  const int64_t out_half = w13 ? d.intermediate_pad : 0;
  const int64_t out_rows = w13 ? 2 * d.intermediate_pad : d.hidden_pad;
  const int64_t out_kb = (w13 ? d.hidden_pad : d.intermediate_pad) / 2;
  if (static_cast<int64_t>(in_size) != E * src_rows * src_kb)
    throw_internal("fused weight recipe: input of " + std::to_string(in_size) + " bytes, expected " +
                   std::to_string(E * src_rows * src_kb));
  if (src_kb % 16 != 0) return std::nullopt;  // runs of 16 bytes: K a multiple of 32, always true for MXFP4
  const layout::WeightTileLayout tiles{o.gate_mode, w13, out_rows, out_kb};
  ByteTensor out;
  out.dtype = Dtype::U8;
  out.shape = {E, out_rows, out_kb};
  out.bytes.assign(static_cast<size_t>(E * out_rows * out_kb), 0);  // padding codes are 0x00
  for (int64_t e = 0; e < E; ++e) {
    for (int64_t r = 0; r < out_rows; ++r) {
      int64_t src_row;
      if (w13) {
        const int64_t half = r / out_half, j = r % out_half;
        if (j >= half_rows) continue;  // padded gate/up row
        src_row = gate_up_interleaved ? 2 * j + half : half * half_rows + j;
      } else {
        if (r >= src_rows) continue;  // padded hidden row
        src_row = r;
      }
      const uint8_t* row = in + (e * src_rows + src_row) * src_kb;
      for (int64_t kb = 0; kb < src_kb; kb += 16)
        std::memcpy(out.bytes.data() + tiles.offset(e, r, kb), row + kb, 16);
    }
  }
  return out;
}

}  // namespace moeprep::plan
