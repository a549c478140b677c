// The fused router: one launch per call. A token is handled by LPT consecutive lanes of one
// warp (LPT a power of two chosen from E so that each lane holds at most kSlots experts, in
// registers, read as 16-byte vectors where the row allows). Two ways to pick the top k, both exact
// (ties to the lower index, negative scores ranked correctly through reference/topk_key.h):
// - by threshold (LPT >= 4, k <= 2 * LPT, the usual case): a lower bound on the k-th largest score
//   from group maxima, one pass that compacts the few experts at or above it into a shared list,
//   and each candidate's rank counted against that list; rank r lands in output slot r.
// - by rounds (small E, or a warp where some token has too many candidates, e.g. a row of equal
//   logits): k rounds of a max-reduction over the lanes' best keys, the winning partition
//   rescanned by all the token's lanes from a shared copy.
// Every collective runs on all lanes of the warp, whatever k, E, the token count or the token's
// state (NaN, padding): the choice between the two ways is warp-uniform, and only stores and
// loops over a lane's own candidates are predicated.
#include <climits>
#include <cmath>
#include <string>

// The runtime header first: the host+device helpers below need its qualifiers under HIP.
#include "kernels/portability.h"

#include "formats/bf16.h"
#include "kernels/router.h"
#include "reference/topk_key.h"

namespace moeprep::gpu {
namespace {

using reference::float_from_order_key;
using reference::kNoCandidate;
using reference::pack_topk_key;
using reference::RouterVariant;
using reference::selection_value_key;
using reference::topk_key_index;
using reference::topk_key_value_key;

constexpr int kSlots = 16;  // experts held per lane, in registers
constexpr int kGroupSlots = 4;  // a lane's slots form kSlots / kGroupSlots groups for the threshold bound
constexpr int kMaxTopK = 16;
constexpr int kMaxExperts = 512;  // kSlots * 32 lanes
constexpr int kMaxGroups = 32;    // kept-group mask is one 32-bit word
// One warp a block on CUDA: at T = 16384 on the H100 the E = 128 kernel took 5.99 / 6.19 / 6.52 us
// per call at k = 4 / 6 / 8 with 1-warp blocks, 6.23 / 6.45 / 6.74 with 2 and 6.41 / 6.63 / 6.96
// with 4, all in one call (bench/NOTES-router.md, v10). Four wavefronts (256 threads) under HIP,
// not measured there. A candidate build may set MOEPREP_ROUTER_BLOCK_WARPS.
#ifndef MOEPREP_ROUTER_BLOCK_WARPS
#define MOEPREP_ROUTER_BLOCK_WARPS (MOEPREP_WARP_SIZE == 64 ? 4 : 1)
#endif
constexpr int kBlockThreads = MOEPREP_ROUTER_BLOCK_WARPS * MOEPREP_WARP_SIZE;
constexpr int kListPad = 4;  // zero entries behind a candidate list: the rank loop reads four at a time

// The threshold way needs at least kListPad lanes per token (they write the padding) and enough
// lanes that 2 * LPT bounds cover k; the candidate list holds 4 * LPT entries, beyond which a
// warp takes the rounds.
template <int LPT>
constexpr bool threshold_capable() {
  return LPT >= kListPad;
}
template <int LPT>
constexpr int candidate_cap() {
  return 4 * LPT;
}
template <int LPT>
constexpr int list_stride() {  // entries; 4 * LPT + 4 keeps lists 16-byte aligned, 8 banks apart
  return candidate_cap<LPT>() + kListPad;
}

// Shared memory, in 32-bit words, from the start: the lanes' slot copies (kSlots words a thread),
// for the threshold way the tokens' candidate lists and pick lists (64-bit entries), then for
// grouped routing the choice scores (kSlots a thread) and the group scores.
template <int LPT>
constexpr int list_words() {
  return threshold_capable<LPT>() ? (kBlockThreads / LPT) * (list_stride<LPT>() + kMaxTopK) * 2 : 0;
}
// A token's group scores: n_group <= min(E, 32) words, so no more than its lanes' slots. Sized
// tightly because on a 64-lane wavefront (256-thread blocks) the whole layout must stay within
// 64 KB of LDS (E <= 64 with grouped routing came to 66 KB with a kSlots-a-thread region).
template <int LPT>
constexpr int group_score_words() {
  return LPT * kSlots < kMaxGroups ? LPT * kSlots : kMaxGroups;
}
template <int LPT>
constexpr size_t shared_bytes_for(bool grouped) {
  const size_t grouped_words = size_t(kBlockThreads) * kSlots + (kBlockThreads / LPT) * group_score_words<LPT>();
  const size_t words = size_t(kBlockThreads) * kSlots + list_words<LPT>() + (grouped ? grouped_words : 0);
  return words * sizeof(uint32_t);
}
// 64 KB of LDS per block on AMD (256-thread blocks there), and no opt-in above 48 KB on CUDA.
constexpr size_t kSharedLimit = MOEPREP_WARP_SIZE == 64 ? 65536 : 49152;
static_assert(shared_bytes_for<1>(true) <= kSharedLimit && shared_bytes_for<2>(true) <= kSharedLimit &&
                  shared_bytes_for<4>(true) <= kSharedLimit && shared_bytes_for<8>(true) <= kSharedLimit &&
                  shared_bytes_for<16>(true) <= kSharedLimit && shared_bytes_for<32>(true) <= kSharedLimit,
              "the router's shared-memory layout outgrows a block's limit");

// Programmatic dependent launch (RouterLaunchOptions): a block waits for the kernel before it in
// the stream to complete before it touches global memory, and at once lets the kernel after it
// begin launching, so that kernel's launch and block dispatch overlap this one's run instead of
// following it. Without such a launch both return at once; they compile to nothing where the
// instructions do not exist (HIP, devices before sm_90).
__device__ __forceinline__ void wait_for_previous_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void allow_next_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

struct RouterLaunch {
  int64_t tokens;
  int64_t valid_tokens;
  int experts;
  DeviceRouterParams params;
  float* topk_weights;
  void* topk_ids;
  IndexDtype index_dtype;
  uint8_t* routing_map;
  uint8_t* nan_flags;
};

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(uint16_t bf16_bits) { return bf16_to_float(bf16_bits); }

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// exp(x - max) with x == max giving 1, as in the CPU reference (+inf rows share the weight).
// Computed unconditionally and then selected, which keeps it branch-free. Only weights use it,
// never the selection, so the hardware exp (a few ulp, far inside the 1e-5 the weights are held
// to) is enough.
__device__ __forceinline__ float shifted_exp(float x, float max) {
  const float e = __expf(x - max);
  return x == max ? 1.0f : e;
}

// Weight normalization: divisors are sums of weights (>= 1 for the softmax variants), where the
// 2-ulp hardware division is enough and has no slow-path branch.
__device__ __forceinline__ float normalized(float w, float sum) { return __fdividef(w, sum); }

// Register slot j of sub-lane `sub` holds expert e: chunks of VEC consecutive experts (one 16-byte
// load when VEC > 1), the LPT lanes side by side. e grows with j, so within a lane the lower slot
// is the lower index.
template <int LPT, int VEC>
__device__ __forceinline__ int expert_of(int sub, int j) {
  return (j / VEC) * (LPT * VEC) + sub * VEC + (j % VEC);
}
template <int LPT, int VEC>
__device__ __forceinline__ void slot_of(int e, int& sub, int& j) {
  sub = (e / VEC) % LPT;
  j = (e / (LPT * VEC)) * VEC + (e % VEC);
}

// VEC logits starting at `p` as floats: one 16-byte load when VEC > 1.
template <int VEC>
__device__ __forceinline__ void load_chunk(const float* p, float* out) {
  if constexpr (VEC == 4) {
#if defined(MOEPREP_ROUTER_L2_256B) && !defined(__HIPCC__)
    // Candidate build only (bench/NOTES-router.md, v9/v10): the row's 512 bytes fetched into L2
    // in two 256-byte pieces rather than four 128-byte lines.
    float4 v;
    asm("ld.global.nc.L2::256B.v4.f32 {%0, %1, %2, %3}, [%4];"
        : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
        : "l"(p));
#else
    const float4 v = *reinterpret_cast<const float4*>(p);
#endif
    out[0] = v.x;
    out[1] = v.y;
    out[2] = v.z;
    out[3] = v.w;
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) out[i] = p[i];
  }
}
template <int VEC>
__device__ __forceinline__ void load_chunk(const uint16_t* p, float* out) {
  if constexpr (VEC == 8) {
    const uint4 v = *reinterpret_cast<const uint4*>(p);
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      out[2 * i] = bf16_to_float(static_cast<uint16_t>(words[i] & 0xffffu));
      out[2 * i + 1] = bf16_to_float(static_cast<uint16_t>(words[i] >> 16));
    }
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) out[i] = bf16_to_float(p[i]);
  }
}

