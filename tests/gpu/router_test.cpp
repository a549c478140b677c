// The fused GPU router against the CPU reference (lib/reference/router.h), compared as sets by
// scattering (id, weight) into dense [T, E]. Every output buffer is filled with garbage before a
// launch, so a row the kernel forgets to write cannot pass.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "formats/bf16.h"
#include "kernels/portability.h"
#include "kernels/router.h"
#include "reference/router.h"
#include "reference/topk_key.h"

namespace moeprep::gpu {
namespace {

using reference::RouterConfig;
using reference::RouterVariant;
using reference::Routing;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr uint8_t kGarbage = 0xAB;
const RouterVariant kVariants[] = {RouterVariant::SoftmaxAfterTopk, RouterVariant::SoftmaxThenTopk,
                                   RouterVariant::SigmoidGroupedBiased, RouterVariant::Gemma4};

std::string no_device_reason() {
  int count = 0;
  gpuError_t e = gpuGetDeviceCount(&count);
  if (e != gpuSuccess) return std::string("device count query failed: ") + gpuGetErrorString(e);
  if (count == 0) return "the runtime reports 0 devices";
  return {};
}

#define REQUIRE_GPU()                                                          \
  do {                                                                         \
    std::string why = no_device_reason();                                      \
    if (!why.empty()) GTEST_SKIP() << "no GPU device present: " << why;        \
  } while (0)

#if defined(__HIPCC__)
#define gpuStreamCreate hipStreamCreate
#define gpuStreamDestroy hipStreamDestroy
#else
#define gpuStreamCreate cudaStreamCreate
#define gpuStreamDestroy cudaStreamDestroy
#endif

void check(gpuError_t e, const char* what) {
  if (e != gpuSuccess) throw std::runtime_error(std::string(what) + ": " + gpuGetErrorString(e));
}

// Device memory for one test, freed on scope exit; filled with garbage on creation.
class DeviceBytes {
 public:
  explicit DeviceBytes(size_t bytes) : bytes_(bytes) {
    if (bytes_ == 0) return;
    check(gpuMalloc(&ptr_, bytes_), "gpuMalloc");
    check(gpuMemset(ptr_, kGarbage, bytes_), "gpuMemset");
  }
  DeviceBytes(const DeviceBytes&) = delete;
  DeviceBytes& operator=(const DeviceBytes&) = delete;
  ~DeviceBytes() {
    if (ptr_) gpuFree(ptr_);
  }
  void upload(const void* src) { check(gpuMemcpy(ptr_, src, bytes_, gpuMemcpyHostToDevice), "upload"); }
  template <typename T>
  std::vector<T> download() const {
    std::vector<T> out(bytes_ / sizeof(T));
    if (bytes_) check(gpuMemcpy(out.data(), ptr_, bytes_, gpuMemcpyDeviceToHost), "download");
    return out;
  }
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_;
};

struct Case {
  int64_t tokens = 1;
  int64_t valid_tokens = -1;  // -1: all tokens are real
  int64_t experts = 16;
  RouterConfig config;
  LogitsDtype dtype = LogitsDtype::F32;
  IndexDtype index = IndexDtype::Int32;
  bool misaligned = false;  // logits one element past a 16-byte boundary (no vector loads)
  int64_t valid() const { return valid_tokens < 0 ? tokens : valid_tokens; }
};

struct GpuResult {
  std::vector<int64_t> ids;
  std::vector<float> weights;
  std::vector<uint8_t> map;
  std::vector<uint8_t> nan_flags;
};

// Rounds the logits to bf16 in place when the case asks for bf16, so that the CPU reference sees
// exactly the values the kernel reads.
void round_for_dtype(std::vector<float>& logits, LogitsDtype dtype) {
  if (dtype == LogitsDtype::F32) return;
  for (float& x : logits) x = bf16_to_float(float_to_bf16(x));
}

size_t index_bytes(IndexDtype d) { return d == IndexDtype::Int16 ? 2 : d == IndexDtype::Int32 ? 4 : 8; }

GpuResult run_gpu(const std::vector<float>& logits, const Case& c) {
  const RouterConfig& rc = c.config;
  const int64_t T = c.tokens, E = c.experts, k = rc.top_k;
  const size_t element = c.dtype == LogitsDtype::F32 ? 4 : 2;
  const size_t skip = c.misaligned ? 1 : 0;
  std::vector<uint8_t> staged((logits.size() + skip) * element, 0);
  for (size_t i = 0; i < logits.size(); ++i) {
    if (c.dtype == LogitsDtype::F32) {
      std::memcpy(&staged[(i + skip) * element], &logits[i], 4);
    } else {
      const uint16_t bits = float_to_bf16(logits[i]);
      std::memcpy(&staged[(i + skip) * element], &bits, 2);
    }
  }
  DeviceBytes d_logits(staged.size());
  d_logits.upload(staged.data());
  const void* logits_ptr = static_cast<const uint8_t*>(d_logits.get()) + skip * element;
  DeviceBytes d_bias(rc.correction_bias.size() * 4), d_scale(rc.per_expert_scale.size() * 4);
  if (!rc.correction_bias.empty()) d_bias.upload(rc.correction_bias.data());
  if (!rc.per_expert_scale.empty()) d_scale.upload(rc.per_expert_scale.data());
  DeviceRouterParams p;
  p.variant = rc.variant;
  p.top_k = rc.top_k;
  p.renormalize = rc.renormalize;
  p.n_group = rc.n_group;
  p.topk_group = rc.topk_group;
  p.routed_scaling_factor = static_cast<float>(rc.routed_scaling_factor);
  p.correction_bias = static_cast<const float*>(d_bias.get());
  p.per_expert_scale = static_cast<const float*>(d_scale.get());

  DeviceBytes d_weights(T * k * 4), d_ids(T * k * index_bytes(c.index)), d_map(T * E), d_nan(T);
  const char* err = launch_fused_router(logits_ptr, c.dtype, T, c.valid(), E, p,
                                        static_cast<float*>(d_weights.get()), d_ids.get(), c.index,
                                        static_cast<uint8_t*>(d_map.get()), static_cast<uint8_t*>(d_nan.get()), nullptr);
  if (*err) throw std::runtime_error(err);
  check(gpuDeviceSynchronize(), "kernel execution");

  GpuResult r;
  r.weights = d_weights.download<float>();
  switch (c.index) {
    case IndexDtype::Int16:
      for (int16_t x : d_ids.download<int16_t>()) r.ids.push_back(x);
      break;
    case IndexDtype::Int32:
      for (int32_t x : d_ids.download<int32_t>()) r.ids.push_back(x);
      break;
    case IndexDtype::Int64: r.ids = d_ids.download<int64_t>(); break;
  }
  r.map = d_map.download<uint8_t>();
  r.nan_flags = d_nan.download<uint8_t>();
  return r;
}

// Compares the kernel's output with the CPU reference: picks as sets with their weights, the
// NaN report, the routing map, and the padding rows.
void expect_matches_reference(const std::vector<float>& logits, const Case& c, const GpuResult& g,
                              const std::string& label) {
  const int64_t E = c.experts, k = c.config.top_k, valid = c.valid();
  Routing ref = reference::route(logits.data(), valid, E, c.config);
  Routing got;
  got.tokens = valid;
  got.top_k = static_cast<int>(k);
  for (int64_t i = 0; i < valid * k; ++i) {
    got.ids.push_back(static_cast<int32_t>(g.ids[i]));
    got.weights.push_back(g.weights[i]);
  }
  std::vector<float> want = reference::routing_to_dense(ref, E);
  std::vector<float> have = reference::routing_to_dense(got, E);
  int reported = 0;
  for (int64_t i = 0; i < valid * E; ++i) {
    if (std::fabs(have[i] - want[i]) <= 1e-6 + 1e-5 * std::fabs(want[i])) continue;
    ADD_FAILURE() << label << ": token " << i / E << " expert " << i % E << ": gpu weight " << have[i]
                  << ", reference " << want[i];
    if (++reported == 5) return;
  }
  std::vector<uint8_t> want_nan(c.tokens, 0);
  for (int64_t t : ref.nan_tokens) want_nan[t] = 1;
  EXPECT_EQ(g.nan_flags, want_nan) << label;
  for (int64_t t = 0; t < c.tokens; ++t) {
    const bool empty = t >= valid || want_nan[t];
    int64_t picked = 0;
    for (int64_t i = 0; i < k; ++i) {
      const int64_t id = g.ids[t * k + i];
      if (empty) {
        EXPECT_EQ(id, -1) << label << ": token " << t << " has no picks";
        EXPECT_EQ(g.weights[t * k + i], 0.0f) << label << ": token " << t;
      } else {
        ASSERT_TRUE(id >= 0 && id < E) << label << ": token " << t << " id " << id;
        EXPECT_EQ(g.map[t * E + id], 1) << label << ": routing map misses token " << t << " expert " << id;
      }
    }
    for (int64_t e = 0; e < E; ++e) picked += g.map[t * E + e] == 1 ? 1 : 0;
    EXPECT_EQ(picked, empty ? 0 : k) << label << ": routing map row " << t;
    for (int64_t e = 0; e < E; ++e) ASSERT_LE(g.map[t * E + e], 1) << label << ": map byte unwritten, token " << t;
  }
}

std::vector<float> random_logits(int64_t count, uint32_t seed, float lo = -4.0f, float hi = 4.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(count);
  for (float& x : v) x = dist(rng);
  return v;
}

// A config of each variant for E experts and k picks, with every parameter in play.
RouterConfig config_for(RouterVariant v, int64_t E, int k, uint32_t seed) {
  RouterConfig c;
  c.variant = v;
  c.top_k = k;
  if (v == RouterVariant::SoftmaxThenTopk) c.renormalize = k % 2 == 0;
  if (v == RouterVariant::SigmoidGroupedBiased) {
    c.n_group = E >= 256 ? 16 : E >= 64 ? 8 : 4;
    c.topk_group = c.n_group / 2;
    c.renormalize = true;
    c.routed_scaling_factor = 2.5;
    c.correction_bias = random_logits(E, seed + 1, -0.2f, 0.2f);  // mixed signs
  }
  if (v == RouterVariant::Gemma4) c.per_expert_scale = random_logits(E, seed + 2, 0.5f, 1.5f);
  return c;
}

std::string describe(const Case& c) {
  return std::string(reference::router_variant_name(c.config.variant)) + " T=" + std::to_string(c.tokens) +
         " E=" + std::to_string(c.experts) + " k=" + std::to_string(c.config.top_k) +
         (c.dtype == LogitsDtype::BF16 ? " bf16" : " f32") + (c.misaligned ? " misaligned" : "");
}

void run_and_compare(std::vector<float> logits, const Case& c) {
  round_for_dtype(logits, c.dtype);
  GpuResult g = run_gpu(logits, c);
  expect_matches_reference(logits, c, g, describe(c));
}

TEST(GpuRouter, MatchesReferenceForEveryVariantShapeAndLogitDtype) {
  REQUIRE_GPU();
  struct Shape { int64_t T, E; int k; };
  const Shape shapes[] = {{1, 16, 3}, {17, 128, 6}, {128, 192, 8}, {33, 512, 7}, {64, 128, 4}};
  uint32_t seed = 100;
  for (const Shape& s : shapes) {
    for (RouterVariant v : kVariants) {
      for (LogitsDtype dtype : {LogitsDtype::F32, LogitsDtype::BF16}) {
        Case c;
        c.tokens = s.T;
        c.experts = s.E;
        c.config = config_for(v, s.E, s.k, ++seed);
        c.dtype = dtype;
        run_and_compare(random_logits(s.T * s.E, seed), c);
      }
    }
  }
}

// Expert counts that are not a multiple of the 16-byte vector, and a logits pointer off the
// 16-byte grid, take the scalar load path; it must route the same.
TEST(GpuRouter, OddExpertCountsAndMisalignedLogitsUseTheScalarPath) {
  REQUIRE_GPU();
  struct Shape { int64_t T, E; int k; int n_group; };
  const Shape shapes[] = {{5, 37, 5, 1}, {19, 100, 8, 4}, {9, 250, 6, 5}, {23, 128, 7, 8}};
  uint32_t seed = 400;
  for (const Shape& s : shapes) {
    for (RouterVariant v : kVariants) {
      for (LogitsDtype dtype : {LogitsDtype::F32, LogitsDtype::BF16}) {
        for (bool misaligned : {false, true}) {
          Case c;
          c.tokens = s.T;
          c.experts = s.E;
          c.config = config_for(v, s.E, s.k, ++seed);
          c.config.n_group = s.n_group;
          c.config.topk_group = s.n_group == 1 ? 1 : s.n_group / 2 + 1;
          c.dtype = dtype;
          c.misaligned = misaligned;
          run_and_compare(random_logits(s.T * s.E, seed), c);
        }
      }
    }
  }
}

// Regression: negative scores under bit packing. With correction_bias all -2.0 every choice score
// is negative; ranking float bits as unsigned would pick the smallest.
TEST(GpuRouter, NegativeAndMixedSignCorrectionBias) {
  REQUIRE_GPU();
  const int64_t T = 64, E = 128;
  std::vector<float> logits = random_logits(T * E, 7);
  for (int n_group : {1, 8}) {
    Case c;
    c.tokens = T;
    c.experts = E;
    c.config = config_for(RouterVariant::SigmoidGroupedBiased, E, 8, 7);
    c.config.n_group = n_group;
    c.config.topk_group = n_group == 1 ? 1 : 4;
    c.config.correction_bias.assign(E, -2.0f);
    run_and_compare(logits, c);
    c.config.correction_bias = random_logits(E, 8, -2.0f, 2.0f);
    run_and_compare(logits, c);
  }
  // The check has teeth: on these inputs the naive key order picks differently for most tokens.
  int differ = 0;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<uint64_t> naive, monotone;
    for (int64_t e = 0; e < E; ++e) {
      float choice = static_cast<float>(1.0 / (1.0 + std::exp(-double(logits[t * E + e])))) - 2.0f;
      uint32_t bits;
      std::memcpy(&bits, &choice, 4);
      naive.push_back(reference::pack_topk_key(bits, static_cast<uint32_t>(e)));
      monotone.push_back(reference::pack_topk_key(reference::selection_value_key(choice), static_cast<uint32_t>(e)));
    }
    std::sort(naive.rbegin(), naive.rend());
    std::sort(monotone.rbegin(), monotone.rend());
    differ += reference::topk_key_index(naive[0]) != reference::topk_key_index(monotone[0]) ? 1 : 0;
  }
  EXPECT_GT(differ, T / 2);
}

TEST(GpuRouter, AllEqualAndSignedZeroRowsPickTheLowestIndices) {
  REQUIRE_GPU();
  const int64_t E = 128;
  const int k = 6;
  std::vector<float> logits;
  for (float value : {0.5f, -3.0f, 0.0f}) logits.insert(logits.end(), E, value);
  std::vector<float> zeros(E, -1.0f);  // -0/+0 alternating over the first 32 experts, -1 after
  for (int e = 0; e < 32; ++e) zeros[e] = e % 2 ? 0.0f : -0.0f;
  logits.insert(logits.end(), zeros.begin(), zeros.end());
  for (RouterVariant v : kVariants) {
    for (LogitsDtype dtype : {LogitsDtype::F32, LogitsDtype::BF16}) {
      Case c;
      c.tokens = 4;
      c.experts = E;
      c.config = config_for(v, E, k, 3);
      c.config.correction_bias.clear();  // a bias would break the tie on purpose
      if (v == RouterVariant::Gemma4) c.config.per_expert_scale.clear();
      c.dtype = dtype;
      GpuResult g = run_gpu(logits, c);
      expect_matches_reference(logits, c, g, describe(c));
      for (int64_t t = 0; t < 4; ++t) {
        std::vector<int64_t> ids(g.ids.begin() + t * k, g.ids.begin() + (t + 1) * k);
        std::sort(ids.begin(), ids.end());
        EXPECT_EQ(ids, (std::vector<int64_t>{0, 1, 2, 3, 4, 5})) << describe(c) << " token " << t;
      }
    }
  }
}

// The kernel picks by a threshold (a bound from group maxima, then ranks among the few experts
// above it) and falls back to k rounds for a warp in which some token has too many experts at
// the bound. Rows built to sit on either side of that switch, in the same warps as ordinary rows:
// ties exactly at the k-th value (a few, or dozens), -inf scores, a lone large value, integer
// logits with many equal values, and the k-th value repeated just below and above the list size.
TEST(GpuRouter, TieHeavyRowsMatchOnBothSelectionPaths) {
  REQUIRE_GPU();
  const int64_t E = 128, T = 96;
  std::mt19937 rng(77);
  std::uniform_int_distribution<int> small_int(-3, 3);
  std::vector<float> logits = random_logits(T * E, 78);
  for (int64_t t = 0; t < T; ++t) {
    float* row = &logits[t * E];
    switch (t % 8) {
      case 0: break;  // ordinary
      case 1:
        for (int64_t e = 0; e < E; ++e) row[e] = static_cast<float>(small_int(rng));
        break;
      case 2:  // the 3rd largest value repeated on 24 experts spread over the lanes
        for (int64_t e = 0; e < E; ++e) row[e] = e % 5 == 0 && e < 120 ? 1.5f : std::min(row[e], 1.0f);
        row[7] = 3.0f;
        row[90] = 2.0f;
        break;
      case 3:  // everything -inf but a few
        for (int64_t e = 0; e < E; ++e) row[e] = -std::numeric_limits<float>::infinity();
        row[3] = 0.5f;
        row[64] = -0.0f;
        row[127] = 0.0f;
        break;
      case 4:  // one large value, the rest equal
        for (int64_t e = 0; e < E; ++e) row[e] = -1.0f;
        row[t % E] = 4.0f;
        break;
      case 5:  // the top value repeated on 33 experts: one more than a 32-entry list
        for (int64_t e = 0; e < 33; ++e) row[(e * 37) % E] = 5.0f;
        break;
      case 6:  // all of one lane's experts on top
        for (int64_t e = 0; e < E; ++e) row[e] = (e / 4) % 8 == 3 ? 2.0f + static_cast<float>(e) * 1e-3f : row[e];
        break;
      default:  // bf16-like coarse values: ties among the top
        for (int64_t e = 0; e < E; ++e) row[e] = std::round(row[e] * 4.0f) / 4.0f;
    }
  }
  for (int k : {1, 4, 6, 8, 9, 16}) {
    for (RouterVariant v : kVariants) {
      Case c;
      c.tokens = T;
      c.experts = E;
      c.config = config_for(v, E, k, static_cast<uint32_t>(k));
      if (v == RouterVariant::SigmoidGroupedBiased) {
        c.config.correction_bias.clear();  // keep the ties in the choice scores
        c.config.n_group = 1;
        c.config.topk_group = 1;
      }
      run_and_compare(logits, c);
    }
  }
}

// Exact ties among the few candidates of the threshold way, where a rank counted on the score
// alone would give two candidates the same output slot (a shortcut tried in v7 of
// bench/NOTES-router.md, exact only through a tie check). Warps here are either clean or hold one
// token with an exact tie, at the k-th place (the lower index must win the last pick) or among
// the picks (both picked).
TEST(GpuRouter, TiesAmongFewCandidatesTakeTheExactRanks) {
  REQUIRE_GPU();
  const int64_t E = 128, T = 64;  // 16 warps of 4 tokens
  for (int k : {2, 4, 6, 8}) {
    std::vector<float> logits = random_logits(T * E, 300 + static_cast<uint32_t>(k));
    for (int64_t t = 0; t < T; ++t) {
      const int64_t warp = t / 4;
      if (warp % 2 == 0 || t % 4 != (warp / 2) % 4) continue;  // odd warps: one tied token each
      float* row = &logits[t * E];
      std::vector<int64_t> order(E);
      for (int64_t e = 0; e < E; ++e) order[e] = e;
      std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return row[a] > row[b]; });
      const int64_t at = warp % 4 == 1 ? k - 1 : 0;  // at the k-th place, or at the top
      row[order[at + 1]] = row[order[at]];
    }
    for (RouterVariant v : {RouterVariant::SoftmaxAfterTopk, RouterVariant::SoftmaxThenTopk, RouterVariant::Gemma4}) {
      Case c;
      c.tokens = T;
      c.experts = E;
      c.config = config_for(v, E, k, static_cast<uint32_t>(k));
      run_and_compare(logits, c);
    }
  }
}

