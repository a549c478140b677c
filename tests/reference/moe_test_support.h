#pragma once
// Test-side construction of one GPT-OSS MoE layer: random HF source tensors, the dense
// reference layer, and the kernel-ready tensors made by applying the layout steps (the same
// steps convert runs), optionally with one of the corruptions verify must catch. Shared by the
// CPU tests (tests/reference) and the GPU tests (tests/gpu).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/byte_tensor.h"
#include "formats/bf16.h"
#include "layout/recipe.h"
#include "layout/steps.h"
#include "core/random.h"
#include "core/shape.h"
#include "reference/moe.h"

namespace moeprep::moe_testing {

// The project's seeded generator (core/random.h); tests must not depend on the standard
// library's distributions. The seed is spread so that small seeds give unrelated streams.
class TestRng : public SplitMix64 {
 public:
  explicit TestRng(uint64_t seed) : SplitMix64(seed * 0x9E3779B97F4A7C15ull + 1) {}
};

inline uint16_t bf16_of(double v) { return float_to_bf16(static_cast<float>(v)); }

// The HF tensors of one layer (gpt-oss-format.md) plus its router.
struct GptOssSource {
  int64_t E = 0, H = 0, I = 0;
  std::vector<uint8_t> gu_blocks, gu_scales, dn_blocks, dn_scales;  // [E,2I,H/32,16], [E,2I,H/32], ...
  std::vector<uint16_t> gu_bias, dn_bias;                           // bf16 [E,2I], [E,H]
  std::vector<uint16_t> router_w, router_b;                         // bf16 [E,H], [E]

  reference::RouterWeights router() const { return {router_w.data(), router_b.data()}; }
  reference::DenseMoeLayer dense() const {
    return reference::dense_from_gpt_oss_source(gu_blocks.data(), gu_scales.data(), gu_bias.data(), dn_blocks.data(),
                                                dn_scales.data(), dn_bias.data(), E, H, I);
  }
};

// Scales near 2^-3 keep pre-activations mostly inside GPT-OSS's clamp (limit 7), so that a
// wrong layout changes the output instead of being flattened by the clamp.
inline GptOssSource random_gpt_oss_source(int64_t E, int64_t H, int64_t I, uint64_t seed, int scale_lo = 122,
                                          int scale_hi = 125) {
  TestRng rng(seed);
  GptOssSource s;
  s.E = E;
  s.H = H;
  s.I = I;
  auto bytes = [&](int64_t n) {
    std::vector<uint8_t> v(static_cast<size_t>(n));
    for (auto& b : v) b = static_cast<uint8_t>(rng.next());
    return v;
  };
  auto scales = [&](int64_t n, int lo, int hi) {
    std::vector<uint8_t> v(static_cast<size_t>(n));
    for (auto& b : v) b = static_cast<uint8_t>(lo + static_cast<int>(rng.next() % (hi - lo + 1)));
    return v;
  };
  auto bf16s = [&](int64_t n, double sigma) {
    std::vector<uint16_t> v(static_cast<size_t>(n));
    for (auto& b : v) b = bf16_of(sigma * rng.normal());
    return v;
  };
  s.gu_blocks = bytes(E * 2 * I * H / 2);
  s.gu_scales = scales(E * 2 * I * (H / 32), scale_lo, scale_hi);
  s.gu_bias = bf16s(E * 2 * I, 0.5);
  s.dn_blocks = bytes(E * H * I / 2);
  s.dn_scales = scales(E * H * (I / 32), scale_lo, scale_hi);
  s.dn_bias = bf16s(E * H, 0.5);
  s.router_w = bf16s(E * H, 0.2);
  s.router_b = bf16s(E, 0.2);
  return s;
}

inline std::vector<uint16_t> random_activations(int64_t tokens, int64_t hidden, uint64_t seed) {
  TestRng rng(seed);
  std::vector<uint16_t> x(static_cast<size_t>(tokens * hidden));
  for (auto& v : x) v = bf16_of(rng.normal());
  return x;
}

// The corruptions of validation.md that touch numerics (a mislabelled mode is made by setting
// KernelReadyLayer::mode to the other value on a good build).
enum class Corruption {
  None,
  GateUpLeftInterleaved,        // no de-interleave step at all (weights, scales, bias)
  ScalesNotDeinterleaved,       // weights and bias de-interleaved, scales left in pair order
  ScaleShuffleSkipped,          // scales padded like the shuffle would, but not permuted
};

// Owns the six kernel-ready tensors of one layer.
struct KernelReadyTensors {
  layout::GateMode mode = layout::GateMode::Separated;
  int64_t E = 0, H = 0, I = 0, Hp = 0, Ip = 0, s13 = 0, s2 = 0;
  std::vector<uint8_t> w13, w13_scale, w2, w2_scale;
  std::vector<float> b13, b2;

