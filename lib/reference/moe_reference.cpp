#include <algorithm>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/bf16.h"
#include "reference/moe.h"
#include "reference/moe_routing.h"

namespace moeprep::reference {

MoeOutput moe_forward_reference(const DenseMoeLayer& layer, const RouterWeights& router, const RouterConfig& rc,
                                const ActivationParams& act, const uint16_t* x, int64_t tokens,
                                int64_t valid_tokens) {
  const int64_t E = layer.experts, H = layer.hidden, I = layer.intermediate;
  if (E <= 0 || H <= 0 || I <= 0) throw_bad_input("moe reference: empty layer");
  if (!layer.slot.empty() && static_cast<int64_t>(layer.slot.size()) != E)
    throw_bad_input("moe reference: slot map of " + std::to_string(layer.slot.size()) + " entries for " +
                    std::to_string(E) + " experts");
  int64_t held = E;
  if (!layer.slot.empty()) {
    held = 0;
    for (int32_t s : layer.slot) held = std::max<int64_t>(held, s + 1);
  }
  // Non-gated experts (relu^2) have no gate rows: w13 holds the I up rows.
  const bool gated = is_gated(act.kind);
  const int64_t R = gated ? 2 * I : I;
  if (static_cast<int64_t>(layer.w13.size()) != held * R * H || static_cast<int64_t>(layer.b13.size()) != held * R ||
      static_cast<int64_t>(layer.w2.size()) != held * H * I || static_cast<int64_t>(layer.b2.size()) != held * H) {
    throw_bad_input("moe reference: dense layer tensors do not match E=" + std::to_string(E) + " H=" +
                    std::to_string(H) + " I=" + std::to_string(I) + (gated ? " (gated)" : " (non-gated)"));
  }
  check_token_counts(tokens, valid_tokens);
  MoeOutput result;
  const std::vector<float> logits = router_logits(router, x, valid_tokens, E, H);
  result.routing = route_with_padding(logits, tokens, valid_tokens, E, rc);
  result.out.assign(static_cast<size_t>(tokens * H), 0.0f);

  const int k = rc.top_k;
  std::vector<double> xd(H), h(R), a(I), out(H);
  for (int64_t t = 0; t < valid_tokens; ++t) {
    for (int64_t c = 0; c < H; ++c) xd[c] = bf16_to_float(x[t * H + c]);
    std::fill(out.begin(), out.end(), 0.0);
    for (int j = 0; j < k; ++j) {
      const int32_t picked = result.routing.ids[t * k + j];
      if (picked < 0) continue;  // a NaN token: no expert, output stays zero
      const int64_t e = layer.slot.empty() ? picked : layer.slot[picked];
      if (e < 0) throw_internal("moe reference: expert " + std::to_string(picked) + " was routed to but not loaded");
      const double weight = result.routing.weights[t * k + j];
      for (int64_t n = 0; n < R; ++n) {
        const float* w = layer.w13.data() + (e * R + n) * H;
        double acc = layer.b13[e * R + n];
        for (int64_t c = 0; c < H; ++c) acc += w[c] * xd[c];
        h[n] = acc;
      }
      for (int64_t i = 0; i < I; ++i) {
        if (!gated) {
          a[i] = moe_activation<double>(act, 0.0, h[i]);
          continue;
        }
        // The model's own gate/up rule: GPT-OSS rows are (gate, up) pairs.
        const double gate = layer.gate_up_interleaved ? h[2 * i] : h[i];
        const double up = layer.gate_up_interleaved ? h[2 * i + 1] : h[I + i];
        a[i] = moe_activation<double>(act, gate, up);
      }
      for (int64_t r = 0; r < H; ++r) {
        const float* w = layer.w2.data() + (e * H + r) * I;
        double acc = layer.b2[e * H + r];
        for (int64_t i = 0; i < I; ++i) acc += w[i] * a[i];
        out[r] += weight * acc;
      }
    }
    for (int64_t c = 0; c < H; ++c) result.out[t * H + c] = static_cast<float>(out[c]);
  }
  return result;
}

}  // namespace moeprep::reference
