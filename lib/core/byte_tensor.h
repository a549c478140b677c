#pragma once
#include <cstdint>
#include <vector>

#include "core/shape.h"
#include "formats/dtype.h"

namespace moeprep {

// An owned, contiguous, row-major tensor of raw bytes: what layout steps take and give.
struct ByteTensor {
  Dtype dtype = Dtype::U8;
  Shape shape;
  std::vector<uint8_t> bytes;
};

}  // namespace moeprep