// One level of a max tournament over keys[0, 2 * kWidth): the winners land in [0, kWidth), and on
// equal keys the left (lower slot) wins. Constant bounds keep the arrays in registers.
template <int kWidth>
__device__ __forceinline__ void tournament_level(uint32_t* keys, int* slots) {
#pragma unroll
  for (int i = 0; i < kWidth; ++i) {
    const bool right = keys[2 * i + 1] > keys[2 * i];
    keys[i] = right ? keys[2 * i + 1] : keys[2 * i];
    slots[i] = right ? slots[2 * i + 1] : slots[2 * i];
  }
}

// (score key, expert) as the 64-bit selection key; an empty slot (key 0) stays 0.
__device__ __forceinline__ uint64_t candidate(uint32_t value_key, int expert) {
  return value_key == kNoCandidate ? 0 : pack_topk_key(value_key, static_cast<uint32_t>(expert));
}

// selection_value_key of a score that is not NaN, in three instructions with no select: adding +0
// turns -0 into +0 and changes nothing else (round to nearest; this file is built without
// flush-to-zero), then the sign decides between flipping every bit and setting the sign bit.
__device__ __forceinline__ uint32_t non_nan_value_key(float v) {
  const uint32_t bits = __float_as_uint(v + 0.0f);
  return bits ^ (static_cast<uint32_t>(static_cast<int32_t>(bits) >> 31) | 0x80000000u);
}

// Butterfly reductions over the LPT lanes of a token (xor offsets below LPT stay inside the
// aligned segment). Executed by every lane of the warp.
template <int LPT>
__device__ __forceinline__ uint64_t segment_max(uint64_t v) {
#pragma unroll
  for (int m = 1; m < LPT; m <<= 1) {
    const uint32_t lo = MOEPREP_SHFL_XOR(static_cast<uint32_t>(v), m);
    const uint32_t hi = MOEPREP_SHFL_XOR(static_cast<uint32_t>(v >> 32), m);
    const uint64_t other = (static_cast<uint64_t>(hi) << 32) | lo;
    v = other > v ? other : v;
  }
  return v;
}

template <int LPT>
__device__ __forceinline__ float segment_sum(float v) {
#pragma unroll
  for (int m = 1; m < LPT; m <<= 1) v += MOEPREP_SHFL_XOR(v, m);
  return v;
}

// Whether any of the token's LPT lanes holds `v`: one ballot, shorter than a butterfly.
template <int LPT>
__device__ __forceinline__ bool segment_any(bool v, int lane, int sub) {
  const unsigned long long bits = MOEPREP_BALLOT(v) >> (lane - sub);
  return (bits & ((1ull << LPT) - 1)) != 0;
}

// Group selection of sigmoid_grouped_biased. `choice` holds the token's E choice scores (shared
// memory), `group_score` room for its n_group scores. Lanes split into runs of `lpg` lanes per
// group; each run finds its group's two largest scores, then every lane ranks the groups and a
// ballot gathers the kept ones. Returns the kept-group bit mask (same on all lanes of a token).
template <int LPT>
__device__ uint32_t kept_groups(const float* choice, float* group_score, int experts, const DeviceRouterParams& p,
                                int sub, int lane) {
  const int n_group = p.n_group;
  const int group_size = experts / n_group;
  int lpg = 1;
  while (lpg * 2 * n_group <= LPT) lpg *= 2;
  const int groups_per_pass = LPT / lpg;
  for (int g0 = 0; g0 < n_group; g0 += groups_per_pass) {
    const int g = g0 + sub / lpg;
    const int r = sub % lpg;
    float top1 = -INFINITY, top2 = -INFINITY;
    if (g < n_group) {
      for (int i = r; i < group_size; i += lpg) {  // branch-free: the two largest as a multiset
        const float c = choice[g * group_size + i];
        top2 = fmaxf(top2, fminf(top1, c));
        top1 = fmaxf(top1, c);
      }
    }
#pragma unroll
    for (int m = 1; m < LPT; m <<= 1) {
      if (m < lpg) {  // same for the whole warp: no lane leaves the shuffle alone
        const float o1 = MOEPREP_SHFL_XOR(top1, m);
        const float o2 = MOEPREP_SHFL_XOR(top2, m);
        const float hi = top1 > o1 ? top1 : o1;
        const float lo = top1 > o1 ? o1 : top1;
        top2 = lo > top2 ? lo : top2;
        top2 = o2 > top2 ? o2 : top2;
        top1 = hi;
      }
    }
    if (g < n_group && r == 0) group_score[g] = group_size >= 2 ? top1 + top2 : top1;
  }
  MOEPREP_SYNCWARP();  // a token's scores are its own lanes' (one warp)
  const uint32_t segment_bits = 0xffffffffu >> (32 - LPT);
  uint32_t kept = 0;
  for (int g0 = 0; g0 < n_group; g0 += LPT) {
    const int g = g0 + sub;
    bool keep = false;
    if (g < n_group) {
      const float mine = group_score[g];
      int better = 0;
      for (int h = 0; h < n_group; ++h) {
        const float other = group_score[h];
        better += (other > mine || (other == mine && h < g)) ? 1 : 0;
      }
      keep = better < p.topk_group;
    }
    const unsigned long long ballot = MOEPREP_BALLOT(keep);
    kept |= (static_cast<uint32_t>(ballot >> (lane - sub)) & segment_bits) << g0;
  }
  return kept;
}

