#include "models/expert_rows.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "core/error.h"
#include "formats/bf16.h"
#include "formats/bf16_transpose.h"
#include "formats/fp8_block_dequant.h"
#include "io/page_release.h"
#include "models/adapter_support.h"

namespace moeprep::models {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

const io::LocatedTensor& expect_bf16(const io::Checkpoint& c, const std::string& name, const Shape& shape,
                                     const std::string& why) {
  expect_tensor(c, name, Dtype::BF16, shape, why);
  return c.find(name);
}

bool aligned16(const uint8_t* p) { return reinterpret_cast<uintptr_t>(p) % alignof(uint16_t) == 0; }

std::string join_labels(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : " + ") + n;
  return s;
}

// Experts [first, first + count) of an [E, ...] tensor of `per` bytes an expert.
std::function<std::vector<std::pair<const std::string*, io::ByteView>>(int64_t, int64_t)> expert_ordered_bytes_of(
    const io::Checkpoint& c, const io::LocatedTensor* t, uint64_t per, const std::string& name) {
  return [&c, t, per, &name](int64_t first, int64_t count) {
    const io::ByteView whole = c.data(*t);
    return std::vector<std::pair<const std::string*, io::ByteView>>{
        {&name, {whole.data + per * static_cast<uint64_t>(first), per * static_cast<uint64_t>(count)}}};
  };
}

}  // namespace

uint8_t* ScaleHandoff::slot(int64_t expert, int64_t experts, size_t per) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (expert < 0 || expert >= experts) throw_internal("scale hand-off: expert " + std::to_string(expert) + " of " +
                                                     std::to_string(experts));
  if (buffer_.size() == 0) {
    buffer_.resize_discarding(static_cast<size_t>(experts) * per);
    kept_.assign(static_cast<size_t>(experts), kNone);
    per_ = per;
    kept_count_ = 0;
  } else if (per != per_ || static_cast<size_t>(experts) != kept_.size()) {
    throw_internal("scale hand-off: slots of " + std::to_string(per) + " bytes for " + std::to_string(experts) +
                   " experts asked of a buffer of " + std::to_string(kept_.size()) + " x " + std::to_string(per_));
  } else if (kept_[static_cast<size_t>(expert)] == kInUse) {
    throw_internal("scale hand-off: expert " + std::to_string(expert) + "'s slot asked for while its scales are in use");
  }
  forget(expert);  // about to be overwritten
  kept_[static_cast<size_t>(expert)] = kWriting;
  ++writing_;
  return buffer_.data() + static_cast<size_t>(expert) * per;
}

void ScaleHandoff::put(int64_t expert) {
  std::lock_guard<std::mutex> lock(mutex_);
  --writing_;
  Slot& kept = kept_.at(static_cast<size_t>(expert));
  if (kept != kKept) ++kept_count_;
  kept = kKept;
}

void ScaleHandoff::abandon(int64_t expert) {
  std::lock_guard<std::mutex> lock(mutex_);
  --writing_;
  forget(expert);  // scales kept from an earlier pass may have been overwritten in part
  release_if_unused();
}

bool ScaleHandoff::take(int64_t expert, uint8_t* out, size_t size) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (expert < 0 || static_cast<size_t>(expert) >= kept_.size() || kept_[static_cast<size_t>(expert)] != kKept ||
      size != per_)
    return false;
  std::memcpy(out, buffer_.data() + static_cast<size_t>(expert) * per_, per_);
  forget(expert);
  release_if_unused();
  return true;
}

bool ScaleHandoff::use_range(int64_t first, int64_t count,
                             const std::function<void(const uint8_t* bytes, size_t size)>& use) {
  const uint8_t* bytes = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (first < 0 || count <= 0 || static_cast<size_t>(first + count) > kept_.size()) return false;
    for (int64_t e = first; e < first + count; ++e)
      if (kept_[static_cast<size_t>(e)] != kKept) return false;
    // Still counted as kept, so the buffer stays while use() reads it outside the lock.
    for (int64_t e = first; e < first + count; ++e) kept_[static_cast<size_t>(e)] = kInUse;
    bytes = buffer_.data() + static_cast<size_t>(first) * per_;
  }
  struct Forget {
    ScaleHandoff& h;
    int64_t first, count;
    ~Forget() {
      std::lock_guard<std::mutex> lock(h.mutex_);
      for (int64_t e = first; e < first + count; ++e) h.forget(e);
      h.release_if_unused();
    }
  } forget_after{*this, first, count};
  use(bytes, static_cast<size_t>(count) * per_);
  return true;
}

