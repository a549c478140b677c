#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace moeprep {

using Shape = std::vector<int64_t>;

// Element count with overflow checking; throws BadInput naming `what` on overflow or a
// negative dimension.
int64_t checked_numel(const Shape& shape, const std::string& what);
std::string shape_to_string(const Shape& shape);  // "[4, 256, 90]"

// `value` rounded up to a multiple of `multiple` (both positive): a padded dimension.
constexpr int64_t round_up(int64_t value, int64_t multiple) { return (value + multiple - 1) / multiple * multiple; }

}  // namespace moeprep
