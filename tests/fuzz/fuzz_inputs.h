#pragma once
// What each fuzz target does with one input, shared by the libFuzzer targets (tests/fuzz/*_fuzz.cpp)
// and by the GoogleTest that replays the seed corpus (tests/reliability/fuzz_corpus_test.cpp):
// an input that once crashed a target stays a regression test once it is in the corpus.
//
// Every function returns normally when moeprep accepts the input or refuses it with
// moeprep::Error. Anything else is a finding: another exception type escapes (libFuzzer reports
// the abort), a sanitizer fires, or a property that must hold for accepted input fails
// (check_property aborts with a message).
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/names.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "models/detect.h"
#include "plan/inspect.h"
#include "plan/manifest.h"
#include "plan/manifest_model.h"
#include "plan/plan.h"

namespace moeprep::fuzz {

namespace fs = std::filesystem;

struct Outcome {
  bool accepted = false;
  ErrorKind kind = ErrorKind::Internal;  // meaningful when refused
  std::string message;                   // the refusal's one line
};

inline void check_property(bool holds, const char* what) {
  if (holds) return;
  std::fprintf(stderr, "moeprep fuzz: property violated: %s\n", what);
  std::abort();
}

template <typename Body>
Outcome run_refusable(Body body) {
  Outcome o;
  try {
    body();
    o.accepted = true;
  } catch (const Error& e) {
    o.kind = e.kind();
    o.message = e.what();
    // Every refusal is one line (the CLI prints it after "moeprep: error: ").
    check_property(o.message.find('\n') == std::string::npos, "an error message is one line");
  }
  return o;
}

inline void write_whole_file(const fs::path& path, const uint8_t* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) {
    std::fprintf(stderr, "moeprep fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
}

// A scratch directory of this process (under /dev/shm when there is one: the targets rewrite a
// file per input), removed at exit; those of processes that died (a crash, a timeout) are removed
// by the next one.
inline const fs::path& scratch_dir() {
  static const fs::path dir = [] {
    std::error_code ec;
    fs::path base = fs::is_directory("/dev/shm", ec) ? fs::path("/dev/shm") : fs::temp_directory_path();
    const std::string prefix = "moeprep-fuzz-";
    for (fs::directory_iterator it(base, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (name.rfind(prefix, 0) != 0) continue;
      const std::string pid = name.substr(prefix.size());
      if (pid.empty() || pid.size() > 9 || pid.find_first_not_of("0123456789") != std::string::npos) continue;
      std::error_code rm;
      if (::kill(static_cast<pid_t>(std::stol(pid)), 0) != 0 && errno == ESRCH) fs::remove_all(it->path(), rm);
    }
    fs::path d = base / (prefix + std::to_string(::getpid()));
    fs::remove_all(d, ec);
    fs::create_directories(d);
    static struct Cleanup {
      fs::path p;
      ~Cleanup() {
        std::error_code e;
        fs::remove_all(p, e);
      }
    } cleanup{d};
    return d;
  }();
  return dir;
}

// ---- safetensors header: a whole file held in memory, read the way SafetensorsFile::open does.
inline Outcome header_input(const uint8_t* data, size_t size) {
  return run_refusable([&] {
    if (size < 8) throw_bad_input("fuzz: shorter than the 8-byte header length");
    uint64_t length = 0;
    for (int i = 7; i >= 0; --i) length = (length << 8) | data[i];
    // The same two checks, in the same words, as SafetensorsFile::open makes before parsing.
    if (length > io::kMaxHeaderBytes)
      throw_bad_input("fuzz: header length " + std::to_string(length) + " exceeds the limit");
    if (length > size - 8)
      throw_bad_input("fuzz: header length " + std::to_string(length) + " runs past the end of the file");
    const uint64_t data_size = size - 8 - length;
    std::string_view text(reinterpret_cast<const char*>(data) + 8, static_cast<size_t>(length));
    io::Header h = io::parse_header(text, data_size, "fuzz");

    // Accepted headers: the tensors tile the data area, each holds exactly its dtype x shape,
    // and every name is one the writer would write too.
    uint64_t covered = 0;
    for (const auto& t : h.tensors) {
      check_property(t.begin == covered && t.end >= t.begin, "tensors tile the data area in order");
      covered = t.end;
      const int64_t numel = checked_numel(t.shape, "fuzz");
      check_property(static_cast<uint64_t>(numel) * static_cast<uint64_t>(dtype_bits(t.dtype)) / 8 == t.byte_length(),
                     "a tensor's byte length is numel x dtype size");
      io::check_tensor_name(t.name, "fuzz");
    }
    check_property(covered == data_size, "the tensors cover the whole data area");

    // Writing back what was read and reading it again gives the same tensors and metadata.
    io::ShardPlan plan;
    plan.file_name = "fuzz.safetensors";
    plan.metadata = h.metadata;
    for (const auto& t : h.tensors) plan.tensors.push_back({t.name, t.dtype, t.shape});
    const std::string encoded = io::encode_header(plan);
    io::Header again = io::parse_header(std::string_view(encoded).substr(8), data_size, "fuzz re-encoded");
    check_property(again.metadata == h.metadata, "re-encoded metadata is the same");
    check_property(again.tensors.size() == h.tensors.size(), "re-encoded tensor count is the same");
    for (size_t i = 0; i < h.tensors.size(); ++i) {
      const auto &a = h.tensors[i], &b = again.tensors[i];
      check_property(a.name == b.name && a.dtype == b.dtype && a.shape == b.shape && a.begin == b.begin &&
                         a.end == b.end,
                     "re-encoded tensors are the same");
    }
  });
}

// ---- inspect of a whole file: the fuzzed bytes as a .safetensors file on disk (mmap path).
inline Outcome inspect_input(const uint8_t* data, size_t size) {
  const fs::path file = scratch_dir() / "input.safetensors";
  write_whole_file(file, data, size);
  return run_refusable([&] {
    const nlohmann::ordered_json j = plan::inspect_path(file);
    const std::string text = j.dump();  // must not throw (e.g. on invalid UTF-8 in a name)
    check_property(j["kind"] == "file", "a single file inspects as kind 'file'");
    check_property(!text.empty(), "inspect output is not empty");
  });
}

// ---- a checkpoint directory: the shipped tiny GPT-OSS checkpoint with one JSON file replaced.
inline fs::path tiny_checkpoint_copy(const std::string& name) {
  const fs::path src = fs::path(MOEPREP_SOURCE_DIR) / "testdata" / "tiny-gpt-oss";
  const fs::path dst = scratch_dir() / name;
  if (!fs::exists(dst)) fs::copy(src, dst, fs::copy_options::recursive);
  return dst;
}

// Opens the checkpoint, detects the model, plans the conversion and inspects it; the fuzzed
// text is written as `file_name` (config.json or the index) into a private copy.
inline Outcome checkpoint_with(const std::string& file_name, const uint8_t* data, size_t size) {
  const fs::path dir = tiny_checkpoint_copy(file_name == io::kConfigFileName ? "ckpt-config" : "ckpt-index");
  write_whole_file(dir / file_name, data, size);
  return run_refusable([&] {
    const io::Checkpoint ckpt = io::Checkpoint::open(dir);
    // The index may list only shards that resolve inside the directory.
    for (const auto& s : ckpt.shards())
      check_property(fs::equivalent(s->path().parent_path(), dir), "every shard is inside the checkpoint");
    const std::string inspected = plan::inspect_path(dir).dump();
    check_property(!inspected.empty(), "inspect output is not empty");
    plan::ConvertOptions options;
    const plan::ConvertPlan p = plan::build_plan(ckpt, options);
    check_property(!p.jobs.empty(), "an accepted plan has jobs");
    (void)p.to_json().dump();
  });
}

inline Outcome config_input(const uint8_t* data, size_t size) {
  return checkpoint_with(io::kConfigFileName, data, size);
}
inline Outcome index_input(const uint8_t* data, size_t size) {
  return checkpoint_with(io::kIndexFileName, data, size);
}

// ---- the manifest: JSON text into Manifest::from_json and the readers verify builds on it.
inline Outcome manifest_input(const uint8_t* data, size_t size) {
  return run_refusable([&] {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) throw_bad_input("fuzz: not valid JSON");
    const plan::Manifest m = plan::Manifest::from_json(j, "fuzz");
    // What was read serializes, and reads back to the same text.
    const std::string once = m.serialize();
    const plan::Manifest again = plan::Manifest::from_json(nlohmann::json::parse(once), "fuzz again");
    check_property(again.serialize() == once, "a manifest reads back to the same text");
    (void)plan::options_from_manifest(m, "fuzz");
    (void)plan::dims_from_manifest(m, "fuzz");
    (void)plan::model_from_manifest(m, "fuzz");
  });
}

}  // namespace moeprep::fuzz
