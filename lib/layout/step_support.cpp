#include "layout/step_support.h"

#include "core/error.h"

namespace moeprep::layout::detail {

size_t element_bytes(Dtype dtype, const std::string& step) {
  const int bits = dtype_bits(dtype);
  if (bits % 8 != 0)
    throw_bad_input(step + ": dtype " + dtype_name(dtype) + " packs " + std::to_string(bits) +
                    "-bit elements; this step moves whole-byte elements only");
  return static_cast<size_t>(bits / 8);
}

void check_tensor_bytes(const ByteTensor& t, const std::string& step) {
  const int64_t numel = checked_numel(t.shape, step);
  const auto expected = dtype_byte_length(t.dtype, numel);
  if (!expected || static_cast<uint64_t>(*expected) != t.bytes.size())
    throw_bad_input(step + ": tensor of shape " + shape_to_string(t.shape) + " and dtype " + dtype_name(t.dtype) +
                    " holds " + std::to_string(t.bytes.size()) + " bytes, expected " +
                    (expected ? std::to_string(*expected) : std::string("a whole number of bytes")));
}

void check_undo_input(const LayoutStep& step, const std::string& label, const ByteTensor& out,
                      const Shape& in_shape, Dtype in_dtype) {
  const Shape want_shape = step.output_shape(in_shape);
  const Dtype want_dtype = step.output_dtype(in_dtype);
  if (out.shape != want_shape || out.dtype != want_dtype)
    throw_bad_input(label + ": cannot undo: got " + dtype_name(out.dtype) + " " + shape_to_string(out.shape) +
                    ", but the step makes " + dtype_name(want_dtype) + " " + shape_to_string(want_shape) +
                    " from " + dtype_name(in_dtype) + " " + shape_to_string(in_shape));
  check_tensor_bytes(out, label);
}

Shape resolve_leading(const Shape& shape, int64_t numel, const std::string& label) {
  if (shape.empty() || shape[0] != -1) return shape;
  Shape rest(shape.begin() + 1, shape.end());
  const int64_t per = checked_numel(rest, label);
  if (per == 0 || numel % per != 0)
    throw_bad_input(label + ": " + std::to_string(numel) + " elements do not fill a whole number of " +
                    shape_to_string(shape) + " (leading dim inferred)");
  Shape out = shape;
  out[0] = numel / per;
  return out;
}

ParamReader::ParamReader(std::string step, const nlohmann::ordered_json& params,
                         std::initializer_list<const char*> allowed)
    : step_(std::move(step)), params_(params) {
  if (!params_.is_object()) throw_bad_input(step_ + ": params must be a JSON object, got " + params_.dump());
  for (const auto& item : params_.items()) {
    bool known = false;
    for (const char* a : allowed) known = known || item.key() == a;
    if (!known) {
      std::string list;
      for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + a;
      throw_bad_input(step_ + ": unknown param \"" + item.key() + "\" (known: " + (list.empty() ? "none" : list) +
                      ")");
    }
  }
}

bool ParamReader::has(const char* key) const { return params_.contains(key); }

const nlohmann::ordered_json& ParamReader::get(const char* key) const {
  if (!params_.contains(key)) bad(key, "is missing");
  return params_.at(key);
}

void ParamReader::bad(const char* key, const std::string& why) const {
  throw_bad_input(step_ + ": param \"" + key + "\" " + why);
}

bool ParamReader::boolean(const char* key) const {
  const auto& v = get(key);
  if (!v.is_boolean()) bad(key, "must be true or false, got " + v.dump());
  return v.get<bool>();
}

int64_t ParamReader::integer(const char* key) const {
  const auto& v = get(key);
  if (!v.is_number_integer()) bad(key, "must be an integer, got " + v.dump());
  return v.get<int64_t>();
}

double ParamReader::number(const char* key) const {
  const auto& v = get(key);
  if (!v.is_number()) bad(key, "must be a number, got " + v.dump());
  return v.get<double>();
}

std::string ParamReader::string(const char* key) const {
  const auto& v = get(key);
  if (!v.is_string()) bad(key, "must be a string, got " + v.dump());
  return v.get<std::string>();
}

Shape ParamReader::shape(const char* key, bool allow_leading_infer) const {
  const auto& v = get(key);
  if (!v.is_array()) bad(key, "must be an array of dims, got " + v.dump());
  Shape s;
  for (size_t i = 0; i < v.size(); ++i) {
    const auto& d = v[i];
    const bool infer_ok = allow_leading_infer && i == 0;
    if (!d.is_number_integer() || d.get<int64_t>() < (infer_ok ? -1 : 0))
      bad(key, std::string("must hold integers >= 0") + (allow_leading_infer ? " (or a leading -1)" : "") +
                   ", got " + v.dump());
    s.push_back(d.get<int64_t>());
  }
  return s;
}

}  // namespace moeprep::layout::detail
