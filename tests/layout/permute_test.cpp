// permute_bytes / unpermute_bytes and the padding copies against element-by-element
// definitions, over random views, permutations and element sizes.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "layout/pad_copy.h"
#include "layout/permute.h"
#include "layout_test_util.h"

using namespace moeprep;
using namespace moeprep::layout;
using namespace moeprep::layout::testing;

namespace {

// The definition: output multi-index y (over permuted dims) takes input x with x[perm[i]] = y[i].
std::vector<uint8_t> naive_permute(const std::vector<uint8_t>& src, const Shape& dims, const Permutation& perm,
                                   size_t elem) {
  const size_t nd = dims.size();
  const int64_t numel = checked_numel(dims, "naive");
  Shape out_dims(nd);
  for (size_t i = 0; i < nd; ++i) out_dims[i] = dims[perm[i]];
  std::vector<uint8_t> dst(src.size());
  std::vector<int64_t> y(nd, 0), x(nd);
  for (int64_t o = 0; o < numel; ++o) {
    int64_t rem = o;
    for (size_t i = nd; i-- > 0;) {
      y[i] = rem % out_dims[i];
      rem /= out_dims[i];
    }
    for (size_t i = 0; i < nd; ++i) x[perm[i]] = y[i];
    int64_t in = 0;
    for (size_t d = 0; d < nd; ++d) in = in * dims[d] + x[d];
    std::copy_n(src.begin() + in * elem, elem, dst.begin() + o * elem);
  }
  return dst;
}

}  // namespace

TEST(PermuteBytes, MatchesDefinitionOnRandomViews) {
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 400; ++trial) {
    const size_t nd = static_cast<size_t>(random_int(rng, 0, 6));
    Shape dims(nd);
    for (auto& d : dims) d = random_int(rng, 1, 5);
    Permutation perm(nd);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    const size_t elem = std::vector<size_t>{1, 2, 3, 4, 8, 16, 24}[random_int(rng, 0, 6)];
    const auto src = random_bytes(static_cast<size_t>(checked_numel(dims, "t")) * elem, rng);
    SCOPED_TRACE("dims " + shape_to_string(dims) + " elem " + std::to_string(elem));

    std::vector<uint8_t> dst(src.size()), back(src.size());
    permute_bytes(src.data(), dst.data(), dims, perm, elem);
    EXPECT_EQ(dst, naive_permute(src, dims, perm, elem));
    unpermute_bytes(dst.data(), back.data(), dims, perm, elem);
    EXPECT_EQ(back, src);
  }
}

TEST(PermuteBytes, InnerLevelsLargerThanOneOffsetTable) {
  // Inner levels are gathered through a table of at most 4096 runs; these views cross that
  // bound in both ways (one level alone over it; several levels whose product is).
  std::mt19937_64 rng(3);
  const std::pair<Shape, Permutation> cases[] = {
      {{2, 4100, 3}, {0, 2, 1}}, {{70, 70, 3}, {2, 1, 0}}, {{3, 64, 64, 2}, {3, 2, 1, 0}}, {{5000, 2}, {1, 0}}};
  for (const auto& [dims, perm] : cases) {
    const auto src = random_bytes(static_cast<size_t>(checked_numel(dims, "t")) * 2, rng);
    std::vector<uint8_t> dst(src.size()), back(src.size());
    permute_bytes(src.data(), dst.data(), dims, perm, 2);
    EXPECT_EQ(dst, naive_permute(src, dims, perm, 2)) << shape_to_string(dims);
    unpermute_bytes(dst.data(), back.data(), dims, perm, 2);
    EXPECT_EQ(back, src);
  }
}

TEST(PermuteBytes, IdentityAndZeroSizedViews) {
  std::mt19937_64 rng(2);
  const auto src = random_bytes(2 * 3 * 4, rng);
  std::vector<uint8_t> dst(src.size());
  permute_bytes(src.data(), dst.data(), {2, 3, 4}, {0, 1, 2}, 1);
  EXPECT_EQ(dst, src);
  // Nothing to move: must not touch memory.
  permute_bytes(nullptr, nullptr, {3, 0, 2}, {2, 0, 1}, 4);
}

TEST(PermuteBytes, RejectsBadPermutations) {
  uint8_t b[8] = {};
  expect_error([&] { permute_bytes(b, b + 4, {2, 2}, {0, 0}, 1); }, {"permute_bytes", "not a permutation"});
  expect_error([&] { permute_bytes(b, b + 4, {2, 2}, {0, 2}, 1); }, {"not a permutation"});
  expect_error([&] { permute_bytes(b, b + 4, {2, 2}, {0}, 1); }, {"permutation of 1 dims", "[2, 2]"});
}

TEST(PadCopy, EmbedAndCropMatchDefinition) {
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 300; ++trial) {
    const size_t nd = static_cast<size_t>(random_int(rng, 1, 4));
    Shape view(nd), padded(nd);
    for (size_t d = 0; d < nd; ++d) {
      view[d] = random_int(rng, 0, 4);
      padded[d] = view[d] + (random_int(rng, 0, 1) ? random_int(rng, 0, 3) : 0);
    }
    const size_t elem = std::vector<size_t>{1, 2, 4, 8}[random_int(rng, 0, 3)];
    const auto fill = random_bytes(elem, rng);
    const auto src = random_bytes(static_cast<size_t>(checked_numel(view, "t")) * elem, rng);
    SCOPED_TRACE("view " + shape_to_string(view) + " padded " + shape_to_string(padded));

    std::vector<uint8_t> dst(static_cast<size_t>(checked_numel(padded, "t")) * elem);
    embed_padded(src.data(), view, dst.data(), padded, fill);
    // Definition: element p of the padded array is src at p when p lies in the view, else fill.
    const int64_t total = checked_numel(padded, "t");
    for (int64_t p = 0; p < total; ++p) {
      int64_t rem = p, in = 0, stride = 1;
      bool inside = true;
      for (size_t d = nd; d-- > 0;) {
        const int64_t i = rem % padded[d];
        rem /= padded[d];
        inside = inside && i < view[d];
        in += i * stride;
        stride *= view[d];
      }
      for (size_t b = 0; b < elem; ++b)
        ASSERT_EQ(dst[p * elem + b], inside ? src[in * elem + b] : fill[b]) << "element " << p;
    }

    std::vector<uint8_t> back(src.size());
    EXPECT_EQ(crop_padded(dst.data(), padded, back.data(), view, fill), std::nullopt);
    EXPECT_EQ(back, src);
    if (dst.size() > src.size()) {
      // Corrupt one padding byte: the crop must point at it.
      std::vector<int64_t> pad_bytes;
      std::vector<uint8_t> probe(src.size(), 0xAB);
      std::vector<uint8_t> probe_dst(dst.size());
      embed_padded(probe.data(), view, probe_dst.data(), padded, std::vector<uint8_t>(elem, 0));
      for (size_t i = 0; i < dst.size(); ++i)
        if (probe_dst[i] == 0) pad_bytes.push_back(static_cast<int64_t>(i));
      const int64_t at = pad_bytes[random_int(rng, 0, static_cast<int64_t>(pad_bytes.size()) - 1)];
      dst[at] ^= 0x5A;
      EXPECT_EQ(crop_padded(dst.data(), padded, back.data(), view, fill), std::optional<int64_t>(at));
    }
  }
}
