#include <string>

#include "core/error.h"
#include "core/shape.h"
#include "reference/moe.h"

namespace moeprep::reference {
namespace {

[[noreturn]] void violated(const KernelReadyLayer& l, const std::string& what) {
  throw_bad_input("kernel-ready layer (" + std::string(l.mode == layout::GateMode::Separated ? "separated" : "interleave") +
                  " mode, E=" + std::to_string(l.experts) + " H=" + std::to_string(l.hidden) + "/" +
                  std::to_string(l.hidden_pad) + " I=" + std::to_string(l.intermediate) + "/" +
                  std::to_string(l.intermediate_pad) + (l.gated ? "" : ", non-gated") + "): " + what);
}

}  // namespace

KernelReadySizes check_kernel_ready_layer(const KernelReadyLayer& l) {
  const int64_t E = l.experts, Hp = l.hidden_pad, Ip = l.intermediate_pad;
  if (E <= 0 || l.hidden <= 0 || l.intermediate <= 0) violated(l, "sizes must be positive");
  if (Hp < l.hidden || Ip < l.intermediate) violated(l, "padded sizes must be >= the logical ones");
  // Gate and up halves are padded separately and tiled in 16-row blocks, so each half and w2's
  // rows are whole tiles.
  if (Ip % 16 != 0) violated(l, "intermediate_pad must be a multiple of 16 (16-row weight tiles per half)");
  if (Hp % 16 != 0) violated(l, "hidden_pad must be a multiple of 16 (16-row weight tiles of w2)");
  const int64_t s13 = Hp / 32, s2 = Ip / 32;
  const int64_t R = l.gated ? 2 * Ip : Ip;  // w13 rows per expert: [gate; up] or up only
  KernelReadySizes z;
  z.w13_weight = E * R * (Hp / 2);
  z.w2_weight = E * Hp * (Ip / 2);
  z.w13_bias = E * R * 4;
  z.w2_bias = E * Hp * 4;
  if (l.mode == layout::GateMode::Separated) {
    // Tiles of 16 rows x 32 bytes; scales [M', S'] with M' rounded to 256 rows and S' to 8 groups.
    if (Hp % 64 != 0) violated(l, "hidden_pad must be a multiple of 64 (w13 K bytes multiple of 32)");
    if (Ip % 64 != 0) violated(l, "intermediate_pad must be a multiple of 64 (w2 K bytes multiple of 32)");
    if (l.w13_scale_cols != round_up(s13, 8)) {
      violated(l, "w13_scale_cols " + std::to_string(l.w13_scale_cols) + " != ceil(H'/32 / 8) * 8 = " +
                      std::to_string(round_up(s13, 8)));
    }
    if (l.w2_scale_cols != round_up(s2, 8)) {
      violated(l, "w2_scale_cols " + std::to_string(l.w2_scale_cols) + " != ceil(I'/32 / 8) * 8 = " +
                      std::to_string(round_up(s2, 8)));
    }
    z.w13_scale = round_up(E * R, 256) * l.w13_scale_cols;
    z.w2_scale = round_up(E * Hp, 256) * l.w2_scale_cols;
  } else {
    // a16w4 interleave: K bytes in 64-byte packs; scales in (32 rows x 8 groups) units.
    if (Hp % 256 != 0) violated(l, "hidden_pad must be a multiple of 256 in the interleaved mode (H'/32 % 8)");
    if (Ip % 256 != 0) violated(l, "intermediate_pad must be a multiple of 256 in the interleaved mode (I'/32 % 8)");
    if (Hp % 32 != 0) violated(l, "hidden_pad must be a multiple of 32 (w2 scale rows in pairs of 16)");
    if (l.w13_scale_cols != s13) violated(l, "w13_scale_cols " + std::to_string(l.w13_scale_cols) + " != H'/32");
    if (l.w2_scale_cols != s2) violated(l, "w2_scale_cols " + std::to_string(l.w2_scale_cols) + " != I'/32");
    z.w13_scale = E * R * s13;
    z.w2_scale = E * Hp * s2;
  }
  return z;
}

}  // namespace moeprep::reference
