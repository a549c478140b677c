// parse_header: the one validation pass over a safetensors header. The JSON is read with a SAX
// handler rather than into a DOM: every rule is checked as its token arrives, duplicate keys
// (which a DOM would silently collapse) are seen, and memory stays proportional to what the
// header really declares.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/names.h"
#include "io/safetensors.h"
#include "io/utf8.h"

namespace moeprep::io {
namespace {

// Larger integers are not exact in the float64 JSON numbers other readers use.
constexpr uint64_t kMaxDimension = uint64_t{1} << 53;
// No framework produces more dimensions; a cap keeps a hostile shape from costing memory.
constexpr size_t kMaxRank = 64;
constexpr const char* kMetadataKey = "__metadata__";

using json = nlohmann::json;

class HeaderSax {
 public:
  HeaderSax(uint64_t data_size, const std::string& context) : data_size_(data_size), context_(context) {}

  Header take() { return std::move(header_); }
  bool complete() const { return done_; }

  bool null() {
    // The reference reads __metadata__ as Option<map>, so null means "no metadata" there; files
    // written that way load everywhere else and must not be refused here.
    if (in(Frame::Top) && key_ == kMetadataKey) return true;
    return scalar("null");
  }
  bool boolean(bool) { return scalar("a boolean"); }
  bool number_integer(json::number_integer_t v) {
    if (v >= 0) return number_unsigned(static_cast<json::number_unsigned_t>(v));
    std::string text = std::to_string(v);
    if (in(Frame::Shape)) fail_tensor("shape has a negative dimension " + text);
    if (in(Frame::Offsets)) fail_tensor("data_offsets has a negative value " + text);
    return scalar("a number");
  }
  bool number_unsigned(json::number_unsigned_t v) {
    if (in(Frame::Shape)) {
      if (v > kMaxDimension)
        fail_tensor("shape dimension " + std::to_string(v) + " is larger than 2^53");
      if (entry_.shape.size() == kMaxRank)
        fail_tensor("shape has more than " + std::to_string(kMaxRank) + " dimensions");
      entry_.shape.push_back(static_cast<int64_t>(v));
      return true;
    }
    if (in(Frame::Offsets)) {
      if (offsets_.size() == 2) fail_tensor("data_offsets is not [begin, end]: more than two values");
      offsets_.push_back(v);
      return true;
    }
    return scalar("a number");
  }
  bool number_float(json::number_float_t, const std::string& text) {
    if (in(Frame::Shape)) fail_tensor("shape dimension " + printable(text) + " is not an integer");
    if (in(Frame::Offsets)) fail_tensor("data_offsets value " + printable(text) + " is not an integer");
    return scalar("a number");
  }
  bool string(std::string& s) {
    if (in(Frame::Metadata)) {
      header_.metadata.emplace(key_, std::move(s));
      return true;
    }
    if (in(Frame::Entry) && key_ == "dtype") {
      auto dtype = dtype_from_name(s);
      if (!dtype) fail_tensor("unknown dtype '" + printable(s) + "'");
      entry_.dtype = *dtype;
      return true;
    }
    return scalar("a string");
  }
  bool binary(json::binary_t&) { return scalar("binary"); }