  reference::KernelReadyLayer view() const {
    reference::KernelReadyLayer l;
    l.mode = mode;
    l.experts = E;
    l.hidden = H;
    l.intermediate = I;
    l.hidden_pad = Hp;
    l.intermediate_pad = Ip;
    l.w13_scale_cols = s13;
    l.w2_scale_cols = s2;
    l.w13_weight = w13.data();
    l.w13_scale = w13_scale.data();
    l.w13_bias = b13.data();
    l.w2_weight = w2.data();
    l.w2_scale = w2_scale.data();
    l.w2_bias = b2.data();
    return l;
  }
};

inline ByteTensor byte_tensor(Dtype dtype, Shape shape, const void* data, size_t n) {
  ByteTensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.bytes.resize(n);
  std::memcpy(t.bytes.data(), data, n);
  return t;
}

// Applies convert's recipe for the aiter target (layouts.md): de-interleave, pad (codes 0,
// scales 127, bias 0; gate and up halves separately), shuffle weights and scales, bias to f32.
inline KernelReadyTensors build_kernel_ready(const GptOssSource& src, layout::GateMode mode, int64_t Hp, int64_t Ip,
                                             Corruption corruption = Corruption::None) {
  using namespace layout;
  const int64_t E = src.E, H = src.H, I = src.I;
  const bool sep = mode == GateMode::Separated;
  const bool deint_weights = corruption != Corruption::GateUpLeftInterleaved;
  const bool deint_scales = deint_weights && corruption != Corruption::ScalesNotDeinterleaved;
  const bool shuffle_scales = corruption != Corruption::ScaleShuffleSkipped;

  KernelReadyTensors out;
  out.mode = mode;
  out.E = E;
  out.H = H;
  out.I = I;
  out.Hp = Hp;
  out.Ip = Ip;
  out.s13 = sep ? round_up(Hp / 32, 8) : Hp / 32;
  out.s2 = sep ? round_up(Ip / 32, 8) : Ip / 32;

  // Weights [E, N, Kb] -> ... -> shuffled; `gate_up` rows come in (gate; up) halves.
  auto weight = [&](const std::vector<uint8_t>& blocks, int64_t rows, int64_t K, int64_t rows_pad, int64_t K_pad,
                    bool gate_up) {
    Recipe r;
    r.steps.push_back(make_view_step({E, rows, K / 2}));
    if (gate_up) {
      if (deint_weights) r.steps.push_back(make_deinterleave_gate_up_rows_step());
      r.steps.push_back(make_pad_step({E, 2, rows / 2, K / 2}, {E, 2, rows_pad / 2, K_pad / 2}, 0,
                                      {E, rows_pad, K_pad / 2}));
    } else {
      r.steps.push_back(make_pad_step({E, rows, K / 2}, {E, rows_pad, K_pad / 2}, 0, {E, rows_pad, K_pad / 2}));
    }
    r.steps.push_back(make_aiter_shuffle_weight_step(mode, gate_up));
    ByteTensor in = byte_tensor(Dtype::U8, {E, rows, K / 32, 16}, blocks.data(), blocks.size());
    return r.apply(std::move(in)).bytes;
  };
  auto scale = [&](const std::vector<uint8_t>& s, int64_t rows, int64_t K, int64_t rows_pad, int64_t K_pad,
                   bool gate_up, int64_t cols) {
    Recipe r;
    const int64_t S = K / 32, Sp = K_pad / 32;
    if (gate_up) {
      if (deint_scales) r.steps.push_back(make_deinterleave_gate_up_rows_step());
      r.steps.push_back(make_pad_step({E, 2, rows / 2, S}, {E, 2, rows_pad / 2, Sp}, 127, {E * rows_pad, Sp}));
    } else {
      r.steps.push_back(make_pad_step({E, rows, S}, {E, rows_pad, Sp}, 127, {E * rows_pad, Sp}));
    }
    if (shuffle_scales) {
      r.steps.push_back(sep ? make_aiter_shuffle_scale_separated_step(127)
                            : make_aiter_shuffle_scale_interleave_step(gate_up, E));
    } else if (sep) {
      // The separated shuffle's output is [M', S']: keep that size, unpermuted.
      const int64_t M = E * rows_pad, Mp = round_up(M, 256);
      r.steps.push_back(make_pad_step({M, Sp}, {Mp, cols}, 127, {Mp, cols}));
    }
    ByteTensor in = byte_tensor(Dtype::U8, {E, rows, S}, s.data(), s.size());
    return r.apply(std::move(in)).bytes;
  };
  auto bias = [&](const std::vector<uint16_t>& b, int64_t rows, int64_t rows_pad, bool gate_up) {
    Recipe r;
    if (gate_up) {
      if (deint_weights) r.steps.push_back(make_deinterleave_gate_up_rows_step());
      r.steps.push_back(make_cast_bf16_to_f32_step());
      r.steps.push_back(make_pad_step({E, 2, rows / 2}, {E, 2, rows_pad / 2}, 0, {E, rows_pad}));
    } else {
      r.steps.push_back(make_cast_bf16_to_f32_step());
      r.steps.push_back(make_pad_step({E, rows}, {E, rows_pad}, 0, {E, rows_pad}));
    }
    ByteTensor in = byte_tensor(Dtype::BF16, {E, rows}, b.data(), b.size() * 2);
    ByteTensor o = r.apply(std::move(in));
    std::vector<float> f(o.bytes.size() / 4);
    std::memcpy(f.data(), o.bytes.data(), o.bytes.size());
    return f;
  };
  out.w13 = weight(src.gu_blocks, 2 * I, H, 2 * Ip, Hp, true);
  out.w13_scale = scale(src.gu_scales, 2 * I, H, 2 * Ip, Hp, true, out.s13);
  out.b13 = bias(src.gu_bias, 2 * I, 2 * Ip, true);
  out.w2 = weight(src.dn_blocks, H, I, Hp, Ip, false);
  out.w2_scale = scale(src.dn_scales, H, I, Hp, Ip, false, out.s2);
  out.b2 = bias(src.dn_bias, H, Hp, false);
  return out;
}

// ||out - ref|| / ||ref|| over all elements; NaN anywhere gives NaN (which fails every `<`).
inline double rel_err(const std::vector<float>& out, const std::vector<float>& ref) {
  if (out.size() != ref.size()) return std::nan("");
  double num = 0, den = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const double d = static_cast<double>(out[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1.0));
}

}  // namespace moeprep::moe_testing
