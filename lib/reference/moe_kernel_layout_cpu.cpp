// The fused MoE on the CPU, reading the kernel-ready tensors the way kernels/fused_moe.cu does:
// every weight byte and scale through layout/addressing.h, fp32 accumulation of bf16
// activations, the intermediate activation rounded to bf16 before the down GEMM, and the
// top-k results combined per token in pick order. CPU and GPU therefore differ only by fp32
// summation order.
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/bf16.h"
#include "formats/e2m1.h"
#include "formats/e8m0.h"
#include "reference/moe.h"
#include "reference/moe_routing.h"

namespace moeprep::reference {
namespace {

// Row n of expert e of a shuffled MXFP4 matrix, dequantized to K = 2 * kbytes floats.
void dequantize_row(const uint8_t* weight, const uint8_t* scale, const layout::WeightTileLayout& wl,
                    const layout::ScaleLayout& sl, int64_t e, int64_t n, float* row) {
  for (int64_t g = 0; g < wl.kbytes / 16; ++g) {
    const uint8_t s = scale[sl.offset(e, n, g)];
    // A NaN scale poisons its 32 elements, as it would on the GPU: verify must see it.
    const float sv = e8m0_is_nan(s) ? std::numeric_limits<float>::quiet_NaN() : e8m0_to_float(s);
    for (int64_t b = 0; b < 16; ++b) {
      const int64_t kb = g * 16 + b;
      const uint8_t byte = weight[wl.offset(e, n, kb)];
      row[2 * kb] = e2m1_to_float(e2m1_low(byte)) * sv;
      row[2 * kb + 1] = e2m1_to_float(e2m1_high(byte)) * sv;
    }
  }
}

}  // namespace

MoeOutput moe_forward_kernel_layout_cpu(const KernelReadyLayer& L, const RouterWeights& router,
                                        const RouterConfig& rc, const ActivationParams& act, const uint16_t* x,
                                        int64_t tokens, int64_t valid_tokens) {
  check_kernel_ready_layer(L);
  if (L.gated != is_gated(act.kind))
    throw_bad_input(std::string("kernel-ready layer: the activation is ") + (is_gated(act.kind) ? "gated" : "non-gated") +
                    " but w13 holds " + (L.gated ? "[gate; up] rows" : "up rows only"));
  const int64_t E = L.experts, H = L.hidden, Hp = L.hidden_pad, Ip = L.intermediate_pad;
  // Rows of w13 per expert: [gate; up], or the up rows alone for non-gated experts (relu^2),
  // which are tiled like w2 (no gate/up pairing in the interleaved order).
  const int64_t R = L.gated ? 2 * Ip : Ip;
  const int k = rc.top_k;
  check_token_counts(tokens, valid_tokens);
  MoeOutput result;
  const std::vector<float> logits = router_logits(router, x, valid_tokens, E, H);
  result.routing = route_with_padding(logits, tokens, valid_tokens, E, rc);
  result.out.assign(static_cast<size_t>(tokens * H), 0.0f);

  const layout::WeightTileLayout w13l{L.mode, L.gated, R, Hp / 2};
  const layout::ScaleLayout s13l{L.mode, L.gated, R, L.w13_scale_cols};
  const layout::WeightTileLayout w2l{L.mode, false, Hp, Ip / 2};
  const layout::ScaleLayout s2l{L.mode, false, Hp, L.w2_scale_cols};

  // Picks grouped by expert, each expert's rows dequantized once for all its tokens.
  std::vector<std::vector<int64_t>> picks(static_cast<size_t>(E));
  for (int64_t p = 0; p < valid_tokens * k; ++p) {
    const int32_t e = result.routing.ids[p];
    if (e >= 0) picks[e].push_back(p);
  }
  std::vector<float> y(static_cast<size_t>(valid_tokens * k * H), 0.0f);  // per pick, [H]
  std::vector<float> row(static_cast<size_t>(Hp > Ip ? Hp : Ip));
  for (int64_t e = 0; e < E; ++e) {
    const std::vector<int64_t>& ps = picks[e];
    if (ps.empty()) continue;
    const int64_t n = static_cast<int64_t>(ps.size());
    std::vector<float> xs(static_cast<size_t>(n * Hp), 0.0f);  // logical columns, zero padding
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = ps[i] / k;
      for (int64_t c = 0; c < H; ++c) xs[i * Hp + c] = bf16_to_float(x[t * H + c]);
    }
    std::vector<float> h(static_cast<size_t>(n * R));
    for (int64_t r = 0; r < R; ++r) {
      dequantize_row(L.w13_weight, L.w13_scale, w13l, s13l, e, r, row.data());
      const float bias = L.w13_bias[e * R + r];
      for (int64_t i = 0; i < n; ++i) {
        float acc = 0.0f;
        const float* xi = xs.data() + i * Hp;
        for (int64_t c = 0; c < Hp; ++c) acc += row[c] * xi[c];
        h[i * R + r] = acc + bias;
      }
    }
    // [gate; up] rows: gate unit j is row j, up unit j is row I' + j; non-gated: up unit j is
    // row j.
    std::vector<float> a(static_cast<size_t>(n * Ip));
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < Ip; ++j) {
        const float* hi = h.data() + i * R;
        const float v = L.gated ? moe_activation<float>(act, hi[j], hi[Ip + j]) : moe_activation<float>(act, 0.0f, hi[j]);
        a[i * Ip + j] = bf16_to_float(float_to_bf16(v));
      }
    }
    for (int64_t r = 0; r < H; ++r) {  // rows past H are padding and never reach the output
      dequantize_row(L.w2_weight, L.w2_scale, w2l, s2l, e, r, row.data());
      const float bias = L.w2_bias[e * Hp + r];
      for (int64_t i = 0; i < n; ++i) {
        float acc = 0.0f;
        const float* ai = a.data() + i * Ip;
        for (int64_t c = 0; c < Ip; ++c) acc += row[c] * ai[c];
        y[ps[i] * H + r] = acc + bias;
      }
    }
  }
  for (int64_t t = 0; t < valid_tokens; ++t) {
    float* o = result.out.data() + t * H;
    for (int j = 0; j < k; ++j) {
      const int64_t p = t * k + j;
      if (result.routing.ids[p] < 0) continue;
      const float w = result.routing.weights[p];
      for (int64_t c = 0; c < H; ++c) o[c] += w * y[p * H + c];
    }
  }
  return result;
}

}  // namespace moeprep::reference
