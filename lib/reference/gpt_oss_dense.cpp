#include <cmath>
#include <string>

#include "core/error.h"
#include "formats/bf16.h"
#include "formats/e2m1.h"
#include "formats/e8m0.h"
#include "reference/moe.h"

namespace moeprep::reference {
namespace {

// One MXFP4 tensor [E, rows, K/32, 16] + scales [E, rows, K/32] -> floats [E, rows, K], exact.
void dequantize_mxfp4(const uint8_t* blocks, const uint8_t* scales, int64_t E, int64_t rows, int64_t K,
                      const char* scales_name, float* out) {
  const int64_t groups = K / 32;
  for (int64_t r = 0; r < E * rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const uint8_t s = scales[r * groups + g];
      if (e8m0_is_nan(s)) {
        throw_bad_input(std::string("GPT-OSS source: tensor '") + scales_name + "': scale 255 (E8M0 NaN) at expert " +
                        std::to_string(r / rows) + ", row " + std::to_string(r % rows) + ", block " +
                        std::to_string(g));
      }
      const int exponent = static_cast<int>(s) - 127;
      const uint8_t* b = blocks + (r * groups + g) * 16;
      float* o = out + r * K + g * 32;
      for (int i = 0; i < 16; ++i) {
        o[2 * i] = std::ldexp(e2m1_to_float(e2m1_low(b[i])), exponent);
        o[2 * i + 1] = std::ldexp(e2m1_to_float(e2m1_high(b[i])), exponent);
      }
    }
  }
}

}  // namespace

DenseMoeLayer dense_from_gpt_oss_source(const uint8_t* gu_blocks, const uint8_t* gu_scales, const uint16_t* gu_bias,
                                        const uint8_t* dn_blocks, const uint8_t* dn_scales, const uint16_t* dn_bias,
                                        int64_t E, int64_t H, int64_t I) {
  if (E <= 0 || H <= 0 || I <= 0 || H % 32 != 0 || I % 32 != 0) {
    throw_bad_input("GPT-OSS source: sizes E=" + std::to_string(E) + " H=" + std::to_string(H) + " I=" +
                    std::to_string(I) + " must be positive with H and I multiples of 32 (MXFP4 blocks)");
  }
  DenseMoeLayer d;
  d.experts = E;
  d.hidden = H;
  d.intermediate = I;
  d.gate_up_interleaved = true;
  d.w13.resize(static_cast<size_t>(E * 2 * I * H));
  d.w2.resize(static_cast<size_t>(E * H * I));
  d.b13.resize(static_cast<size_t>(E * 2 * I));
  d.b2.resize(static_cast<size_t>(E * H));
  dequantize_mxfp4(gu_blocks, gu_scales, E, 2 * I, H, "gate_up_proj_scales", d.w13.data());
  dequantize_mxfp4(dn_blocks, dn_scales, E, H, I, "down_proj_scales", d.w2.data());
  for (size_t i = 0; i < d.b13.size(); ++i) d.b13[i] = bf16_to_float(gu_bias[i]);
  for (size_t i = 0; i < d.b2.size(); ++i) d.b2[i] = bf16_to_float(dn_bias[i]);
  return d;
}

}  // namespace moeprep::reference
