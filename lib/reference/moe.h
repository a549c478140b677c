#pragma once
// One MoE layer's forward pass, three ways:
//  - moe_forward_reference: from dense float weights derived from the *source* tensors, in
//    double, with the model's own gate/up rule (GPT-OSS reads gate = h[0::2], up = h[1::2]);
//  - moe_forward_kernel_layout_cpu: from the kernel-ready tensors, addressing shuffled tiles
//    and scales through layout/addressing.h exactly as the GPU kernel does;
//  - the GPU kernel (kernels/fused_moe.h), same inputs as the CPU kernel-layout version.
// Stage 5 of verify compares the second or third with the first.
#include <cstdint>
#include <vector>

#include "layout/addressing.h"
#include "reference/router.h"

namespace moeprep::reference {

// The experts' activation: gated act(gate) * up, or (Relu2) a function of the up projection
// alone. Models name it in config.json (models/activation_config.h maps the names); the
// manifest records it by kind.
enum class Activation {
  GptOssClampedSwiglu,  // gate = min(g, limit); up = clamp(u, -limit, limit); g*sigmoid(alpha g)*(up+1)
  SiluGated,            // silu(g) * u (Mixtral, Qwen, DeepSeek)
  GeluTanhGated,        // gelu_tanh(g) * u, 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))) (Gemma)
  GeluGated,            // gelu(g) * u, the exact 0.5 g (1 + erf(g / sqrt(2)))
  Relu2,                // non-gated max(u, 0)^2 (Nemotron-H): no gate rows exist
};

// Whether experts of this activation have gate rows: w13 then holds [gate; up] (2I rows),
// otherwise the I up rows only.
constexpr bool is_gated(Activation kind) { return kind != Activation::Relu2; }

struct ActivationParams {
  Activation kind = Activation::GptOssClampedSwiglu;
  double alpha = 1.702;
  double limit = 7.0;
};

// Router weights of the layer (bf16 bits), logits = x . W^T + b.
struct RouterWeights {
  const uint16_t* weight = nullptr;  // [E, H] bf16
  const uint16_t* bias = nullptr;    // [E] bf16, may be null
};

// Expert weights as dense floats, exactly dequantized from the source.
struct DenseMoeLayer {
  int64_t experts = 0, hidden = 0, intermediate = 0;
  bool gate_up_interleaved = false;  // rows of w13 are (g0,u0,g1,u1,...) rather than [gate; up]
  // Gated activations: [E, 2I, H] and [E, 2I]; non-gated (is_gated() false): [E, I, H], [E, I].
  std::vector<float> w13;
  std::vector<float> b13;
  std::vector<float> w2;             // [E, H, I]
  std::vector<float> b2;             // [E, H]
  // Which experts are held: slot[e] indexes w13/b13/w2/b2 (each then [S, ...] for S held
  // experts), -1 when not loaded. Empty: all E experts, slot = identity. Lets verify of a
  // large layer load only the experts the tokens are routed to.
  std::vector<int32_t> slot;
};

// Pointers to the kernel-ready tensors of one layer (host memory for the CPU version, device
// memory for the GPU one). Shapes as written by convert (layouts.md section 8).
struct KernelReadyLayer {
  layout::GateMode mode = layout::GateMode::Separated;
  int64_t experts = 0;
  int64_t hidden = 0, intermediate = 0;          // logical sizes
  int64_t hidden_pad = 0, intermediate_pad = 0;  // physical sizes (>= logical)
  int64_t w13_scale_cols = 0;  // second dim of w13_weight_scale as stored (S', padded)
  int64_t w2_scale_cols = 0;
  // false: w13 holds the I' up rows only (non-gated experts, Activation::Relu2), tiled like w2
  // (the interleaved layouts' non-gate_up order); must agree with is_gated(activation).
  bool gated = true;
  const uint8_t* w13_weight = nullptr;  // [E, 2I', H'/2] shuffled ([E, I', H'/2] non-gated)
  const uint8_t* w13_scale = nullptr;   // shuffled E8M0
  const float* w13_bias = nullptr;      // [E, 2I'] f32, [gate; up] ([E, I'] non-gated)
  const uint8_t* w2_weight = nullptr;   // [E, H', I'/2] shuffled
  const uint8_t* w2_scale = nullptr;
  const float* w2_bias = nullptr;       // [E, H'] f32
};

struct MoeOutput {
  std::vector<float> out;  // [T, H]
  Routing routing;
};

// x: [T, H] bf16 bits. `valid_tokens` <= tokens: rows past it are padding and come out zero.
MoeOutput moe_forward_reference(const DenseMoeLayer& layer, const RouterWeights& router, const RouterConfig& rc,
                                const ActivationParams& act, const uint16_t* x, int64_t tokens,
                                int64_t valid_tokens);

MoeOutput moe_forward_kernel_layout_cpu(const KernelReadyLayer& layer, const RouterWeights& router,
                                        const RouterConfig& rc, const ActivationParams& act, const uint16_t* x,
                                        int64_t tokens, int64_t valid_tokens);

// Router logits in double-accumulated fp32, shared by both CPU paths: [T, E].
std::vector<float> router_logits(const RouterWeights& router, const uint16_t* x, int64_t tokens, int64_t experts,
                                 int64_t hidden);

// Dense float weights from the HF GPT-OSS source tensors of one layer (gpt-oss-format.md):
// gate_up_proj_blocks [E, 2I, H/32, 16], _scales [E, 2I, H/32], _bias bf16 [E, 2I] and
// down_proj_blocks [E, H, I/32, 16], _scales [E, H, I/32], _bias bf16 [E, H]. Exact (ldexp)
// dequantization; gate_up_interleaved = true. A scale of 255 (E8M0 NaN) throws BadInput naming
// the tensor and the element.
DenseMoeLayer dense_from_gpt_oss_source(const uint8_t* gu_blocks, const uint8_t* gu_scales, const uint16_t* gu_bias,
                                        const uint8_t* dn_blocks, const uint8_t* dn_scales, const uint16_t* dn_bias,
                                        int64_t E, int64_t H, int64_t I);

// Byte sizes of the six kernel-ready tensors implied by a KernelReadyLayer's sizes and mode
// (layouts.md sections 3-8). Separated-mode scales are [M', S'] with M' = ceil(E*N/256)*256.
struct KernelReadySizes {
  int64_t w13_weight = 0, w13_scale = 0, w13_bias = 0;  // bytes
  int64_t w2_weight = 0, w2_scale = 0, w2_bias = 0;
};

// Checks the sizes against the layout's constraints (rows multiple of 16, K bytes multiple of
// 32, or 64 in the interleaved mode, scale columns as the mode stores them, padded >= logical)
// and throws BadInput naming the violated one. Returns the tensor sizes.
KernelReadySizes check_kernel_ready_layer(const KernelReadyLayer& layer);

// The activation of `act.kind` on one (gate, up) pair, in the precision of the caller.
// Non-gated kinds (Relu2) read `up` only: their callers pass the unit's single projection there.
template <typename Real>
Real moe_activation(const ActivationParams& act, Real gate, Real up);

}  // namespace moeprep::reference
