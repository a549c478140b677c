#include "plan/verify.h"

#include <cctype>

#include "core/error.h"
#include "plan/verify_stages.h"

namespace moeprep::plan {

const char* stage_status_name(StageStatus s) {
  switch (s) {
    case StageStatus::Passed: return "passed";
    case StageStatus::Failed: return "failed";
    case StageStatus::Skipped: return "skipped";
  }
  return "?";
}

void StageReport::fail(const std::string& message) {
  ++failed;
  status = StageStatus::Failed;
  if (failures.size() < 50) failures.push_back(message);
}

bool VerifyReport::passed() const {
  for (const auto& s : stages)
    if (s.status == StageStatus::Failed) return false;
  return true;
}

nlohmann::ordered_json VerifyReport::to_json() const {
  nlohmann::ordered_json j;
  j["destination"] = destination.string();
  j["source"] = source ? nlohmann::ordered_json(source->string()) : nlohmann::ordered_json(nullptr);
  j["passed"] = passed();
  auto& st = j["stages"] = nlohmann::ordered_json::array();
  for (const auto& s : stages) {
    nlohmann::ordered_json e;
    e["name"] = s.name;
    e["status"] = stage_status_name(s.status);
    e["checked"] = s.checked;
    e["failed"] = s.failed;
    e["failures"] = s.failures;
    if (!s.note.empty()) e["note"] = s.note;
    st.push_back(std::move(e));
  }
  nlohmann::ordered_json n;
  n["device"] = device;
  n["threshold"] = threshold;
  n["source_threshold"] = source_threshold;
  auto& rows = n["rows"] = nlohmann::ordered_json::array();
  for (const auto& r : numerics)
    rows.push_back({{"layer", r.layer},
                    {"tokens", r.tokens},
                    {"rel_err", r.rel_err},
                    {"rel_err_source", r.rel_err_source < 0 ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(r.rel_err_source)},
                    {"routing_mismatches", r.routing_mismatches},
                    {"nan_tokens", r.nan_tokens},
                    {"passed", r.passed}});
  j["numerics"] = std::move(n);
  return j;
}

VerifyReport verify_checkpoint(const std::filesystem::path& destination, const VerifyOptions& options,
                               ProgressSink& progress) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(destination)) throw_bad_input(destination.string() + ": not a directory");
  VerifyReport report;
  report.destination = destination;
  report.source = options.source;
  report.device = options.backend_name;
  report.threshold = options.threshold;
  report.source_threshold = options.source_threshold;
  for (const char* name : {"structure", "integrity", "flags", "round_trip", "numerics"}) {
    StageReport stage;
    stage.name = name;
    report.stages.push_back(stage);
  }
  StageReport& structure = report.stages[0];
  StageReport& integrity = report.stages[1];
  StageReport& flags = report.stages[2];
  StageReport& round_trip = report.stages[3];
  StageReport& numerics = report.stages[4];

  auto skip_rest = [&](size_t from, const std::string& why) {
    for (size_t i = from; i < report.stages.size(); ++i) report.stages[i].note = why;
  };
  std::optional<OpenedDestination> dst = check_structure(destination, structure);
  if (!dst) {
    skip_rest(1, "the destination could not be read");
    return report;
  }
  check_integrity(*dst, integrity, progress);
  check_flags(*dst, flags);
  if (!options.source) {
    round_trip.note = numerics.note = "needs --source";
    return report;
  }
  std::optional<io::Checkpoint> source;
  try {
    source.emplace(io::Checkpoint::open(*options.source));
  } catch (const Error& e) {
    round_trip.fail(std::string("source: ") + e.what());
    numerics.note = "the source could not be read";
    return report;
  }
  check_round_trip(*dst, *source, round_trip, progress);
  check_numerics(*dst, *source, options, numerics, report.numerics, progress);
  numerics.note = "device " + options.backend_name;
  return report;
}

std::vector<int64_t> parse_layer_list(const std::string& text) {
  std::vector<int64_t> out;
  size_t i = 0;
  auto number = [&](void) -> int64_t {
    size_t start = i;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
    if (start == i || i - start > 9) throw_usage("invalid layer list '" + text + "' (expected e.g. 0,5-7)");
    return std::stoll(text.substr(start, i - start));
  };
  while (i < text.size()) {
    int64_t a = number(), b = a;
    if (i < text.size() && text[i] == '-') {
      ++i;
      b = number();
    }
    if (b < a) throw_usage("invalid layer range in '" + text + "'");
    if (b - a > 100000) throw_usage("layer range too large in '" + text + "'");
    for (int64_t l = a; l <= b; ++l) out.push_back(l);
    if (i < text.size()) {
      if (text[i] != ',') throw_usage("invalid layer list '" + text + "' (expected e.g. 0,5-7)");
      ++i;
    }
  }
  if (out.empty()) throw_usage("empty layer list");
  return out;
}

}  // namespace moeprep::plan
