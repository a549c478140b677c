#include "plan/expert_chunks.h"

#include <algorithm>

namespace moeprep::plan {

std::vector<ExpertChunk> expert_chunks(const ConvertPlan& plan, const TensorJob& job, uint64_t target_bytes) {
  const int64_t experts = plan.dims.experts;
  if (!job.spec.recipe.expert_separable() || experts <= 1 || job.in_bytes <= target_bytes)
    return {ExpertChunk{0, experts, true}};
  const uint64_t per_expert = job.in_bytes / static_cast<uint64_t>(experts);
  const int64_t per_chunk = std::max<int64_t>(1, static_cast<int64_t>(target_bytes / std::max<uint64_t>(per_expert, 1)));
  std::vector<ExpertChunk> chunks;
  for (int64_t e = 0; e < experts; e += per_chunk) chunks.push_back({e, std::min(per_chunk, experts - e), false});
  return chunks;
}

RecipeSpec chunk_recipe(const ConvertPlan& plan, const TensorJob& job, const ExpertChunk& chunk) {
  return chunk.whole ? job.spec : recipe_for_experts(plan, job, chunk.count);
}

ChunkBytes chunk_bytes(const TensorJob& job, int64_t experts, const ExpertChunk& chunk) {
  if (chunk.whole) return {0, job.in_bytes, 0, job.out_bytes};
  const uint64_t in_per = job.in_bytes / static_cast<uint64_t>(experts);
  const uint64_t out_per = job.out_bytes / static_cast<uint64_t>(experts);
  return {in_per * static_cast<uint64_t>(chunk.first), in_per * static_cast<uint64_t>(chunk.count),
          out_per * static_cast<uint64_t>(chunk.first), out_per * static_cast<uint64_t>(chunk.count)};
}

}  // namespace moeprep::plan
