#include "layout/permute.h"

#include <cstring>

#include "core/error.h"

namespace moeprep::layout {
namespace {

// One loop level of the copy, in output order: how many steps, and how far apart (in bytes)
// consecutive steps are in the source.
struct Level {
  int64_t count;
  int64_t src_stride;
};

// The copy reduced to its essentials: outer levels (outermost first) and the contiguous run
// of bytes that each innermost step moves.
struct CopyPlan {
  std::vector<Level> levels;
  size_t run;
};

void check_permutation(const Shape& dims, const Permutation& perm) {
  if (perm.size() != dims.size())
    throw_bad_input("permute_bytes: permutation of " + std::to_string(perm.size()) + " dims for a view of " +
                    std::to_string(dims.size()) + " dims " + shape_to_string(dims));
  std::vector<bool> seen(perm.size(), false);
  for (int p : perm) {
    if (p < 0 || static_cast<size_t>(p) >= perm.size() || seen[p])
      throw_bad_input("permute_bytes: the order given for view " + shape_to_string(dims) +
                      " is not a permutation of its dims");
    seen[p] = true;
  }
}

// Drops unit dims, merges dims that stay adjacent and in order, and folds the innermost
// unmoved dims into the run, so that e.g. the separated weight shuffle becomes
// "16-byte runs, 16 rows apart" rather than six nested loops of single bytes.
CopyPlan plan_copy(const Shape& dims, const Permutation& perm, size_t elem_bytes) {
  std::vector<int64_t> stride(dims.size());
  int64_t s = static_cast<int64_t>(elem_bytes);
  for (size_t d = dims.size(); d-- > 0;) {
    stride[d] = s;
    s *= dims[d];
  }
  CopyPlan plan{{}, elem_bytes};
  for (int p : perm) {
    if (dims[p] == 1) continue;
    Level cur{dims[p], stride[p]};
    if (!plan.levels.empty() && plan.levels.back().src_stride == cur.count * cur.src_stride) {
      plan.levels.back().count *= cur.count;
      plan.levels.back().src_stride = cur.src_stride;
    } else {
      plan.levels.push_back(cur);
    }
  }
  while (!plan.levels.empty() && plan.levels.back().src_stride == static_cast<int64_t>(plan.run)) {
    plan.run *= static_cast<size_t>(plan.levels.back().count);
    plan.levels.pop_back();
  }
  return plan;
}

// Source offsets of the runs of the innermost levels, in output order. Small inner levels
// (the scale shuffles move single bytes, two at a time per level) would otherwise pay the
// odometer for every couple of bytes; a table of up to kMaxBlock runs makes the hot loop one
// flat gather.
constexpr int64_t kMaxBlock = 4096;

struct InnerBlock {
  std::vector<int64_t> offsets;
  size_t outer_levels;  // the levels left to the odometer
};

InnerBlock make_inner_block(const CopyPlan& plan) {
  size_t k = plan.levels.size();
  int64_t count = 1;
  while (k > 0 && count * plan.levels[k - 1].count <= kMaxBlock) count *= plan.levels[--k].count;
  if (k == plan.levels.size()) --k;  // one level larger than kMaxBlock: it alone is the block
  InnerBlock block{{0}, k};
  for (size_t d = plan.levels.size(); d-- > k;) {
    // Prepend level d: each existing offset repeated for every step of d (d varies slowest).
    std::vector<int64_t> next;
    next.reserve(block.offsets.size() * static_cast<size_t>(plan.levels[d].count));
    for (int64_t i = 0; i < plan.levels[d].count; ++i)
      for (int64_t o : block.offsets) next.push_back(i * plan.levels[d].src_stride + o);
    block.offsets.swap(next);
  }
  return block;
}

// kRun > 0: the run size is known at compile time and the memcpy becomes one or two vector
// moves; kRun == 0: any run size.
template <size_t kRun>
void copy_runs(const uint8_t* src, uint8_t* dst, const CopyPlan& plan) {
  const size_t run = kRun ? kRun : plan.run;
  const InnerBlock block = make_inner_block(plan);
  const int64_t* offsets = block.offsets.data();
  const size_t block_size = block.offsets.size();
  const size_t n = block.outer_levels;
  std::vector<int64_t> index(n, 0);
  int64_t offset = 0;
  for (;;) {
    const uint8_t* s = src + offset;
    for (size_t j = 0; j < block_size; ++j) {
      std::memcpy(dst, s + offsets[j], kRun ? kRun : run);
      dst += run;
    }
    // Odometer over the outer levels.
    size_t d = n;
    for (;;) {
      if (d == 0) return;
      --d;
      offset += plan.levels[d].src_stride;
      if (++index[d] < plan.levels[d].count) break;
      offset -= plan.levels[d].count * plan.levels[d].src_stride;
      index[d] = 0;
    }
  }
}

}  // namespace

Shape permuted_dims(const Shape& dims, const Permutation& perm) {
  check_permutation(dims, perm);
  Shape out(dims.size());
  for (size_t i = 0; i < perm.size(); ++i) out[i] = dims[perm[i]];
  return out;
}

Permutation inverse_permutation(const Permutation& perm) {
  check_permutation(Shape(perm.size(), 1), perm);
  Permutation q(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) q[perm[i]] = static_cast<int>(i);
  return q;
}

void permute_bytes(const uint8_t* src, uint8_t* dst, const Shape& dims, const Permutation& perm,
                   size_t elem_bytes) {
  check_permutation(dims, perm);
  if (checked_numel(dims, "permute_bytes") == 0 || elem_bytes == 0) return;
  const CopyPlan plan = plan_copy(dims, perm, elem_bytes);
  if (plan.levels.empty()) {
    std::memcpy(dst, src, plan.run);
    return;
  }
  switch (plan.run) {
    case 1: return copy_runs<1>(src, dst, plan);
    case 2: return copy_runs<2>(src, dst, plan);
    case 4: return copy_runs<4>(src, dst, plan);
    case 8: return copy_runs<8>(src, dst, plan);
    case 16: return copy_runs<16>(src, dst, plan);
    case 32: return copy_runs<32>(src, dst, plan);
    case 64: return copy_runs<64>(src, dst, plan);
    default: return copy_runs<0>(src, dst, plan);
  }
}

void unpermute_bytes(const uint8_t* src, uint8_t* dst, const Shape& dims, const Permutation& perm,
                     size_t elem_bytes) {
  permute_bytes(src, dst, permuted_dims(dims, perm), inverse_permutation(perm), elem_bytes);
}

}  // namespace moeprep::layout
