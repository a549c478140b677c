#pragma once
// Embedding a row-major array at the origin of a larger one, and cropping it back out: the
// data movement of the pad step and of the separated scale shuffle's padding.
#include <cstdint>
#include <optional>
#include <vector>

#include "core/shape.h"

namespace moeprep::layout {

// dst (numel(padded) elements) receives src (numel(view) elements) at the origin; every other
// element is `fill` (the bytes of one element; its size is the element size, 1, 2, 4 or 8).
// Requires view.size() == padded.size() and view[d] <= padded[d] (checked by the caller).
void embed_padded(const uint8_t* src, const Shape& view, uint8_t* dst, const Shape& padded,
                  const std::vector<uint8_t>& fill);

// The inverse: dst receives the view region of src. Returns the byte offset in src of the
// first padding element that is not `fill` (a corrupted or foreign tensor), nullopt if all
// padding is intact.
std::optional<int64_t> crop_padded(const uint8_t* src, const Shape& padded, uint8_t* dst, const Shape& view,
                                   const std::vector<uint8_t>& fill);

}  // namespace moeprep::layout
