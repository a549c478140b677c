#pragma once
// Rules for the names that come from files we do not trust: tensor names in a header and shard
// file names in an index. Shared by the reader (to refuse) and the writer (so that moeprep
// never writes a file its own reader would refuse).
#include <cstddef>
#include <string>
#include <string_view>

namespace moeprep::io {

inline constexpr size_t kMaxTensorNameBytes = 1024;

// `name` made safe for a one-line message: control characters, quotes and backslashes become
// escapes, and very long names are cut with "...".
std::string printable(std::string_view name, size_t max_bytes = 120);

// Throws BadInput "<context>: tensor name ..." when `name` is empty, longer than
// kMaxTensorNameBytes, or holds NUL or another control character.
void check_tensor_name(std::string_view name, const std::string& context);

// Throws BadInput "<context>: <what> '<name>' is not a plain file name" unless `name` is a
// single path component: not empty, not "." or "..", no '/', '\\' or control characters.
void check_plain_file_name(std::string_view name, const std::string& what, const std::string& context);

}  // namespace moeprep::io