// Three predicated stores rather than a switch: the switch became a jump table, and the compiler
// placed its cases (with copies of the code around them) far apart, so the epilogue ran through
// several instruction-cache misses.
__device__ __forceinline__ void store_id(void* ids, IndexDtype dtype, int64_t at, int32_t id) {
  if (dtype == IndexDtype::Int32) static_cast<int32_t*>(ids)[at] = id;
  if (dtype == IndexDtype::Int64) static_cast<int64_t*>(ids)[at] = id;
  if (dtype == IndexDtype::Int16) static_cast<int16_t*>(ids)[at] = static_cast<int16_t>(id);
}

// The value at descending position `rank` of the token's 2 * LPT values, two per lane (element
// 2 * sub + h), on every lane of the token: a bitonic sort over the lanes. -0 and +0 may come out
// either way round; they compare equal, which is all the caller relies on.
template <int LPT>
__device__ __forceinline__ float kth_largest_of_pairs(float first, float second, int sub, int lane, int rank) {
  float v[2] = {first, second};
#pragma unroll
  for (int size = 2; size <= 2 * LPT; size <<= 1) {
    const bool descending = ((2 * sub) & size) == 0;
#pragma unroll
    for (int stride = size / 2; stride > 0; stride >>= 1) {
      if (stride == 1) {
        const float hi = fmaxf(v[0], v[1]), lo = fminf(v[0], v[1]);
        v[0] = descending ? hi : lo;
        v[1] = descending ? lo : hi;
      } else {
        const int m = stride / 2;  // the partner element sits m lanes away, same h
        const bool keep_max = ((sub & m) == 0) == descending;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const float o = MOEPREP_SHFL_XOR(v[h], m);
          v[h] = keep_max ? fmaxf(v[h], o) : fminf(v[h], o);
        }
      }
    }
  }
  return MOEPREP_SHFL((rank & 1) ? v[1] : v[0], lane - sub + rank / 2);
}

// Adds to rank0 / rank1 how many of the list entries [y, y + 4) are above mine0 / mine1.
__device__ __forceinline__ void count_four_above(const uint64_t* list, int y, uint64_t mine0, uint64_t mine1,
                                                 int& rank0, int& rank1) {
  const ulonglong2 lo = *reinterpret_cast<const ulonglong2*>(list + y);
  const ulonglong2 hi = *reinterpret_cast<const ulonglong2*>(list + y + 2);
  rank0 += (lo.x > mine0 ? 1 : 0) + (lo.y > mine0 ? 1 : 0) + (hi.x > mine0 ? 1 : 0) + (hi.y > mine0 ? 1 : 0);
  rank1 += (lo.x > mine1 ? 1 : 0) + (lo.y > mine1 ? 1 : 0) + (hi.x > mine1 ? 1 : 0) + (hi.y > mine1 ? 1 : 0);
}

// Adds to rank0 / rank1 how many of the list's `total` entries (followed by kListPad zeros) are
// above mine0 / mine1. The first kUnrolled entries are read in one unrolled step, so that their
// shared loads all go out together instead of one round trip per four entries; the counts of
// four-entry pieces at or past `total` are dropped (those words are stale, inside the token's own
// list). Entries past kUnrolled, if any, one piece at a time.
template <int kUnrolled>
__device__ __forceinline__ void count_above(const uint64_t* list, int total, uint64_t mine0, uint64_t mine1,
                                            int& rank0, int& rank1) {
#pragma unroll
  for (int y = 0; y < kUnrolled; y += 4) {
    int c0 = 0, c1 = 0;
    count_four_above(list, y, mine0, mine1, c0, c1);
    if (y < total) {
      rank0 += c0;
      rank1 += c1;
    }
  }
  for (int y = kUnrolled; y < total; y += 4) count_four_above(list, y, mine0, mine1, rank0, rank1);
}