// Every pick in its rank's slot (the other tests compare picks as sets), on rows where a selection
// by values alone would go wrong or has to hand over to the exact way: values one ulp apart at the
// k-th place and at the top, a lone +0, -0 or +inf among the picks, +0 beside -0 (equal scores: a
// tie, the lower index first), exactly k finite values with the rest -inf, and the k-th value
// repeated just outside the picks, mixed in the same warps. Written for v14 of
// bench/NOTES-router.md (a value-only merge selection with a fallback, not kept).
TEST(GpuRouter, PicksInRankOrderAtNearTiesSignedZerosAndInfinities) {
  REQUIRE_GPU();
  const int64_t E = 128, T = 256;  // 64 warps of 4 tokens
  const float inf = std::numeric_limits<float>::infinity();
  for (int k = 1; k <= 8; ++k) {
    std::vector<float> logits = random_logits(T * E, 500 + static_cast<uint32_t>(k));
    for (int64_t t = 0; t < T; ++t) {
      float* row = &logits[t * E];
      std::vector<int64_t> order(E);
      for (int64_t e = 0; e < E; ++e) order[e] = e;
      std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return row[a] > row[b]; });
      const int64_t kth = order[k - 1];
      switch ((t * 7 + t / 4) % 10) {  // the pattern moves through a warp's tokens from warp to warp
        case 0:  // the next value one ulp below the k-th
          row[order[k]] = std::nextafter(row[kth], -inf);
          break;
        case 1:  // the first two one ulp apart
          row[order[1]] = std::nextafter(row[order[0]], -inf);
          break;
        case 2:  // a lone -0 among the picks (all values made smaller first)
          for (int64_t e = 0; e < E; ++e) row[e] -= 5.0f;
          row[order[k / 2]] = -0.0f;
          break;
        case 3:  // a lone +0 as the k-th
          for (int64_t e = 0; e < E; ++e) row[e] -= 5.0f;
          row[kth] = 0.0f;
          break;
        case 4:  // +0 and -0 both among the top (a tie; the lower index first)
          for (int64_t e = 0; e < E; ++e) row[e] -= 5.0f;
          row[order[0]] = -0.0f;
          row[order[1]] = 0.0f;
          break;
        case 5:  // a lone +inf
          row[order[E / 2]] = inf;
          break;
        case 6:  // exactly k finite values, the rest -inf
          for (int64_t i = k; i < E; ++i) row[order[i]] = -inf;
          break;
        case 7:  // the k-th value again just outside the picks
          row[order[k + 3]] = row[kth];
          break;
        default: break;  // ordinary
      }
    }
    for (RouterVariant v : {RouterVariant::SoftmaxAfterTopk, RouterVariant::SoftmaxThenTopk, RouterVariant::Gemma4}) {
      for (LogitsDtype dtype : {LogitsDtype::F32, LogitsDtype::BF16}) {
        Case c;
        c.tokens = T;
        c.experts = E;
        c.config = config_for(v, E, k, static_cast<uint32_t>(k));
        c.dtype = dtype;
        std::vector<float> rounded = logits;
        round_for_dtype(rounded, dtype);
        GpuResult g = run_gpu(rounded, c);
        expect_matches_reference(rounded, c, g, describe(c));
        const Routing ref = reference::route(rounded.data(), T, E, c.config);
        int reported = 0;
        for (int64_t i = 0; i < T * k && reported < 5; ++i) {
          if (g.ids[i] == ref.ids[i]) continue;
          ADD_FAILURE() << describe(c) << ": token " << i / k << " pick " << i % k << " is expert " << g.ids[i]
                        << ", the reference's is " << ref.ids[i];
          ++reported;
        }
      }
    }
  }
}

