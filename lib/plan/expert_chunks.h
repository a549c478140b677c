#pragma once
// Streaming a transformed tensor: split it along the expert dimension into slices small
// enough to keep memory bounded, when every step of its recipe maps experts independently.
#include <cstdint>
#include <vector>

#include "plan/plan.h"

namespace moeprep::plan {

// Input bytes per slice the executor aims for; bounds the memory of each worker.
inline constexpr uint64_t kTargetChunkBytes = 8ull << 20;

struct ExpertChunk {
  int64_t first = 0, count = 0;  // experts [first, first + count)
  bool whole = false;            // the whole tensor in one piece (recipe not expert separable)
};

std::vector<ExpertChunk> expert_chunks(const ConvertPlan& plan, const TensorJob& job,
                                       uint64_t target_bytes = kTargetChunkBytes);

// The recipe that applies to one chunk (the full recipe for a whole-tensor chunk).
RecipeSpec chunk_recipe(const ConvertPlan& plan, const TensorJob& job, const ExpertChunk& chunk);

// Byte ranges of one chunk within the job's source tensor and output tensor.
struct ChunkBytes {
  uint64_t in_begin = 0, in_size = 0, out_begin = 0, out_size = 0;
};
ChunkBytes chunk_bytes(const TensorJob& job, int64_t experts, const ExpertChunk& chunk);

}  // namespace moeprep::plan