// The threshold way (see the top of the file). `x` holds the lane's choice scores, NaN where a
// slot is absent; `lane_copy` is this lane's kSlots words of shared memory, `list` and `picks` the
// token's candidate list and pick list. Fills pick[] (pick r on lane r % LPT, in pick[r / LPT])
// and returns true, or returns false on every lane of the warp when some token of the warp has
// more than candidate_cap<LPT>() candidates (then nothing has been written).
// kFromRegisters and kRankUnrolled (measured below) choose how the list is built and ranked; the
// sigmoid kernel keeps the shared-memory compaction and the ranking loop, which hold it at the 64
// registers that let 32 one-warp blocks share an SM.
template <int LPT, int VEC, int kPicks, bool kFromRegisters, int kRankUnrolled>
__device__ __forceinline__ bool select_by_threshold(const float* x, bool selecting, int top_k, int sub, int lane,
                                                    float* lane_copy, uint64_t* list, uint64_t* picks,
                                                    uint64_t* pick) {
  // Group maxima (an absent group gives -inf, not NaN, so the min/max below stay consistent).
  // The lane's largest and second largest group maxima are two distinct experts, so at least k
  // experts of the token score at or above the k-th largest of these 2 * LPT values.
  float group_max[kSlots / kGroupSlots];
#pragma unroll
  for (int g = 0; g < kSlots / kGroupSlots; ++g) {
    const float* s = x + g * kGroupSlots;
    group_max[g] = fmaxf(fmaxf(fmaxf(s[0], s[1]), fmaxf(s[2], s[3])), -INFINITY);
  }
  static_assert(kSlots / kGroupSlots == 4 && kGroupSlots == 4, "the top-2 below is written for 4 groups of 4");
  const float a = fmaxf(group_max[0], group_max[1]), b = fminf(group_max[0], group_max[1]);
  const float c = fmaxf(group_max[2], group_max[3]), d = fminf(group_max[2], group_max[3]);
  const float first = fmaxf(a, c);
  const float second = fmaxf(fminf(a, c), fmaxf(b, d));
  const float bound = kth_largest_of_pairs<LPT>(first, second, sub, lane, top_k - 1);

  // Candidates: the experts at or above the bound (NaN, i.e. absent, never is). Their count over
  // the token and this lane's offset in the token's list.
  uint32_t mask = 0;
#pragma unroll
  for (int j = 0; j < kSlots; ++j) mask |= (x[j] >= bound ? 1u : 0u) << j;
  if (!selecting) mask = 0;
  int before = 0, total = __popc(mask);
#pragma unroll
  for (int m = 1; m < LPT; m <<= 1) {
    const int other = MOEPREP_SHFL_XOR(total, m);
    if (sub & m) before += other;
    total += other;
  }
  if (MOEPREP_BALLOT(total > candidate_cap<LPT>()) != 0) return false;

  if constexpr (kFromRegisters) {
    // Compaction from registers: each slot's key is built where it lies and stored, under its
    // mask bit, at the next free place of the lane's run of the list: a fixed, unrolled pass of
    // predicated stores, with no shared copy, no load at a run-time index and no loop whose trip
    // count is the busiest lane's. On the H100 at T = 16384 (with the unrolled ranks below) 0.2 us
    // faster than the loop at k = 8, 0.1 at k = 6, 0.07 slower at k = 4 (bench/NOTES-router.md, v20),
    // so the softmax kernel takes it for k > 4 only.
    uint64_t* out = list + before;
#pragma unroll
    for (int j = 0; j < kSlots; ++j) {
      if (mask & (1u << j)) {
        *out = pack_topk_key(non_nan_value_key(x[j]), static_cast<uint32_t>(expert_of<LPT, VEC>(sub, j)));
        ++out;
      }
    }
  } else {
    // A loop over this lane's candidates only (usually 0 to 3), reading the scores back from
    // shared memory because the slot is known only at run time.
#pragma unroll
    for (int q = 0; q < kSlots; q += 4) {
      *reinterpret_cast<float4*>(lane_copy + q) = make_float4(x[q], x[q + 1], x[q + 2], x[q + 3]);
    }
    int at = before;
    for (uint32_t rest = mask; rest != 0; rest &= rest - 1) {
      const uint32_t j = static_cast<uint32_t>(__ffs(rest) - 1);  // unsigned: / and % become shifts
      const uint32_t expert = (j / VEC) * (LPT * VEC) + static_cast<uint32_t>(sub) * VEC + (j % VEC);  // expert_of
      list[at++] = pack_topk_key(selection_value_key(lane_copy[j]), expert);
    }
  }
  if (sub < kListPad) list[total + sub] = 0;  // 0 ranks below every real key
  MOEPREP_SYNCWARP();
  static_assert(kRankUnrolled % 4 == 0 && kRankUnrolled <= list_stride<LPT>(), "unrolled ranks stay in the list");

  // Ranks: the number of the token's candidates with a larger key. Keys are unique (they carry
  // the index), so the ranks are 0 .. total - 1 and ranks below k are the picks, in order. A lane
  // ranks entries sub and sub + LPT in one pass over the list (one pass more only past 2 * LPT).
  for (int i = sub; i < total; i += 2 * LPT) {
    const bool second = i + LPT < total;
    const uint64_t mine0 = list[i];
    const uint64_t mine1 = second ? list[i + LPT] : ~uint64_t{0};  // nothing ranks above ~0
    int rank0 = 0, rank1 = 0;
    // A list holds about k + 1 entries: 8 read at once cover most warps at k <= 6, 12 at k <= 8.
    if constexpr (kRankUnrolled == 0) {
      count_above<0>(list, total, mine0, mine1, rank0, rank1);
    } else if (top_k <= 6) {  // uniform
      count_above<8>(list, total, mine0, mine1, rank0, rank1);
    } else {
      count_above<kRankUnrolled>(list, total, mine0, mine1, rank0, rank1);
    }
    if (rank0 < top_k) picks[rank0] = mine0;
    if (second && rank1 < top_k) picks[rank1] = mine1;
  }
  MOEPREP_SYNCWARP();
#pragma unroll
  for (int i = 0; i < kPicks; ++i) {
    const int r = i * LPT + sub;
    pick[i] = (selecting && r < top_k) ? picks[r] : 0;
  }
  return true;
}

// The rounds way (see the top of the file). `token_keys` is the token's LPT * kSlots words of
// shared memory. Fills pick[] in the same layout as select_by_threshold.
template <int LPT, int VEC, int kPicks>
__device__ __forceinline__ void select_by_rounds(const float* x, int top_k, int sub, uint32_t* token_keys,
                                                 uint64_t* pick) {
  constexpr int kRescan = kSlots / LPT > 0 ? kSlots / LPT : 1;  // slots per lane in a rescan
  uint32_t key[kSlots];
#pragma unroll
  for (int j = 0; j < kSlots; ++j) key[j] = x[j] == x[j] ? selection_value_key(x[j]) : kNoCandidate;

  // The shared copy of this lane's partition, and its best key: a tournament in which the lower
  // slot (the lower index) wins ties.
  uint32_t* my_keys = token_keys + sub * kSlots;
  MOEPREP_SYNCWARP();  // a threshold attempt may have used this memory
#pragma unroll
  for (int q = 0; q < kSlots; q += 4) {
    *reinterpret_cast<uint4*>(my_keys + q) = make_uint4(key[q], key[q + 1], key[q + 2], key[q + 3]);
  }
  uint32_t tk[kSlots];
  int ts[kSlots];
#pragma unroll
  for (int j = 0; j < kSlots; ++j) {
    tk[j] = key[j];
    ts[j] = j;
  }
  tournament_level<8>(tk, ts);
  tournament_level<4>(tk, ts);
  tournament_level<2>(tk, ts);
  tournament_level<1>(tk, ts);
  uint64_t partition_best = candidate(tk[0], expert_of<LPT, VEC>(sub, ts[0]));
  MOEPREP_SYNCWARP();  // the partition copies are complete before anyone rescans

  // k rounds; the loop is unrolled so that pick[] indices are constants (registers, not local
  // memory).
#pragma unroll
  for (int i = 0; i < kPicks; ++i) pick[i] = 0;
#pragma unroll
  for (int r = 0; r < kMaxTopK; ++r) {
    if (r >= top_k) continue;  // not break: a loop with one exit unrolls on both compilers
    const uint64_t win = segment_max<LPT>(partition_best);
    if (sub == r % LPT) pick[r / LPT] = win;
    // Drop the pick from its partition, then rescan that partition with all LPT lanes. A token
    // with nothing left (padding, NaN) rescans partition 0 harmlessly.
    int owner = 0, owner_slot = 0;
    if (win != 0) slot_of<LPT, VEC>(static_cast<int>(topk_key_index(win)), owner, owner_slot);
    uint32_t* owner_keys = token_keys + owner * kSlots;
    MOEPREP_SYNCWARP();  // last round's rescan reads are done before this write
    if (win != 0 && sub == owner) owner_keys[owner_slot] = kNoCandidate;
    MOEPREP_SYNCWARP();
    uint32_t best = kNoCandidate;
    int best_slot = 0;
    if (sub * kRescan < kSlots) {
      uint32_t k4[kRescan];
      if constexpr (kRescan % 4 == 0) {
#pragma unroll
        for (int q = 0; q < kRescan; q += 4) {
          const uint4 v = *reinterpret_cast<const uint4*>(owner_keys + sub * kRescan + q);
          k4[q] = v.x;
          k4[q + 1] = v.y;
          k4[q + 2] = v.z;
          k4[q + 3] = v.w;
        }
      } else if constexpr (kRescan == 2) {
        const uint2 v = *reinterpret_cast<const uint2*>(owner_keys + sub * 2);
        k4[0] = v.x;
        k4[1] = v.y;
      } else {
        k4[0] = owner_keys[sub];
      }
#pragma unroll
      for (int t = 0; t < kRescan; ++t) {
        if (k4[t] > best) {
          best = k4[t];
          best_slot = sub * kRescan + t;
        }
      }
    }
    const uint64_t next = segment_max<LPT>(candidate(best, expert_of<LPT, VEC>(owner, best_slot)));
    if (sub == owner) partition_best = next;
  }
}

