// Checkpoint::open: one directory (config + single file or index over shards) or one file,
// with the index cross-checked against what the shards really hold.
#include "io/checkpoint.h"

#include <algorithm>
#include <set>
#include <unordered_map>

#include "core/error.h"
#include "io/index_file.h"
#include "io/json_file.h"
#include "io/names.h"

namespace fs = std::filesystem;

namespace moeprep::io {
namespace {

bool path_exists(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

bool exists_or_is_link(const fs::path& p) {
  std::error_code ec;
  return fs::exists(fs::symlink_status(p, ec));
}

bool is_within(const fs::path& inner, const fs::path& outer) {
  auto rel = inner.lexically_relative(outer);
  return !rel.empty() && *rel.begin() != ".." && !rel.is_absolute();
}

// A shard named by the index (or config.json, or the index itself) may be a symlink, but it must
// resolve inside the checkpoint: a checkpoint must not be able to make us read arbitrary files.
// One layout is allowed out: the Hugging Face hub cache, where snapshots/<rev>/<file> links to
// the same repository's blobs/.
// `what` names the file in the message: "shard 'x.safetensors'", "config.json".
void check_resolves_inside(const fs::path& dir, const fs::path& file, const std::string& what) {
  std::error_code ec;
  fs::path real_dir = fs::canonical(dir, ec);
  if (ec) throw Error(ErrorKind::Io, dir.string() + ": cannot resolve: " + ec.message());
  fs::path real_file = fs::canonical(file, ec);
  if (ec) throw Error(ErrorKind::Io, file.string() + ": cannot resolve: " + ec.message());
  if (is_within(real_file, real_dir)) return;
  bool hub_cache = real_dir.parent_path().filename() == "snapshots" &&
                   real_file.parent_path() == real_dir.parent_path().parent_path() / "blobs";
  if (hub_cache) return;
  throw_bad_input(dir.string() + ": " + what + " is a symlink resolving outside the checkpoint directory (to " +
                  real_file.string() + ")");
}

}  // namespace

Checkpoint Checkpoint::open(const fs::path& path) {
  std::error_code ec;
  fs::file_status status = fs::status(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory)
    throw Error(ErrorKind::Io, path.string() + ": cannot stat: " + ec.message());
  if (!fs::exists(status)) throw_bad_input(path.string() + ": no such file or directory");

  Checkpoint ckpt;
  ckpt.root_ = path;
  if (fs::is_regular_file(status)) {
    ckpt.shards_.push_back(SafetensorsFile::open(path));
  } else if (fs::is_directory(status)) {
    ckpt.is_directory_ = true;
    const fs::path config_path = path / kConfigFileName;
    if (path_exists(config_path)) {
      check_resolves_inside(path, config_path, kConfigFileName);
      ckpt.config_ = read_json_file(config_path);
      if (!ckpt.config_.is_object()) throw_bad_input(config_path.string() + ": not a JSON object");
    }
    const fs::path index_path = path / kIndexFileName;
    const fs::path single_path = path / kSingleFileName;
    bool has_index = path_exists(index_path);
    bool has_single = path_exists(single_path);
    if (has_index && has_single)
      throw_bad_input(path.string() + ": holds both " + kSingleFileName + " and " + kIndexFileName +
                      "; remove the one that is stale");
    if (!has_index && !has_single)
      throw_bad_input(path.string() + ": no " + kSingleFileName + " or " + kIndexFileName);
    if (has_index) check_resolves_inside(path, index_path, kIndexFileName);
    if (has_single) {
      check_resolves_inside(path, single_path, std::string("shard '") + kSingleFileName + "'");
      ckpt.shards_.push_back(SafetensorsFile::open(single_path));
    } else {
      ckpt.has_index_ = true;
      IndexFile index = read_index_file(index_path);
      const std::string index_name = index_path.string();
      // Shards in name order, each opened once; a missing one is reported with a tensor that
      // needs it, so the message says why the file was expected.
      std::map<std::string, std::string> first_tensor_of_shard;
      for (const auto& [tensor, shard] : index.weight_map) first_tensor_of_shard.emplace(shard, tensor);
      std::unordered_map<std::string, const SafetensorsFile*> shard_by_name;
      for (const auto& [shard, tensor] : first_tensor_of_shard) {
        fs::path shard_path = path / shard;
        if (!exists_or_is_link(shard_path))
          throw_bad_input(index_name + ": shard '" + printable(shard) + "' (listed for tensor '" + printable(tensor) +
                          "') does not exist");
        if (!path_exists(shard_path))
          throw_bad_input(index_name + ": shard '" + printable(shard) + "' is a dangling symlink");
        check_resolves_inside(path, shard_path, "shard '" + printable(shard) + "'");
        ckpt.shards_.push_back(SafetensorsFile::open(shard_path));
        shard_by_name.emplace(shard, ckpt.shards_.back().get());
      }
      uint64_t total = 0;
      for (const auto& file : ckpt.shards_) {
        const std::string shard = file->path().filename().string();
        for (const TensorInfo& t : file->tensors()) {
          auto listed = index.weight_map.find(t.name);
          if (listed == index.weight_map.end())
            throw_bad_input(index_name + ": tensor '" + printable(t.name) + "' is in shard '" + printable(shard) +
                            "' but not listed in weight_map");
          if (listed->second != shard) {
            const SafetensorsFile* other = shard_by_name.at(listed->second);
            if (other->find(t.name))
              throw_bad_input(index_name + ": tensor '" + printable(t.name) + "' is in two shards, '" +
                              printable(listed->second) + "' and '" + printable(shard) + "'");
            throw_bad_input(index_name + ": tensor '" + printable(t.name) + "' is listed for shard '" +
                            printable(listed->second) + "' but found in shard '" + printable(shard) + "'");
          }
          if (total > UINT64_MAX - t.byte_length()) throw_bad_input(index_name + ": total tensor size overflows");
          total += t.byte_length();
        }
      }
      for (const auto& [tensor, shard] : index.weight_map)
        if (!shard_by_name.at(shard)->find(tensor))
          throw_bad_input(index_name + ": tensor '" + printable(tensor) + "' is listed for shard '" + printable(shard) +
                          "' but that shard does not hold it");
      if (index.total_size && *index.total_size != total)
        throw_bad_input(index_name + ": metadata.total_size is " + std::to_string(*index.total_size) +
                        " but the shards' tensors hold " + std::to_string(total) + " bytes");
      ckpt.index_ = std::move(index.json);
    }
  } else {
    throw_bad_input(path.string() + ": not a regular file or a directory");
  }

  for (const auto& file : ckpt.shards_)
    for (const TensorInfo& t : file->tensors()) ckpt.sorted_.push_back({t.name, LocatedTensor{file.get(), &t}});
  std::sort(ckpt.sorted_.begin(), ckpt.sorted_.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  return ckpt;
}

std::vector<std::string> Checkpoint::tensor_names() const {
  std::vector<std::string> names;
  names.reserve(sorted_.size());
  for (const auto& entry : sorted_) names.push_back(entry.first);
  return names;
}

const LocatedTensor* Checkpoint::try_find(std::string_view name) const {
  auto it = std::lower_bound(sorted_.begin(), sorted_.end(), name,
                             [](const auto& entry, std::string_view n) { return entry.first < n; });
  if (it == sorted_.end() || it->first != name) return nullptr;
  return &it->second;
}

const LocatedTensor& Checkpoint::find(std::string_view name) const {
  const LocatedTensor* t = try_find(name);
  if (!t) throw_bad_input(root_.string() + ": no tensor named '" + printable(name) + "'");
  return *t;
}

}  // namespace moeprep::io
