// The tiled expert GEMMs (kernels/moe_expert_gemm_tiled.cu: 128 or 256 weight rows x 64 tokens
// per block, wgmma on Hopper or mma.sync; chosen by FusedMoeOptions::staged 3 / 4; 5: wgmma with
// A from registers, moe_expert_gemm_tiled_rs.cu) on small layers: both gate modes, several token
// tiles per expert with partial tiles, padding tokens, row blocks that reach past H (down) and
// every gated activation kind, against the CPU kernel-layout MoE and the dense reference; repeated
// calls bitwise identical; and the option checks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/fused_moe.h"
#include "kernels/moe_internal.h"
#include "gpu_test_support.h"
#include "reference/moe.h"
#include "reference/moe_test_support.h"

namespace moeprep::gpu {
namespace {

using layout::GateMode;
using reference::Activation;
using reference::ActivationParams;
using reference::MoeOutput;

using testing::kKernelLayoutTolerance;
using testing::kThreshold;

class FusedMoeTiledGpu : public testing::GpuTest {};

// staged 3: wgmma on Hopper (mma.sync elsewhere); 4: mma.sync everywhere; 5: wgmma with A from
// registers on Hopper (the staged 3 kernels elsewhere). rows: weight rows
// per block (128, 256; 0 automatic).
FusedMoeOptions tiled(int staged = 3, int rows = 0) {
  FusedMoeOptions o;
  o.token_tile = 64;
  o.k_split = 1;
  o.staged = staged;
  o.tiled_rows = rows;
  return o;
}

// E = 4, top-2, T = 200 (190 valid): about 95 picks per expert, so each expert has a full and a
// partial tile of 64. H = 288 with H' = 320 (separated): the down GEMM's last row block (rows
// 256..383 at 128 rows per block, 256..511 at 256) reaches past H and past H'; I' = 192
// (separated) leaves the second 128-unit block of the 256-row blocks half past I'; K = 320 and
// 192 are odd numbers of 64-K chunks.
constexpr int64_t kE = 4, kH = 288, kI = 160, kTopK = 2, kT = 200, kValid = 190;

struct Layer {
  moe_testing::GptOssSource src;
  reference::DenseMoeLayer dense;
  moe_testing::KernelReadyTensors kr;
};

Layer make_layer(GateMode mode, uint64_t seed) {
  Layer l;
  l.src = moe_testing::random_gpt_oss_source(kE, kH, kI, seed);
  l.dense = l.src.dense();
  const bool sep = mode == GateMode::Separated;
  l.kr = moe_testing::build_kernel_ready(l.src, mode, sep ? 320 : 512, sep ? 192 : 256);
  return l;
}

// The forward into a NaN-poisoned output (every element must be written), `calls` times on one
// workspace; returns every call's output.
std::vector<std::vector<float>> run_poisoned(const DeviceMoeLayer& layer, const DeviceRouter& router,
                                             const ActivationParams& act, const std::vector<uint16_t>& x,
                                             const FusedMoeOptions& opt, int calls) {
  MoeWorkspace ws(layer.view, static_cast<int>(kTopK), kT);
  DeviceBuffer xd(x.size() * 2), out(static_cast<size_t>(kT * kH * 4));
  xd.upload(x.data(), xd.size());
  ws.act.fill_bytes(0xFF);
  ws.y.fill_bytes(0xFF);
  std::vector<std::vector<float>> outs;
  for (int i = 0; i < calls; ++i) {
    out.fill_bytes(0xFF);
    enqueue_fused_moe(layer, router, act, xd.as<uint16_t>(), kT, kValid, ws, out.as<float>(), nullptr, opt);
    outs.emplace_back(static_cast<size_t>(kT * kH));
    out.download(outs.back().data(), out.size());
  }
  return outs;
}

const char* kind_name(Activation k) {
  switch (k) {
    case Activation::GptOssClampedSwiglu: return "gpt_oss_swiglu";
    case Activation::SiluGated: return "silu";
    case Activation::GeluTanhGated: return "gelu_tanh";
    case Activation::GeluGated: return "gelu";
    default: return "other";
  }
}

// Several tiles per expert, the last one partial: the case these tests are about.
void expect_partial_and_multiple_tiles(const reference::Routing& r) {
  std::vector<int> per_expert(kE, 0);
  for (int32_t id : r.ids) {
    if (id >= 0) ++per_expert[id];
  }
  int partial = 0, multi = 0;
  for (int c : per_expert) {
    partial += c % 64 != 0;
    multi += c > 64;
  }
  EXPECT_GT(partial, 0) << "no expert with a partial tile of 64";
  EXPECT_GT(multi, 0) << "no expert with more than one tile of 64";
}

// Two calls into poisoned outputs: every element written, padding tokens zero, within the
// tolerances of the CPU kernel-layout MoE and the reference, the second call bitwise the first.
void expect_matches(const std::vector<std::vector<float>>& outs, const MoeOutput& cpu, const MoeOutput& ref,
                    const std::string& what) {
  size_t unwritten = 0;
  for (float f : outs[0]) unwritten += !std::isfinite(f);
  EXPECT_EQ(unwritten, 0u) << what << ": elements not written (poison left) or not finite";
  const double err_cpu = moe_testing::rel_err(outs[0], cpu.out);
  const double err_ref = moe_testing::rel_err(outs[0], ref.out);
  std::printf("GPU fused MoE tiled %s T=%lld valid=%lld: rel err vs kernel-layout CPU %.3e, vs reference %.3e\n",
              what.c_str(), static_cast<long long>(kT), static_cast<long long>(kValid), err_cpu, err_ref);
  EXPECT_LT(err_cpu, kKernelLayoutTolerance) << what;
  EXPECT_LT(err_ref, kThreshold) << what;
  for (int64_t t = kValid; t < kT; ++t) {
    for (int64_t h = 0; h < kH; ++h) ASSERT_EQ(outs[0][t * kH + h], 0.0f) << what << " padding token " << t;
  }
  EXPECT_EQ(std::memcmp(outs[1].data(), outs[0].data(), outs[0].size() * 4), 0)
      << what << ": a repeated call differs bitwise";
}

TEST_F(FusedMoeTiledGpu, MatchesTheCpuKernelLayoutAndTheReference) {
  reference::RouterConfig rc;
  rc.top_k = static_cast<int>(kTopK);
  for (GateMode mode : {GateMode::Separated, GateMode::Interleave}) {
    const Layer l = make_layer(mode, 61);
    const DeviceMoeLayer layer = upload_layer(l.kr.view());
    const DeviceRouter router = upload_router(l.src.router(), rc, kE, kH);
    const auto x = moe_testing::random_activations(kT, kH, 62);
    for (Activation kind :
         {Activation::GptOssClampedSwiglu, Activation::SiluGated, Activation::GeluTanhGated, Activation::GeluGated}) {
      ActivationParams act;
      act.kind = kind;
      const MoeOutput cpu =
          reference::moe_forward_kernel_layout_cpu(l.kr.view(), l.src.router(), rc, act, x.data(), kT, kValid);
      const MoeOutput ref = reference::moe_forward_reference(l.dense, l.src.router(), rc, act, x.data(), kT, kValid);
      expect_partial_and_multiple_tiles(cpu.routing);
      for (int staged : {3, 4, 5}) {
        for (int rows : {128, 256}) {
          const char* kind_of_mma = staged == 3   ? " staged 3 (wgmma on Hopper)"
                                    : staged == 5 ? " staged 5 (wgmma, A from registers, on Hopper)"
                                                  : " staged 4";
          const std::string what = std::string(mode == GateMode::Separated ? "separated " : "interleave ") +
                                   kind_name(kind) + kind_of_mma + " rows " + std::to_string(rows);
          expect_matches(run_poisoned(layer, router, act, x, tiled(staged, rows), 2), cpu, ref, what);
        }
      }
    }
  }
}

// The automatic choice for tiles of 64 is the tiled GEMM with A from registers on Hopper and the
// pipelined kernel elsewhere; the tiled GEMMs agree with the pipelined one within rounding, wgmma
// with mma.sync, and 128- and 256-row blocks bitwise (the block's row count changes no sum: each
// output is one thread's fixed-order accumulation over K).
TEST_F(FusedMoeTiledGpu, AgreesWithThePipelinedKernelAndAcrossBlockShapes) {
  reference::RouterConfig rc;
  rc.top_k = static_cast<int>(kTopK);
  const Layer l = make_layer(GateMode::Separated, 63);
  const DeviceMoeLayer layer = upload_layer(l.kr.view());
  const DeviceRouter router = upload_router(l.src.router(), rc, kE, kH);
  const auto x = moe_testing::random_activations(kT, kH, 64);
  FusedMoeOptions staged;
  staged.token_tile = 64;
  staged.k_split = 1;
  staged.staged = 1;
  const auto automatic = run_poisoned(layer, router, ActivationParams{}, x, FusedMoeOptions{}, 1);
  const auto pipelined = run_poisoned(layer, router, ActivationParams{}, x, staged, 1);
  const auto rows_default = run_poisoned(layer, router, ActivationParams{}, x, tiled(), 1);
  const auto rows128 = run_poisoned(layer, router, ActivationParams{}, x, tiled(3, 128), 1);
  const auto rows256 = run_poisoned(layer, router, ActivationParams{}, x, tiled(3, 256), 1);
  const auto mma_sync = run_poisoned(layer, router, ActivationParams{}, x, tiled(4), 1);
  const auto regs128 = run_poisoned(layer, router, ActivationParams{}, x, tiled(5, 128), 1);
  const auto regs256 = run_poisoned(layer, router, ActivationParams{}, x, tiled(5, 256), 1);
  const size_t bytes = automatic[0].size() * 4;
  // The automatic choice for tiles of 64: staged 5 on Hopper, the pipelined kernel elsewhere.
  const auto& expected_automatic = detail::tiled_registers_automatic() ? regs128 : pipelined;
  EXPECT_EQ(std::memcmp(automatic[0].data(), expected_automatic[0].data(), bytes), 0)
      << (detail::tiled_registers_automatic() ? "automatic is not staged 5 on Hopper" : "automatic is not pipelined");
  EXPECT_EQ(std::memcmp(rows_default[0].data(), rows128[0].data(), bytes), 0);
  EXPECT_EQ(std::memcmp(rows128[0].data(), rows256[0].data(), bytes), 0);
  EXPECT_LT(moe_testing::rel_err(rows128[0], pipelined[0]), kKernelLayoutTolerance);
  EXPECT_LT(moe_testing::rel_err(rows128[0], mma_sync[0]), kKernelLayoutTolerance);
  // A from registers: the same matrices as A from shared memory, so within rounding of it (and
  // bitwise across block shapes).
  EXPECT_EQ(std::memcmp(regs128[0].data(), regs256[0].data(), bytes), 0);
  const double err_regs = moe_testing::rel_err(regs128[0], rows128[0]);
  std::printf("tiled A from registers vs A from shared memory: rel err %.3e, bitwise %s\n", err_regs,
              std::memcmp(regs128[0].data(), rows128[0].data(), bytes) == 0 ? "equal" : "different");
  EXPECT_LT(err_regs, kKernelLayoutTolerance);
  EXPECT_LT(moe_testing::rel_err(regs128[0], pipelined[0]), kKernelLayoutTolerance);
}

// Scale codes above 128 (the second multiply of the dequantization, a template branch of its
// own in every tiled kernel): each MMA kind against the CPU kernel-layout MoE.
TEST_F(FusedMoeTiledGpu, LargeScalesMatchTheCpuKernelLayout) {
  reference::RouterConfig rc;
  rc.top_k = static_cast<int>(kTopK);
  Layer l;
  l.src = moe_testing::random_gpt_oss_source(kE, kH, kI, 67, 126, 133);
  l.dense = l.src.dense();
  l.kr = moe_testing::build_kernel_ready(l.src, GateMode::Separated, 320, 192);
  const DeviceMoeLayer layer = upload_layer(l.kr.view());
  ASSERT_TRUE(layer.w13_rows.large_scales && layer.w2_rows.large_scales) << "no scale code above 128 in the layer";
  const DeviceRouter router = upload_router(l.src.router(), rc, kE, kH);
  const auto x = moe_testing::random_activations(kT, kH, 68);
  const ActivationParams act;
  const MoeOutput cpu =
      reference::moe_forward_kernel_layout_cpu(l.kr.view(), l.src.router(), rc, act, x.data(), kT, kValid);
  const MoeOutput ref = reference::moe_forward_reference(l.dense, l.src.router(), rc, act, x.data(), kT, kValid);
  for (int staged : {3, 4, 5}) {
    expect_matches(run_poisoned(layer, router, act, x, tiled(staged, 128), 2), cpu, ref,
                   "large scales staged " + std::to_string(staged));
  }
}

TEST_F(FusedMoeTiledGpu, RefusesOtherTokenTilesAndRowCounts) {
  reference::RouterConfig rc;
  rc.top_k = static_cast<int>(kTopK);
  const Layer l = make_layer(GateMode::Separated, 65);
  const DeviceMoeLayer layer = upload_layer(l.kr.view());
  const DeviceRouter router = upload_router(l.src.router(), rc, kE, kH);
  const auto x = moe_testing::random_activations(kT, kH, 66);
  FusedMoeOptions opt = tiled();
  opt.token_tile = 32;
  try {
    run_poisoned(layer, router, ActivationParams{}, x, opt, 1);
    FAIL() << "the tiled GEMM accepted token tile 32";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("takes token tile 64"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not tile 32"), std::string::npos) << e.what();
  }
  opt = tiled(3, 192);
  try {
    run_poisoned(layer, router, ActivationParams{}, x, opt, 1);
    FAIL() << "the tiled GEMM accepted 192 rows per block";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("128 or 256 rows per block, not 192"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace moeprep::gpu
