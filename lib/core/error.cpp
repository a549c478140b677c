#include "core/error.h"

#include <cerrno>
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

void throw_bad_input(const std::string& message) { throw Error(ErrorKind::BadInput, message); }

void throw_io(const std::string& message) {
  int saved = errno;
  throw Error(ErrorKind::Io, saved ? message + ": " + std::strerror(saved) : message);
}

void throw_usage(const std::string& message) { throw Error(ErrorKind::Usage, message); }

void throw_internal(const std::string& message) { throw Error(ErrorKind::Internal, message); }

}  // namespace moeprep
