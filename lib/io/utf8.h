#pragma once
// UTF-8 well-formedness (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF.
#include <cstddef>
#include <optional>
#include <string_view>

namespace moeprep::io {

// The offset of the first byte that starts an ill-formed sequence; nullopt when all is well.
std::optional<size_t> first_invalid_utf8(std::string_view text);

}  // namespace moeprep::io
