#include "plan/plan.h"

#include <algorithm>
#include <map>
#include <set>

#include "core/error.h"
#include "core/version.h"
#include "models/detect.h"
#include "plan/manifest.h"

namespace moeprep::plan {
namespace {

namespace fs = std::filesystem;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// An input that moeprep (or an engine) already converted must not be converted again: the
// steps are not idempotent, and a second shuffle is exactly the silent corruption we exist
// to prevent.
void refuse_kernel_ready(const io::Checkpoint& source) {
  const std::string where = source.root().string();
  if (source.is_directory() && fs::exists(source.root() / kManifestFileName))
    throw_bad_input(where + ": already kernel-ready (has " + std::string(kManifestFileName) +
                    "); convert takes an original Hugging Face checkpoint");
  size_t shuffled = 0, original = 0;
  std::string first_shuffled;
  for (const auto& shard : source.shards()) {
    for (const auto& [key, value] : shard->metadata()) {
      if (ends_with(key, ".is_shuffled") && value == "true") {
        ++shuffled;
        if (first_shuffled.empty()) first_shuffled = key.substr(0, key.size() - 12);
      }
    }
  }
  for (const auto& name : source.tensor_names()) {
    // Whatever block holds the experts (mlp, block_sparse_moe, mixer, ...).
    if (ends_with(name, ".experts.w13_weight") || ends_with(name, ".experts.w2_weight")) {
      ++shuffled;
      if (first_shuffled.empty()) first_shuffled = name;
    }
    if (ends_with(name, ".mlp.experts.gate_up_proj_blocks")) ++original;
  }
  if (shuffled && original)
    throw_bad_input(where + ": partially converted: tensor '" + first_shuffled +
                    "' is already kernel-ready while other layers are in the original layout; start again from "
                    "the original checkpoint");
  if (shuffled)
    throw_bad_input(where + ": already kernel-ready (tensor '" + first_shuffled +
                    "' is shuffled); convert takes an original Hugging Face checkpoint");
}

std::vector<std::string> extra_files(const io::Checkpoint& source) {
  std::vector<std::string> files;
  if (!source.is_directory()) return files;
  for (const auto& entry : fs::directory_iterator(source.root())) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || entry.is_symlink()) continue;
    if (ends_with(name, ".safetensors") || name == io::kIndexFileName) continue;
    if (name.rfind(".", 0) == 0) continue;  // hidden files: lock files, editor state
    files.push_back(name);
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

RecipeSpec recipe_for_experts(const ConvertPlan& plan, const TensorJob& job, int64_t experts) {
  ExpertDims d = plan.dims;
  d.experts = experts;
  return aiter_recipe(job.role, d, plan.options, plan.gate_up_interleaved);
}

ConvertPlan build_plan(const io::Checkpoint& source, const ConvertOptions& options) {
  if (options.target != "aiter") throw_usage("unknown target '" + options.target + "' (supported: aiter)");
  if (options.threads < 1) throw_usage("--threads must be at least 1");
  refuse_kernel_ready(source);
  ConvertPlan plan;
  plan.options = options;
  plan.adapter = models::make_adapter(source);
  plan.model = plan.adapter->info();
  const auto& m = plan.model;
  plan.dims = padded_dims(m.experts, m.hidden, m.intermediate, options, reference::is_gated(m.activation.kind));

  std::set<std::string> consumed;
  const std::vector<models::MoeLayer> layers = plan.adapter->moe_layers();
  if (layers.empty()) throw_bad_input(source.root().string() + ": no MoE layer found: there is nothing to convert");
  plan.gate_up_interleaved = layers.front().gate_up_interleaved;
  for (const auto& layer : layers) {
    if (layer.gate_up_interleaved != plan.gate_up_interleaved)
      throw_bad_input(source.root().string() + ": layers disagree on the gate/up row order");
    for (const auto& name : layer.consumed) consumed.insert(name);
    for (const auto& [role, canonical] : layer.sources) {
      TensorJob job;
      job.transformed = true;
      job.layer = layer.layer;
      job.role = role;
      job.canonical = canonical;
      job.spec = aiter_recipe(role, plan.dims, options, plan.gate_up_interleaved);
      if (job.spec.in_dtype != canonical.dtype || job.spec.in_shape != canonical.shape)
        throw_internal("adapter " + plan.adapter->family() + " gives " + role_name(role) + " of layer " +
                       std::to_string(layer.layer) + " as " + dtype_name(canonical.dtype) + " " +
                       shape_to_string(canonical.shape) + ", the recipe expects " + dtype_name(job.spec.in_dtype) +
                       " " + shape_to_string(job.spec.in_shape));
      job.output_name = layer.output_prefix + role_name(role);
      if (source.try_find(job.output_name))
        throw_bad_input(source.root().string() + ": output tensor '" + job.output_name + "' already exists in the source");
      job.out_dtype = job.spec.out_dtype;
      job.out_shape = job.spec.out_shape;
      job.in_bytes = io::PlannedTensor{"", canonical.dtype, canonical.shape}.byte_length();
      plan.jobs.push_back(std::move(job));
    }
  }
  for (const auto& name : source.tensor_names()) {
    if (consumed.count(name)) continue;
    const auto& t = source.find(name);
    TensorJob job;
    job.output_name = name;
    job.source_name = name;
    job.out_dtype = t.info->dtype;
    job.out_shape = t.info->shape;
    job.in_bytes = t.info->byte_length();
    plan.jobs.push_back(std::move(job));
  }
  for (auto& job : plan.jobs) {
    job.out_bytes = io::PlannedTensor{job.output_name, job.out_dtype, job.out_shape}.byte_length();
    plan.total_in_bytes += job.in_bytes;
    plan.total_out_bytes += job.out_bytes;
  }
  std::sort(plan.jobs.begin(), plan.jobs.end(),
            [](const TensorJob& a, const TensorJob& b) { return a.output_name < b.output_name; });

  std::vector<io::PlannedTensor> planned;
  for (const auto& job : plan.jobs) planned.push_back({job.output_name, job.out_dtype, job.out_shape});
  plan.shards = io::plan_shards(planned, options.max_shard_size);
  std::map<std::string, const TensorJob*> by_name;
  for (const auto& job : plan.jobs) by_name[job.output_name] = &job;
  for (auto& shard : plan.shards) {
    shard.metadata["format"] = "pt";
    shard.metadata["producer"] = kProducer;
    shard.metadata["producer_version"] = kVersion;
    shard.metadata["moeprep.target"] = options.target;
    shard.metadata["moeprep.gate_mode"] = gate_mode_name(options.gate_mode);
    for (const auto& t : shard.tensors) {
      const TensorJob& job = *by_name.at(t.name);
      if (job.transformed && job.spec.shuffled) {
        shard.metadata[t.name + ".is_shuffled"] = "true";
        shard.metadata[t.name + ".layout"] = job.spec.layout_id;
      }
    }
  }
  plan.extra_files = extra_files(source);
  return plan;
}

nlohmann::ordered_json ConvertPlan::to_json() const {
  nlohmann::ordered_json j;
  j["model"] = {{"family", model.family},
                {"gate_up_interleaved", gate_up_interleaved},
                {"gated", dims.gated},
                {"layers", model.layers},
                {"experts", model.experts},
                {"hidden", model.hidden},
                {"intermediate", model.intermediate},
                {"hidden_pad", dims.hidden_pad},
                {"intermediate_pad", dims.intermediate_pad}};
  j["options"] = options.to_json();
  j["total_in_bytes"] = total_in_bytes;
  j["total_out_bytes"] = total_out_bytes;
  auto& shards_j = j["shards"] = nlohmann::ordered_json::array();
  size_t next = 0;
  for (const auto& shard : shards) {
    nlohmann::ordered_json s;
    s["file"] = shard.file_name;
    auto& tensors = s["tensors"] = nlohmann::ordered_json::array();
    for (size_t i = 0; i < shard.tensors.size(); ++i) {
      const TensorJob& job = jobs[next++];
      nlohmann::ordered_json t;
      t["name"] = job.output_name;
      t["sources"] = job.source_tensors();
      if (job.transformed && !job.canonical.transform.empty()) t["source_transform"] = job.canonical.transform;
      t["action"] = job.transformed ? "transform" : "copy";
      if (job.transformed) {
        t["layer"] = job.layer;
        t["in"] = std::string(dtype_name(job.spec.in_dtype)) + " " + shape_to_string(job.spec.in_shape);
        t["steps"] = job.spec.recipe.to_json();
      }
      t["out"] = std::string(dtype_name(job.out_dtype)) + " " + shape_to_string(job.out_shape);
      t["bytes"] = job.out_bytes;
      tensors.push_back(std::move(t));
    }
    shards_j.push_back(std::move(s));
  }
  j["extra_files"] = extra_files;
  return j;
}

}  // namespace moeprep::plan