// kSigmoid: sigmoid_grouped_biased; otherwise one of the softmax variants (softmax_after_topk,
// softmax_then_topk, gemma4). Two kernels rather than one with a branch per variant: the sigmoid
// and grouped code and per-variant copies of the epilogue made the one kernel 86 KB of code whose
// hot path (about 640 instructions) ran through many instruction-cache misses. Split, the E = 128
// softmax kernel is 2968 instructions and 54 registers instead of 5376 and 64, and small T got
// faster (bench/NOTES-router.md, v8).
// kFromRegisters: the threshold way builds its candidate list from registers (select_by_threshold);
// the softmax kernel takes it for k > 4 only, where it pays, and keeps the loop for k <= 4 (a
// kernel each, so that each path gets its own registers: one kernel with a branch on k was
// slower at both k, bench/NOTES-router.md, v20-c4).
template <typename LogitT, int LPT, int VEC, bool kSigmoid, bool kFromRegisters>
__global__ void __launch_bounds__(kBlockThreads) fused_router_kernel(const LogitT* __restrict__ logits, RouterLaunch a) {
  extern __shared__ uint32_t shared_words[];
  wait_for_previous_grid();  // before any global read or write
  allow_next_grid();
  constexpr int kPicks = (kMaxTopK + LPT - 1) / LPT;  // picks held per lane
  constexpr int kTokensPerBlock = kBlockThreads / LPT;
  const DeviceRouterParams& p = a.params;
#if defined(MOEPREP_ROUTER_STAGGER_BYTES_PER_NS) && !defined(__HIPCC__)
  // Candidate builds only (bench/NOTES-router.md, v16): block b waits (bytes of the rows before its
  // own) / rate before it loads, so that with the fast dispatch of 2- or 4-warp blocks the row
  // requests still come in over about the time DRAM takes to serve them. The clock is taken as
  // 1.75 cycles a ns. Measured on the H100: no gain for the softmax variants (one-warp blocks stay
  // faster), about 1 us off sigmoid_grouped_biased at T = 16384 with 2- or 4-warp blocks.
  {
    const long long offset_bytes = static_cast<long long>(blockIdx.x) * kTokensPerBlock * a.experts * sizeof(LogitT);
    const long long wait_cycles = offset_bytes * 7 / (4 * MOEPREP_ROUTER_STAGGER_BYTES_PER_NS);
    const long long t0 = clock64();
    for (;;) {
      const long long rest = wait_cycles - (clock64() - t0);
      if (rest <= 0) break;
      __nanosleep(static_cast<unsigned>(rest * 2 / 7 + 16));  // about half the rest, in ns
    }
  }
#endif
  const int lane = threadIdx.x % MOEPREP_WARP_SIZE;
  const int sub = lane % LPT;
  const int token_in_block = threadIdx.x / LPT;
  const int64_t token = static_cast<int64_t>(blockIdx.x) * kTokensPerBlock + token_in_block;
  const bool live = token < a.tokens;
  const bool real = token < a.valid_tokens;  // padding rows are never read
  const int experts = a.experts;
  const bool then_topk = !kSigmoid && p.variant == RouterVariant::SoftmaxThenTopk;
  const float* expert_scale = !kSigmoid && p.variant == RouterVariant::Gemma4 ? p.per_expert_scale : nullptr;
  const LogitT* row = logits + (real ? token * experts : 0);
  // This token's kSlots * LPT words of slot copies; then the lists; then, for grouped routing,
  // the choice scores and the group scores.
  uint32_t* token_keys = shared_words + (threadIdx.x - sub) * kSlots;
  uint32_t* after_keys = shared_words + kBlockThreads * kSlots;
  uint64_t* list = reinterpret_cast<uint64_t*>(after_keys) + token_in_block * list_stride<LPT>();
  uint64_t* picks = reinterpret_cast<uint64_t*>(after_keys) + kTokensPerBlock * list_stride<LPT>() +
                    token_in_block * kMaxTopK;
  float* grouped_words = reinterpret_cast<float*>(after_keys + list_words<LPT>());

  // All loads first, so that the row's chunks are in flight together (one DRAM round trip, not
  // one per chunk). From here x holds scores, NaN marking an absent slot (past E, a padding row
  // unless E = LPT * kSlots, later a dropped group): no comparison selects NaN, and fmaxf skips
  // it. A NaN logit is NaN too, but such a token has no picks anyway.
  const float absent = __int_as_float(0x7fc00000);
  float x[kSlots];
  bool present[kSlots / VEC];
#pragma unroll
  for (int c = 0; c < kSlots / VEC; ++c) {
    present[c] = real && expert_of<LPT, VEC>(sub, c * VEC) < experts;  // E % VEC == 0: all in or all out
    if (present[c]) {
      load_chunk<VEC>(row + expert_of<LPT, VEC>(sub, c * VEC), x + c * VEC);
    } else {
#pragma unroll
      for (int i = 0; i < VEC; ++i) x[c * VEC + i] = 0.0f;
    }
  }
  // NaN check: x * 0 is NaN only for a NaN or infinite x, so the per-slot test runs only on a
  // lane holding one of those. Four independent FMA chains instead of one 16-long chain of
  // predicate compares right behind the loads: measured faster at T = 16384 on two builds
  // (bench/NOTES-router.md, v7n and v8n). Needs IEEE arithmetic: no fast-math for this file.
  float probe[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
  for (int j = 0; j < kSlots; ++j) probe[j % 4] = fmaf(x[j], 0.0f, probe[j % 4]);
  uint32_t has_nan = 0;
  if (isnan((probe[0] + probe[1]) + (probe[2] + probe[3]))) {
#pragma unroll
    for (int j = 0; j < kSlots; ++j) has_nan |= isnan(x[j]) ? 1u : 0u;
  }
  // With E = LPT * kSlots every slot of a real row is present, and a padding row (zeros) selects
  // nothing anyway (see `selecting`; its outputs are written empty): no per-slot select.
  if (experts != LPT * kSlots) {  // uniform
#pragma unroll
    for (int j = 0; j < kSlots; ++j) x[j] = present[j / VEC] ? x[j] : absent;
  }
  if constexpr (kSigmoid) {
    // The bias loads first and together: inside the sigmoid loop each waited behind the
    // division's slow-path branch of the slot before.
    float bias[kSlots];
#pragma unroll
    for (int j = 0; j < kSlots; ++j) {
      const int e = expert_of<LPT, VEC>(sub, j);
      bias[j] = (p.correction_bias && e < experts) ? p.correction_bias[e] : 0.0f;
    }
#pragma unroll
    for (int j = 0; j < kSlots; ++j) x[j] = sigmoid(x[j]) + bias[j];  // choice only; NaN stays NaN
  }
  has_nan = segment_any<LPT>(has_nan != 0, lane, sub) ? 1u : 0u;

  if (kSigmoid && p.n_group > 1) {  // uniform over the launch, so the warp syncs are reached by all lanes
    float* choice = grouped_words + (threadIdx.x - sub) * kSlots;
    float* group_score = grouped_words + kBlockThreads * kSlots + token_in_block * group_score_words<LPT>();
    if constexpr (VEC % 4 == 0) {  // a chunk's experts are consecutive: 16-byte stores
#pragma unroll
      for (int j = 0; j < kSlots; j += 4) {
        const int e = expert_of<LPT, VEC>(sub, j);
        if (e < experts) *reinterpret_cast<float4*>(choice + e) = make_float4(x[j], x[j + 1], x[j + 2], x[j + 3]);
      }
    } else {
#pragma unroll
      for (int j = 0; j < kSlots; ++j) {
        const int e = expert_of<LPT, VEC>(sub, j);
        if (e < experts) choice[e] = x[j];
      }
    }
    MOEPREP_SYNCWARP();  // a token's choice scores are its own lanes' (one warp)
    const uint32_t kept = kept_groups<LPT>(choice, group_score, experts, p, sub, lane);
    // Group of expert e as a multiply-high by ceil(2^32 / group_size): exact for e < 512, and no
    // integer division per slot.
    const uint64_t group_magic = ((uint64_t{1} << 32) + static_cast<uint64_t>(experts / p.n_group) - 1) /
                                 static_cast<uint64_t>(experts / p.n_group);
#pragma unroll
    for (int j = 0; j < kSlots; ++j) {
      const int e = expert_of<LPT, VEC>(sub, j);
      const uint32_t group = static_cast<uint32_t>((static_cast<uint64_t>(e) * group_magic) >> 32);
      if (e < experts && !((kept >> group) & 1u)) x[j] = absent;
    }
  }

  uint64_t pick[kPicks];
  bool by_rounds = true;
  if constexpr (threshold_capable<LPT>()) {
    if (p.top_k <= 2 * LPT) {  // uniform
      constexpr int kRankUnrolled = kSigmoid ? 0 : 12;
      by_rounds = !select_by_threshold<LPT, VEC, kPicks, kFromRegisters, kRankUnrolled>(
          x, real && !has_nan, p.top_k, sub, lane, reinterpret_cast<float*>(shared_words) + threadIdx.x * kSlots, list,
          picks, pick);
    }
  }
  if (by_rounds) select_by_rounds<LPT, VEC, kPicks>(x, p.top_k, sub, token_keys, pick);

  // The token's largest score is pick 0, held by its first lane.
  const float top = float_from_order_key(MOEPREP_SHFL(topk_key_value_key(pick[0]), lane - sub));
  float row_sum = 0.0f;  // softmax_then_topk: sum of exp over all E
  if (then_topk) {
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < kSlots; ++j) {
      const float term = shifted_exp(x[j], top);
      s += x[j] == x[j] ? term : 0.0f;
    }
    row_sum = segment_sum<LPT>(s);
  }

  // Weights. Every lane joins the sum, holding 0 where it has no pick.
  float weight[kPicks];
  int32_t id[kPicks];
  float local_sum = 0.0f;
#pragma unroll
  for (int i = 0; i < kPicks; ++i) {
    const int r = i * LPT + sub;
    weight[i] = 0.0f;
    id[i] = -1;
    if (r < p.top_k && pick[i] != 0) {
      const uint32_t picked = topk_key_index(pick[i]);
      if (picked < static_cast<uint32_t>(experts)) id[i] = static_cast<int32_t>(picked);
      const float v = float_from_order_key(topk_key_value_key(pick[i]));
      if constexpr (kSigmoid) {  // the unbiased score: re-read the logit
        weight[i] = (real && id[i] >= 0) ? sigmoid(to_float(row[id[i]])) : 0.0f;
      } else {
        const float e = shifted_exp(v, top);
        weight[i] = then_topk ? normalized(e, row_sum) : e;
      }
      local_sum += weight[i];
    }
  }
  const float sum = segment_sum<LPT>(local_sum);
  const bool no_picks = !real || has_nan;

  if (a.routing_map) {  // uniform. Zeros for the lane's experts, then (same warp, ordered) the ones
    uint8_t* map_row = a.routing_map + token * experts;
#pragma unroll
    for (int j = 0; j < kSlots; ++j) {
      const int e = expert_of<LPT, VEC>(sub, j);
      if (live && e < experts) map_row[e] = 0;
    }
    MOEPREP_SYNCWARP();
#pragma unroll
    for (int i = 0; i < kPicks; ++i) {
      if (live && !no_picks && i * LPT + sub < p.top_k && id[i] >= 0) map_row[id[i]] = 1;
    }
  }

  if (!live) return;  // after the last collective
#pragma unroll
  for (int i = 0; i < kPicks; ++i) {
    const int r = i * LPT + sub;
    if (r >= p.top_k) continue;
    float w = weight[i];
    if constexpr (kSigmoid) {
      if (p.renormalize) w /= sum + 1e-20f;  // may be tiny: the IEEE division
      w *= p.routed_scaling_factor;
    } else {  // softmax_after_topk and gemma4 renormalize over the picks; softmax_then_topk if asked
      if (!then_topk || p.renormalize) w = normalized(w, sum);
      if (expert_scale && id[i] >= 0) w *= expert_scale[id[i]];  // gemma4
    }
    const bool empty = no_picks || id[i] < 0;
    const int64_t at = token * p.top_k + r;
    a.topk_weights[at] = empty ? 0.0f : w;
    store_id(a.topk_ids, a.index_dtype, at, empty ? -1 : id[i]);
  }
  if (a.nan_flags && sub == 0) a.nan_flags[token] = (real && has_nan) ? 1 : 0;
}

