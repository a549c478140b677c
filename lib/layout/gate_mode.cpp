#include "core/error.h"
#include "layout/step_support.h"

namespace moeprep::layout::detail {

const char* gate_mode_name(GateMode mode) { return mode == GateMode::Separated ? "separated" : "interleave"; }

GateMode gate_mode_from_name(const std::string& name, const std::string& context) {
  if (name == "separated") return GateMode::Separated;
  if (name == "interleave") return GateMode::Interleave;
  throw_bad_input(context + ": unknown gate_mode \"" + name + "\" (known: separated, interleave)");
}

}  // namespace moeprep::layout::detail
