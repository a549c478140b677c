// Stage 4: undo every recorded step and compare bytes with the source (for sources that
// moeprep quantized: with a fresh quantization of the source).
#include <cstring>
#include <map>

#include "core/error.h"
#include "core/hash.h"
#include "io/page_release.h"
#include "layout/recipe.h"
#include "models/adapter.h"
#include "plan/manifest_model.h"
#include "plan/verify_stages.h"

namespace moeprep::plan {
namespace {

// Large tensors are undone a slice of experts at a time, with the recipe rebuilt for the
// slice: only possible when the recorded steps are the canonical ones for the layout.
constexpr uint64_t kUndoChunkBytes = 64ull << 20;

std::string ref(const ManifestTensor& t) { return t.shard + ": tensor '" + t.name + "'"; }

// Empty when equal, else where the first difference is.
std::string compare_bytes(const uint8_t* a, const uint8_t* b, size_t n, uint64_t base) {
  if (std::memcmp(a, b, n) == 0) return {};
  for (size_t i = 0; i < n; ++i)
    if (a[i] != b[i]) return "first difference at source byte " + std::to_string(base + i);
  return {};
}

// Experts [first, first + count) of a tensor's canonical source.
using CanonicalSlice = std::function<ByteTensor(int64_t first, int64_t count)>;

std::string undo_and_compare(const Manifest& m, const ManifestTensor& t, io::ByteView out, const CanonicalSlice& canonical,
                             Dtype in_dtype, const Shape& in_shape, const std::string& context) {
  const auto role = role_from_name(t.role);
  const int64_t experts = dims_from_manifest(m, context).experts;
  bool by_experts = false;
  if (role && out.size > kUndoChunkBytes) {
    const RecipeSpec spec = manifest_recipe(m, *role, context);
    by_experts = nlohmann::json::parse(spec.recipe.to_json().dump()) == nlohmann::json::parse(t.steps.dump()) &&
                 spec.recipe.expert_separable();
  }
  if (!by_experts) {
    const layout::Recipe recipe = layout::Recipe::from_json(t.steps);
    ByteTensor physical{t.dtype, t.shape, std::vector<uint8_t>(out.data, out.data + out.size)};
    const ByteTensor restored = recipe.undo(physical, in_shape, in_dtype);
    const ByteTensor expect = canonical(0, experts);
    if (restored.dtype != expect.dtype || restored.shape != expect.shape || restored.bytes.size() != expect.bytes.size())
      return "undoing the steps gives " + std::string(dtype_name(restored.dtype)) + " " +
             shape_to_string(restored.shape) + ", the source is " + dtype_name(expect.dtype) + " " +
             shape_to_string(expect.shape);
    return compare_bytes(restored.bytes.data(), expect.bytes.data(), expect.bytes.size(), 0);
  }
  const uint64_t out_per = out.size / experts;
  const int64_t per_chunk = std::max<int64_t>(1, static_cast<int64_t>(kUndoChunkBytes / std::max<uint64_t>(out_per, 1)));
  for (int64_t e = 0; e < experts; e += per_chunk) {
    const int64_t n = std::min(per_chunk, experts - e);
    const RecipeSpec spec = manifest_recipe(m, *role, context, n);
    ByteTensor physical{spec.out_dtype, spec.out_shape,
                        std::vector<uint8_t>(out.data + out_per * e, out.data + out_per * (e + n))};
    const ByteTensor restored = spec.recipe.undo(physical, spec.in_shape, spec.in_dtype);
    const ByteTensor expect = canonical(e, n);
    if (restored.bytes.size() != expect.bytes.size()) return "slice sizes differ at expert " + std::to_string(e);
    std::string diff = compare_bytes(restored.bytes.data(), expect.bytes.data(), expect.bytes.size(),
                                     static_cast<uint64_t>(e) * (expect.bytes.size() / n));
    if (!diff.empty()) return diff + " (experts " + std::to_string(e) + ".." + std::to_string(e + n - 1) + ")";
  }
  return {};
}

}  // namespace

void check_round_trip(const OpenedDestination& dst, const io::Checkpoint& source, StageReport& r,
                      ProgressSink& progress) {
  const Manifest& m = dst.manifest;
  const std::string context = (dst.checkpoint.root() / kManifestFileName).string();
  // Assembled (quantized) sources come from the source's own adapter, as convert made them.
  std::unique_ptr<models::ModelAdapter> adapter;
  std::map<std::string, models::CanonicalSource> assembled;  // output name -> canonical source
  auto assembled_source = [&](const ManifestTensor& t) -> const models::CanonicalSource& {
    if (!adapter) {
      adapter = models::make_adapter(source);
      for (const auto& layer : adapter->moe_layers())
        for (const auto& [role, src] : layer.sources) assembled[layer.output_prefix + role_name(role)] = src;
    }
    auto it = assembled.find(t.name);
    if (it == assembled.end()) throw_bad_input("the source's adapter makes no tensor '" + t.name + "'");
    return it->second;
  };

  uint64_t total = 0, done = 0;
  for (const auto& t : m.tensors) total += t.data_end - t.data_begin;
  progress.start("round trip", total);
  for (const auto& t : m.tensors) {
    ++r.checked;
    const io::LocatedTensor* out_loc = dst.checkpoint.try_find(t.name);
    if (!out_loc) continue;  // reported by the structure stage
    const io::ByteView out = dst.checkpoint.data(*out_loc);
    // Every source tensor must be the one that was converted.
    bool sources_ok = true;
    for (const auto& s : t.sources) {
      const io::LocatedTensor* loc = source.try_find(s.name);
      if (!loc) {
        r.fail(ref(t) + ": its source tensor '" + s.name + "' is not in " + source.root().string());
        sources_ok = false;
        continue;
      }
      const io::ByteView b = source.data(*loc);
      if (xxh3_128_hex(b.data, b.size) != s.xxh3_128) {
        r.fail(ref(t) + ": source tensor '" + s.name + "' differs from the one that was converted");
        sources_ok = false;
      }
    }
    if (!sources_ok || t.sources.empty()) continue;
    std::string diff;
    const std::string what = t.source_transform.empty() ? "'" + t.sources.front().name + "'"
                                                        : "a fresh " + t.source_transform + " of its sources";
    try {
      if (!t.transformed) {
        const io::ByteView src = source.data(source.find(t.sources.front().name));
        diff = out.size != src.size ? "sizes differ" : compare_bytes(out.data, src.data, src.size, 0);
      } else if (t.source_transform.empty()) {
        const io::LocatedTensor& loc = source.find(t.sources.front().name);
        const io::ByteView src = source.data(loc);
        const int64_t experts = dims_from_manifest(m, context).experts;
        const uint64_t per = src.size / static_cast<uint64_t>(experts);
        const Shape full = loc.info->shape;
        CanonicalSlice slice = [&](int64_t first, int64_t count) {
          Shape shape = full;
          shape[0] = count;
          return ByteTensor{loc.info->dtype, shape,
                            std::vector<uint8_t>(src.data + per * first, src.data + per * (first + count))};
        };
        diff = undo_and_compare(m, t, out, slice, loc.info->dtype, full, context);
      } else {
        const models::CanonicalSource& cs = assembled_source(t);
        diff = undo_and_compare(m, t, out, cs.assemble, cs.dtype, cs.shape, context);
      }
    } catch (const Error& e) {
      diff = std::string("undo failed: ") + e.what();
    }
    if (!diff.empty()) r.fail(ref(t) + ": round trip to " + what + " is not exact: " + diff);
    io::release_mapped_pages(out);
    for (const auto& s : t.sources)
      if (const auto* loc = source.try_find(s.name)) io::release_mapped_pages(source.data(*loc));
    done += out.size;
    progress.advance(done, t.name);
  }
  progress.finish();
  r.status = r.failed ? StageStatus::Failed : StageStatus::Passed;
}

}  // namespace moeprep::plan
