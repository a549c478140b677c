#include "plan/convert.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <sstream>

#include "core/error.h"
#include "core/hash.h"
#include "core/uninitialized_bytes.h"
#include "core/worker_pool.h"
#include "core/version.h"
#include "io/atomic_dir.h"
#include "io/mapped_input_guard.h"
#include "io/page_release.h"
#include "io/shard_file.h"
#include "io/safetensors_writer.h"
#include "models/activation_config.h"
#include "plan/expert_chunks.h"
#include "plan/fused_scale_recipe.h"
#include "plan/fused_weight_recipe.h"

namespace moeprep::plan {
namespace {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

std::string read_small_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_io(path.string() + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw_io(path.string() + ": read failed");
  return ss.str();
}

// One piece of work for the ordered pipeline: a chunk of one job.
struct Unit {
  size_t job = 0;
  size_t shard = 0;           // index into the plan's shards
  uint64_t out_offset = 0;    // of this unit's bytes within the shard's data area
  ExpertChunk chunk;  // transformed tensors: the experts of this unit
  ChunkBytes bytes;   // the unit's ranges of the source and output tensor
  bool first_of_job = false, last_of_job = false;
};

// What a worker hands back: the output bytes of the unit (or a view of the source for copies).
struct UnitOutput {
  UninitializedBytes pooled;   // the one-pass paths' output, in a reused buffer
  std::vector<uint8_t> owned;  // a recipe's result
  const uint8_t* data = nullptr;
  size_t size = 0;
};

// Output buffers are reused: a fresh 8 MiB buffer per unit costs a page fault per 4 KiB page
// (about a fifth of convert's CPU time at 1 GB/s). They are never zero-filled: the one-pass
// paths write every byte of their output. At most the in-flight units' buffers are kept.
class BufferPool {
 public:
  static constexpr size_t kMaxPooledBytes = 2 * kTargetChunkBytes;

  UninitializedBytes take(size_t size) {
    UninitializedBytes b;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!free_.empty()) {
        // The largest: a weight unit that took a scale unit's small buffer would grow it into
        // fresh pages (4-5% of convert's CPU time, measured, when growing zero-filled them)
        // while a large one waited.
        auto largest = std::max_element(free_.begin(), free_.end(),
                                        [](const auto& x, const auto& y) { return x.capacity() < y.capacity(); });
        b = std::move(*largest);
        free_.erase(largest);
      }
    }
    b.resize_discarding(size);  // new storage only past the largest size seen
    return b;
  }
  void give_back(UninitializedBytes&& b) {
    // Whole-tensor units (scales of the separated layout: 66 MB for gpt-oss-120b) are rare;
    // keeping their buffers would let every pooled buffer grow to that size.
    if (b.capacity() == 0 || b.capacity() > kMaxPooledBytes) return;
    std::lock_guard<std::mutex> lock(mutex_);
    free_.push_back(std::move(b));
  }

 private:
  std::mutex mutex_;
  std::vector<UninitializedBytes> free_;
};