// One launch of `kernel`, with the programmatic-dependent-launch attribute when asked for (CUDA).
template <typename... Params, typename... Args>
gpuError_t launch_kernel(void (*kernel)(Params...), unsigned blocks, size_t shared_bytes, gpuStream_t stream,
                         const RouterLaunchOptions& options, Args... args) {
#if !defined(__HIPCC__)
  if (options.programmatic_dependent_launch) {
    cudaLaunchAttribute attribute[1];
    attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(blocks);
    config.blockDim = dim3(kBlockThreads);
    config.dynamicSmemBytes = shared_bytes;
    config.stream = stream;
    config.attrs = attribute;
    config.numAttrs = 1;
    const gpuError_t status = cudaLaunchKernelEx(&config, kernel, args...);
    return status != gpuSuccess ? status : gpuGetLastError();
  }
#endif
  kernel<<<blocks, kBlockThreads, shared_bytes, stream>>>(args...);
  return gpuGetLastError();
}

// The kernel for a variant and k: the softmax variants' list from registers at k > 4 (where the
// threshold way has a list at all).
template <typename LogitT, int LPT, int VEC>
auto router_kernel_for(bool sigmoid, int top_k) {
  if (sigmoid) return fused_router_kernel<LogitT, LPT, VEC, true, false>;
  if constexpr (threshold_capable<LPT>()) {
    if (top_k > 4) return fused_router_kernel<LogitT, LPT, VEC, false, true>;
  }
  return fused_router_kernel<LogitT, LPT, VEC, false, false>;
}

