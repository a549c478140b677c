#include "plan/options.h"

#include <cctype>
#include <cmath>

#include "core/error.h"

namespace moeprep::plan {

const char* gate_mode_name(layout::GateMode mode) {
  return mode == layout::GateMode::Separated ? "separated" : "interleave";
}

layout::GateMode gate_mode_from_name(const std::string& s) {
  if (s == "separated") return layout::GateMode::Separated;
  if (s == "interleave") return layout::GateMode::Interleave;
  throw_bad_input("unknown gate mode '" + s + "' (known: separated, interleave)");
}

nlohmann::ordered_json ConvertOptions::to_json() const {
  nlohmann::ordered_json j;
  j["target"] = target;
  j["gate_mode"] = gate_mode_name(gate_mode);
  j["pad_hidden"] = effective_pad_hidden();
  j["pad_intermediate"] = effective_pad_intermediate();
  j["max_shard_size"] = max_shard_size;
  return j;
}

uint64_t parse_byte_size(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  if (i == 0) throw_usage("invalid size '" + text + "' (expected e.g. 5GB, 500MB, 1GiB or a byte count)");
  double number = 0;
  try {
    number = std::stod(text.substr(0, i));
  } catch (...) {
    throw_usage("invalid size '" + text + "'");
  }
  std::string unit = text.substr(i);
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  double mult = 0;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "KB" || unit == "K") mult = 1e3;
  else if (unit == "MB" || unit == "M") mult = 1e6;
  else if (unit == "GB" || unit == "G") mult = 1e9;
  else if (unit == "TB" || unit == "T") mult = 1e12;
  else if (unit == "KIB") mult = 1024.0;
  else if (unit == "MIB") mult = 1024.0 * 1024;
  else if (unit == "GIB") mult = 1024.0 * 1024 * 1024;
  else if (unit == "TIB") mult = 1024.0 * 1024 * 1024 * 1024;
  else throw_usage("invalid size unit in '" + text + "' (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)");
  double bytes = std::floor(number * mult);
  if (!(bytes >= 1) || bytes > 1.8e19) throw_usage("size '" + text + "' out of range");
  return static_cast<uint64_t>(bytes);
}

}  // namespace moeprep::plan
