#include "io/names.h"

#include <algorithm>

#include "core/error.h"

namespace moeprep::io {

std::string printable(std::string_view name, size_t max_bytes) {
  std::string out;
  const std::string_view shown = name.substr(0, max_bytes);
  for (const char c : shown) {
    if (c == '\\' || c == '\'' || c == '"') out += '\\';
    out += c;
  }
  out = escape_control_characters(out);
  if (shown.size() < name.size()) out += "...";
  return out;
}

void check_tensor_name(std::string_view name, const std::string& context) {
  if (name.empty()) throw_bad_input(context + ": tensor name is empty");
  if (name.size() > kMaxTensorNameBytes)
    throw_bad_input(context + ": tensor name '" + printable(name, 40) + "' is " + std::to_string(name.size()) +
                    " bytes, over the limit of " + std::to_string(kMaxTensorNameBytes));
  for (unsigned char c : name)
    if (is_control_character(c))
      throw_bad_input(context + ": tensor name '" + printable(name) + "' contains a " +
                      (c == 0 ? std::string("NUL") : std::string("control")) + " character");
  // Names are never used as paths here, but a name that reads as an absolute path or climbs
  // with ".." is a sign of a hostile or broken file, and other tools do join names to paths.
  // Interior '/' stays legal: TensorFlow writes names like "dense/kernel:0".
  if (name.front() == '/')
    throw_bad_input(context + ": tensor name '" + printable(name) + "' looks like an absolute path");
  size_t start = 0;
  while (start <= name.size()) {
    const size_t end = std::min(name.find('/', start), name.size());
    const std::string_view segment = name.substr(start, end - start);
    if (segment == "..")
      throw_bad_input(context + ": tensor name '" + printable(name) + "' looks like a path that climbs with '..'");
    start = end + 1;
  }
}

void check_plain_file_name(std::string_view name, const std::string& what, const std::string& context) {
  bool plain = !name.empty() && name != "." && name != "..";
  for (unsigned char c : name)
    if (c == '/' || c == '\\' || is_control_character(c)) plain = false;
  if (!plain) throw_bad_input(context + ": " + what + " '" + printable(name) + "' is not a plain file name");
}

}  // namespace moeprep::io
