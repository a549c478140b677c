#include "plan/plan.h"

#include <algorithm>
#include <map>

#include "core/error.h"
#include "core/version.h"
#include "models/detect.h"
#include "models/gpt_oss.h"
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
    if (ends_with(name, ".mlp.experts.w13_weight") || ends_with(name, ".mlp.experts.w2_weight")) {
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

void expect_tensor(const io::Checkpoint& source, const std::string& name, Dtype dtype, const Shape& shape) {
  const io::LocatedTensor* t = source.try_find(name);
  if (!t) throw_bad_input(source.root().string() + ": tensor '" + name + "' is missing (expected by the GPT-OSS layout)");
  if (t->info->dtype != dtype || t->info->shape != shape)
    throw_bad_input(t->file->path().string() + ": tensor '" + name + "' is " + dtype_name(t->info->dtype) + " " +
                    shape_to_string(t->info->shape) + ", expected " + dtype_name(dtype) + " " +
                    shape_to_string(shape) + " from config.json");
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
  return aiter_gpt_oss_recipe(job.role, d, plan.options);
}

ConvertPlan build_plan(const io::Checkpoint& source, const ConvertOptions& options) {
  if (options.target != "aiter") throw_usage("unknown target '" + options.target + "' (supported: aiter)");
  if (options.threads < 1) throw_usage("--threads must be at least 1");
  refuse_kernel_ready(source);
  ConvertPlan plan;
  plan.options = options;
  plan.model = models::detect_model(source);
  const auto& m = plan.model;
  plan.dims = padded_dims(m.experts, m.hidden, m.intermediate, options);

  // Expert tensors by name -> (layer, role).
  std::map<std::string, std::pair<int64_t, ExpertRole>> expert_sources;
  for (int64_t l = 0; l < m.layers; ++l) {
    const auto s = models::gpt_oss::source_names(l);
    const std::pair<std::string, ExpertRole> roles[] = {
        {s.gate_up_blocks, ExpertRole::W13Weight}, {s.gate_up_scales, ExpertRole::W13Scale},
        {s.gate_up_bias, ExpertRole::W13Bias},     {s.down_blocks, ExpertRole::W2Weight},
        {s.down_scales, ExpertRole::W2Scale},      {s.down_bias, ExpertRole::W2Bias}};
    for (const auto& [name, role] : roles) expert_sources[name] = {l, role};
    expect_tensor(source, s.router_weight, Dtype::BF16, {m.experts, m.hidden});
  }

  const auto names = source.tensor_names();
  for (const auto& name : names) {
    // Every tensor of an MoE expert block must be understood: dropping or copying an unknown
    // one would hand the engine a checkpoint it cannot load correctly.
    if (name.find(".mlp.experts.") != std::string::npos && !expert_sources.count(name))
      throw_bad_input(source.find(name).file->path().string() + ": tensor '" + name +
                      "' inside an MoE expert block is not part of the GPT-OSS layout (known: gate_up_proj_blocks, "
                      "gate_up_proj_scales, gate_up_proj_bias, down_proj_blocks, down_proj_scales, down_proj_bias)");
  }

  for (const auto& [name, lr] : expert_sources) {
    TensorJob job;
    job.source_name = name;
    job.transformed = true;
    job.layer = lr.first;
    job.role = lr.second;
    job.spec = aiter_gpt_oss_recipe(job.role, plan.dims, options);
    expect_tensor(source, name, job.spec.in_dtype, job.spec.in_shape);
    const auto out = models::gpt_oss::output_names(job.layer);
    const std::string* out_names[] = {&out.w13_weight, &out.w13_weight_scale, &out.w13_weight_bias,
                                      &out.w2_weight,  &out.w2_weight_scale,  &out.w2_weight_bias};
    job.output_name = *out_names[static_cast<int>(job.role)];
    job.out_dtype = job.spec.out_dtype;
    job.out_shape = job.spec.out_shape;
    plan.jobs.push_back(std::move(job));
  }
  for (const auto& name : names) {
    if (expert_sources.count(name)) continue;
    const auto& t = source.find(name);
    TensorJob job;
    job.output_name = name;
    job.source_name = name;
    job.out_dtype = t.info->dtype;
    job.out_shape = t.info->shape;
    plan.jobs.push_back(std::move(job));
  }
  for (auto& job : plan.jobs) {
    if (source.try_find(job.output_name) && job.transformed)
      throw_bad_input(source.root().string() + ": output tensor '" + job.output_name + "' already exists in the source");
    job.in_bytes = source.find(job.source_name).info->byte_length();
    io::PlannedTensor pt{job.output_name, job.out_dtype, job.out_shape};
    job.out_bytes = pt.byte_length();
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
      t["source"] = job.source_name;
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
