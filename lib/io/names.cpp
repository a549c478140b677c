#include "io/names.h"

#include <cstdio>

#include "core/error.h"

namespace moeprep::io {
namespace {

bool is_control(unsigned char c) { return c < 0x20 || c == 0x7f; }

}  // namespace

std::string printable(std::string_view name, size_t max_bytes) {
  std::string out;
  size_t shown = name.size() > max_bytes ? max_bytes : name.size();
  for (size_t i = 0; i < shown; ++i) {
    unsigned char c = static_cast<unsigned char>(name[i]);
    if (c == '\\' || c == '\'' || c == '"') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (is_control(c)) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (shown < name.size()) out += "...";
  return out;
}

void check_tensor_name(std::string_view name, const std::string& context) {
  if (name.empty()) throw_bad_input(context + ": tensor name is empty");
  if (name.size() > kMaxTensorNameBytes)
    throw_bad_input(context + ": tensor name '" + printable(name, 40) + "' is " + std::to_string(name.size()) +
                    " bytes, over the limit of " + std::to_string(kMaxTensorNameBytes));
  for (unsigned char c : name)
    if (is_control(c))
      throw_bad_input(context + ": tensor name '" + printable(name) + "' contains a " +
                      (c == 0 ? std::string("NUL") : std::string("control")) + " character");
}

void check_plain_file_name(std::string_view name, const std::string& what, const std::string& context) {
  bool plain = !name.empty() && name != "." && name != "..";
  for (unsigned char c : name)
    if (c == '/' || c == '\\' || is_control(c)) plain = false;
  if (!plain) throw_bad_input(context + ": " + what + " '" + printable(name) + "' is not a plain file name");
}

}  // namespace moeprep::io
