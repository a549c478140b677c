#pragma once
// One matrix per expert in the canonical orientation of the kernels: `rows` outputs, each a
// row of `cols` inputs (K), read from however a checkpoint stores its experts: per-expert 2-D
// tensors stacked (Qwen, Mixtral, DeepSeek), slices of a 3-D tensor (Gemma4), or transposed
// slices (GPT-OSS BF16). FP8 sources are block-dequantized on the way.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "core/uninitialized_bytes.h"
#include "io/checkpoint.h"
#include "models/expert_block_sums.h"

namespace moeprep::models {

// A contiguous run of one expert's rows inside the checkpoint's memory map.
struct Bf16Run {
  const uint16_t* data = nullptr;
  int64_t rows = 0;
  const std::string* name = nullptr;  // the tensor it lies in
};

// XXH3-128 digests (core/hash.h) of checkpoint tensors, recorded by whichever reader hashed
// them first; safe to share between threads.
class TensorDigests {
 public:
  void put(const std::string& tensor, const std::string& digest) {
    std::lock_guard<std::mutex> lock(mutex_);
    by_tensor_.emplace(tensor, digest);
  }
  // "" when not recorded.
  std::string get(const std::string& tensor) const {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = by_tensor_.find(tensor);
    return it == by_tensor_.end() ? std::string() : it->second;
  }
  bool has(const std::string& tensor) const { return !get(tensor).empty(); }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::string> by_tensor_;
};

// The E8M0 scales the quantizing pass of expert e computed, kept until the scales source asks
// for them: convert runs an expert's codes (w13_weight) before its scales (w13_weight_scale),
// and without the hand-off the scales source would read and scan the BF16/FP8 rows again. Each
// entry is taken once; a miss (the scales asked first, or from another process) recomputes.
// All experts' scales share one buffer, which a scales source uses where it lies for any run of
// experts all handed over: per-expert vectors and the copy into a fresh output cost the
// quantizing convert of a Qwen3 layer 6.2k page faults on fresh memory (4.1k with one buffer)
// and ~4% of its CPU, and the copy of a chunk's scales (convert cuts w13's 12.6 MB of scales
// into two units) held a worker for ~27 ms while the pipeline waited on it (eleventh session).
// The buffer is never zero-filled: nothing reads a slot before put() (2.7% of Qwen3's convert
// samples went to that fill, perf, tenth session).
class ScaleHandoff {
 public:
  // A slot being written, handed back by abandon() unless put() was called: the quantizing
  // pass holds one while it may throw (a NaN in the rows, a failed read).
  class SlotGuard {
   public:
    SlotGuard(ScaleHandoff& handoff, int64_t expert, int64_t experts, size_t per)
        : handoff_(&handoff), expert_(expert), data_(handoff.slot(expert, experts, per)) {}
    ~SlotGuard() {
      if (handoff_) handoff_->abandon(expert_);
    }
    SlotGuard(const SlotGuard&) = delete;
    SlotGuard& operator=(const SlotGuard&) = delete;
    uint8_t* data() const { return data_; }
    void put() {
      handoff_->put(expert_);
      handoff_ = nullptr;
    }

   private:
    ScaleHandoff* handoff_;
    int64_t expert_;
    uint8_t* data_;
  };

  // Where expert e's `per` scale bytes go, in a buffer of `experts` such slots (allocated by
  // the first call); put(e) hands them over once written. Slots of different experts may be
  // written at the same time.
  uint8_t* slot(int64_t expert, int64_t experts, size_t per);
  void put(int64_t expert);
  // Hands back a slot whose pass failed: nothing is kept for the expert (scales an earlier pass
  // kept may be overwritten in part), and the buffer is no longer held for it (a slot never
  // handed back would keep use_all refusing and the buffer alive for the rest of the convert).
  void abandon(int64_t expert);
  // Copies expert e's scales straight into out[0, size) and forgets them; false (nothing
  // changes) when none are kept or they are not `size` bytes. The buffer goes once nothing is
  // kept or being written.
  bool take(int64_t expert, uint8_t* out, size_t size);
  // When experts [first, first + count) all have their scales kept: calls use(bytes, size) with
  // theirs in expert order, where they lie in the buffer (outside the lock), then forgets them,
  // also when use() throws (the buffer goes once nothing is kept or being written); false
  // (nothing changes) otherwise.
  bool use_range(int64_t first, int64_t count, const std::function<void(const uint8_t* bytes, size_t size)>& use);

 private:
  // kWriting: between slot() and put() (an earlier pass's scales there are no longer kept);
  // kInUse: lent to use_range, still counted as kept.
  enum Slot : uint8_t { kNone, kWriting, kKept, kInUse };
  // With mutex_ held: expert e's scales no longer kept (whether or not they were).
  void forget(int64_t expert);
  void release_if_unused();  // with mutex_ held