TEST(GpuRouter, NaNTokensAreFlaggedWithNoPicks) {
  REQUIRE_GPU();
  const int64_t T = 20, E = 128;
  std::vector<float> logits = random_logits(T * E, 11);
  logits[3 * E + 0] = kNaN;
  logits[7 * E + 77] = kNaN;
  logits[19 * E + 127] = -kNaN;  // sign bit set: the largest key under the naive order
  for (RouterVariant v : kVariants) {
    for (LogitsDtype dtype : {LogitsDtype::F32, LogitsDtype::BF16}) {
      Case c;
      c.tokens = T;
      c.experts = E;
      c.config = config_for(v, E, 6, 11);
      c.dtype = dtype;
      std::vector<float> rounded = logits;
      round_for_dtype(rounded, dtype);
      GpuResult g = run_gpu(rounded, c);
      expect_matches_reference(rounded, c, g, describe(c));
      EXPECT_EQ(std::count(g.nan_flags.begin(), g.nan_flags.end(), 1), 3) << describe(c);
      EXPECT_EQ(g.nan_flags[19], 1) << describe(c);
    }
  }
}

TEST(GpuRouter, EveryIndexDtypeIncludingInt16WithE512) {
  REQUIRE_GPU();
  for (IndexDtype index : {IndexDtype::Int16, IndexDtype::Int32, IndexDtype::Int64}) {
    for (RouterVariant v : kVariants) {
      Case c;
      c.tokens = 33;
      c.experts = 512;
      c.config = config_for(v, 512, 7, 21);
      c.index = index;
      std::vector<float> logits = random_logits(c.tokens * 512, 21);
      // Put the winners high up, so an int16 id above 255 must survive the narrow store.
      for (int64_t t = 0; t < c.tokens; ++t) logits[t * 512 + 500 - t] = 9.0f;
      run_and_compare(logits, c);
    }
  }
}

