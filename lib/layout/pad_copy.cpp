#include "layout/pad_copy.h"

#include <cstring>

#include "core/error.h"

namespace moeprep::layout {
namespace {

// The padded array seen as rows: `rows` outer dims, each row `row_bytes` long, of which the
// first `run_bytes` come from the view when the row lies inside it.
struct RowPlan {
  Shape outer_padded, outer_view;
  size_t row_bytes, run_bytes;
};

RowPlan plan_rows(const Shape& view, const Shape& padded, size_t elem) {
  if (view.size() != padded.size()) throw_internal("pad: view and padded shapes differ in rank");
  // Trailing dims that are not padded make the rows (and the copied runs) longer.
  size_t split = padded.size();
  size_t inner = elem;
  while (split > 0 && view[split - 1] == padded[split - 1]) inner *= static_cast<size_t>(padded[--split]);
  RowPlan plan;
  if (split == 0) {
    plan.row_bytes = plan.run_bytes = inner;
    return plan;
  }
  --split;  // the innermost padded dim belongs to the row
  plan.outer_padded.assign(padded.begin(), padded.begin() + split);
  plan.outer_view.assign(view.begin(), view.begin() + split);
  plan.row_bytes = inner * static_cast<size_t>(padded[split]);
  plan.run_bytes = inner * static_cast<size_t>(view[split]);
  return plan;
}

// 64 bytes of the fill pattern repeated (element sizes 1, 2, 4, 8 divide 64).
struct FillBlock {
  uint8_t bytes[64];
  bool uniform;
  explicit FillBlock(const std::vector<uint8_t>& fill) {
    if (fill.empty() || 64 % fill.size() != 0) throw_internal("pad: unsupported element size");
    for (size_t i = 0; i < 64; ++i) bytes[i] = fill[i % fill.size()];
    uniform = true;
    for (uint8_t b : fill) uniform = uniform && b == fill[0];
  }
  // Both start at an element boundary, so the pattern is aligned with the data.
  void write(uint8_t* dst, size_t n) const {
    if (n == 0) return;
    if (uniform) {
      std::memset(dst, bytes[0], n);
      return;
    }
    for (; n >= 64; n -= 64, dst += 64) std::memcpy(dst, bytes, 64);
    std::memcpy(dst, bytes, n);
  }
  // Offset of the first 64-byte block (or tail) that differs, or -1.
  int64_t first_mismatch(const uint8_t* src, size_t n) const {
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
      if (std::memcmp(src + i, bytes, 64) != 0) break;
    for (; i < n; ++i)
      if (src[i] != bytes[i % 64]) return static_cast<int64_t>(i);
    return -1;
  }
};

// Calls fn(row_index, inside_view) for every row of the padded array, in memory order.
template <typename Fn>
void for_each_row(const RowPlan& plan, Fn fn) {
  const size_t n = plan.outer_padded.size();
  for (int64_t d : plan.outer_padded)
    if (d == 0) return;
  std::vector<int64_t> index(n, 0);
  size_t outside = 0;  // how many outer indices are past the view
  for (int64_t d : plan.outer_view) outside += d == 0;
  for (int64_t row = 0;; ++row) {
    fn(row, outside == 0);
    size_t d = n;
    for (;;) {
      if (d == 0) return;
      --d;
      const bool was_outside = index[d] >= plan.outer_view[d];
      if (++index[d] < plan.outer_padded[d]) {
        if (!was_outside && index[d] >= plan.outer_view[d]) ++outside;
        break;
      }
      if (was_outside) --outside;
      index[d] = 0;
      if (plan.outer_view[d] == 0) ++outside;
    }
  }
}

}  // namespace

void embed_padded(const uint8_t* src, const Shape& view, uint8_t* dst, const Shape& padded,
                  const std::vector<uint8_t>& fill) {
  const RowPlan plan = plan_rows(view, padded, fill.size());
  const FillBlock block(fill);
  if (plan.row_bytes == 0) return;
  for_each_row(plan, [&](int64_t row, bool inside) {
    uint8_t* d = dst + row * plan.row_bytes;
    size_t copied = 0;
    if (inside && plan.run_bytes > 0) {
      std::memcpy(d, src, plan.run_bytes);
      src += plan.run_bytes;
      copied = plan.run_bytes;
    }
    block.write(d + copied, plan.row_bytes - copied);
  });
}

std::optional<int64_t> crop_padded(const uint8_t* src, const Shape& padded, uint8_t* dst, const Shape& view,
                                   const std::vector<uint8_t>& fill) {
  const RowPlan plan = plan_rows(view, padded, fill.size());
  const FillBlock block(fill);
  std::optional<int64_t> bad;
  if (plan.row_bytes == 0) return bad;
  for_each_row(plan, [&](int64_t row, bool inside) {
    const uint8_t* s = src + row * plan.row_bytes;
    size_t copied = 0;
    if (inside && plan.run_bytes > 0) {
      std::memcpy(dst, s, plan.run_bytes);
      dst += plan.run_bytes;
      copied = plan.run_bytes;
    }
    if (bad) return;
    const int64_t at = block.first_mismatch(s + copied, plan.row_bytes - copied);
    if (at >= 0) bad = row * static_cast<int64_t>(plan.row_bytes) + static_cast<int64_t>(copied) + at;
  });
  return bad;
}

}  // namespace moeprep::layout