template <typename LogitT, int LPT>
gpuError_t launch_with(const void* logits, const RouterLaunch& a, bool vector_loads, gpuStream_t stream,
                       const RouterLaunchOptions& options) {
  constexpr int tokens_per_block = kBlockThreads / LPT;
  constexpr int kVec = 16 / sizeof(LogitT);
  const unsigned blocks = static_cast<unsigned>((a.tokens + tokens_per_block - 1) / tokens_per_block);
  const LogitT* in = static_cast<const LogitT*>(logits);
  const bool sigmoid = a.params.variant == RouterVariant::SigmoidGroupedBiased;
  const size_t shared_bytes = shared_bytes_for<LPT>(sigmoid && a.params.n_group > 1);
  const int top_k = a.params.top_k;
  auto kernel = vector_loads ? router_kernel_for<LogitT, LPT, kVec>(sigmoid, top_k)
                             : router_kernel_for<LogitT, LPT, 1>(sigmoid, top_k);
  return launch_kernel(kernel, blocks, shared_bytes, stream, options, in, a);
}

template <typename LogitT>
gpuError_t launch_for_experts(const void* logits, const RouterLaunch& a, gpuStream_t stream,
                              const RouterLaunchOptions& options) {
  // 16-byte loads need every row to start on a 16-byte boundary.
  constexpr int kVec = 16 / sizeof(LogitT);
  const bool vector_loads = a.experts % kVec == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0;
  const int needed = (a.experts + kSlots - 1) / kSlots;  // lanes per token, before rounding up
  if (needed <= 1) return launch_with<LogitT, 1>(logits, a, vector_loads, stream, options);
  if (needed <= 2) return launch_with<LogitT, 2>(logits, a, vector_loads, stream, options);
  if (needed <= 4) return launch_with<LogitT, 4>(logits, a, vector_loads, stream, options);
  if (needed <= 8) return launch_with<LogitT, 8>(logits, a, vector_loads, stream, options);
  if (needed <= 16) return launch_with<LogitT, 16>(logits, a, vector_loads, stream, options);
  return launch_with<LogitT, 32>(logits, a, vector_loads, stream, options);
}

// The benchmark's read probe (router.h): the router's grid, lanes and 16-byte loads, then only
// the row maximum (so that no load is dead) written to every slot.
template <int LPT>
__global__ void __launch_bounds__(kBlockThreads)
    router_read_probe_kernel(const float* __restrict__ logits, int64_t tokens, int experts, int top_k,
                             float* weights, int32_t* ids, uint8_t* nan_flags) {
  wait_for_previous_grid();
  allow_next_grid();
  constexpr int kVec = 4;
  constexpr int kPicks = (kMaxTopK + LPT - 1) / LPT;
  const int lane = threadIdx.x % MOEPREP_WARP_SIZE;
  const int sub = lane % LPT;
  const int64_t token = static_cast<int64_t>(blockIdx.x) * (kBlockThreads / LPT) + threadIdx.x / LPT;
  const bool live = token < tokens;
  const float* row = logits + (live ? token * experts : 0);
  float x[kSlots];
#pragma unroll
  for (int c = 0; c < kSlots / kVec; ++c) {
    if (live && expert_of<LPT, kVec>(sub, c * kVec) < experts) {
      load_chunk<kVec>(row + expert_of<LPT, kVec>(sub, c * kVec), x + c * kVec);
    } else {
#pragma unroll
      for (int i = 0; i < kVec; ++i) x[c * kVec + i] = -INFINITY;
    }
  }
  float m = -INFINITY;
#pragma unroll
  for (int j = 0; j < kSlots; ++j) m = fmaxf(m, x[j]);  // fmaxf skips NaN
#pragma unroll
  for (int s = 1; s < LPT; s <<= 1) m = fmaxf(m, MOEPREP_SHFL_XOR(m, s));
  if (!live) return;  // after the last collective
#pragma unroll
  for (int i = 0; i < kPicks; ++i) {
    const int r = i * LPT + sub;
    if (r >= top_k) continue;
    weights[token * top_k + r] = m;
    ids[token * top_k + r] = r;
  }
  if (nan_flags && sub == 0) nan_flags[token] = 0;
}

template <int LPT>
gpuError_t launch_read_probe(const float* logits, int64_t tokens, int experts, int top_k, float* weights,
                             int32_t* ids, uint8_t* nan_flags, gpuStream_t stream,
                             const RouterLaunchOptions& options) {
  const unsigned blocks = static_cast<unsigned>((tokens + kBlockThreads / LPT - 1) / (kBlockThreads / LPT));
  return launch_kernel(router_read_probe_kernel<LPT>, blocks, 0, stream, options, logits, tokens, experts, top_k,
                       weights, ids, nan_flags);
}

