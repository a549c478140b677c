#include "models/synth_writer.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <map>

#include "core/error.h"
#include "core/hash.h"
#include "core/random.h"
#include "formats/bf16.h"
#include "formats/fp8_e4m3.h"
#include "io/atomic_dir.h"
#include "io/checkpoint.h"
#include "io/safetensors_writer.h"

namespace moeprep::models::synth {
namespace {

uint64_t tensor_seed(uint64_t seed, const std::string& name) {
  const std::string key = std::to_string(seed) + ":" + name;
  return std::stoull(xxh3_128_hex(key.data(), key.size()).substr(0, 16), nullptr, 16);
}

double draw(SplitMix64& rng, const Tensor& t) {
  const double n = rng.normal();
  return t.fill == Fill::LogNormal ? t.mean * std::exp(t.stddev * n) : t.mean + t.stddev * n;
}

void put_le(std::vector<uint8_t>& buf, size_t at, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) buf[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

void stream_tensor(const Tensor& t, const io::PlannedTensor& planned, uint64_t seed, io::ShardWriter& writer) {
  SplitMix64 rng(tensor_seed(seed, t.name));
  const uint64_t total = planned.byte_length();
  const int width = t.dtype == Dtype::F32 ? 4 : t.dtype == Dtype::BF16 ? 2 : 1;
  std::vector<uint8_t> buf(static_cast<size_t>(std::min<uint64_t>(total, 1 << 22)));
  uint64_t done = 0;
  while (done < total) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), total - done));
    if (t.fill == Fill::RandomBytes) {
      // Eight bytes per draw; chunks are multiples of 8, so chunking never shifts the stream.
      for (size_t i = 0; i < n; i += 8) {
        const uint64_t r = rng.next();
        for (size_t j = 0; j < 8 && i + j < n; ++j) buf[i + j] = static_cast<uint8_t>(r >> (8 * j));
      }
      writer.write(buf.data(), n);
      done += n;
      continue;
    }
    if (t.fill == Fill::ByteRange) {
      const uint64_t span = static_cast<uint64_t>(t.byte_max - t.byte_min + 1);
      for (size_t i = 0; i < n; ++i) buf[i] = static_cast<uint8_t>(t.byte_min + rng.below(span));
      writer.write(buf.data(), n);
      done += n;
      continue;
    }
    for (size_t i = 0; i < n; i += width) {
      const float v = static_cast<float>(draw(rng, t));
      if (t.dtype == Dtype::F32) {
        uint32_t u;
        std::memcpy(&u, &v, 4);
        put_le(buf, i, u, 4);
      } else if (t.dtype == Dtype::BF16) {
        put_le(buf, i, float_to_bf16(v), 2);
      } else {
        buf[i] = float_to_fp8_e4m3(v);
      }
    }
    writer.write(buf.data(), n);
    done += n;
  }
}

}  // namespace

uint8_t float_to_fp8_e4m3(float value) {
  // Magnitudes of codes 0..126 increase with the code: search them, then pick the nearer.
  const float a = std::fabs(value);
  const uint8_t sign = std::signbit(value) ? 0x80 : 0;
  if (!(a < 448.0f)) return static_cast<uint8_t>(sign | 0x7e);
  uint8_t lo = 0, hi = 0x7e;
  while (hi - lo > 1) {
    const uint8_t mid = static_cast<uint8_t>((lo + hi) / 2);
    (fp8_e4m3_to_float(mid) <= a ? lo : hi) = mid;
  }
  const float dl = a - fp8_e4m3_to_float(lo), dh = fp8_e4m3_to_float(hi) - a;
  const uint8_t code = dl < dh ? lo : dh < dl ? hi : ((lo & 1) ? hi : lo);
  return static_cast<uint8_t>(sign | code);
}

void check_options(const Options& o) {
  auto positive = [](int64_t v, const char* what) {
    if (v <= 0) throw_usage(std::string("synthetic checkpoint: ") + what + " must be positive");
  };
  positive(o.layers, "layers");
  positive(o.experts, "experts");
  positive(o.hidden, "hidden");
  positive(o.intermediate, "intermediate");
  positive(o.top_k, "top_k");
  positive(o.vocab, "vocab");
  if (o.hidden % 32 || o.intermediate % 32)
    throw_usage("synthetic checkpoint: hidden and intermediate must be multiples of 32 (MXFP4 blocks)");
  if (o.top_k > o.experts) throw_usage("synthetic checkpoint: top_k exceeds the number of experts");
}

