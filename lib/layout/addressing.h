#pragma once
// Where a logical element of a kernel-ready tensor lives in memory.
//
// These are the same transforms as the layout steps (aiter_shuffle_weight, aiter_shuffle_scale)
// written the other way round: given logical coordinates, the physical byte offset. The GPU
// kernels and the CPU kernel-layout MoE address the shuffled tensors only through these
// functions; tests check them against the steps' permutations, so the kernels and the
// converter cannot silently disagree. Coordinates: e expert, n output row within the expert
// (for w13 in [gate; up] order, 0..2I'-1), kb byte along K (2 FP4 codes per byte), s scale
// group along K (32 elements each).
#include <cstdint>

#include "core/hd.h"

namespace moeprep::layout {

enum class GateMode : int { Separated = 0, Interleave = 1 };

// MXFP4 weights [E, N, Kb] after aiter_shuffle_weight.
struct WeightTileLayout {
  GateMode mode;
  bool gate_up;     // w13 (true) or w2 (false); matters only in the interleaved mode
  int64_t rows;     // N per expert
  int64_t kbytes;   // Kb = K / 2

  MOEPREP_HD int64_t offset(int64_t e, int64_t n, int64_t kb) const {
    const int64_t expert_base = e * rows * kbytes;
    if (mode == GateMode::Separated) {
      // (E, N/16, 16, Kb/32, 2, 16) -> (0, 1, 3, 4, 2, 5): 16 rows x 32 bytes per tile, each
      // tile stored as two 16x16-byte halves.
      return expert_base + (n / 16) * 16 * kbytes + (kb / 32) * 512 + ((kb % 32) / 16) * 256 +
             (n % 16) * 16 + kb % 16;
    }
    const int64_t k0 = kbytes / 64;
    const int64_t lane = (kb % 64) / 16, byte = kb % 16, c = kb / 64;
    if (gate_up) {
      // (E, 2, n0, 16, k0, 4, 16) -> (0, 2, 1, 4, 5, 3, 6): gate and up tiles of the same 16
      // rows side by side.
      const int64_t half = rows / 2, g = n / half, r_in = n % half;
      const int64_t a = r_in / 16, r = r_in % 16;
      return expert_base + ((((a * 2 + g) * k0 + c) * 4 + lane) * 16 + r) * 16 + byte;
    }
    // (E, n0, 16, k0, 4, 16) -> (0, 1, 3, 4, 2, 5)
    const int64_t a = n / 16, r = n % 16;
    return expert_base + (((a * k0 + c) * 4 + lane) * 16 + r) * 16 + byte;
  }
};

// E8M0 scales after aiter_shuffle_scale. Separated: a 2-D [M', S'] with M = E*N rows,
// padded; interleaved: [E*N, S].
struct ScaleLayout {
  GateMode mode;
  bool gate_up;
  int64_t rows;            // N per expert
  int64_t padded_groups;   // S' (separated: S rounded up to 8; interleaved: S)

  MOEPREP_HD int64_t offset(int64_t e, int64_t n, int64_t s) const {
    const int64_t sp = padded_groups;
    const int64_t c = s / 8, f = (s % 8) / 4, h = s % 4;
    if (mode == GateMode::Separated) {
      // (M'/32, 2, 16, S'/8, 2, 4) -> (0, 3, 5, 2, 4, 1)
      const int64_t m = e * rows + n;
      const int64_t a = m / 32, b = (m % 32) / 16, r = m % 16;
      return ((((a * (sp / 8) + c) * 4 + h) * 16 + r) * 2 + f) * 2 + b;
    }
    const int64_t n1 = rows / 32, k1 = sp / 8;
    if (gate_up) {
      // (E, 2, n1, 16, k1, 2, 4) -> (0, 2, 4, 6, 3, 5, 1)
      const int64_t half = rows / 2, g = n / half, r_in = n % half;
      const int64_t a = r_in / 16, r = r_in % 16;
      return (((((e * n1 + a) * k1 + c) * 4 + h) * 16 + r) * 2 + f) * 2 + g;
    }
    // (E, n1, 2, 16, k1, 2, 4) -> (0, 1, 4, 6, 3, 5, 2)
    const int64_t a = n / 32, p = (n % 32) / 16, r = n % 16;
    return (((((e * n1 + a) * k1 + c) * 4 + h) * 16 + r) * 2 + f) * 2 + p;
  }
};

}  // namespace moeprep::layout