  bool start_object(std::size_t) {
    if (stack_.empty()) {
      if (done_) fail("header is not a single JSON object");
      stack_.push_back(Frame::Top);
      return true;
    }
    if (in(Frame::Top)) {
      if (key_ == kMetadataKey) {
        stack_.push_back(Frame::Metadata);
      } else {
        entry_ = TensorInfo{};
        entry_.name = key_;
        entry_keys_.clear();
        offsets_.clear();
        stack_.push_back(Frame::Entry);
      }
      return true;
    }
    return scalar("an object");
  }
  bool key(std::string& k) {
    if (in(Frame::Top)) {
      if (k != kMetadataKey) check_tensor_name(k, context_);
      if (!top_keys_.insert(k).second) {
        if (k == kMetadataKey) fail("__metadata__ appears twice");
        fail("duplicate tensor name '" + printable(k) + "'");
      }
    } else if (in(Frame::Metadata)) {
      if (header_.metadata.count(k)) fail("__metadata__ has duplicate key '" + printable(k) + "'");
    } else if (in(Frame::Entry)) {
      if (k != "dtype" && k != "shape" && k != "data_offsets") fail_tensor("unknown key '" + printable(k) + "'");
      if (!entry_keys_.insert(k).second) fail_tensor("duplicate key '" + k + "'");
    }
    key_ = std::move(k);
    return true;
  }
  bool end_object() {
    Frame closing = stack_.back();
    stack_.pop_back();
    if (closing == Frame::Entry) finish_entry();
    if (closing == Frame::Top) done_ = true;
    return true;
  }
  bool start_array(std::size_t) {
    if (in(Frame::Entry) && key_ == "shape") {
      stack_.push_back(Frame::Shape);
      return true;
    }
    if (in(Frame::Entry) && key_ == "data_offsets") {
      stack_.push_back(Frame::Offsets);
      return true;
    }
    return scalar("an array");
  }
  bool end_array() {
    Frame closing = stack_.back();
    stack_.pop_back();
    if (closing == Frame::Offsets && offsets_.size() != 2)
      fail_tensor("data_offsets is not [begin, end]: " + std::to_string(offsets_.size()) + " values");
    return true;
  }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& e) {
    // nlohmann's message starts with "[json.exception.parse_error.101] parse error at ...";
    // keep the part after the tag, it says what was expected.
    std::string what = e.what();
    auto tag_end = what.find("] ");
    if (tag_end != std::string::npos) what = what.substr(tag_end + 2);
    fail("header is not valid JSON (byte " + std::to_string(position) + "): " + printable(what, 200));
  }

 private:
  enum class Frame { Top, Metadata, Entry, Shape, Offsets };

  bool in(Frame f) const { return !stack_.empty() && stack_.back() == f; }

  [[noreturn]] void fail(const std::string& reason) const { throw_bad_input(context_ + ": " + reason); }
  [[noreturn]] void fail_tensor(const std::string& reason) const {
    fail("tensor '" + printable(entry_.name) + "': " + reason);
  }

  // A value (scalar, or a container where none is allowed) of kind `what` has arrived; say
  // which rule it breaks.
  bool scalar(const std::string& what) {
    if (stack_.empty()) fail("header is not a JSON object (it is " + what + ")");
    switch (stack_.back()) {
      case Frame::Top:
        if (key_ == kMetadataKey) fail("__metadata__ is not an object (it is " + what + ")");
        fail("tensor '" + printable(key_) + "': entry is not an object (it is " + what + ")");
      case Frame::Metadata:
        fail("__metadata__ value of key '" + printable(key_) + "' is not a string (it is " + what + ")");
      case Frame::Entry:
        if (key_ == "dtype") fail_tensor("dtype is not a string (it is " + what + ")");
        if (key_ == "shape") fail_tensor("shape is not an array (it is " + what + ")");
        fail_tensor("data_offsets is not [begin, end] (it is " + what + ")");
      case Frame::Shape:
        fail_tensor("shape is not an array of non-negative integers (it holds " + what + ")");
      case Frame::Offsets:
        fail_tensor("data_offsets is not [begin, end] of non-negative integers (it holds " + what + ")");
    }
    fail("internal: unknown parser state");
  }

