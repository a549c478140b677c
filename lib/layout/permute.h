#pragma once
// The one data-moving primitive behind every shuffle and the de-interleave: a row-major array
// viewed as `dims` is laid out again with its dims in the order `perm` (numpy's
// x.reshape(dims).transpose(perm) made contiguous). Conversion streams tens of GB through
// this, so it copies whole contiguous runs (memcpy of a compile-time size for the common 1..32
// byte runs) instead of walking elements.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/shape.h"

namespace moeprep::layout {

using Permutation = std::vector<int>;

// Output dim i is input dim perm[i]: returns dims[perm[i]] for every i.
Shape permuted_dims(const Shape& dims, const Permutation& perm);

// The permutation q with q[perm[i]] = i.
Permutation inverse_permutation(const Permutation& perm);

// dst (numel(dims) * elem_bytes bytes, not overlapping src) receives src viewed as `dims`
// (elements of elem_bytes bytes) with its dims reordered by `perm`. Throws BadInput when perm
// is not a permutation of 0..dims.size()-1.
void permute_bytes(const uint8_t* src, uint8_t* dst, const Shape& dims, const Permutation& perm,
                   size_t elem_bytes);

// The inverse of permute_bytes with the same dims and perm: src is the permuted array, dst
// receives the original.
void unpermute_bytes(const uint8_t* src, uint8_t* dst, const Shape& dims, const Permutation& perm,
                     size_t elem_bytes);

}  // namespace moeprep::layout