// Spelled out here rather than taken from the reference library, which the kernels do not link.
const char* variant_label(RouterVariant v) {
  switch (v) {
    case RouterVariant::SoftmaxAfterTopk: return "softmax_after_topk";
    case RouterVariant::SoftmaxThenTopk: return "softmax_then_topk";
    case RouterVariant::SigmoidGroupedBiased: return "sigmoid_grouped_biased";
    case RouterVariant::Gemma4: return "gemma4";
  }
  return "unknown variant";
}

// The reason the arguments cannot be routed, or an empty string.
std::string check_arguments(const void* logits, int64_t tokens, int64_t valid_tokens, int64_t experts,
                            const DeviceRouterParams& p, const float* topk_weights, const void* topk_ids) {
  const std::string k = std::to_string(p.top_k), e = std::to_string(experts);
  if (experts < 1 || experts > kMaxExperts) return "experts = " + e + " is outside [1, 512]";
  if (p.top_k < 1 || p.top_k > kMaxTopK || p.top_k > experts) {
    return "top_k = " + k + " is outside [1, min(16, experts = " + e + ")]";
  }
  if (tokens < 0 || valid_tokens < 0 || valid_tokens > tokens) {
    return "valid_tokens = " + std::to_string(valid_tokens) + " is outside [0, tokens = " + std::to_string(tokens) + "]";
  }
  if (tokens > 0 && (!logits || !topk_weights || !topk_ids)) return "logits, topk_weights and topk_ids must be non-null";
  if ((tokens + kBlockThreads - 1) / kBlockThreads > INT_MAX) return "tokens = " + std::to_string(tokens) + " is too many";
  if (p.variant == RouterVariant::SigmoidGroupedBiased) {
    if (p.n_group < 1 || p.n_group > kMaxGroups || experts % p.n_group != 0) {
      return "n_group = " + std::to_string(p.n_group) + " must divide experts = " + e + " and be at most 32";
    }
    if (p.topk_group < 1 || p.topk_group > p.n_group) {
      return "topk_group = " + std::to_string(p.topk_group) + " is outside [1, n_group]";
    }
    if (p.top_k > p.topk_group * (experts / p.n_group)) {
      return "top_k = " + k + " exceeds the experts of the topk_group kept groups";
    }
  }
  return {};
}

}  // namespace

const char* launch_fused_router(const void* logits, LogitsDtype logits_dtype, int64_t tokens, int64_t valid_tokens,
                                int64_t experts, const DeviceRouterParams& params, float* topk_weights,
                                void* topk_ids, IndexDtype index_dtype, uint8_t* routing_map, uint8_t* nan_flags,
                                void* stream) {
  return launch_fused_router(logits, logits_dtype, tokens, valid_tokens, experts, params, topk_weights, topk_ids,
                             index_dtype, routing_map, nan_flags, stream, RouterLaunchOptions{});
}

const char* launch_fused_router(const void* logits, LogitsDtype logits_dtype, int64_t tokens, int64_t valid_tokens,
                                int64_t experts, const DeviceRouterParams& params, float* topk_weights,
                                void* topk_ids, IndexDtype index_dtype, uint8_t* routing_map, uint8_t* nan_flags,
                                void* stream, const RouterLaunchOptions& options) {
  static thread_local std::string error;
  std::string reason = check_arguments(logits, tokens, valid_tokens, experts, params, topk_weights, topk_ids);
  if (!reason.empty()) {
    error = std::string("fused router (") + variant_label(params.variant) + "): " + reason;
    return error.c_str();
  }
  if (tokens == 0) return "";
  RouterLaunch a{tokens, valid_tokens, static_cast<int>(experts), params, topk_weights, topk_ids,
                 index_dtype, routing_map, nan_flags};
  gpuStream_t s = static_cast<gpuStream_t>(stream);
  gpuError_t status = logits_dtype == LogitsDtype::F32 ? launch_for_experts<float>(logits, a, s, options)
                                                       : launch_for_experts<uint16_t>(logits, a, s, options);
  if (status != gpuSuccess) {
    error = std::string("fused router: launch failed: ") + gpuGetErrorString(status);
    return error.c_str();
  }
  return "";
}

const char* launch_router_read_probe(const float* logits, int64_t tokens, int64_t experts, int top_k,
                                     float* topk_weights, int32_t* topk_ids, uint8_t* nan_flags, void* stream,
                                     const RouterLaunchOptions& options) {
  static thread_local std::string error;
  if (experts < 4 || experts > kMaxExperts || experts % 4 != 0) {
    error = "router read probe: experts = " + std::to_string(experts) + " is not a multiple of 4 in [4, 512]";
    return error.c_str();
  }
  if (top_k < 1 || top_k > kMaxTopK || tokens < 0 || (tokens > 0 && (!logits || !topk_weights || !topk_ids)) ||
      reinterpret_cast<uintptr_t>(logits) % 16 != 0) {
    error = "router read probe: top_k = " + std::to_string(top_k) +
            " outside [1, 16], negative tokens, null outputs or logits not 16-byte aligned";
    return error.c_str();
  }
  if (tokens == 0) return "";
  const int e = static_cast<int>(experts);
  gpuStream_t s = static_cast<gpuStream_t>(stream);
  const int needed = (e + kSlots - 1) / kSlots;
  gpuError_t status;
  if (needed <= 1) {
    status = launch_read_probe<1>(logits, tokens, e, top_k, topk_weights, topk_ids, nan_flags, s, options);
  } else if (needed <= 2) {
    status = launch_read_probe<2>(logits, tokens, e, top_k, topk_weights, topk_ids, nan_flags, s, options);
  } else if (needed <= 4) {
    status = launch_read_probe<4>(logits, tokens, e, top_k, topk_weights, topk_ids, nan_flags, s, options);
  } else if (needed <= 8) {
    status = launch_read_probe<8>(logits, tokens, e, top_k, topk_weights, topk_ids, nan_flags, s, options);
  } else if (needed <= 16) {
    status = launch_read_probe<16>(logits, tokens, e, top_k, topk_weights, topk_ids, nan_flags, s, options);
  } else {
    status = launch_read_probe<32>(logits, tokens, e, top_k, topk_weights, topk_ids, nan_flags, s, options);
  }
  if (status != gpuSuccess) {
    error = std::string("router read probe: launch failed: ") + gpuGetErrorString(status);
    return error.c_str();
  }
  return "";
}

}  // namespace moeprep::gpu
