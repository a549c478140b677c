#include "models/config_reader.h"

#include "core/error.h"

namespace moeprep::models {

ConfigReader::ConfigReader(const nlohmann::json& config, std::string path, std::string where)
    : j_(config), path_(std::move(path)), where_(std::move(where)) {
  if (!j_.is_object()) throw_bad_input(path_ + ": " + (where_.empty() ? "config" : where_) + " is not a JSON object");
}

void ConfigReader::fail(const std::string& key, const std::string& what) const {
  throw_bad_input(path_ + ": \"" + where_ + key + "\" " + what);
}

bool ConfigReader::has(const char* key) const {
  auto it = j_.find(key);
  return it != j_.end() && !it->is_null();
}

int64_t ConfigReader::positive_int(std::initializer_list<const char*> keys) const {
  for (const char* key : keys) {
    if (!has(key)) continue;
    const auto& v = j_.at(key);
    if (!v.is_number_integer() || v.get<int64_t>() <= 0) fail(key, "must be a positive integer");
    return v.get<int64_t>();
  }
  fail(*keys.begin(), "is missing");
}

int64_t ConfigReader::int_or(const char* key, int64_t fallback) const {
  if (!has(key)) return fallback;
  const auto& v = j_.at(key);
  if (!v.is_number_integer() || v.get<int64_t>() < 0) fail(key, "must be a non-negative integer");
  return v.get<int64_t>();
}

double ConfigReader::number_or(const char* key, double fallback) const {
  if (!has(key)) return fallback;
  const auto& v = j_.at(key);
  if (!v.is_number()) fail(key, "must be a number");
  return v.get<double>();
}

bool ConfigReader::bool_or(const char* key, bool fallback) const {
  if (!has(key)) return fallback;
  const auto& v = j_.at(key);
  if (!v.is_boolean()) fail(key, "must be true or false");
  return v.get<bool>();
}

std::string ConfigReader::string_or(const char* key, const std::string& fallback) const {
  if (!has(key)) return fallback;
  const auto& v = j_.at(key);
  if (!v.is_string()) fail(key, "must be a string");
  return v.get<std::string>();
}

std::vector<int64_t> ConfigReader::int_list(const char* key) const {
  std::vector<int64_t> out;
  if (!has(key)) return out;
  const auto& v = j_.at(key);
  if (!v.is_array()) fail(key, "must be a list of integers");
  for (const auto& x : v) {
    if (!x.is_number_integer() || x.get<int64_t>() < 0) fail(key, "must be a list of non-negative integers");
    out.push_back(x.get<int64_t>());
  }
  return out;
}

ConfigReader ConfigReader::object(const char* key) const {
  if (!has(key) || !j_.at(key).is_object()) fail(key, "must be an object");
  return ConfigReader(j_.at(key), path_, where_ + key + ".");
}

void check_moe_info(const ModelInfo& info, const std::string& path) {
  if (info.hidden % 32 != 0) throw_bad_input(path + ": hidden size " + std::to_string(info.hidden) +
                                             " must be a multiple of 32 (MXFP4 blocks)");
  if (info.intermediate % 32 != 0)
    throw_bad_input(path + ": expert intermediate size " + std::to_string(info.intermediate) +
                    " must be a multiple of 32 (MXFP4 blocks)");
  if (info.router.top_k < 1 || info.router.top_k > info.experts)
    throw_bad_input(path + ": experts per token (" + std::to_string(info.router.top_k) +
                    ") must lie within 1.." + std::to_string(info.experts));
  try {
    reference::validate_router_config(info.router, info.experts);
  } catch (const Error& e) {
    throw_bad_input(path + ": " + e.what());
  }
}

}  // namespace moeprep::models
