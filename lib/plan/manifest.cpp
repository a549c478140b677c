#include "plan/manifest.h"

#include <fstream>
#include <sstream>
#include <string_view>

#include "core/error.h"
#include "core/hash.h"

namespace moeprep::plan {
namespace {

using nlohmann::ordered_json;
// Read as written: a std::map-backed json would sort the keys of options, source, model and
// the steps, and a manifest read and serialized again would not be the text it came from.
using json = nlohmann::ordered_json;

// Typed field access with one-line errors naming the manifest and the field.
class Reader {
 public:
  Reader(const json& j, std::string context) : j_(j), context_(std::move(context)) {
    if (!j_.is_object()) fail("", "is not a JSON object");
  }
  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw_bad_input(context_ + (key.empty() ? "" : ": \"" + key + "\"") + " " + what);
  }
  const json& at(const std::string& key) const {
    auto it = j_.find(key);
    if (it == j_.end()) fail(key, "is missing");
    return *it;
  }
  std::string str(const std::string& key) const {
    const json& v = at(key);
    if (!v.is_string()) fail(key, "must be a string");
    return v.get<std::string>();
  }
  bool boolean(const std::string& key) const {
    const json& v = at(key);
    if (!v.is_boolean()) fail(key, "must be true or false");
    return v.get<bool>();
  }
  int64_t integer(const std::string& key) const {
    const json& v = at(key);
    if (!v.is_number_integer()) fail(key, "must be an integer");
    return v.get<int64_t>();
  }
  uint64_t unsigned_integer(const std::string& key) const {
    const json& v = at(key);
    if (!v.is_number_unsigned()) fail(key, "must be a non-negative integer");
    return v.get<uint64_t>();
  }
  Shape shape(const std::string& key) const {
    const json& v = at(key);
    if (!v.is_array()) fail(key, "must be an array of dimensions");
    Shape s;
    for (const auto& d : v) {
      if (!d.is_number_unsigned()) fail(key, "must be an array of non-negative integers");
      s.push_back(d.get<int64_t>());
    }
    return s;
  }
  Dtype dtype(const std::string& key) const {
    std::string name = str(key);
    auto d = dtype_from_name(name);
    if (!d) fail(key, "names an unknown dtype '" + name + "'");
    return *d;
  }
  const std::string& context() const { return context_; }

 private:
  const json& j_;
  std::string context_;
};

ordered_json source_to_json(const ManifestSourceTensor& s) {
  ordered_json j;
  j["name"] = s.name;
  j["dtype"] = dtype_name(s.dtype);
  j["shape"] = s.shape;
  j["xxh3_128"] = s.xxh3_128;
  return j;
}

}  // namespace

ordered_json Manifest::to_json() const {
  // Objects are vectors of members here (ordered_json), and a member's key is const, so a vector
  // that grows copies its members, tensors array and all, where it cannot move them: room is
  // made up front (10 members at the top, at most 17 per tensor).
  ordered_json j = ordered_json::object();
  j.get_ref<ordered_json::object_t&>().reserve(16);
  j["format"] = kManifestFormat;
  j["format_version"] = kManifestVersion;
  j["tool"] = {{"name", "moeprep"}, {"version", tool_version}};
  j["options"] = options;
  j["source"] = source;
  j["model"] = model;
  auto& arr = j["tensors"] = ordered_json::array();
  arr.get_ref<ordered_json::array_t&>().reserve(tensors.size());
  for (const auto& t : tensors) {
    ordered_json e = ordered_json::object();
    e.get_ref<ordered_json::object_t&>().reserve(17);
    e["name"] = t.name;
    e["shard"] = t.shard;
    e["dtype"] = dtype_name(t.dtype);
    e["shape"] = t.shape;
    e["logical_shape"] = t.logical_shape;
    e["data_offsets"] = {t.data_begin, t.data_end};
    e["xxh3_128"] = t.xxh3_128;
    e["transformed"] = t.transformed;
    e["is_shuffled"] = t.is_shuffled;
    if (t.transformed) {
      e["layer"] = t.layer;
      e["role"] = t.role;
      e["gate_mode"] = t.gate_mode;
      e["layout"] = t.layout;
      e["steps"] = t.steps;
    }
    auto& srcs = e["sources"] = ordered_json::array();
    for (const auto& src : t.sources) srcs.push_back(source_to_json(src));
    if (!t.source_transform.empty()) e["source_transform"] = t.source_transform;
    if (t.quantization_rel_error >= 0) e["quantization_rel_error"] = t.quantization_rel_error;
    arr.push_back(std::move(e));
  }
  auto& files_j = j["files"] = ordered_json::array();
  for (const auto& f : files) files_j.push_back({{"name", f.name}, {"bytes", f.bytes}, {"xxh3_128", f.xxh3_128}});
  auto& shards_j = j["shards"] = ordered_json::array();
  for (const auto& s : shards)
    shards_j.push_back({{"file", s.file}, {"bytes", s.bytes}, {"header_xxh3_128", s.header_xxh3_128}});
  j["index_xxh3_128"] = index_xxh3_128;
  return j;
}