// Regression: padded rows. Rows past valid_tokens (graph-captured batches padded past the real
// count) come out as ids -1, weights 0, zero map rows and no NaN flag, whatever the buffers held
// and whatever the padding logits are.
TEST(GpuRouter, PaddedRowsAreWrittenEmptyOverGarbage) {
  REQUIRE_GPU();
  const int64_t T = 40, E = 128;
  std::vector<float> logits = random_logits(T * E, 31);
  for (int64_t t = 29; t < T; ++t) {
    logits[t * E + 5] = kNaN;
    logits[t * E + 6] = 1e30f;
  }
  for (int64_t valid : {int64_t{29}, int64_t{0}, T}) {
    for (RouterVariant v : kVariants) {
      Case c;
      c.tokens = T;
      c.valid_tokens = valid;
      c.experts = E;
      c.config = config_for(v, E, 6, 31);
      GpuResult g = run_gpu(logits, c);  // buffers start as 0xAB garbage
      expect_matches_reference(logits, c, g, describe(c) + " valid=" + std::to_string(valid));
      for (int64_t t = valid; t < T; ++t) {
        for (int i = 0; i < 6; ++i) {
          ASSERT_EQ(g.ids[t * 6 + i], -1) << "padded token " << t;
          ASSERT_EQ(g.weights[t * 6 + i], 0.0f) << "padded token " << t;
        }
        ASSERT_EQ(g.nan_flags[t], 0) << "padded token " << t;
        ASSERT_EQ(std::count(g.map.begin() + t * E, g.map.begin() + (t + 1) * E, 0), E) << "padded token " << t;
      }
    }
  }
}

