// Stages 1-3: structure, integrity, flags.
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/hash.h"
#include "io/page_release.h"
#include "plan/manifest_model.h"
#include "plan/verify_stages.h"

namespace moeprep::plan {
namespace {

namespace fs = std::filesystem;

// Equality of JSON values regardless of key order (the manifest is read back unordered).
bool same_json(const nlohmann::ordered_json& a, const nlohmann::ordered_json& b) {
  return nlohmann::json::parse(a.dump()) == nlohmann::json::parse(b.dump());
}

std::string tensor_ref(const ManifestTensor& t) { return t.shard + ": tensor '" + t.name + "'"; }

std::optional<RecipeSpec> expected_spec(const Manifest& m, const ManifestTensor& t, const std::string& context) {
  auto role = role_from_name(t.role);
  if (!role) return std::nullopt;
  return manifest_recipe(m, *role, context);
}

std::string file_hash(const fs::path& path, uint64_t* size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_io(path.string() + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string s = ss.str();
  if (size) *size = s.size();
  return xxh3_128_hex(s.data(), s.size());
}

}  // namespace

std::optional<OpenedDestination> check_structure(const fs::path& destination, StageReport& r) {
  const std::string manifest_path = (destination / kManifestFileName).string();
  std::optional<OpenedDestination> opened;
  try {
    io::Checkpoint ckpt = io::Checkpoint::open(destination);
    if (!fs::exists(manifest_path)) {
      r.fail(manifest_path + ": missing: not a moeprep output (convert writes it last)");
      return std::nullopt;
    }
    Manifest manifest = Manifest::read(manifest_path);
    opened.emplace(OpenedDestination{std::move(ckpt), std::move(manifest)});
  } catch (const Error& e) {
    r.fail(e.what());
    return std::nullopt;
  }
  const io::Checkpoint& ckpt = opened->checkpoint;
  const Manifest& m = opened->manifest;

  std::set<std::string> shard_files;
  for (const auto& s : ckpt.shards()) shard_files.insert(s->path().filename().string());
  for (const auto& s : m.shards) {
    ++r.checked;
    if (!shard_files.count(s.file)) r.fail(manifest_path + ": shard '" + s.file + "' is missing");
    else if (fs::file_size(destination / s.file) != s.bytes)
      r.fail(s.file + ": file is " + std::to_string(fs::file_size(destination / s.file)) + " bytes, manifest says " +
             std::to_string(s.bytes));
  }
  std::set<std::string> listed;
  for (const auto& t : m.tensors) {
    ++r.checked;
    listed.insert(t.name);
    const io::LocatedTensor* loc = ckpt.try_find(t.name);
    if (!loc) {
      r.fail(tensor_ref(t) + ": listed in the manifest but missing from the shards");
      continue;
    }
    const std::string actual_shard = loc->file->path().filename().string();
    if (actual_shard != t.shard) r.fail(tensor_ref(t) + ": found in " + actual_shard + " instead");
    if (loc->info->dtype != t.dtype)
      r.fail(tensor_ref(t) + ": dtype " + dtype_name(loc->info->dtype) + ", manifest says " + dtype_name(t.dtype));
    if (loc->info->shape != t.shape)
      r.fail(tensor_ref(t) + ": shape " + shape_to_string(loc->info->shape) + ", manifest says " +
             shape_to_string(t.shape));
    if (loc->info->begin != t.data_begin || loc->info->end != t.data_end)
      r.fail(tensor_ref(t) + ": data_offsets differ from the manifest");
    if (!t.transformed) continue;
    // The kernel's contract for this role: the dtype and shape the layout id promises.
    try {
      auto spec = expected_spec(m, t, manifest_path);
      if (!spec) {
        r.fail(tensor_ref(t) + ": unknown role '" + t.role + "'");
      } else if (spec->out_dtype != t.dtype || spec->out_shape != t.shape) {
        r.fail(tensor_ref(t) + ": is " + dtype_name(t.dtype) + " " + shape_to_string(t.shape) + ", layout '" +
               spec->layout_id + "' requires " + dtype_name(spec->out_dtype) + " " + shape_to_string(spec->out_shape));
      }
    } catch (const Error& e) {
      r.fail(tensor_ref(t) + ": " + e.what());
    }
  }
  for (const auto& name : ckpt.tensor_names())
    if (!listed.count(name))
      r.fail(ckpt.find(name).file->path().filename().string() + ": tensor '" + name + "' is not in the manifest");
  r.status = r.failed ? StageStatus::Failed : StageStatus::Passed;
  return opened;
}

void check_integrity(const OpenedDestination& dst, StageReport& r, ProgressSink& progress) {
  const io::Checkpoint& ckpt = dst.checkpoint;
  const Manifest& m = dst.manifest;
  uint64_t total = 0, done = 0;
  for (const auto& t : m.tensors) total += t.data_end - t.data_begin;
  progress.start("integrity", total);
  for (const auto& t : m.tensors) {
    const io::LocatedTensor* loc = ckpt.try_find(t.name);
    if (!loc) continue;  // reported by the structure stage
    ++r.checked;
    const io::ByteView bytes = ckpt.data(*loc);
    if (xxh3_128_hex(bytes.data, bytes.size) != t.xxh3_128)
      r.fail(tensor_ref(t) + ": XXH3-128 of its bytes differs from the manifest (data corrupted or altered)");
    io::release_mapped_pages(bytes);
    done += bytes.size;
    progress.advance(done, t.name);
  }
  progress.finish();
  for (const auto& s : m.shards) {
    for (const auto& shard : ckpt.shards()) {
      if (shard->path().filename().string() != s.file) continue;
      ++r.checked;
      const io::ByteView whole = shard->whole_file();
      if (xxh3_128_hex(whole.data, shard->data_start()) != s.header_xxh3_128)
        r.fail(s.file + ": header bytes differ from the manifest (header or metadata altered)");
    }
  }
  const fs::path root = ckpt.root();
  try {
    ++r.checked;
    if (file_hash(root / io::kIndexFileName, nullptr) != m.index_xxh3_128)
      r.fail(std::string(io::kIndexFileName) + ": differs from the index convert wrote");
    for (const auto& f : m.files) {
      ++r.checked;
      uint64_t size = 0;
      if (!fs::exists(root / f.name)) r.fail(f.name + ": copied file is missing");
      else if (file_hash(root / f.name, &size) != f.xxh3_128 || size != f.bytes)
        r.fail(f.name + ": copied file differs from the source's");
    }
  } catch (const Error& e) {
    r.fail(e.what());
  }
  r.status = r.failed ? StageStatus::Failed : StageStatus::Passed;
}

void check_flags(const OpenedDestination& dst, StageReport& r) {
  const Manifest& m = dst.manifest;
  const std::string manifest_path = (dst.checkpoint.root() / kManifestFileName).string();
  std::map<std::string, const ManifestTensor*> by_name;
  for (const auto& t : m.tensors) by_name[t.name] = &t;
  for (const auto& shard : dst.checkpoint.shards()) {
    const std::string file = shard->path().filename().string();
    const auto& meta = shard->metadata();
    for (const auto& info : shard->tensors()) {
      auto it = by_name.find(info.name);
      if (it == by_name.end()) continue;
      const ManifestTensor& t = *it->second;
      ++r.checked;
      auto flag = meta.find(t.name + ".is_shuffled");
      auto layout = meta.find(t.name + ".layout");
      const bool flagged = flag != meta.end() && flag->second == "true";
      if (t.is_shuffled && !flagged)
        r.fail(file + ": tensor '" + t.name + "': is_shuffled is missing from the shard metadata, the manifest says shuffled");
      if (!t.is_shuffled && flag != meta.end())
        r.fail(file + ": tensor '" + t.name + "': shard metadata says is_shuffled, the manifest says not shuffled");
      if (t.is_shuffled && (layout == meta.end() || layout->second != t.layout))
        r.fail(file + ": tensor '" + t.name + "': layout in the shard metadata ('" +
               (layout == meta.end() ? std::string("absent") : layout->second) + "') differs from the manifest ('" +
               t.layout + "')");
      if (!t.transformed) continue;
      // The recorded steps must be the ones the layout id stands for; anything else is a
      // conversion that a loader trusting the id would misread.
      try {
        auto role = role_from_name(t.role);
        if (!role) continue;  // reported by the structure stage
        const RecipeSpec spec = manifest_recipe(m, *role, manifest_path);
        if (spec.layout_id != t.layout)
          r.fail(file + ": tensor '" + t.name + "': layout id '" + t.layout + "' does not match its role, expected '" +
                 spec.layout_id + "'");
        if (!same_json(spec.recipe.to_json(), t.steps))
          r.fail(file + ": tensor '" + t.name + "': recorded steps are not those of layout '" + spec.layout_id + "'");
        if (spec.shuffled != t.is_shuffled)
          r.fail(file + ": tensor '" + t.name + "': is_shuffled=" + (t.is_shuffled ? "true" : "false") +
                 " but layout '" + spec.layout_id + "' is " + (spec.shuffled ? "shuffled" : "not shuffled"));
      } catch (const Error& e) {
        r.fail(file + ": tensor '" + t.name + "': " + e.what());
      }
    }
    for (const auto& [key, value] : meta) {
      for (const char* suffix : {".is_shuffled", ".layout"}) {
        const std::string sfx = suffix;
        if (key.size() > sfx.size() && key.compare(key.size() - sfx.size(), sfx.size(), sfx) == 0) {
          const std::string name = key.substr(0, key.size() - sfx.size());
          if (!shard->find(name)) r.fail(file + ": metadata '" + key + "' names a tensor that is not in this shard");
        }
      }
    }
  }
  r.status = r.failed ? StageStatus::Failed : StageStatus::Passed;
}

}  // namespace moeprep::plan