  void finish_entry() {
    for (const char* k : {"dtype", "shape", "data_offsets"})
      if (!entry_keys_.count(k)) fail_tensor(std::string("missing key '") + k + "'");
    entry_.begin = offsets_[0];
    entry_.end = offsets_[1];
    std::string offsets_text = "[" + std::to_string(entry_.begin) + ", " + std::to_string(entry_.end) + "]";
    if (entry_.begin > entry_.end) fail_tensor("data_offsets " + offsets_text + " has begin after end");
    if (entry_.end > data_size_)
      fail_tensor("data_offsets " + offsets_text + " run past the data area of " + std::to_string(data_size_) +
                  " bytes");

    std::string what = context_ + ": tensor '" + printable(entry_.name) + "'";
    int64_t numel = checked_numel(entry_.shape, what);
    std::string described = std::string(dtype_name(entry_.dtype)) + " " + shape_to_string(entry_.shape);
    int64_t bits = dtype_bits(entry_.dtype);
    if (numel > INT64_MAX / bits) fail_tensor("byte length of " + described + " overflows");
    if ((numel * bits) % 8 != 0)
      fail_tensor(described + " is " + std::to_string(numel * bits) +
                  " bits, not a whole number of bytes (misaligned)");
    uint64_t expected = static_cast<uint64_t>(numel * bits / 8);
    if (entry_.byte_length() != expected)
      fail_tensor("data_offsets " + offsets_text + " hold " + std::to_string(entry_.byte_length()) + " bytes but " +
                  described + " needs " + std::to_string(expected));
    header_.tensors.push_back(std::move(entry_));
  }

  uint64_t data_size_;
  const std::string& context_;
  Header header_;
  std::vector<Frame> stack_;
  std::string key_;
  std::unordered_set<std::string> top_keys_;
  std::unordered_set<std::string> entry_keys_;
  std::vector<uint64_t> offsets_;
  TensorInfo entry_;
  bool done_ = false;
};

// The entries must tile [0, data_size) exactly, as the reference requires: sorted by offset,
// each starting where the previous ended, the last ending at the end of the data area.
void check_tiling(std::vector<TensorInfo>& tensors, uint64_t data_size, const std::string& context) {
  std::sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  uint64_t covered = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : tensors) {
    if (t.begin < covered)
      throw_bad_input(context + ": tensor '" + printable(t.name) + "' (bytes " + std::to_string(t.begin) + ".." +
                      std::to_string(t.end) + ") overlaps tensor '" + printable(previous->name) + "' (bytes " +
                      std::to_string(previous->begin) + ".." + std::to_string(previous->end) + ")");
    if (t.begin > covered)
      throw_bad_input(context + ": hole in the data area: bytes " + std::to_string(covered) + ".." +
                      std::to_string(t.begin) + " before tensor '" + printable(t.name) + "' belong to no tensor");
    covered = t.end;
    previous = &t;
  }
  if (covered != data_size)
    throw_bad_input(context + ": data area has " + std::to_string(data_size - covered) +
                    " bytes after the last tensor that belong to no tensor (tensors end at " +
                    std::to_string(covered) + ", data area is " + std::to_string(data_size) + " bytes)");
}

}  // namespace

Header parse_header(std::string_view json_text, uint64_t data_size, const std::string& context) {
  if (json_text.size() > kMaxHeaderBytes)
    throw_bad_input(context + ": header of " + std::to_string(json_text.size()) + " bytes exceeds the limit of " +
                    std::to_string(kMaxHeaderBytes));
  if (auto bad = first_invalid_utf8(json_text))
    throw_bad_input(context + ": header is not valid UTF-8 (byte " + std::to_string(*bad) + ")");
  // nlohmann's reader takes a NUL as the end of input and would ignore whatever follows it.
  if (auto nul = json_text.find('\0'); nul != std::string_view::npos)
    throw_bad_input(context + ": header contains a NUL byte at " + std::to_string(nul));
  HeaderSax sax(data_size, context);
  const char* first = json_text.data();
  json::sax_parse(first, first + json_text.size(), &sax, nlohmann::detail::input_format_t::json, true, false);
  if (!sax.complete()) throw_bad_input(context + ": header is not valid JSON");
  Header header = sax.take();
  check_tiling(header.tensors, data_size, context);
  return header;
}

}  // namespace moeprep::io