Manifest Manifest::from_json(const json& j, const std::string& context) {
  Reader top(j, context);
  if (top.str("format") != kManifestFormat) top.fail("format", "is not \"" + std::string(kManifestFormat) + "\"");
  if (top.integer("format_version") != kManifestVersion)
    top.fail("format_version", "is not supported (this moeprep reads version " + std::to_string(kManifestVersion) + ")");
  Manifest m;
  Reader tool(top.at("tool"), context + ": tool");
  m.tool_version = tool.str("version");
  if (!top.at("options").is_object()) top.fail("options", "must be an object");
  if (!top.at("source").is_object()) top.fail("source", "must be an object");
  if (!top.at("model").is_object()) top.fail("model", "must be an object");
  m.options = top.at("options");
  m.source = top.at("source");
  m.model = top.at("model");
  const json& arr = top.at("tensors");
  if (!arr.is_array()) top.fail("tensors", "must be an array");
  for (size_t i = 0; i < arr.size(); ++i) {
    Reader r(arr[i], context + ": tensors[" + std::to_string(i) + "]");
    ManifestTensor t;
    t.name = r.str("name");
    Reader rt(arr[i], context + ": tensor '" + t.name + "'");
    t.shard = rt.str("shard");
    t.dtype = rt.dtype("dtype");
    t.shape = rt.shape("shape");
    t.logical_shape = rt.shape("logical_shape");
    const json& offs = rt.at("data_offsets");
    if (!offs.is_array() || offs.size() != 2 || !offs[0].is_number_unsigned() || !offs[1].is_number_unsigned())
      rt.fail("data_offsets", "must be [begin, end]");
    t.data_begin = offs[0].get<uint64_t>();
    t.data_end = offs[1].get<uint64_t>();
    t.xxh3_128 = rt.str("xxh3_128");
    t.transformed = rt.boolean("transformed");
    t.is_shuffled = rt.boolean("is_shuffled");
    if (t.transformed) {
      t.layer = rt.integer("layer");
      t.role = rt.str("role");
      t.gate_mode = rt.str("gate_mode");
      t.layout = rt.str("layout");
      if (!rt.at("steps").is_array()) rt.fail("steps", "must be an array");
      t.steps = rt.at("steps");
    }
    const json& srcs = rt.at("sources");
    if (!srcs.is_array() || srcs.empty()) rt.fail("sources", "must be a non-empty array");
    for (size_t k = 0; k < srcs.size(); ++k) {
      Reader rs(srcs[k], rt.context() + ": sources[" + std::to_string(k) + "]");
      t.sources.push_back({rs.str("name"), rs.dtype("dtype"), rs.shape("shape"), rs.str("xxh3_128")});
    }
    if (arr[i].contains("source_transform")) t.source_transform = rt.str("source_transform");
    if (arr[i].contains("quantization_rel_error")) {
      const json& q = rt.at("quantization_rel_error");
      if (!q.is_number()) rt.fail("quantization_rel_error", "must be a number");
      t.quantization_rel_error = q.get<double>();
    }
    m.tensors.push_back(std::move(t));
  }
  const json& shards_j = top.at("shards");
  if (!shards_j.is_array()) top.fail("shards", "must be an array");
  for (size_t i = 0; i < shards_j.size(); ++i) {
    Reader r(shards_j[i], context + ": shards[" + std::to_string(i) + "]");
    m.shards.push_back({r.str("file"), r.unsigned_integer("bytes"), r.str("header_xxh3_128")});
  }
  m.index_xxh3_128 = top.str("index_xxh3_128");
  if (j.contains("files")) {
    const json& files = top.at("files");
    if (!files.is_array()) top.fail("files", "must be an array");
    for (size_t i = 0; i < files.size(); ++i) {
      Reader r(files[i], context + ": files[" + std::to_string(i) + "]");
      m.files.push_back({r.str("name"), r.str("xxh3_128"), r.unsigned_integer("bytes")});
    }
  }
  return m;
}

namespace {
std::string canonical_text(const ordered_json& j) { return j.dump(1) + "\n"; }
}  // namespace

std::string Manifest::serialize() const {
  // The text with the checksum is the body's with one more member before the closing brace:
  // spliced in as dump() would write it (read() checks that it reads back to the same text),
  // instead of adding it to the tree and dumping all of it again (DeepSeek's 1500 tensors: the
  // second dump and the copy were 11 of convert's 18 ms here).
  std::string text = canonical_text(to_json());
  const std::string checksum = xxh3_128_hex(text.data(), text.size());
  constexpr std::string_view kClose = "\n}\n";
  if (text.size() < kClose.size() || text.compare(text.size() - kClose.size(), kClose.size(), kClose) != 0)
    throw_internal("manifest text does not end with its object's closing brace");
  text.resize(text.size() - kClose.size());
  text += ",\n \"checksum\": \"" + checksum + "\"";
  text += kClose;
  return text;
}

Manifest Manifest::read(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_io(path.string() + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  ordered_json j = ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw_bad_input(path.string() + ": not valid JSON");
  if (!j.is_object() || !j.contains("checksum") || !j["checksum"].is_string())
    throw_bad_input(path.string() + ": \"checksum\" is missing");
  const std::string recorded = j["checksum"].get<std::string>();
  const bool as_written = canonical_text(j) == text;
  j.erase("checksum");  // the body, read as it is
  const std::string body_text = canonical_text(j);
  if (!as_written || xxh3_128_hex(body_text.data(), body_text.size()) != recorded)
    throw_bad_input(path.string() + ": checksum mismatch: the manifest was altered after convert wrote it");
  return from_json(j, path.string());
}

const ManifestTensor* Manifest::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

}  // namespace moeprep::plan