// A grid of more blocks than the GPU holds at once (on an H100, 132 SMs x 32 one-warp blocks):
// 5000 blocks of 4 tokens (E = 128) and 5000 of one token (E = 512), with tie-heavy and NaN rows
// spread over them (both selection ways in every wave) and a padded tail.
TEST(GpuRouter, PaddedTailOfAGridLargerThanOneWave) {
  REQUIRE_GPU();
  for (int64_t E : {int64_t{128}, int64_t{512}}) {
    const int64_t T = E == 128 ? 20000 : 5000;
    std::vector<float> logits = random_logits(T * E, 900 + static_cast<uint32_t>(E));
    for (int64_t t = 0; t < T; t += 97) {
      float* row = &logits[t * E];
      for (int64_t e = 0; e < E; ++e) row[e] = std::round(row[e]);  // many equal values
    }
    for (int64_t t = 13; t < T; t += 1013) logits[t * E + t % E] = kNaN;
    for (RouterVariant v : {RouterVariant::SoftmaxAfterTopk, RouterVariant::SigmoidGroupedBiased}) {
      Case c;
      c.tokens = T;
      c.valid_tokens = T - 7;
      c.experts = E;
      c.config = config_for(v, E, 8, static_cast<uint32_t>(E));
      GpuResult g = run_gpu(logits, c);
      expect_matches_reference(logits, c, g, describe(c));
    }
  }
}