UnitOutput run_unit(const ConvertPlan& plan, const TensorJob& job, const Unit& unit, io::ByteView src,
                    BufferPool& pool) {
  UnitOutput out;
  const ChunkBytes& cb = unit.bytes;
  if (!job.transformed) {
    out.data = src.data + cb.in_begin;
    out.size = cb.in_size;
    return out;
  }
  const RecipeSpec spec = chunk_recipe(plan, job, unit.chunk);
  // The unit's experts: [first, first + dims.experts).
  const int64_t first = unit.chunk.whole ? 0 : unit.chunk.first;
  ExpertDims dims = plan.dims;
  dims.experts = unit.chunk.whole ? plan.dims.experts : unit.chunk.count;
  const bool fused_weight = has_fused_weight_recipe(job.role, dims, plan.options);
  const bool fused = fused_weight || has_fused_scale_recipe(job.role, dims, plan.options, plan.gate_up_interleaved);
  // The one-pass paths: from the map (MXFP4 sources) or from the assembled canonical slice
  // (quantized or stacked sources), straight into a reused buffer.
  auto write_fused = [&](const uint8_t* in, size_t in_size) {
    out.pooled = pool.take(cb.out_size);
    const auto write = fused_weight ? write_weight_recipe_fused : write_scale_recipe_fused;
    write(job.role, dims, plan.options, plan.gate_up_interleaved, in, in_size, out.pooled.data(), out.pooled.size());
    out.data = out.pooled.data();
    out.size = out.pooled.size();
  };
  if (job.reads_source_directly()) {
    io::populate_mapped_pages({src.data + cb.in_begin, cb.in_size});
    if (fused) {
      write_fused(src.data + cb.in_begin, cb.in_size);
      return out;
    }
  }
  if (!job.reads_source_directly() && fused_weight && job.canonical.assemble_codes) {
    // Quantizing sources put their codes straight into the shuffled output.
    out.pooled = pool.take(cb.out_size);
    write_weight_recipe_fused_from_codes(job.role, dims, plan.options, plan.gate_up_interleaved, out.pooled.data(),
                                         out.pooled.size(), [&](const models::CodeRowDestination& to) {
                                           job.canonical.assemble_codes(first, dims.experts, to);
                                         });
    out.data = out.pooled.data();
    out.size = out.pooled.size();
    return out;
  }
  if (!job.reads_source_directly() && fused && job.canonical.use_assembled &&
      job.canonical.use_assembled(first, dims.experts, write_fused))
    return out;
  ByteTensor in;
  if (job.reads_source_directly()) {
    in.dtype = spec.in_dtype;
    in.shape = spec.in_shape;
    in.bytes.assign(src.data + cb.in_begin, src.data + cb.in_begin + cb.in_size);
  } else {
    in = job.canonical.assemble(first, dims.experts);
    if (in.dtype != spec.in_dtype || in.shape != spec.in_shape)
      throw_internal("assembled source of '" + job.output_name + "' is " + dtype_name(in.dtype) + " " +
                     shape_to_string(in.shape) + ", expected " + shape_to_string(spec.in_shape));
    if (fused) {
      write_fused(in.bytes.data(), in.bytes.size());
      return out;
    }
  }
  ByteTensor result = spec.recipe.apply(in);
  if (result.bytes.size() != cb.out_size)
    throw_internal("recipe for '" + job.output_name + "' produced " + std::to_string(result.bytes.size()) +
                   " bytes, planned " + std::to_string(cb.out_size));
  out.owned = std::move(result.bytes);
  out.data = out.owned.data();
  out.size = out.owned.size();
  return out;
}

// XXH3-128 of a whole checkpoint tensor, its pages released afterwards.
ManifestSourceTensor hash_source_tensor(const io::Checkpoint& source, const std::string& name) {
  const io::LocatedTensor& t = source.find(name);
  const io::ByteView b = source.data(t);
  ManifestSourceTensor m{name, t.info->dtype, t.info->shape, xxh3_128_hex(b.data, b.size)};
  io::release_mapped_pages(b);
  return m;
}

// A copied tensor is cut into slices of the same size as the transformed ones: each is a view
// of the memory-mapped source that a worker writes straight from the map (pwrite), with no
// copy of its own, and whose pages are released once hashed, so a large embedding never
// sits in memory whole.
std::vector<ChunkBytes> copy_slices(uint64_t bytes) {
  std::vector<ChunkBytes> slices;
  for (uint64_t at = 0; at < bytes || slices.empty(); at += kTargetChunkBytes) {
    const uint64_t n = std::min(kTargetChunkBytes, bytes - at);
    slices.push_back({at, n, at, n});
  }
  return slices;
}

ordered_json model_json(const ConvertPlan& plan) {
  const auto& m = plan.model;
  ordered_json j;
  j["family"] = m.family;
  j["model_type"] = m.model_type;
  j["layers"] = m.layers;
  j["experts"] = m.experts;
  j["hidden"] = m.hidden;
  j["intermediate"] = m.intermediate;
  j["hidden_pad"] = plan.dims.hidden_pad;
  j["intermediate_pad"] = plan.dims.intermediate_pad;
  j["gate_mode"] = gate_mode_name(plan.options.gate_mode);
  j["source_gate_up_interleaved"] = plan.gate_up_interleaved;
  j["router"] = m.router.to_json();
  // Non-gated experts (relu^2) have no gate rows: w13 is [E, I', ...]. Manifests without the
  // key were written before moeprep had non-gated experts and read as gated.
  j["gated"] = plan.dims.gated;
  j["activation"] = {{"kind", models::activation_kind_name(m.activation.kind)},
                     {"alpha", m.activation.alpha},
                     {"limit", m.activation.limit}};
  return j;
}

}  // namespace