void ScaleHandoff::forget(int64_t expert) {
  Slot& kept = kept_.at(static_cast<size_t>(expert));
  if (kept == kKept || kept == kInUse) --kept_count_;
  kept = kNone;
}

void ScaleHandoff::release_if_unused() {
  if (kept_count_ != 0 || writing_ != 0) return;
  buffer_ = UninitializedBytes();
  kept_.clear();
}

void ExpertRows::read_float(int64_t expert, float* out) const {
  if (read_f32) {
    read_f32(expert, 0, rows, out);
    return;
  }
  std::vector<uint16_t> bits(static_cast<size_t>(elements()));
  read_bf16(expert, 0, rows, bits.data());
  for (size_t i = 0; i < bits.size(); ++i) out[i] = bf16_to_float(bits[i]);
}

int64_t ExpertRows::piece_rows(int64_t value_bytes) const {
  constexpr int64_t kPieceBytes = 256 << 10;
  const int64_t fit = kPieceBytes / std::max<int64_t>(1, cols * value_bytes);
  return std::max<int64_t>(8, fit - fit % 8);
}

ExpertRowsPtr stacked_bf16_rows(const io::Checkpoint& c, const std::vector<std::vector<std::string>>& parts,
                                const std::vector<int64_t>& part_rows, int64_t cols, const std::string& why) {
  auto m = std::make_shared<ExpertRows>();
  m->experts = static_cast<int64_t>(parts.size());
  m->cols = cols;
  for (int64_t r : part_rows) m->rows += r;
  std::vector<std::vector<const io::LocatedTensor*>> located(parts.size());
  for (size_t e = 0; e < parts.size(); ++e) {
    if (parts[e].size() != part_rows.size()) throw_internal("stacked_bf16_rows: parts and part_rows disagree");
    for (size_t i = 0; i < parts[e].size(); ++i) {
      located[e].push_back(&expect_bf16(c, parts[e][i], {part_rows[i], cols}, why));
      m->tensors.push_back(parts[e][i]);
    }
    m->labels.push_back(join_labels(parts[e]));
  }
  m->read_bf16 = [&c, located, part_rows, cols](int64_t e, int64_t row, int64_t count, uint16_t* out) {
    int64_t first = 0;  // the part's first row within the expert
    const auto& ts = located[static_cast<size_t>(e)];
    for (size_t i = 0; i < ts.size() && count > 0; first += part_rows[i], ++i) {
      const int64_t from = std::max(row, first), to = std::min(row + count, first + part_rows[i]);
      if (from >= to) continue;
      const size_t bytes = static_cast<size_t>((to - from) * cols) * 2;
      std::memcpy(out + (from - row) * cols, c.data(*ts[i]).data + static_cast<size_t>((from - first) * cols) * 2, bytes);
    }
  };
  m->mapped_bf16 = [&c, located, part_rows, names = parts](int64_t e) {
    std::vector<Bf16Run> runs;
    const auto& ts = located[static_cast<size_t>(e)];
    for (size_t i = 0; i < ts.size(); ++i) {
      const io::ByteView b = c.data(*ts[i]);
      if (!aligned16(b.data)) return std::vector<Bf16Run>{};
      runs.push_back({reinterpret_cast<const uint16_t*>(b.data), part_rows[i], &names[static_cast<size_t>(e)][i]});
    }
    return runs;
  };
  m->release = [&c, located](int64_t e) {
    for (const io::LocatedTensor* t : located[static_cast<size_t>(e)])
      io::release_mapped_pages_around(c.data(*t), t->file->whole_file());
  };
  m->expert_tensors = [&c, located, names = parts](int64_t e) {
    std::vector<std::pair<const std::string*, io::ByteView>> out;
    const auto& ts = located[static_cast<size_t>(e)];
    for (size_t i = 0; i < ts.size(); ++i) out.emplace_back(&names[static_cast<size_t>(e)][i], c.data(*ts[i]));
    return out;
  };
  return m;
}