// Regression: k not a power of two. Every k from 1 to 16 on every lanes-per-token layout
// (E = 16: one lane per token; 128: 8 lanes; 512: 32 lanes), including the renormalizing sum,
// which must run on all lanes however many hold a pick.
TEST(GpuRouter, EveryTopKFromOneToSixteen) {
  REQUIRE_GPU();
  for (int64_t E : {16, 128, 512}) {
    std::vector<float> logits = random_logits(37 * E, static_cast<uint32_t>(E));
    for (int k = 1; k <= 16; ++k) {
      for (RouterVariant v : {RouterVariant::SoftmaxAfterTopk, RouterVariant::SigmoidGroupedBiased}) {
        Case c;
        c.tokens = 37;
        c.experts = E;
        c.config = config_for(v, E, k, static_cast<uint32_t>(k));
        c.config.n_group = 1;  // every k must be reachable
        c.config.topk_group = 1;
        run_and_compare(logits, c);
      }
    }
  }
}

// Programmatic dependent launch lets a call begin before the one before it ends; the kernel's
// griddepcontrol.wait must still order their memory. Three launches on one stream: R1 writes
// weights W, R2 reads W as its logits (read after write), R3 overwrites W (write after read). R2
// must route exactly what a plain R1 wrote, and W must end as R3's result. R1 is large (a full
// wave of blocks) so that R2's blocks would start early if they did not wait.
TEST(GpuRouter, ProgrammaticDependentLaunchKeepsConsecutiveCallsOrdered) {
  REQUIRE_GPU();
  const int64_t T = 16384, E = 128, k1 = 16, k2 = 4;
  std::vector<float> first = random_logits(T * E, 41), third = random_logits(T * E, 43);
  DeviceBytes d_first(T * E * 4), d_third(T * E * 4);
  d_first.upload(first.data());
  d_third.upload(third.data());
  DeviceRouterParams p1;
  p1.top_k = static_cast<int>(k1);
  DeviceRouterParams p2;
  p2.top_k = static_cast<int>(k2);
  gpuStream_t stream;
  check(gpuStreamCreate(&stream), "stream");
  auto route = [&](const void* logits, int64_t experts, const DeviceRouterParams& p, DeviceBytes& w, DeviceBytes& ids,
                   bool pdl) {
    RouterLaunchOptions o;
    o.programmatic_dependent_launch = pdl;
    const char* err = launch_fused_router(logits, LogitsDtype::F32, T, T, experts, p, static_cast<float*>(w.get()),
                                          ids.get(), IndexDtype::Int32, nullptr, nullptr, stream, o);
    if (*err) throw std::runtime_error(err);
  };
  // What R1 writes, from a plain launch (the kernel is deterministic).
  DeviceBytes w_plain(T * k1 * 4), ids_plain(T * k1 * 4);
  route(d_first.get(), E, p1, w_plain, ids_plain, false);
  check(gpuStreamSynchronize(stream), "plain R1");
  const std::vector<float> r1_weights = w_plain.download<float>();

  DeviceBytes w(T * k1 * 4), ids(T * k1 * 4), w2(T * k2 * 4), ids2(T * k2 * 4);
  route(d_first.get(), E, p1, w, ids, true);  // R1
  route(w.get(), k1, p2, w2, ids2, true);      // R2 reads R1's weights as [T, 16] logits
  route(d_third.get(), E, p1, w, ids, true);  // R3 overwrites them
  check(gpuStreamSynchronize(stream), "PDL sequence");
  check(gpuStreamDestroy(stream), "stream destroy");

  Case c2;
  c2.tokens = T;
  c2.experts = k1;
  c2.config.top_k = static_cast<int>(k2);
  GpuResult g2;
  g2.weights = w2.download<float>();
  for (int32_t x : ids2.download<int32_t>()) g2.ids.push_back(x);
  g2.map.assign(T * k1, 0);  // no routing map in this test: rebuild it from the ids
  for (int64_t i = 0; i < T * k2; ++i) {
    if (g2.ids[i] >= 0 && g2.ids[i] < k1) g2.map[(i / k2) * k1 + g2.ids[i]] = 1;
  }
  g2.nan_flags.assign(T, 0);
  expect_matches_reference(r1_weights, c2, g2, "R2 (PDL) over R1's weights");

  Case c3;
  c3.tokens = T;
  c3.experts = E;
  c3.config.top_k = static_cast<int>(k1);
  GpuResult g3;
  g3.weights = w.download<float>();
  for (int32_t x : ids.download<int32_t>()) g3.ids.push_back(x);
  g3.map.assign(T * E, 0);
  for (int64_t i = 0; i < T * k1; ++i) {
    if (g3.ids[i] >= 0 && g3.ids[i] < E) g3.map[(i / k1) * E + g3.ids[i]] = 1;
  }
  g3.nan_flags.assign(T, 0);
  expect_matches_reference(third, c3, g3, "R3 (PDL) after R2");
}