  std::mutex mutex_;
  UninitializedBytes buffer_;
  std::vector<Slot> kept_;  // per expert
  size_t per_ = 0;
  int64_t kept_count_ = 0, writing_ = 0;
};

struct ExpertRows {
  int64_t experts = 0, rows = 0, cols = 0;
  // Every checkpoint tensor read, in a fixed order (the manifest hashes them).
  std::vector<std::string> tensors;
  // The tensors of expert e, for error messages.
  std::vector<std::string> labels;
  bool from_fp8 = false;
  // Exactly one is set: BF16 sources hand over their bits (exact), FP8 sources floats. Each
  // reads rows [row, row + count) of expert e into out (count * cols values), so that a pass
  // can take an expert a few dozen rows at a time, in cache, rather than whole.
  std::function<void(int64_t expert, int64_t row, int64_t count, uint16_t* out)> read_bf16;
  std::function<void(int64_t expert, int64_t row, int64_t count, float* out)> read_f32;
  // Optional, FP8 only: expert e's FP8 tensors as mapped, each with its block scales widened to
  // floats, so that a pass quantizes straight from the FP8 bytes (formats/mxfp4_quantize_fp8.h)
  // rather than from floats dequantized first.
  struct Fp8Part {
    const uint8_t* weight = nullptr;  // [rows, cols] E4M3
    int64_t rows = 0;
    std::vector<float> scale_inv;  // [ceil(rows / fp8_block_n), scale_cols]
    int64_t scale_cols = 0;
    const std::string* name = nullptr;
  };
  std::function<std::vector<Fp8Part>(int64_t expert)> fp8_parts;
  int64_t fp8_block_n = 128, fp8_block_k = 128;
  // Optional, BF16 stored inputs-first (transposed experts): expert e as it lies in the map, a
  // [cols, rows] matrix whose column j is row j of the expert, so that a pass quantizes it
  // without transposing it first (formats/mxfp4_quantize_columns.h).
  struct MappedColumns {
    const uint8_t* data = nullptr;  // element [0, 0]; any byte alignment
    int64_t stride = 0;             // elements between source rows (= rows)
  };
  std::function<MappedColumns(int64_t expert)> mapped_columns;
  // Optional, BF16 only: the rows as runs read in place (no copy), or empty when the map's
  // bytes are not aligned for uint16_t (safetensors does not promise it).
  std::function<std::vector<Bf16Run>(int64_t expert)> mapped_bf16;
  // Lets the expert's source pages go once read (they stay in the page cache), so that
  // quantizing a large layer does not hold all of it resident.
  std::function<void(int64_t expert)> release;
  // Optional: the checkpoint tensors that hold expert e's weights and nothing else, whole, as
  // mapped bytes (set for per-expert tensors; a tensor shared by all experts is never listed).
  // The quantizing sources hash them while the bytes are at hand, into `digests`, so that the
  // manifest's source digests need no second pass over the checkpoint.
  std::function<std::vector<std::pair<const std::string*, io::ByteView>>(int64_t expert)> expert_tensors;
  // Optional: the tensors shared by all experts that hold them in expert order (sliced and
  // transposed experts), as the bytes of experts [first, first + count). Such rows have no
  // `release`: the reader that hashes those bytes in order lets them go (CanonicalSource's
  // expert_ordered_bytes).
  std::function<std::vector<std::pair<const std::string*, io::ByteView>>(int64_t first, int64_t count)>
      expert_ordered_bytes;
  // Optional, with expert_ordered_bytes of one tensor whose expert slices lie row after row:
  // its XXH3 block sums, made by the quantizing passes as they read each slice.
  std::shared_ptr<ExpertBlockSums> block_sums;
  // Shared by every canonical source made from these rows.
  std::shared_ptr<TensorDigests> digests = std::make_shared<TensorDigests>();
  std::shared_ptr<ScaleHandoff> scale_handoff = std::make_shared<ScaleHandoff>();

  int64_t elements() const { return rows * cols; }
  // Expert e's rows as floats, whichever the source (bf16 widens exactly).
  void read_float(int64_t expert, float* out) const;
  // Rows per piece when a pass reads an expert piecewise: about 256 KiB of `value_bytes`-sized
  // values, a multiple of 8 rows (the transposing reader's tile), at least 8.
  int64_t piece_rows(int64_t value_bytes) const;
};

using ExpertRowsPtr = std::shared_ptr<const ExpertRows>;

// Per-expert 2-D tensors stacked along the rows: parts[e] lists expert e's tensors, each
// [part_rows[i], cols] BF16 (e.g. gate_proj and up_proj, giving [gate; up]). `why` names the
// layout in errors. Throws BadInput naming a missing or mis-shaped tensor.
ExpertRowsPtr stacked_bf16_rows(const io::Checkpoint& c, const std::vector<std::vector<std::string>>& parts,
                                const std::vector<int64_t>& part_rows, int64_t cols, const std::string& why);

// The same for F8_E4M3 weights with block scales: scales[e][i] is the weight_scale_inv of
// parts[e][i] ([ceil(rows/block_n), ceil(cols/block_k)], F32 or BF16).
ExpertRowsPtr stacked_fp8_rows(const io::Checkpoint& c, const std::vector<std::vector<std::string>>& parts,
                               const std::vector<std::vector<std::string>>& scales,
                               const std::vector<int64_t>& part_rows, int64_t cols, int64_t block_n,
                               int64_t block_k, const std::string& why);

// Expert e is `name`[e] of a BF16 [experts, rows, cols] tensor.
ExpertRowsPtr sliced_bf16_rows(const io::Checkpoint& c, const std::string& name, int64_t experts, int64_t rows,
                               int64_t cols, const std::string& why);

// Expert e is the transpose of `name`[e] of a BF16 [experts, cols, rows] tensor (inputs
// first, as transformers' GPT-OSS stores gate_up_proj and down_proj).
ExpertRowsPtr transposed_bf16_rows(const io::Checkpoint& c, const std::string& name, int64_t experts, int64_t rows,
                                   int64_t cols, const std::string& why);

}  // namespace moeprep::models