uint64_t write(const std::filesystem::path& destination, const Checkpoint& checkpoint, const Options& options,
               bool replace_existing) {
  std::vector<Tensor> tensors = checkpoint.tensors;
  std::sort(tensors.begin(), tensors.end(), [](const Tensor& a, const Tensor& b) { return a.name < b.name; });
  std::vector<io::PlannedTensor> planned;
  uint64_t total = 0;
  for (const auto& t : tensors) {
    const bool byte_fill = t.fill == Fill::RandomBytes || t.fill == Fill::ByteRange;
    if (byte_fill ? t.dtype != Dtype::U8 : (t.dtype != Dtype::BF16 && t.dtype != Dtype::F32 && t.dtype != Dtype::F8_E4M3))
      throw_internal("synthetic tensor '" + t.name + "' has an unsupported dtype for its fill");
    if (t.fill == Fill::ByteRange && (t.byte_min < 0 || t.byte_max > 255 || t.byte_min > t.byte_max))
      throw_internal("synthetic tensor '" + t.name + "' has an empty byte range");
    planned.push_back({t.name, t.dtype, t.shape});
    total += planned.back().byte_length();
  }
  // Default: two shards (the greedy split of a bound of 60% leaves the rest for a second one).
  const uint64_t bound = options.max_shard_size ? options.max_shard_size : total / 10 * 6 + 1;
  std::vector<io::ShardPlan> shards = io::plan_shards(planned, bound);
  for (auto& s : shards) s.metadata["format"] = "pt";

  io::remove_stale_staging(destination);
  io::AtomicOutputDir out(destination, replace_existing);
  std::map<std::string, std::string> weight_map;
  size_t next = 0;
  for (const auto& shard : shards) {
    io::ShardWriter writer(out.staging() / shard.file_name, shard);
    for (const auto& pt : shard.tensors) {
      writer.begin_tensor(pt.name);
      stream_tensor(tensors[next++], pt, options.seed, writer);
      writer.end_tensor();
      weight_map[pt.name] = shard.file_name;
    }
    writer.finish();
  }
  io::write_index_file(out.staging() / io::kIndexFileName, weight_map, total);
  out.write_file(io::kConfigFileName, checkpoint.config.dump(2) + "\n");
  out.commit();
  return total;
}

void add(std::vector<Tensor>& out, std::string name, Shape shape, double stddev, double mean, Dtype dtype) {
  Tensor t;
  t.name = std::move(name);
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.mean = mean;
  t.stddev = stddev;
  out.push_back(std::move(t));
}

void add_norm(std::vector<Tensor>& out, const std::string& name, int64_t size) {
  add(out, name, {size}, 0.02, 1.0);
}

void add_decoder_ends(std::vector<Tensor>& out, int64_t vocab, int64_t hidden) {
  add(out, "model.embed_tokens.weight", {vocab, hidden});
  add(out, "lm_head.weight", {vocab, hidden});
  add_norm(out, "model.norm.weight", hidden);
}

void add_layer_norms(std::vector<Tensor>& out, const std::string& prefix, int64_t hidden) {
  add_norm(out, prefix + "input_layernorm.weight", hidden);
  add_norm(out, prefix + "post_attention_layernorm.weight", hidden);
}

void add_attention(std::vector<Tensor>& out, const std::string& prefix, int64_t hidden, const AttentionShape& a) {
  const int64_t q = a.heads * a.head_dim, kv = a.kv_heads * a.head_dim;
  add(out, prefix + "q_proj.weight", {q, hidden});
  add(out, prefix + "k_proj.weight", {kv, hidden});
  add(out, prefix + "v_proj.weight", {kv, hidden});
  add(out, prefix + "o_proj.weight", {hidden, q});
  if (a.bias) {
    add(out, prefix + "q_proj.bias", {q});
    add(out, prefix + "k_proj.bias", {kv});
    add(out, prefix + "v_proj.bias", {kv});
  }
  if (a.qk_norm) {
    add_norm(out, prefix + "q_norm.weight", a.head_dim);
    add_norm(out, prefix + "k_norm.weight", a.head_dim);
  }
}

double router_stddev(int64_t hidden) { return 2.0 / std::sqrt(static_cast<double>(hidden)); }

nlohmann::ordered_json provenance(const Options& o) {
  return {{"seed", o.seed}, {"generator", "moeprep generate"}};
}

}  // namespace moeprep::models::synth