ExpertRowsPtr stacked_fp8_rows(const io::Checkpoint& c, const std::vector<std::vector<std::string>>& parts,
                               const std::vector<std::vector<std::string>>& scales,
                               const std::vector<int64_t>& part_rows, int64_t cols, int64_t block_n,
                               int64_t block_k, const std::string& why) {
  auto m = std::make_shared<ExpertRows>();
  m->experts = static_cast<int64_t>(parts.size());
  m->cols = cols;
  m->from_fp8 = true;
  for (int64_t r : part_rows) m->rows += r;
  struct Part {
    const io::LocatedTensor* weight;
    const io::LocatedTensor* scale;
    int64_t rows;
    std::string name;
  };
  std::vector<std::vector<Part>> located(parts.size());
  for (size_t e = 0; e < parts.size(); ++e) {
    for (size_t i = 0; i < parts[e].size(); ++i) {
      const Shape grid{ceil_div(part_rows[i], block_n), ceil_div(cols, block_k)};
      expect_tensor(c, parts[e][i], Dtype::F8_E4M3, {part_rows[i], cols}, why);
      const io::LocatedTensor* s = c.try_find(scales[e][i]);
      if (!s)
        throw_bad_input(c.root().string() + ": tensor '" + scales[e][i] + "' is missing (the block scales of FP8 '" +
                        parts[e][i] + "')");
      const Dtype sd = s->info->dtype == Dtype::BF16 ? Dtype::BF16 : Dtype::F32;
      expect_tensor(c, scales[e][i], sd, grid, why + " (block " + std::to_string(block_n) + "x" +
                                                    std::to_string(block_k) + " scales)");
      located[e].push_back({&c.find(parts[e][i]), s, part_rows[i], parts[e][i]});
      m->tensors.push_back(parts[e][i]);
      m->tensors.push_back(scales[e][i]);
    }
    m->labels.push_back(join_labels(parts[e]));
  }
  m->fp8_block_n = block_n;
  m->fp8_block_k = block_k;
  m->fp8_parts = [&c, located](int64_t e) {
    std::vector<ExpertRows::Fp8Part> parts;
    for (const Part& p : located[static_cast<size_t>(e)]) {
      const io::ByteView s = c.data(*p.scale);
      ExpertRows::Fp8Part part{c.data(*p.weight).data, p.rows, {}, p.scale->info->shape[1], &p.name};
      // Copied, since mapped tensors need not be aligned for their element type; BF16 scales
      // widen to floats exactly, as fp8_block_dequant_bf16_scales does.
      if (p.scale->info->dtype == Dtype::BF16) {
        std::vector<uint16_t> bits(s.size / 2);
        std::memcpy(bits.data(), s.data, s.size);
        for (uint16_t b : bits) part.scale_inv.push_back(bf16_to_float(b));
      } else {
        part.scale_inv.resize(s.size / 4);
        std::memcpy(part.scale_inv.data(), s.data, s.size);
      }
      parts.push_back(std::move(part));
    }
    return parts;
  };
  m->read_f32 = [parts_of = m->fp8_parts, cols, block_n, block_k](int64_t e, int64_t row, int64_t count, float* out) {
    int64_t first = 0;  // the part's first row within the expert
    for (const ExpertRows::Fp8Part& p : parts_of(e)) {
      const int64_t from = std::max(row, first), to = std::min(row + count, first + p.rows);
      if (from < to)
        fp8_block_dequant(p.weight, p.rows, cols, p.scale_inv.data(),
                          static_cast<int64_t>(p.scale_inv.size()) / p.scale_cols, p.scale_cols,
                          out + (from - row) * cols, *p.name, block_n, block_k, Fp8RowRange{from - first, to - from});
      first += p.rows;
    }
  };
  m->release = [&c, located](int64_t e) {
    for (const Part& p : located[static_cast<size_t>(e)])
      io::release_mapped_pages_around(c.data(*p.weight), p.weight->file->whole_file());
  };
  // The weights and their block scales, in the order of `tensors`. A scale tensor could in
  // principle be named for two experts; such a checkpoint keeps the executor's own hashing.
  std::map<std::string, int> scale_uses;
  for (const auto& per_expert : scales)
    for (const auto& name : per_expert) ++scale_uses[name];
  bool scales_own = true;
  for (const auto& [name, uses] : scale_uses) scales_own = scales_own && uses == 1;
  if (scales_own) {
    m->expert_tensors = [&c, located, scale_names = scales](int64_t e) {
      std::vector<std::pair<const std::string*, io::ByteView>> out;
      const auto& ps = located[static_cast<size_t>(e)];
      for (size_t i = 0; i < ps.size(); ++i) {
        out.emplace_back(&ps[i].name, c.data(*ps[i].weight));
        out.emplace_back(&scale_names[static_cast<size_t>(e)][i], c.data(*ps[i].scale));
      }
      return out;
    };
  }
  return m;
}

