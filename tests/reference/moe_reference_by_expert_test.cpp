// The expert-by-expert reference computes the same function as the whole-layer reference,
// whatever the thread count, loading each picked expert once.
#include <atomic>
#include <cmath>

#include <gtest/gtest.h>

#include "core/error.h"
#include "core/random.h"
#include "formats/bf16.h"
#include "reference/moe_reference_by_expert.h"

namespace moeprep::reference {
namespace {

DenseMoeLayer random_layer(int64_t E, int64_t H, int64_t I, bool interleaved, uint64_t seed) {
  SplitMix64 rng(seed);
  DenseMoeLayer d;
  d.experts = E;
  d.hidden = H;
  d.intermediate = I;
  d.gate_up_interleaved = interleaved;
  auto fill = [&](std::vector<float>& v, size_t n, double sd) {
    v.resize(n);
    for (auto& x : v) x = static_cast<float>(rng.normal() * sd);
  };
  fill(d.w13, E * 2 * I * H, 0.2);
  fill(d.b13, E * 2 * I, 0.5);
  fill(d.w2, E * H * I, 0.2);
  fill(d.b2, E * H, 0.5);
  return d;
}

DenseMoeLayer one_expert(const DenseMoeLayer& d, int32_t e) {
  const int64_t H = d.hidden, I = d.intermediate;
  DenseMoeLayer one = d;
  one.w13.assign(d.w13.begin() + e * 2 * I * H, d.w13.begin() + (e + 1) * 2 * I * H);
  one.b13.assign(d.b13.begin() + e * 2 * I, d.b13.begin() + (e + 1) * 2 * I);
  one.w2.assign(d.w2.begin() + e * H * I, d.w2.begin() + (e + 1) * H * I);
  one.b2.assign(d.b2.begin() + e * H, d.b2.begin() + (e + 1) * H);
  one.slot.assign(static_cast<size_t>(d.experts), -1);
  one.slot[e] = 0;
  return one;
}

TEST(MoeReferenceByExpert, EqualsTheWholeLayerReference) {
  const int64_t E = 6, H = 64, I = 32, T = 37;
  for (bool interleaved : {true, false}) {
    const DenseMoeLayer d = random_layer(E, H, I, interleaved, 11);
    SplitMix64 rng(5);
    std::vector<uint16_t> w(E * H), b(E), x(T * H);
    for (auto& v : w) v = float_to_bf16(static_cast<float>(rng.normal() * 0.3));
    for (auto& v : b) v = float_to_bf16(static_cast<float>(rng.normal() * 0.3));
    for (auto& v : x) v = float_to_bf16(static_cast<float>(rng.normal()));
    RouterConfig rc;
    rc.top_k = 3;
    ActivationParams act;
    if (!interleaved) act.kind = Activation::SiluGated;
    const RouterWeights router{w.data(), b.data()};
    const MoeOutput whole = moe_forward_reference(d, router, rc, act, x.data(), T, T - 2);
    std::atomic<int> loads{0};
    auto load = [&](int32_t e) {
      ++loads;
      return one_expert(d, e);
    };
    const MoeOutput one = moe_forward_reference_by_expert({E, H, I}, load, router, rc, act, x.data(), T, T - 2, 1);
    const int picked = loads.load();
    const MoeOutput three = moe_forward_reference_by_expert({E, H, I}, load, router, rc, act, x.data(), T, T - 2, 3);
    EXPECT_LE(picked, E);
    ASSERT_EQ(one.out.size(), whole.out.size());
    double num = 0, den = 0;
    for (size_t i = 0; i < whole.out.size(); ++i) {
      num += (one.out[i] - whole.out[i]) * (one.out[i] - whole.out[i]);
      den += whole.out[i] * whole.out[i];
    }
    EXPECT_LT(std::sqrt(num / den), 1e-6);
    EXPECT_EQ(one.routing.ids, whole.routing.ids);
    EXPECT_TRUE(one.out == three.out) << "thread count changed the result";
    for (int64_t c = 0; c < 2 * H; ++c) EXPECT_EQ(one.out[(T - 2) * H + c], 0.0f) << "padding row not zero";
  }
}

TEST(MoeReferenceByExpert, ALoaderErrorKeepsItsKind) {
  const DenseMoeLayer d = random_layer(2, 32, 32, false, 3);
  std::vector<uint16_t> w(2 * 32, float_to_bf16(0.1f)), x(32, float_to_bf16(1.0f));
  RouterConfig rc;
  rc.top_k = 1;
  auto load = [&](int32_t) -> DenseMoeLayer { throw Error(ErrorKind::BadInput, "expert tensor is broken"); };
  try {
    moe_forward_reference_by_expert({2, 32, 32}, load, {w.data(), nullptr}, rc, ActivationParams{}, x.data(), 1, 1, 2);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::BadInput);
    EXPECT_NE(std::string(e.what()).find("broken"), std::string::npos);
  }
}

}  // namespace
}  // namespace moeprep::reference
