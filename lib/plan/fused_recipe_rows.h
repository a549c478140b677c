#pragma once
// What the one-pass weight and scale paths share: which source row feeds an output row of the
// padded, de-interleaved expert (w13: [gate; up], each half padded to intermediate_pad, or for
// non-gated experts the up rows padded to intermediate_pad; w2: hidden padded to hidden_pad),
// and the size checks of their buffers.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "plan/aiter_recipes.h"

namespace moeprep::plan {

struct ExpertRowMap {
  bool w13 = false;        // rows come in [gate; up] halves (gated w13 only)
  int64_t half_rows = 0;  // w13: gate (and up) rows per expert in the source
  int64_t src_rows = 0;   // rows per expert in the source
  int64_t out_half = 0;   // w13: gate (and up) rows per expert in the output
  int64_t out_rows = 0;   // rows per expert in the output

  // The source row (within its expert) of output row n, or -1 for a padding row.
  int64_t source_row(int64_t n, bool gate_up_interleaved) const {
    if (!w13) return n < src_rows ? n : -1;
    const int64_t half = n / out_half, j = n % out_half;
    if (j >= half_rows) return -1;
    return gate_up_interleaved ? 2 * j + half : half * half_rows + j;
  }
};

inline ExpertRowMap expert_row_map(bool w13, const ExpertDims& d) {
  ExpertRowMap m;
  if (w13 && !d.gated) {
    // Non-gated w13 (up rows only): padded and tiled like w2, no halves.
    m.src_rows = d.intermediate;
    m.out_rows = d.intermediate_pad;
    return m;
  }
  m.w13 = w13;
  m.half_rows = w13 ? d.intermediate : 0;
  m.src_rows = w13 ? 2 * d.intermediate : d.hidden;
  m.out_half = w13 ? d.intermediate_pad : 0;
  m.out_rows = w13 ? 2 * d.intermediate_pad : d.hidden_pad;
  return m;
}

inline void check_fused_buffer(const char* what, const char* side, size_t size, int64_t expected) {
  if (static_cast<int64_t>(size) != expected)
    throw_internal(std::string(what) + ": " + side + " of " + std::to_string(size) + " bytes, expected " +
                   std::to_string(expected));
}

}  // namespace moeprep::plan
