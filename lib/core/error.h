#pragma once
#include <stdexcept>
#include <string>
#include <string_view>

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

// Whether c is an ASCII control character (NUL, a line break, a tab, DEL, ...).
constexpr bool is_control_character(unsigned char c) { return c < 0x20 || c == 0x7f; }

// `text` with each control character written as a \xNN escape.
std::string escape_control_characters(std::string_view text);

// An error with context. what() is one line: "<context>: <reason>", where the context names
// the file and, where there is one, the tensor. Control characters in the message (a line
// break in a config value or a name it quotes) become escapes, so that holds whatever a file
// contains.
class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message)
      : std::runtime_error(escape_control_characters(message)), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

[[noreturn]] void throw_bad_input(const std::string& message);
[[noreturn]] void throw_io(const std::string& message);  // appends strerror(errno)
[[noreturn]] void throw_usage(const std::string& message);
[[noreturn]] void throw_internal(const std::string& message);

}  // namespace moeprep
