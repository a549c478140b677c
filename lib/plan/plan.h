#pragma once
// A conversion plan: for every output tensor, where its bytes come from and the recipe that
// makes them; then the shards. Building a plan reads only headers and config.json.
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "io/safetensors_writer.h"
#include "models/adapter.h"
#include "models/model_info.h"
#include "plan/aiter_recipes.h"
#include "plan/options.h"

namespace moeprep::plan {

struct TensorJob {
  std::string output_name;
  bool transformed = false;  // false: copied byte for byte from source_name
  std::string source_name;   // copied tensors
  // Transformed tensors: the canonical source (models/adapter.h) and the recipe.
  int64_t layer = -1;
  ExpertRole role = ExpertRole::W13Weight;
  models::CanonicalSource canonical;
  RecipeSpec spec;
  // All:
  Dtype out_dtype = Dtype::U8;
  Shape out_shape;
  uint64_t out_bytes = 0;
  uint64_t in_bytes = 0;  // bytes of the canonical source (copied: of the tensor)

  // The checkpoint tensors this output is made from.
  std::vector<std::string> source_tensors() const {
    return transformed ? canonical.tensors : std::vector<std::string>{source_name};
  }
  // True when the canonical source is one checkpoint tensor read as it is.
  bool reads_source_directly() const { return !transformed || canonical.transform.empty(); }
};

struct ConvertPlan {
  ConvertOptions options;
  std::shared_ptr<const models::ModelAdapter> adapter;
  models::ModelInfo model;
  ExpertDims dims;
  bool gate_up_interleaved = false;   // of the canonical w13 sources
  std::vector<TensorJob> jobs;        // in output order
  std::vector<io::ShardPlan> shards;  // tensors in the same order as jobs
  std::vector<std::string> extra_files;  // non-tensor files copied through (config.json, ...)
  uint64_t total_in_bytes = 0;
  uint64_t total_out_bytes = 0;

  // Human-readable plan (for --dry-run): per layer, per tensor, steps and shapes.
  nlohmann::ordered_json to_json() const;
};

// Detects the model (refusing unknown MoE layouts and already kernel-ready inputs), and plans
// every tensor. Throws BadInput naming the checkpoint and the reason. The plan refers to
// `source`, which must outlive it.
ConvertPlan build_plan(const io::Checkpoint& source, const ConvertOptions& options);

// Rebuilds the recipe of a transformed job for a slice of `experts` experts (streaming).
RecipeSpec recipe_for_experts(const ConvertPlan& plan, const TensorJob& job, int64_t experts);

}  // namespace moeprep::plan
