#include "models/mxfp4_sources.h"

#include <algorithm>
#include <optional>

#include "core/error.h"
#include "core/hash.h"
#include "formats/mxfp4_quantize.h"
#include "formats/mxfp4_quantize_columns.h"
#include "formats/mxfp4_quantize_fp8.h"

namespace moeprep::models {
namespace {

constexpr int64_t kBlock = 32;
// Source bytes hashed at a time right after they were quantized, while they are in L2.
constexpr int64_t kHashedBytes = 64 << 10;

std::string expert_context(const ExpertRows& m, int64_t e) {
  return m.labels[static_cast<size_t>(e)] + " (expert " + std::to_string(e) + ", rows as the kernel reads them)";
}

void check_slice(const ExpertRows& m, int64_t first, int64_t count) {
  if (first < 0 || count < 0 || first + count > m.experts)
    throw_internal("expert slice [" + std::to_string(first) + ", " + std::to_string(first + count) +
                   ") outside the " + std::to_string(m.experts) + " experts");
}

Shape blocks_shape(const ExpertRows& m, int64_t experts) { return {experts, m.rows, m.cols / kBlock, 16}; }
Shape scales_shape(const ExpertRows& m, int64_t experts) { return {experts, m.rows, m.cols / kBlock}; }

SquaredError from_formats(const Mxfp4ErrorSums& s) { return {s.error, s.reference}; }

using ExpertTensorList = std::vector<std::pair<const std::string*, io::ByteView>>;

// Hashes expert e's own tensors (those no reader hashed yet) right after they were read: the
// bytes are still mapped and mostly cached, where a later pass would map them again.
void hash_expert_tensors(const ExpertRows& m, int64_t e) {
  if (!m.expert_tensors || !m.digests) return;
  for (const auto& [name, bytes] : m.expert_tensors(e))
    if (!m.digests->has(*name)) m.digests->put(*name, xxh3_128_hex(bytes.data, bytes.size));
}

// The rows' tensors held in expert order, for the executor to hash slice by slice.
std::function<std::vector<std::pair<const std::string*, io::ByteView>>(int64_t, int64_t)> ordered_bytes(
    const ExpertRowsPtr& rows) {
  if (!rows->expert_ordered_bytes) return {};
  return [rows](int64_t first, int64_t count) { return rows->expert_ordered_bytes(first, count); };
}

std::function<std::shared_ptr<ExpertBlockSums>(const std::string&)> block_sums_lookup(const ExpertRowsPtr& rows) {
  if (!rows->block_sums) return {};
  return [rows](const std::string& tensor) {
    return tensor == rows->tensors.front() ? rows->block_sums : std::shared_ptr<ExpertBlockSums>();
  };
}

std::function<std::string(const std::string&)> digest_lookup(const ExpertRowsPtr& rows) {
  if (!rows->expert_tensors || !rows->digests) return {};
  return [digests = rows->digests](const std::string& tensor) { return digests->get(tensor); };
}

// Expert e's BF16 rows, run by run, to fn(run, first row of the run): in place when the map
// allows, else a piece of piece_rows() rows at a time read (for transposed experts, transposed)
// into `buffer`, where the pass finds them in cache; a whole expert copied first and read back
// cost a second trip through memory.
template <class Fn>
void for_each_bf16_run(const ExpertRows& m, int64_t e, std::vector<uint16_t>& buffer, const std::string& label,
                       Fn&& fn) {
  if (m.mapped_bf16) {
    const std::vector<Bf16Run> runs = m.mapped_bf16(e);
    if (!runs.empty()) {
      int64_t row = 0;
      for (const Bf16Run& run : runs) {
        fn(run, row);
        row += run.rows;
      }
      return;
    }
  }
  const int64_t piece = std::min(m.rows, m.piece_rows(2));
  buffer.resize(static_cast<size_t>(piece * m.cols));
  for (int64_t row = 0; row < m.rows; row += piece) {
    const int64_t n = std::min(piece, m.rows - row);
    m.read_bf16(e, row, n, buffer.data());
    fn(Bf16Run{buffer.data(), n, &label}, row);
  }
}

// The same for float rows (FP8 sources, dequantized a piece at a time).
template <class Fn>
void for_each_f32_piece(const ExpertRows& m, int64_t e, std::vector<float>& buffer, Fn&& fn) {
  const int64_t piece = std::min(m.rows, m.piece_rows(4));
  buffer.resize(static_cast<size_t>(piece * m.cols));
  for (int64_t row = 0; row < m.rows; row += piece) {
    const int64_t n = std::min(piece, m.rows - row);
    m.read_f32(e, row, n, buffer.data());
    fn(static_cast<const float*>(buffer.data()), n, row);
  }
}

// Scratch of one slice's quantizing pass, reused from expert to expert.
struct QuantizeScratch {
  std::vector<uint8_t*> row_codes;
  std::vector<uint8_t> scales;
  std::vector<uint16_t> bf16;
  std::vector<float> f32;
};

// How a run's rows are hashed while quantized: as XXH3 stripes inside the quantizer's loop
// where it can (`stripes`), else 64 KiB at a time right after those rows were quantized, while
// they are in the cache (`chunks`; a separate pass would read them from memory again).
struct RunHash {
  Xxh3StripeHash* stripes = nullptr;
  Xxh3Hasher* chunks = nullptr;
  Xxh3PieceSums* piece = nullptr;  // the run is a piece of a tensor other passes hash too
};

// Rows [row, row + rows) of the expert's code destination, span by span and at most `most` rows
// a step: fn(span, done, n) for the rows [row + done, row + done + n), which begin the span.
template <class Fn>
void for_each_code_span(const std::function<CodeRowSpan(int64_t row)>& to, int64_t row, int64_t rows, int64_t most,
                        const std::string& context, Fn&& fn) {
  for (int64_t done = 0; done < rows;) {
    const CodeRowSpan span = to(row + done);
    if (span.rows <= 0) throw_internal(context + ": code destination of no rows");
    const int64_t n = std::min({span.rows, rows - done, most});
    fn(span, done, n);
    done += n;
  }
}

// Quantizes `rows` rows of `k` starting at row `row` of the expert, whose codes go through `to`.
template <class Source>
void quantize_rows_to(const Source* src, int64_t row, int64_t rows, int64_t k,
                      const std::function<CodeRowSpan(int64_t row)>& to, uint8_t* scales, const std::string& context,
                      Mxfp4ErrorSums& sums, RunHash hash = {}) {
  const int64_t row_bytes = k * static_cast<int64_t>(sizeof(Source));
  const int64_t most = hash.chunks ? std::max<int64_t>(1, kHashedBytes / row_bytes) : rows;
  for_each_code_span(to, row, rows, most, context, [&](const CodeRowSpan& span, int64_t done, int64_t n) {
    const Mxfp4CodeLayout layout{span.data, span.row_stride, span.block_stride};
    uint8_t* const span_scales = scales + (row + done) * (k / kBlock);
    if constexpr (sizeof(Source) == 2) {
      if (hash.stripes) {
        quantize_mxfp4_rows_bf16_measured(src + done * k, n, k, layout, span_scales, context, sums, *hash.stripes,
                                          done * (k / kBlock));
      } else if (hash.piece) {
        // The piece is the expert: its stripes count from the expert's first row.
        quantize_mxfp4_rows_bf16_measured(src + done * k, n, k, layout, span_scales, context, sums, *hash.piece,
                                          (row + done) * (k / kBlock));
      } else {
        quantize_mxfp4_rows_bf16_measured(src + done * k, n, k, layout, span_scales, context, sums);
      }
    } else {
      quantize_mxfp4_rows_measured(src + done * k, n, k, layout, span_scales, context, sums);
    }
    if (hash.chunks) hash.chunks->update(src + done * k, static_cast<size_t>(n * row_bytes));
  });
}

// Quantizes one FP8 tensor of an expert, whose rows start at `row` of the expert, straight from
// its mapped bytes and block scales, span by span of the code destination. A tensor not hashed
// yet is hashed kHashedBytes at a time right after those rows were quantized: hashed after the
// expert, from memory, it took 8% of DeepSeek's convert samples (perf, eleventh session).
void quantize_fp8_part_to(const ExpertRows::Fp8Part& part, const ExpertRows& m, int64_t row,
                          const std::function<CodeRowSpan(int64_t row)>& to, uint8_t* scales, Mxfp4ErrorSums& sums) {
  const int64_t k = m.cols;
  const bool hash = m.digests && !m.digests->has(*part.name);
  Xxh3Hasher hasher;
  const int64_t most = hash ? std::max<int64_t>(1, kHashedBytes / k) : part.rows;
  for_each_code_span(to, row, part.rows, most, *part.name, [&](const CodeRowSpan& span, int64_t done, int64_t n) {
    quantize_mxfp4_rows_fp8_measured(part.weight + done * k, done, n, k, part.scale_inv.data(), part.scale_cols,
                                     m.fp8_block_n, m.fp8_block_k, Mxfp4CodeLayout{span.data, span.row_stride, span.block_stride},
                                     scales + (row + done) * (k / kBlock), *part.name, sums);
    if (hash) hasher.update(part.weight + done * k, static_cast<size_t>(n * k));
  });
  if (hash) m.digests->put(*part.name, hasher.hex_digest());
}

// Quantizes an expert stored inputs-first as it lies, in one call over all its rows (the
// column loop reads whole cache lines of every source row only across many columns), each row's
// codes where `to` puts them.
void quantize_columns_to(const ExpertRows::MappedColumns& src, const ExpertRows& m,
                         const std::function<CodeRowSpan(int64_t row)>& to, uint8_t* scales, const std::string& label,
                         Mxfp4ErrorSums& sums, std::vector<uint8_t*>& row_codes, Xxh3PieceSums* piece) {
  row_codes.resize(static_cast<size_t>(m.rows));
  int64_t block_stride = -1;
  for_each_code_span(to, 0, m.rows, m.rows, label, [&](const CodeRowSpan& span, int64_t row, int64_t n) {
    if (block_stride >= 0 && span.block_stride != block_stride)
      throw_internal(label + ": code destinations with different block strides");
    block_stride = span.block_stride;
    for (int64_t i = 0; i < n; ++i) row_codes[static_cast<size_t>(row + i)] = span.data + i * span.row_stride;
  });
  if (piece) {
    quantize_mxfp4_columns_bf16_measured(src.data, src.stride, m.cols, m.rows, row_codes.data(), block_stride, scales,
                                         label, sums, *piece);
  } else {
    quantize_mxfp4_columns_bf16_measured(src.data, src.stride, m.cols, m.rows, row_codes.data(), block_stride, scales,
                                         label, sums);
  }
}

// Quantizes a run that is one whole tensor of the expert and returns that tensor's digest.
std::string quantize_and_hash_run(const Bf16Run& run, int64_t row, int64_t k,
                                  const std::function<CodeRowSpan(int64_t row)>& to, uint8_t* scales,
                                  Mxfp4ErrorSums& sums) {
  const uint64_t bytes = static_cast<uint64_t>(run.rows * k) * 2;
  if (mxfp4_quantizer_hashes_in_pass() && Xxh3StripeHash::fits(bytes)) {
    Xxh3StripeHash stripes(bytes);
    quantize_rows_to(run.data, row, run.rows, k, to, scales, *run.name, sums, RunHash{&stripes, nullptr});
    return stripes.hex_digest(run.data + run.rows * k - kBlock);
  }
  Xxh3Hasher chunks;
  quantize_rows_to(run.data, row, run.rows, k, to, scales, *run.name, sums, RunHash{nullptr, &chunks});
  return chunks.hex_digest();
}

// The expert's own tensor that `run` is, whole and not hashed yet (else null): hashed while
// quantized.
const std::string* tensor_hashed_in_pass(const ExpertRows& m, const ExpertTensorList& own, const Bf16Run& run) {
  for (const auto& [name, bytes] : own)
    if (bytes.data == reinterpret_cast<const uint8_t*>(run.data) &&
        bytes.size == static_cast<size_t>(run.rows * m.cols * 2) && !m.digests->has(*name))
      return name;
  return nullptr;
}

// Expert e of the rows, quantized: its codes through `to` (rows of this expert), its scales
// handed to the scales source, its error into `stats`, its tensors hashed, its pages let go.
void quantize_expert(const ExpertRows& m, int64_t e, const std::function<CodeRowSpan(int64_t row)>& to,
                     QuantizationStats& stats, QuantizeScratch& scratch) {
  const std::string label = expert_context(m, e);
  const size_t per = static_cast<size_t>(m.elements() / kBlock);
  // The scales go straight into the hand-off's slot for this expert, handed back if the pass
  // throws.
  std::optional<ScaleHandoff::SlotGuard> slot;
  uint8_t* scales = nullptr;
  if (m.scale_handoff) {
    scales = slot.emplace(*m.scale_handoff, e, m.experts, per).data();
  } else {
    scratch.scales.resize(per);
    scales = scratch.scales.data();
  }
  // The error is measured in the quantizing pass; runs split the rows, and their sums add up
  // to those of the expert's rows in one piece.
  Mxfp4ErrorSums se;
  // A slice of a tensor holding every expert: summed for its digest as it is quantized.
  std::optional<Xxh3PieceSums> piece = m.block_sums ? m.block_sums->piece(e) : std::nullopt;
  if (m.mapped_columns) {
    quantize_columns_to(m.mapped_columns(e), m, to, scales, label, se, scratch.row_codes, piece ? &*piece : nullptr);
  } else if (m.fp8_parts) {
    int64_t row = 0;
    for (const ExpertRows::Fp8Part& part : m.fp8_parts(e)) {
      quantize_fp8_part_to(part, m, row, to, scales, se);
      row += part.rows;
    }
  } else if (m.read_f32) {
    for_each_f32_piece(m, e, scratch.f32, [&](const float* rows, int64_t n, int64_t row) {
      quantize_rows_to(rows, row, n, m.cols, to, scales, label, se);
    });
  } else {
    const ExpertTensorList own = m.expert_tensors && m.digests ? m.expert_tensors(e) : ExpertTensorList{};
    for_each_bf16_run(m, e, scratch.bf16, label, [&](const Bf16Run& run, int64_t row) {
      if (const std::string* hashed = tensor_hashed_in_pass(m, own, run)) {
        m.digests->put(*hashed, quantize_and_hash_run(run, row, m.cols, to, scales, se));
      } else {
        quantize_rows_to(run.data, row, run.rows, m.cols, to, scales, *run.name, se,
                         RunHash{nullptr, nullptr, piece ? &*piece : nullptr});
      }
    });
  }
  if (piece) {
    piece->finish();
    m.block_sums->done(e);
  }
  hash_expert_tensors(m, e);  // what the pass did not hash
  if (m.release) m.release(e);
  stats.add(e, se.error, se.reference);
  if (slot) slot->put();
}

// Calls use() with experts [first, first + count)'s scales when the quantizing pass handed all
// of them over.
bool use_handed_over_scales(const ExpertRows& m, int64_t first, int64_t count,
                            const std::function<void(const uint8_t*, size_t)>& use) {
  if (!m.scale_handoff) return false;
  const size_t size = static_cast<size_t>(m.elements() / kBlock) * static_cast<size_t>(count);
  return m.scale_handoff->use_range(first, count, [&](const uint8_t* bytes, size_t n) {
    if (n != size)
      throw_internal("scale hand-off of " + std::to_string(n) + " bytes, expected " + std::to_string(size));
    use(bytes, n);
  });
}

}  // namespace

std::string quantize_transform_name(const ExpertRows& rows) {
  return rows.from_fp8 ? "dequantize_fp8_block+quantize_mxfp4" : "quantize_mxfp4";
}

SquaredError mxfp4_squared_error(const uint16_t* bf16_rows, const uint8_t* codes, const uint8_t* scales, int64_t rows,
                                 int64_t k) {
  return from_formats(mxfp4_error_sums(bf16_rows, codes, scales, rows, k));
}

SquaredError mxfp4_squared_error(const float* rows_f32, const uint8_t* codes, const uint8_t* scales, int64_t rows,
                                 int64_t k) {
  return from_formats(mxfp4_error_sums(rows_f32, codes, scales, rows, k));
}

void mxfp4_scales_only(const uint16_t* src, int64_t rows, int64_t k, uint8_t* scales, const std::string& context) {
  mxfp4_block_scales_bf16(src, rows, k, scales, context);
}

void mxfp4_scales_only(const float* src, int64_t rows, int64_t k, uint8_t* scales, const std::string& context) {
  mxfp4_block_scales(src, rows, k, scales, context);
}

CanonicalSource mxfp4_blocks_source(ExpertRowsPtr rows) {
  CanonicalSource s;
  s.dtype = Dtype::U8;
  s.shape = blocks_shape(*rows, rows->experts);
  s.tensors = rows->tensors;
  s.transform = quantize_transform_name(*rows);
  s.quantization = std::make_shared<QuantizationStats>();
  s.source_digest = digest_lookup(rows);
  s.expert_ordered_bytes = ordered_bytes(rows);
  s.ordered_block_sums = block_sums_lookup(rows);
  auto stats = s.quantization;
  s.assemble = [rows, stats](int64_t first, int64_t count) {
    const ExpertRows& m = *rows;
    check_slice(m, first, count);
    ByteTensor out{Dtype::U8, blocks_shape(m, count), {}};
    const int64_t row_bytes = m.cols / 2;
    out.bytes.resize(static_cast<size_t>(m.rows * row_bytes * count));
    QuantizeScratch scratch;
    for (int64_t e = first; e < first + count; ++e) {
      uint8_t* codes = out.bytes.data() + (e - first) * m.rows * row_bytes;
      quantize_expert(
          m, e, [&](int64_t row) { return CodeRowSpan{codes + row * row_bytes, m.rows - row, row_bytes, kBlock / 2}; },
          *stats, scratch);
    }
    return out;
  };
  s.assemble_codes = [rows, stats](int64_t first, int64_t count, const CodeRowDestination& to) {
    const ExpertRows& m = *rows;
    check_slice(m, first, count);
    QuantizeScratch scratch;
    for (int64_t e = first; e < first + count; ++e)
      quantize_expert(m, e, [&](int64_t row) { return to(e - first, row); }, *stats, scratch);
  };
  return s;
}

CanonicalSource mxfp4_scales_source(ExpertRowsPtr rows) {
  CanonicalSource s;
  s.dtype = Dtype::U8;
  s.shape = scales_shape(*rows, rows->experts);
  s.tensors = rows->tensors;
  s.transform = quantize_transform_name(*rows);
  s.source_digest = digest_lookup(rows);
  s.expert_ordered_bytes = ordered_bytes(rows);
  s.ordered_block_sums = block_sums_lookup(rows);
  s.use_assembled = [rows](int64_t first, int64_t count, const std::function<void(const uint8_t*, size_t)>& use) {
    return use_handed_over_scales(*rows, first, count, use);
  };
  s.assemble = [rows](int64_t first, int64_t count) {
    const ExpertRows& m = *rows;
    check_slice(m, first, count);
    ByteTensor out{Dtype::U8, scales_shape(m, count), {}};
    const size_t per = static_cast<size_t>(m.elements() / kBlock);
    // The slice's scales, all handed over: copied once from the hand-off's buffer.
    if (use_handed_over_scales(m, first, count,
                               [&](const uint8_t* bytes, size_t size) { out.bytes.assign(bytes, bytes + size); }))
      return out;
    out.bytes.resize(per * static_cast<size_t>(count));
    std::vector<uint16_t> bf16;
    std::vector<float> f32;
    for (int64_t e = first; e < first + count; ++e) {
      uint8_t* scales = out.bytes.data() + per * static_cast<size_t>(e - first);
      if (m.scale_handoff && m.scale_handoff->take(e, scales, per)) continue;
      const std::string label = expert_context(m, e);
      if (m.read_f32) {
        for_each_f32_piece(m, e, f32, [&](const float* rows, int64_t n, int64_t row) {
          mxfp4_scales_only(rows, n, m.cols, scales + row * m.cols / kBlock, label);
        });
      } else {
        for_each_bf16_run(m, e, bf16, label, [&](const Bf16Run& run, int64_t row) {
          mxfp4_scales_only(run.data, run.rows, m.cols, scales + row * m.cols / kBlock, *run.name);
        });
      }
      hash_expert_tensors(m, e);
      if (m.release) m.release(e);
    }
    return out;
  };
  return s;
}

}  // namespace moeprep::models
