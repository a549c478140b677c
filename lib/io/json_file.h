#pragma once
// Reading the small JSON files of a checkpoint (config.json, the index) strictly: a size limit
// before reading, UTF-8 checked, and duplicate keys refused (a DOM would keep the last one
// silently, and a weight_map listing one tensor twice must not pass).
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace moeprep::io {

inline constexpr uint64_t kMaxJsonFileBytes = 100'000'000;

// Throws BadInput "<context>: ..." for invalid UTF-8, invalid JSON or a duplicate key.
nlohmann::json parse_json_strict(std::string_view text, const std::string& context);

// Reads and parses `path`; errors name the file. Io when it cannot be read.
nlohmann::json read_json_file(const std::filesystem::path& path);

}  // namespace moeprep::io
