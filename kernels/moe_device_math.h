#pragma once
// Device arithmetic that every expert-GEMM kernel file shares: the gated activations and the
// MXFP4 -> bf16 dequantization of one 32-bit word of E2M1 codes. Included by .cu files only,
// after kernels/portability.h.
#include <cstdint>

#include "formats/e2m1_bf16_bits.h"
#include "reference/moe.h"

namespace moeprep::gpu::detail {

// The kernels' activation code: 0 GPT-OSS clamped SwiGLU, 1 SiLU-, 2 GELU-tanh-, 3 GELU(erf)-gated;
// 4 relu^2, non-gated (it reads `u` only).
inline int activation_code(reference::Activation kind) {
  return kind == reference::Activation::SiluGated       ? 1
         : kind == reference::Activation::GeluTanhGated ? 2
         : kind == reference::Activation::GeluGated     ? 3
         : kind == reference::Activation::Relu2         ? 4
                                                          : 0;
}

__device__ __forceinline__ float gated_activation(int kind, float alpha, float limit, float g, float u) {
  if (kind == 1) return g / (1.0f + expf(-g)) * u;
  // sqrt(2/pi) and 1/sqrt(2), as in the CPU reference (reference/moe_activation.cpp).
  if (kind == 2) return 0.5f * g * (1.0f + tanhf(0.7978845608f * (g + 0.044715f * g * g * g))) * u;
  if (kind == 3) return 0.5f * g * (1.0f + erff(g * 0.7071067812f)) * u;
  if (kind == 4) {
    const float r = (u < 0.0f) ? 0.0f : u;  // std::max(u, 0): NaN stays NaN, as on the CPU
    return r * r;
  }
  // The CPU reference's std::min / std::max, NaN included.
  g = (limit < g) ? limit : g;
  u = (limit < u) ? limit : u;
  u = (u < -limit) ? -limit : u;
  return g / (1.0f + expf(-alpha * g)) * (u + 1.0f);
}

#if !defined(__HIPCC__)

constexpr uint32_t kOneX2 = 0x3F803F80u;  // bf16x2 (1, 1)

__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
  uint32_t d;
  // fma with -0 rather than mul: available from sm_80; keeps the sign of zero products.
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(0x80008000u));
  return d;
}

// The E2M1 bits placed in bf16 (formats/e2m1_bf16_bits.h) give code_value * 2^-126; multiplying
// by 2^(s-1) restores the value times the group's 2^(s-127); bf16 holds 2^(s-1) only for
// s <= 128, so larger scales take a second, exact multiply.
struct ScaleFactor {
  uint32_t f1, f2;
};
__device__ __forceinline__ ScaleFactor scale_factor(uint32_t s) {
  if (s == 255u) return {0x7FC07FC0u, kOneX2};  // E8M0 NaN: the group computes NaN
  if (s <= 128u) return {e2m1_bits::low_scale(s), kOneX2};
  const uint32_t b = s << 7;  // 2^(s-127)
  return {0x7E807E80u /* 2^126 */, b | (b << 16)};
}

// Word q (elements 0..7, element i in nibble i) -> out[t] = bf16x2(element 3-t, element 7-t),
// i.e. the 8 elements in the K-permuted order of moe_internal.h. TWO_MUL: the tensor has scale
// codes above 128 (decided once per tensor at upload, so the choice is uniform and outside the
// MMA loop; a per-value branch would split the loop into basic blocks the scheduler cannot
// interleave).
template <bool TWO_MUL>
__device__ __forceinline__ void dequant_word(uint32_t q, ScaleFactor f, uint32_t* out) {
#pragma unroll
  for (int t = 0; t < 4; ++t) {
    const uint32_t v = e2m1_bits::pair(q, t);
    out[t] = TWO_MUL ? bf16x2_mul(bf16x2_mul(v, f.f1), f.f2) : bf16x2_mul(v, f.f1);
  }
}

__device__ __forceinline__ void mma_bf16_16816(float* c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                               uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

#endif  // !__HIPCC__

}  // namespace moeprep::gpu::detail