// The benchmark's read probe (router.h): the row maximum, NaN skipped, in every slot, ids 0..k-1,
// flags 0, on the one-lane, eight-lane and whole-warp layouts; outputs start as garbage.
TEST(GpuRouter, ReadProbeWritesTheRowMaximumToEverySlot) {
  REQUIRE_GPU();
  const int64_t T = 37;
  const int k = 6;
  for (int64_t E : {16, 128, 512}) {
    std::vector<float> logits = random_logits(T * E, static_cast<uint32_t>(50 + E));
    logits[5 * E + E - 1] = kNaN;
    logits[6 * E + E / 2] = 100.0f;
    DeviceBytes d_logits(T * E * 4), d_w(T * k * 4), d_ids(T * k * 4), d_nan(T);
    d_logits.upload(logits.data());
    const char* err =
        launch_router_read_probe(static_cast<const float*>(d_logits.get()), T, E, k, static_cast<float*>(d_w.get()),
                                 static_cast<int32_t*>(d_ids.get()), static_cast<uint8_t*>(d_nan.get()), nullptr,
                                 RouterLaunchOptions{});
    ASSERT_STREQ(err, "");
    check(gpuDeviceSynchronize(), "read probe");
    const std::vector<float> w = d_w.download<float>();
    const std::vector<int32_t> ids = d_ids.download<int32_t>();
    const std::vector<uint8_t> flags = d_nan.download<uint8_t>();
    for (int64_t t = 0; t < T; ++t) {
      float m = -INFINITY;
      for (int64_t e = 0; e < E; ++e) m = std::fmax(m, logits[t * E + e]);
      for (int r = 0; r < k; ++r) {
        ASSERT_EQ(w[t * k + r], m) << "E=" << E << " token " << t << " slot " << r;
        ASSERT_EQ(ids[t * k + r], r) << "E=" << E << " token " << t;
      }
      ASSERT_EQ(flags[t], 0) << "E=" << E << " token " << t;
    }
  }
  float dummy[4] = {};
  int32_t ids[4] = {};
  std::string msg = launch_router_read_probe(dummy, 1, 130, 4, dummy, ids, nullptr, nullptr, RouterLaunchOptions{});
  EXPECT_NE(msg.find("experts = 130 is not a multiple of 4"), std::string::npos) << msg;
}

