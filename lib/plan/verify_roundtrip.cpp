// Stage 4: undo every recorded step and compare bytes with the source.
#include <cstring>

#include "core/error.h"
#include "core/hash.h"
#include "io/page_release.h"
#include "layout/recipe.h"
#include "plan/manifest_model.h"
#include "plan/verify_stages.h"

namespace moeprep::plan {
namespace {

// Large tensors are undone a slice of experts at a time, with the recipe rebuilt for the
// slice: only possible when the recorded steps are the canonical ones for the layout.
constexpr uint64_t kUndoChunkBytes = 64ull << 20;

std::string ref(const ManifestTensor& t) { return t.shard + ": tensor '" + t.name + "'"; }

// Returns an empty string when equal, else where the first difference is.
std::string compare_bytes(const uint8_t* a, const uint8_t* b, size_t n, uint64_t base) {
  if (std::memcmp(a, b, n) == 0) return {};
  for (size_t i = 0; i < n; ++i)
    if (a[i] != b[i]) return "first difference at source byte " + std::to_string(base + i);
  return {};
}

std::string undo_whole(const ManifestTensor& t, io::ByteView out, io::ByteView src, const io::TensorInfo& src_info) {
  const layout::Recipe recipe = layout::Recipe::from_json(t.steps);
  ByteTensor physical;
  physical.dtype = t.dtype;
  physical.shape = t.shape;
  physical.bytes.assign(out.data, out.data + out.size);
  ByteTensor restored = recipe.undo(physical, src_info.shape, src_info.dtype);
  if (restored.dtype != src_info.dtype || restored.shape != src_info.shape || restored.bytes.size() != src.size)
    return "undoing the steps gives " + std::string(dtype_name(restored.dtype)) + " " +
           shape_to_string(restored.shape) + ", the source is " + dtype_name(src_info.dtype) + " " +
           shape_to_string(src_info.shape);
  return compare_bytes(restored.bytes.data(), src.data, src.size, 0);
}

std::string undo_by_experts(const Manifest& m, const ManifestTensor& t, ExpertRole role, io::ByteView out,
                            io::ByteView src, const std::string& context) {
  const ConvertOptions options = options_from_manifest(m, context);
  ExpertDims dims = dims_from_manifest(m, context);
  const int64_t experts = dims.experts;
  const uint64_t in_per = src.size / experts, out_per = out.size / experts;
  const int64_t per_chunk = std::max<int64_t>(1, static_cast<int64_t>(kUndoChunkBytes / std::max<uint64_t>(out_per, 1)));
  for (int64_t e = 0; e < experts; e += per_chunk) {
    const int64_t n = std::min(per_chunk, experts - e);
    dims.experts = n;
    const RecipeSpec spec = aiter_gpt_oss_recipe(role, dims, options);
    ByteTensor physical;
    physical.dtype = spec.out_dtype;
    physical.shape = spec.out_shape;
    physical.bytes.assign(out.data + out_per * e, out.data + out_per * (e + n));
    ByteTensor restored = spec.recipe.undo(physical, spec.in_shape, spec.in_dtype);
    std::string diff = compare_bytes(restored.bytes.data(), src.data + in_per * e, in_per * n, in_per * e);
    if (!diff.empty()) return diff + " (expert " + std::to_string(e) + ".." + std::to_string(e + n - 1) + ")";
  }
  return {};
}

}  // namespace

void check_round_trip(const OpenedDestination& dst, const io::Checkpoint& source, StageReport& r,
                      ProgressSink& progress) {
  const Manifest& m = dst.manifest;
  const std::string context = (dst.checkpoint.root() / kManifestFileName).string();
  uint64_t total = 0, done = 0;
  for (const auto& t : m.tensors) total += t.data_end - t.data_begin;
  progress.start("round trip", total);
  for (const auto& t : m.tensors) {
    ++r.checked;
    const io::LocatedTensor* out_loc = dst.checkpoint.try_find(t.name);
    const io::LocatedTensor* src_loc = source.try_find(t.source.name);
    if (!out_loc) continue;  // reported by the structure stage
    if (!src_loc) {
      r.fail(ref(t) + ": its source tensor '" + t.source.name + "' is not in " + source.root().string());
      continue;
    }
    const io::ByteView out = dst.checkpoint.data(*out_loc);
    const io::ByteView src = source.data(*src_loc);
    if (xxh3_128_hex(src.data, src.size) != t.source.xxh3_128) {
      r.fail(ref(t) + ": source tensor '" + t.source.name + "' differs from the one that was converted");
      continue;
    }
    std::string diff;
    try {
      if (!t.transformed) {
        diff = out.size != src.size ? "sizes differ" : compare_bytes(out.data, src.data, src.size, 0);
      } else {
        auto role = role_from_name(t.role);
        bool canonical = false;
        if (role && out.size > kUndoChunkBytes) {
          const RecipeSpec spec = aiter_gpt_oss_recipe(*role, dims_from_manifest(m, context), options_from_manifest(m, context));
          canonical = nlohmann::json::parse(spec.recipe.to_json().dump()) == nlohmann::json::parse(t.steps.dump()) &&
                      spec.recipe.expert_separable();
        }
        diff = canonical ? undo_by_experts(m, t, *role, out, src, context) : undo_whole(t, out, src, *src_loc->info);
      }
    } catch (const Error& e) {
      diff = std::string("undo failed: ") + e.what();
    }
    if (!diff.empty()) r.fail(ref(t) + ": round trip to '" + t.source.name + "' is not exact: " + diff);
    io::release_mapped_pages(out);
    io::release_mapped_pages(src);
    done += out.size;
    progress.advance(done, t.name);
  }
  progress.finish();
  r.status = r.failed ? StageStatus::Failed : StageStatus::Passed;
}

}  // namespace moeprep::plan
