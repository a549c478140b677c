#include "core/error.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace moeprep {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::BadInput: return "bad input";
    case ErrorKind::Io: return "i/o";
    case ErrorKind::Usage: return "usage";
    case ErrorKind::Verification: return "verification";
    case ErrorKind::Internal: return "internal";
  }
  return "unknown";
}

std::string escape_control_characters(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (!is_control_character(c)) {
      out += ch;
      continue;
    }
    char escape[8];
    std::snprintf(escape, sizeof escape, "\\x%02x", c);
    out += escape;
  }
  return out;
}

void throw_bad_input(const std::string& message) { throw Error(ErrorKind::BadInput, message); }

void throw_io(const std::string& message) {
  int saved = errno;
  throw Error(ErrorKind::Io, saved ? message + ": " + std::strerror(saved) : message);
}

void throw_usage(const std::string& message) { throw Error(ErrorKind::Usage, message); }

void throw_internal(const std::string& message) { throw Error(ErrorKind::Internal, message); }

}  // namespace moeprep
