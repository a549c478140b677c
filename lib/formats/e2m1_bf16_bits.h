#pragma once
// The integer half of the GPU kernels' MXFP4 -> bf16 dequantization, host and device, so that
// the CPU tests can check it word by word: an E2M1 code's sign, exponent and mantissa bits placed
// at bf16's sign and lowest exponent and mantissa bits read as code_value * 2^-126 (code 1, 0.5,
// becomes the bf16 subnormal 2^-127, so no special case), and the bf16 factor 2^(s-1) that
// turns that into code_value * 2^(s-127) for an E8M0 scale code s. The kernels finish with one
// bf16x2 multiply (kernels/moe_device_math.h).
#include <cstdint>

#include "core/hd.h"

namespace moeprep::e2m1_bits {

// Pair t (0..3) of a word of 8 codes (element i in nibble i): bf16x2 (element 3-t in the low
// half, element 7-t in the high half), the order the kernels' K permutation expects.
// pair_at_shift takes 4t itself (a loop may hold the shift rather than t).
MOEPREP_HD uint32_t pair_at_shift(uint32_t q, uint32_t shift4t) {
  const uint32_t qt = q << shift4t;
  return (qt & 0x80008000u) | ((qt & 0x70007000u) >> 6);
}
MOEPREP_HD uint32_t pair(uint32_t q, int t) { return pair_at_shift(q, 4u * static_cast<uint32_t>(t)); }

// The four pairs of `pair` in fewer instructions (the decode kernels' loop, v19-decode): pair t
// masks its two codes (one a half) and moves sign and magnitude into place with one shift-add
// (t = 2, 3: a multiply by 2^a + 2^b), then keeps bits 15 and 8..6 of each half. The masks
// leave no bit that a shift or a multiply could carry across bit 16, so the halves stay apart.
MOEPREP_HD void pairs_lean(uint32_t q, uint32_t (&v)[4]) {
  constexpr uint32_t kKeep = 0x81C081C0u;  // sign at 15, magnitude at 8..6, in each half
  const uint32_t a0 = q & 0xF000F000u, a1 = q & 0x0F000F00u, a2 = q & 0x00F000F0u, a3 = q & 0x000F000Fu;
  v[0] = (a0 + (a0 >> 6)) & kKeep;
  v[1] = ((a1 << 4) + (a1 >> 2)) & kKeep;
  v[2] = (a2 * 0x104u) & kKeep;
  v[3] = (a3 * 0x1040u) & kKeep;
}

// bf16x2 (2^(s-1), 2^(s-1)) for a scale code s <= 128: ((s + 126) << 7) in both halves, as one
// multiply-add. bf16 cannot hold 2^(s-1) for larger s (the kernels then multiply twice).
MOEPREP_HD uint32_t low_scale(uint32_t s) { return s * 0x00800080u + 0x3F003F00u; }

}  // namespace moeprep::e2m1_bits
