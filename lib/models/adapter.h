#pragma once
// A model adapter maps one model family's checkpoint onto the kernel-ready MoE tensors.
//
// For every MoE layer it describes, per role (w13 weights/scales/bias, w2 ...), a *canonical
// source*: the tensor in the GPT-OSS MXFP4 layout that the aiter recipes start from
// (blocks U8 [E, N, K/32, 16], scales U8 [E, N, K/32], bias BF16 [E, N]). For GPT-OSS MXFP4
// checkpoints that is a source tensor as it is; for BF16/FP8 checkpoints it is assembled on the
// fly (experts gathered, transposed, dequantized, quantized to MXFP4). The planner and verify
// only ever see canonical sources, so every family shares the same recipes, manifest and
// checks.
#include <cmath>
#include <cstdint>
#include <mutex>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/byte_tensor.h"
#include "io/checkpoint.h"
#include "models/expert_block_sums.h"
#include "models/model_info.h"
#include "reference/moe.h"

namespace moeprep::models {

enum class Role { W13Weight, W13Scale, W13Bias, W2Weight, W2Scale, W2Bias };

// Quantization error of an assembled source: relative Frobenius norm ||dequant(q) - w|| / ||w||
// over the whole tensor. assemble() records each expert's sums as it goes (from several
// threads, slices in any order); the total is summed in expert order, so the figure the
// manifest records does not depend on the thread count or the slicing. An expert assembled
// again replaces its earlier sums.
struct QuantizationStats {
  void add(int64_t expert, double error_squared, double reference_squared) {
    std::lock_guard<std::mutex> lock(mutex);
    per_expert[expert] = {error_squared, reference_squared};
  }
  double relative_error() const {
    std::lock_guard<std::mutex> lock(mutex);
    double err2 = 0, ref2 = 0;
    for (const auto& [expert, sums] : per_expert) {
      err2 += sums.first;
      ref2 += sums.second;
    }
    return ref2 > 0 ? std::sqrt(err2 / ref2) : std::sqrt(err2);
  }
  mutable std::mutex mutex;
  std::map<int64_t, std::pair<double, double>> per_expert;
};

// Where MXFP4 codes go when the caller lays them out itself (CanonicalSource::assemble_codes):
// `rows` rows starting at the row asked for, the 16 code bytes of block b (elements 32b to
// 32b + 31) of the i-th of them at data + i * row_stride + b * block_stride.
struct CodeRowSpan {
  uint8_t* data = nullptr;
  int64_t rows = 0, row_stride = 0, block_stride = 0;
};
// (expert within the slice, row within the expert) -> the span that begins with that row.
using CodeRowDestination = std::function<CodeRowSpan(int64_t expert, int64_t row)>;

// One canonical source tensor of one layer.
struct CanonicalSource {
  Dtype dtype = Dtype::U8;
  Shape shape;  // canonical shape for all experts, e.g. [E, 2I, H/32, 16]
  // The checkpoint tensors it is made from, in a fixed order (hashed into the manifest).
  std::vector<std::string> tensors;
  // "" when the canonical source *is* tensors[0] byte for byte (then the executor reads the
  // memory map directly); otherwise the name of the transform, e.g. "quantize_mxfp4" or
  // "dequantize_fp8_block+quantize_mxfp4", recorded in the manifest.
  std::string transform;
  // Produces experts [first, first + count) of the canonical tensor. Must be deterministic.
  // Unused when transform is empty.
  std::function<ByteTensor(int64_t first, int64_t count)> assemble;
  // Set for quantized sources (assemble() feeds it); reported in the manifest.
  std::shared_ptr<QuantizationStats> quantization;
  // Optional, for assembled sources: the XXH3-128 (core/hash.h, as the manifest writes it) of
  // one of `tensors` if assemble() already hashed it while reading it, else "". Complete once
  // every expert has been assembled; lets the executor skip a second pass over the checkpoint.
  std::function<std::string(const std::string& tensor)> source_digest;
  // Optional, for assembled sources: the checkpoint tensors among `tensors` that hold every
  // expert in expert order (an [E, ...] tensor), as the bytes experts [first, first + count)
  // occupy in each. assemble() leaves their pages mapped, and the executor hashes them a slice
  // at a time, in order, while the slice's unit runs, letting the pages go once it is done: a
  // pass over the whole tensor at the end, on one thread, cost that tensor read back from the
  // page cache.
  // With count 0 it names the tensors (with empty views): the executor learns them so.
  std::function<std::vector<std::pair<const std::string*, io::ByteView>>(int64_t first, int64_t count)>
      expert_ordered_bytes;
  // Optional, with expert_ordered_bytes: for one of those tensors, block sums of its XXH3 that
  // the quantizing pass makes as it reads each expert (models/expert_block_sums.h), or null.
  // The executor asks for them (want()) before any unit runs, folds a unit's experts once the
  // unit is done, and so reads the tensor once instead of twice.
  std::function<std::shared_ptr<ExpertBlockSums>(const std::string& tensor)> ordered_block_sums;
  // Optional, for quantizing sources of MXFP4 blocks: assemble() with the codes written where
  // `to` says instead of into a new tensor (same codes, error, digests), so that the executor
  // can quantize straight into the shuffled output without a copy of the slice in between.
  std::function<void(int64_t first, int64_t count, const CodeRowDestination& to)> assemble_codes;
  // Optional: when experts [first, first + count) already lie assembled (the scales a quantizing
  // pass handed over), calls use(bytes, size) with them, as assemble() would have returned them,
  // and returns true; false (nothing done) otherwise. Lets the executor read them where they lie
  // instead of from a fresh tensor.
  std::function<bool(int64_t first, int64_t count, const std::function<void(const uint8_t*, size_t)>& use)>
      use_assembled;
};

struct MoeLayer {
  int64_t layer = 0;
  std::string output_prefix;  // e.g. "model.layers.3.mlp.experts." (+ "w13_weight", ...)
  // Whether the w13 canonical rows are gate/up pairs (g0,u0,g1,u1,...) (GPT-OSS) that the
  // recipe must de-interleave, or already [gate; up].
  bool gate_up_interleaved = false;
  std::map<Role, CanonicalSource> sources;  // bias roles absent when the model has no bias
  // Tensors of this layer that the conversion consumes (not copied through).
  std::vector<std::string> consumed;
};

// What verify's numerics stage needs from the source for one layer.
struct LayerReference {
  // Exact float weights of the source (before any quantization). Only the experts asked for
  // are filled in: dense.slot maps expert -> slot (-1: not loaded), so that verify of a
  // 128-expert layer holds a few experts, not all of them.
  reference::DenseMoeLayer dense;
  std::vector<uint16_t> router_weight; // [E, H] bf16
  std::vector<uint16_t> router_bias;   // [E] bf16 or empty
  reference::RouterConfig router;      // with per-layer tensors (correction bias, expert scales)
};

class ModelAdapter {
 public:
  virtual ~ModelAdapter() = default;
  virtual std::string family() const = 0;
  virtual const ModelInfo& info() const = 0;
  // Every MoE layer, in layer order. Throws BadInput naming a missing or mis-shaped tensor, or
  // an unknown tensor inside an expert block.
  virtual std::vector<MoeLayer> moe_layers() const = 0;
  // The reference data of one layer for verify's numerics stage. `experts_needed` lists the
  // experts whose dense weights must be filled in (others may be left zero), so that verify of
  // a large model stays within memory.
  virtual LayerReference layer_reference(int64_t layer, const std::vector<int32_t>& experts_needed) const = 0;
  // Router weights only: enough to route and so to know which experts are needed.
  virtual LayerReference layer_router(int64_t layer) const = 0;
};

// Picks the adapter for a checkpoint from its config.json. Throws BadInput: no config.json; a
// dense (non-MoE) model ("nothing to convert"); an MoE model_type without an adapter (listing
// the supported ones).
std::unique_ptr<ModelAdapter> make_adapter(const io::Checkpoint& checkpoint);

}  // namespace moeprep::models