ExpertRowsPtr sliced_bf16_rows(const io::Checkpoint& c, const std::string& name, int64_t experts, int64_t rows,
                               int64_t cols, const std::string& why) {
  auto m = std::make_shared<ExpertRows>();
  m->experts = experts;
  m->rows = rows;
  m->cols = cols;
  const io::LocatedTensor* t = &expect_bf16(c, name, {experts, rows, cols}, why);
  m->tensors = {name};
  for (int64_t e = 0; e < experts; ++e) m->labels.push_back(name + "[" + std::to_string(e) + "]");
  const uint64_t per = static_cast<uint64_t>(rows * cols) * 2;
  m->read_bf16 = [&c, t, per, cols](int64_t e, int64_t row, int64_t count, uint16_t* out) {
    std::memcpy(out, c.data(*t).data + per * static_cast<uint64_t>(e) + static_cast<uint64_t>(row * cols) * 2,
                static_cast<size_t>(count * cols) * 2);
  };
  m->mapped_bf16 = [&c, t, per, rows, name = m->tensors[0]](int64_t e) {
    const uint8_t* p = c.data(*t).data + per * static_cast<uint64_t>(e);
    if (!aligned16(p)) return std::vector<Bf16Run>{};
    return std::vector<Bf16Run>{{reinterpret_cast<const uint16_t*>(p), rows, &name}};
  };
  m->expert_ordered_bytes = expert_ordered_bytes_of(c, t, per, m->tensors[0]);
  if (ExpertBlockSums::usable(per, experts)) m->block_sums = std::make_shared<ExpertBlockSums>(per, experts);
  return m;
}

ExpertRowsPtr transposed_bf16_rows(const io::Checkpoint& c, const std::string& name, int64_t experts, int64_t rows,
                                   int64_t cols, const std::string& why) {
  auto m = std::make_shared<ExpertRows>();
  m->experts = experts;
  m->rows = rows;
  m->cols = cols;
  const io::LocatedTensor* t = &expect_bf16(c, name, {experts, cols, rows}, why);
  m->tensors = {name};
  for (int64_t e = 0; e < experts; ++e) m->labels.push_back(name + "[" + std::to_string(e) + "] transposed");
  m->read_bf16 = [&c, t, rows, cols](int64_t e, int64_t row, int64_t count, uint16_t* out) {
    // Output rows [row, row + count) are source columns: `count` values from each of the cols
    // source rows.
    const uint8_t* src = c.data(*t).data + static_cast<uint64_t>(e * rows * cols + row) * 2;
    transpose_bf16(src, rows, cols, count, out, cols);
  };
  m->mapped_columns = [&c, t, rows, cols](int64_t e) {
    return ExpertRows::MappedColumns{c.data(*t).data + static_cast<uint64_t>(e * rows * cols) * 2, rows};
  };
  const uint64_t per = static_cast<uint64_t>(rows * cols) * 2;
  m->expert_ordered_bytes = expert_ordered_bytes_of(c, t, per, m->tensors[0]);
  if (ExpertBlockSums::usable(per, experts)) m->block_sums = std::make_shared<ExpertBlockSums>(per, experts);
  return m;
}

}  // namespace moeprep::models
