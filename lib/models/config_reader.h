#pragma once
// Typed reads of config.json keys with one-line errors that name the file and the key; shared
// by the family adapters, whose configs spell the same ideas with different keys.
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/model_info.h"

namespace moeprep::models {

class ConfigReader {
 public:
  // `where` prefixes key names in messages (e.g. "text_config." for a nested object).
  ConfigReader(const nlohmann::json& config, std::string path, std::string where = "");

  const std::string& path() const { return path_; }
  // Present and not null (HF configs write null for "not set").
  bool has(const char* key) const;
  // The first of `keys` that is present; throws naming the first key when none is.
  int64_t positive_int(std::initializer_list<const char*> keys) const;
  int64_t int_or(const char* key, int64_t fallback) const;  // any integer, >= 0
  double number_or(const char* key, double fallback) const;
  bool bool_or(const char* key, bool fallback) const;
  std::string string_or(const char* key, const std::string& fallback) const;
  std::vector<int64_t> int_list(const char* key) const;  // absent or null: empty
  // A nested object (e.g. "text_config"); throws when `key` is not an object.
  ConfigReader object(const char* key) const;
  const nlohmann::json& json() const { return j_; }

  [[noreturn]] void fail(const std::string& key, const std::string& what) const;

 private:
  const nlohmann::json& j_;
  std::string path_;
  std::string where_;
};

// Checks what every converted family needs of its sizes (H and I multiples of 32 for MXFP4
// blocks, 1 <= top_k <= E) and of its router configuration; throws BadInput naming the file.
void check_moe_info(const ModelInfo& info, const std::string& config_path);

}  // namespace moeprep::models
