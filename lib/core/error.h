#pragma once
#include <stdexcept>
#include <string>

namespace moeprep {

// The closed set of failure classes. The CLI maps each to its documented exit code; the
// library never exits.
enum class ErrorKind {
  BadInput,      // malformed or unsupported file, tensor, option value (exit 3)
  Io,            // the operating system refused a read, write, rename, ... (exit 4)
  Usage,         // the caller asked for something inconsistent (exit 2)
  Verification,  // a converted checkpoint failed a check (exit 1)
  Internal,      // a bug in moeprep (exit 70)
};

const char* error_kind_name(ErrorKind kind);

// An error with context. what() is one line: "<context>: <reason>", where the context names
// the file and, where there is one, the tensor.
class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

[[noreturn]] void throw_bad_input(const std::string& message);
[[noreturn]] void throw_io(const std::string& message);  // appends strerror(errno)
[[noreturn]] void throw_usage(const std::string& message);
[[noreturn]] void throw_internal(const std::string& message);

}  // namespace moeprep
