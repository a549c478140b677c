#pragma once
// Checks and parameter parsing shared by the step implementations (not a public API).
#include <cstddef>
#include <initializer_list>
#include <string>

#include "core/byte_tensor.h"
#include "layout/addressing.h"
#include "layout/step.h"

namespace moeprep::layout::detail {

// "separated" / "interleave", the strings the manifest records. (In detail so that ADL on a
// GateMode argument never makes a caller's own helper of the same name ambiguous.)
const char* gate_mode_name(GateMode mode);
// Throws BadInput naming `context` for any other string.
GateMode gate_mode_from_name(const std::string& name, const std::string& context);

// Bytes per element; throws BadInput naming `step` for sub-byte dtypes (F4, F6_*).
size_t element_bytes(Dtype dtype, const std::string& step);

// Throws BadInput naming `step` when t.bytes does not hold exactly shape x dtype.
void check_tensor_bytes(const ByteTensor& t, const std::string& step);

// For undo(): `out` must be what apply() makes of a tensor of in_shape / in_dtype.
void check_undo_input(const LayoutStep& step, const std::string& label, const ByteTensor& out,
                      const Shape& in_shape, Dtype in_dtype);

// Element count of a shape whose leading dim may be -1 (inferred from `numel`, the input's
// count); throws BadInput naming `label` if it cannot be matched.
Shape resolve_leading(const Shape& shape, int64_t numel, const std::string& label);

// Strict reading of a step's params object.
class ParamReader {
 public:
  // Throws BadInput if params is not an object or has a key outside `allowed`.
  ParamReader(std::string step, const nlohmann::ordered_json& params, std::initializer_list<const char*> allowed);
  bool has(const char* key) const;
  bool boolean(const char* key) const;
  int64_t integer(const char* key) const;
  double number(const char* key) const;
  std::string string(const char* key) const;
  // Array of integers >= 0, or -1 in the leading position when allow_leading_infer.
  Shape shape(const char* key, bool allow_leading_infer) const;

 private:
  const nlohmann::ordered_json& get(const char* key) const;
  [[noreturn]] void bad(const char* key, const std::string& why) const;
  std::string step_;
  const nlohmann::ordered_json& params_;
};

}  // namespace moeprep::layout::detail