TEST(GpuRouter, RejectsArgumentsItCannotRouteWithAReason) {
  DeviceRouterParams p;
  p.top_k = 4;
  float w[4] = {};
  int32_t ids[4] = {};
  std::string msg = launch_fused_router(w, LogitsDtype::F32, 1, 1, 513, p, w, ids, IndexDtype::Int32, nullptr,
                                        nullptr, nullptr);
  EXPECT_NE(msg.find("experts = 513 is outside [1, 512]"), std::string::npos) << msg;
  p.top_k = 17;
  msg = launch_fused_router(w, LogitsDtype::F32, 1, 1, 128, p, w, ids, IndexDtype::Int32, nullptr, nullptr, nullptr);
  EXPECT_NE(msg.find("top_k = 17"), std::string::npos) << msg;
  p.top_k = 4;
  msg = launch_fused_router(w, LogitsDtype::F32, 2, 3, 128, p, w, ids, IndexDtype::Int32, nullptr, nullptr, nullptr);
  EXPECT_NE(msg.find("valid_tokens = 3 is outside [0, tokens = 2]"), std::string::npos) << msg;
  p.variant = RouterVariant::SigmoidGroupedBiased;
  p.n_group = 3;
  msg = launch_fused_router(w, LogitsDtype::F32, 1, 1, 128, p, w, ids, IndexDtype::Int32, nullptr, nullptr, nullptr);
  EXPECT_NE(msg.find("n_group = 3 must divide experts = 128"), std::string::npos) << msg;
  EXPECT_NE(msg.find("sigmoid_grouped_biased"), std::string::npos) << msg;
  p.n_group = 8;
  p.topk_group = 1;
  p.top_k = 17 - 1;  // 16 picks from one kept group of 16: fine; 17 would not be
  msg = launch_fused_router(w, LogitsDtype::F32, 0, 0, 128, p, w, ids, IndexDtype::Int32, nullptr, nullptr, nullptr);
  EXPECT_EQ(msg, "") << "zero tokens is a no-op";
}

}  // namespace
}  // namespace moeprep::gpu