ordered_json source_identity(const io::Checkpoint& source) {
  ordered_json j;
  j["path"] = fs::absolute(source.root()).lexically_normal().string();
  if (source.is_directory()) {
    const std::string config = read_small_file(source.root() / io::kConfigFileName);
    j["config_xxh3_128"] = xxh3_128_hex(config.data(), config.size());
    if (source.has_index()) {
      const std::string index = read_small_file(source.root() / io::kIndexFileName);
      j["index_xxh3_128"] = xxh3_128_hex(index.data(), index.size());
    }
  }
  uint64_t total = 0;
  size_t count = 0;
  for (const auto& shard : source.shards())
    for (const auto& t : shard->tensors()) {
      total += t.byte_length();
      ++count;
    }
  j["tensor_count"] = count;
  j["total_size"] = total;
  return j;
}

// A tensor's digest folded from the block sums its quantizing passes made.
struct OrderedFold {
  std::shared_ptr<models::ExpertBlockSums> sums;
  Xxh3BlockFold fold;
};

Manifest execute_plan(const ConvertPlan& plan, const io::Checkpoint& source, const fs::path& staging,
                      ProgressSink& progress, const std::atomic<bool>* cancel) {
  Manifest manifest;
  manifest.tool_version = kVersion;
  manifest.options = plan.options.to_json();
  manifest.source = source_identity(source);
  manifest.model = model_json(plan);

  // One file per shard, header written up front: workers write their units straight to
  // their planned offsets, in parallel.
  std::vector<std::unique_ptr<io::ShardFile>> files;
  for (const auto& shard : plan.shards) files.push_back(std::make_unique<io::ShardFile>(staging / shard.file_name, shard));

  // The flat, ordered list of units: shards in order, jobs in order, chunks in order.
  std::vector<Unit> units;
  {
    size_t j = 0;
    for (size_t s = 0; s < plan.shards.size(); ++s) {
      for (size_t i = 0; i < plan.shards[s].tensors.size(); ++i, ++j) {
        const TensorJob& job = plan.jobs[j];
        if (job.output_name != plan.shards[s].tensors[i].name) throw_internal("plan order mismatch at " + job.output_name);
        const uint64_t base = files[s]->tensor_offset(i);
        if (!job.transformed) {
          const auto slices = copy_slices(job.in_bytes);
          for (size_t c = 0; c < slices.size(); ++c)
            units.push_back({j, s, base + slices[c].out_begin, {}, slices[c], c == 0, c + 1 == slices.size()});
          continue;
        }
        const auto chunks = expert_chunks(plan, job);
        for (size_t c = 0; c < chunks.size(); ++c) {
          const ChunkBytes cb = chunk_bytes(job, plan.dims.experts, chunks[c]);
          units.push_back({j, s, base + cb.out_begin, chunks[c], cb, c == 0, c + 1 == chunks.size()});
        }
      }
    }
  }
  // Direct sources are read from the map by the workers; assembled ones by their adapter.
  std::vector<io::ByteView> sources(plan.jobs.size());
  for (size_t j = 0; j < plan.jobs.size(); ++j)
    if (plan.jobs[j].reads_source_directly())
      sources[j] = source.data(source.find(plan.jobs[j].source_tensors().front()));

  // Tensors whose slices the quantizing passes can sum for their digest (ordered_block_sums) are
  // summed from the first unit on: units run ahead of the loop below that folds them.
  for (const TensorJob& job : plan.jobs) {
    if (!job.transformed || job.reads_source_directly() || !job.canonical.expert_ordered_bytes ||
        !job.canonical.ordered_block_sums)
      continue;
    for (const auto& named : job.canonical.expert_ordered_bytes(0, 0))
      if (const auto sums = job.canonical.ordered_block_sums(*named.first)) sums->want();
  }

  // Workers compute and write units ahead of the main thread, which hashes them strictly in
  // order (so hashes never depend on the thread count) and then frees them. In-flight units
  // bound memory.
  const size_t in_flight = static_cast<size_t>(std::max(2, plan.options.threads + 1));
  BufferPool pool;
  std::deque<std::future<UnitOutput>> pending;
  // Declared last, so destroyed first: on an error it waits for the units still running
  // (they use the files, the buffer pool and the plan) and drops the queued ones.
  WorkerPool workers(plan.options.threads);
  size_t next_unit = 0;
  const auto all_done = [&pending] {
    return std::all_of(pending.begin(), pending.end(), [](const std::future<UnitOutput>& f) {
      return f.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
    });
  };
  auto launch_more = [&] {
    while (next_unit < units.size() && pending.size() < in_flight) {
      const Unit& u = units[next_unit];
      const TensorJob& job = plan.jobs[u.job];
      // A unit that may use what earlier units hand over (the scales their quantizing pass kept)
      // starts once they are done: started beside the last of them, it found some experts'
      // scales not handed over yet and recomputed them from the source (DeepSeek's w13 and w2
      // scales, every time, eleventh session).
      if (job.canonical.use_assembled && !all_done()) return;
      const io::ByteView src = sources[u.job];
      io::ShardFile* file = files[u.shard].get();
      pending.push_back(workers.submit([&plan, &job, u, src, file, &pool] {
        UnitOutput out = run_unit(plan, job, u, src, pool);
        file->write_at(u.out_offset, out.data, out.size);
        return out;
      }));
      ++next_unit;
    }
  };

  progress.start("convert", plan.total_in_bytes);
  uint64_t done = 0;
  size_t job_index = 0;
  size_t unit_index = 0;
  std::map<std::string, std::string> weight_map;
  std::map<std::string, std::string> streamed_digests;  // source tensor -> XXH3-128, hashed slice by slice
  for (size_t shard_index = 0; shard_index < plan.shards.size(); ++shard_index) {
    const auto& shard = plan.shards[shard_index];
    uint64_t offset = 0;
    for (size_t i = 0; i < shard.tensors.size(); ++i, ++job_index) {
      const TensorJob& job = plan.jobs[job_index];
      Xxh3Hasher source_hash, out_hash;
      // Source tensors that hold every expert in order and that nothing hashed yet: hashed here a
      // slice at a time, in order, as their units come up (another job over the same tensor,
      // e.g. the scales after the blocks, finds the digest).
      std::map<std::string, Xxh3Hasher> ordered_hashes;
      // Those whose quantizing passes sum their blocks: folded once each unit is done.
      std::map<std::string, OrderedFold> ordered_folds;
      if (job.transformed && !job.reads_source_directly() && job.canonical.expert_ordered_bytes) {
        for (const auto& [name, bytes] : job.canonical.expert_ordered_bytes(0, 0)) {
          const bool known = streamed_digests.count(*name) != 0 ||
                             (job.canonical.source_digest && !job.canonical.source_digest(*name).empty());
          if (known) continue;
          auto sums = job.canonical.ordered_block_sums ? job.canonical.ordered_block_sums(*name) : nullptr;
          if (sums) {
            const uint64_t length = sums->length();
            ordered_folds.emplace(*name, OrderedFold{std::move(sums), Xxh3BlockFold(length)});
          } else {
            ordered_hashes.try_emplace(*name);
          }
        }
      }
      while (true) {
        if (cancel && cancel->load()) throw Error(ErrorKind::Io, "interrupted; nothing was written to the destination");
        launch_more();
        const Unit unit = units[unit_index++];
        const ChunkBytes& cb = unit.bytes;
        // The unit's [E, ...] source slices, hashed while a worker may still be reading them (then
        // one of the two finds them in cache: 2-3% less CPU for GPT-OSS BF16 and Gemma4 on the
        // dev VM than hashing them after); their pages go once the worker is done.
        std::vector<io::ByteView> hashed_slices;
        std::vector<std::pair<OrderedFold*, io::ByteView>> folded_slices;
        const int64_t first = unit.chunk.whole ? 0 : unit.chunk.first;
        const int64_t count = unit.chunk.whole ? plan.dims.experts : unit.chunk.count;
        if (!ordered_hashes.empty() || !ordered_folds.empty()) {
          for (const auto& [name, bytes] : job.canonical.expert_ordered_bytes(first, count)) {
            if (const auto it = ordered_hashes.find(*name); it != ordered_hashes.end()) {
              it->second.update(bytes.data, bytes.size);
              hashed_slices.push_back(bytes);
            } else if (const auto f = ordered_folds.find(*name); f != ordered_folds.end()) {
              folded_slices.emplace_back(&f->second, bytes);
              hashed_slices.push_back(bytes);
            }
          }
        }
        UnitOutput out = pending.front().get();
        pending.pop_front();
        launch_more();
        // The unit's pass has summed its experts' blocks by now.
        for (auto& [fold, bytes] : folded_slices) fold->sums->fold(fold->fold, first, count, bytes.data);
        // Bytes read from an input that was truncated meanwhile are zeros, not the input.
        io::throw_if_mapped_input_changed();
        out_hash.update(out.data, out.size);
        if (job.reads_source_directly()) {
          // A copy's output bytes are its source bytes: hashed once, the digest used twice.
          if (job.transformed) source_hash.update(sources[job_index].data + cb.in_begin, cb.in_size);
          // Consumed: let the source pages go (the units already in flight read other slices).
          io::release_mapped_pages({sources[job_index].data + cb.in_begin, cb.in_size});
        }
        for (const io::ByteView& bytes : hashed_slices) io::release_mapped_pages(bytes);
        pool.give_back(std::move(out.pooled));
        done += cb.in_size;
        progress.advance(done, job.output_name);
        if (unit.last_of_job) break;
      }
      ManifestTensor t;
      t.name = job.output_name;
      t.shard = shard.file_name;
      t.dtype = job.out_dtype;
      t.shape = job.out_shape;
      t.logical_shape = job.transformed ? logical_shape(job.role, plan.dims) : job.out_shape;
      t.data_begin = offset;
      t.data_end = offset + job.out_bytes;
      offset = t.data_end;
      t.xxh3_128 = out_hash.hex_digest();
      t.transformed = job.transformed;
      if (job.reads_source_directly()) {
        const auto& info = *source.find(job.source_tensors().front()).info;
        const std::string digest = job.transformed ? source_hash.hex_digest() : t.xxh3_128;
        t.sources = {{job.source_tensors().front(), info.dtype, info.shape, digest}};
      } else {
        for (auto& [name, hasher] : ordered_hashes) streamed_digests[name] = hasher.hex_digest();
        for (auto& [name, fold] : ordered_folds) {
          // XXH3's last stripe: the tensor's last 64 bytes, in its last expert.
          for (const auto& [tensor, bytes] : job.canonical.expert_ordered_bytes(plan.dims.experts - 1, 1))
            if (*tensor == name) streamed_digests[name] = fold.fold.hex_digest(bytes.data + bytes.size - 64);
          fold.sums->release();
        }
        for (const auto& name : job.source_tensors()) {
          // Adapters that hashed a tensor while assembling it save a second pass over it, and
          // so do the tensors hashed above.
          const auto streamed = streamed_digests.find(name);
          const std::string digest = streamed != streamed_digests.end() ? streamed->second
                                     : job.canonical.source_digest ? job.canonical.source_digest(name)
                                                                   : "";
          if (digest.empty()) {
            t.sources.push_back(hash_source_tensor(source, name));
          } else {
            const auto& info = *source.find(name).info;
            t.sources.push_back({name, info.dtype, info.shape, digest});
          }
        }
        t.source_transform = job.canonical.transform;
        if (job.canonical.quantization) t.quantization_rel_error = job.canonical.quantization->relative_error();
      }
      if (job.transformed) {
        t.is_shuffled = job.spec.shuffled;
        t.layout = job.spec.layout_id;
        t.gate_mode = gate_mode_name(plan.options.gate_mode);
        t.role = role_name(job.role);
        t.layer = job.layer;
        t.steps = job.spec.recipe.to_json();
      }
      manifest.tensors.push_back(std::move(t));
      weight_map[job.output_name] = shard.file_name;
    }
    files[shard_index]->finish();
    const std::string header = io::encode_header(shard);
    manifest.shards.push_back({shard.file_name, header.size() + offset, xxh3_128_hex(header.data(), header.size())});
  }
  progress.finish();
  io::write_index_file(staging / io::kIndexFileName, weight_map, plan.total_out_bytes);
  const std::string index_text = read_small_file(staging / io::kIndexFileName);
  manifest.index_xxh3_128 = xxh3_128_hex(index_text.data(), index_text.size());
  for (const auto& name : plan.extra_files) {
    const std::string contents = read_small_file(source.root() / name);
    std::ofstream out(staging / name, std::ios::binary);
    out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
    out.close();
    if (!out) throw_io((staging / name).string() + ": write failed");
    manifest.files.push_back({name, xxh3_128_hex(contents.data(), contents.size()), contents.size()});
  }
  return manifest;
}

ConvertSummary convert_checkpoint(const ConvertRequest& request, ProgressSink& progress) {
  const io::Checkpoint source = io::Checkpoint::open(request.source);
  const ConvertPlan plan = build_plan(source, request.options);
  io::DestinationLock lock(request.destination);
  io::remove_stale_staging(request.destination);
  io::AtomicOutputDir out(request.destination, request.replace_existing);
  ConvertSummary summary;
  summary.manifest = execute_plan(plan, source, out.staging(), progress, request.cancel);
  out.write_file(kManifestFileName, summary.manifest.serialize());
  out.commit();
  summary.bytes_in = plan.total_in_bytes;
  summary.bytes_out = plan.total_out_bytes;
  summary.shards = plan.shards.size();
  for (const auto& j : plan.jobs) (j.transformed ? summary.transformed : summary.copied)++;
  return summary;
}

}  // namespace moeprep::plan
