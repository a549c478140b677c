#include "core/shape.h"

#include "core/error.h"

namespace moeprep {

int64_t checked_numel(const Shape& shape, const std::string& what) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw_bad_input(what + ": negative dimension in shape " + shape_to_string(shape));
    if (d != 0 && n > INT64_MAX / d)
      throw_bad_input(what + ": element count of shape " + shape_to_string(shape) + " overflows");
    n *= d;
  }
  return n;
}

std::string shape_to_string(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

}  // namespace moeprep
