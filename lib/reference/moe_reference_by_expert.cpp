#include "reference/moe_reference_by_expert.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "formats/bf16.h"
#include "reference/moe_routing.h"

namespace moeprep::reference {
namespace {

// Dot product of float weights with double activations, accumulated in double. Four partial
// sums let the compiler keep several multiply-adds in flight (no reassociation flags needed).
double dot(const float* w, const double* x, int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += w[i] * x[i];
    s1 += w[i + 1] * x[i + 1];
    s2 += w[i + 2] * x[i + 2];
    s3 += w[i + 3] * x[i + 3];
  }
  for (; i < n; ++i) s0 += w[i] * x[i];
  return (s0 + s1) + (s2 + s3);
}

struct Pick {
  int64_t token;
  double weight;
};

}  // namespace

MoeOutput moe_forward_reference_by_expert(const ExpertwiseShape& shape, const ExpertLoader& load,
                                          const RouterWeights& router, const RouterConfig& rc,
                                          const ActivationParams& act, const uint16_t* x, int64_t tokens,
                                          int64_t valid_tokens, int threads) {
  const int64_t E = shape.experts, H = shape.hidden, I = shape.intermediate;
  if (E <= 0 || H <= 0 || I <= 0) throw_bad_input("moe reference: empty layer");
  check_token_counts(tokens, valid_tokens);
  MoeOutput result;
  const std::vector<float> logits = router_logits(router, x, valid_tokens, E, H);
  result.routing = route_with_padding(logits, tokens, valid_tokens, E, rc);
  const int k = rc.top_k;
  std::vector<std::vector<Pick>> by_expert(static_cast<size_t>(E));
  for (int64_t t = 0; t < valid_tokens; ++t)
    for (int j = 0; j < k; ++j) {
      const int32_t e = result.routing.ids[t * k + j];
      if (e >= 0) by_expert[e].push_back({t, result.routing.weights[t * k + j]});
    }
  std::vector<int32_t> work;
  for (int32_t e = 0; e < E; ++e)
    if (!by_expert[e].empty()) work.push_back(e);

  // Per-expert contributions, summed in a fixed order afterwards so the result does not depend
  // on the thread count: contribution[t] accumulates expert outputs in expert order.
  std::vector<double> out(static_cast<size_t>(tokens * H), 0.0);
  std::vector<std::vector<double>> partial(work.size());
  std::atomic<size_t> next{0};
  std::mutex error_mutex;
  std::exception_ptr error;
  // Non-gated experts (relu^2) have no gate rows: w13 holds the I up rows.
  const bool gated = is_gated(act.kind);
  const int64_t R = gated ? 2 * I : I;
  auto worker = [&] {
    std::vector<double> xd(H), h(R), a(I);
    for (size_t w; (w = next.fetch_add(1)) < work.size();) {
      try {
        const int32_t e = work[w];
        const DenseMoeLayer one = load(e);
        const int64_t slot = one.slot.empty() ? (one.experts == 1 ? 0 : e) : one.slot[e];
        if (slot < 0 || static_cast<int64_t>(one.w13.size()) < (slot + 1) * R * H ||
            static_cast<int64_t>(one.b13.size()) < (slot + 1) * R)
          throw_internal("moe reference: expert " + std::to_string(e) + " was not loaded");
        const float* w13 = one.w13.data() + slot * R * H;
        const float* b13 = one.b13.data() + slot * R;
        const float* w2 = one.w2.data() + slot * H * I;
        const float* b2 = one.b2.data() + slot * H;
        std::vector<double>& acc = partial[w];
        acc.assign(by_expert[e].size() * H, 0.0);
        for (size_t p = 0; p < by_expert[e].size(); ++p) {
          const Pick pick = by_expert[e][p];
          for (int64_t c = 0; c < H; ++c) xd[c] = bf16_to_float(x[pick.token * H + c]);
          for (int64_t n = 0; n < R; ++n) h[n] = b13[n] + dot(w13 + n * H, xd.data(), H);
          for (int64_t i = 0; i < I; ++i) {
            if (!gated) {
              a[i] = moe_activation<double>(act, 0.0, h[i]);
              continue;
            }
            // The model's own gate/up rule: GPT-OSS rows are (gate, up) pairs.
            const double gate = one.gate_up_interleaved ? h[2 * i] : h[i];
            const double up = one.gate_up_interleaved ? h[2 * i + 1] : h[I + i];
            a[i] = moe_activation<double>(act, gate, up);
          }
          for (int64_t r = 0; r < H; ++r) acc[p * H + r] = pick.weight * (b2[r] + dot(w2 + r * I, a.data(), I));
        }
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
    }
  };
  const int n_threads = std::max(1, std::min<int>(threads, static_cast<int>(work.size())));
  std::vector<std::thread> pool;
  for (int i = 1; i < n_threads; ++i) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
  for (size_t w = 0; w < work.size(); ++w) {
    const auto& picks = by_expert[work[w]];
    for (size_t p = 0; p < picks.size(); ++p)
      for (int64_t r = 0; r < H; ++r) out[picks[p].token * H + r] += partial[w][p * H + r];
  }
  result.out.assign(static_cast<size_t>(tokens * H), 0.0f);
  for (size_t i = 0; i < out.size(); ++i) result.out[i] = static_cast<float>(out[i]);
  return result;
}

}  // namespace moeprep::reference
