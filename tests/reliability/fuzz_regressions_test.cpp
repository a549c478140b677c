// Bugs the fuzz targets found, and their siblings, each pinned by name (the inputs that crashed a
// target are also in the corpus as crash-*, replayed by fuzz_corpus_test.cpp). Before the fixes
// each escaped as a nlohmann::json type_error: the CLI's "internal error" (exit 70) instead of bad
// input (exit 3).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "plan/manifest.h"
#include "plan/manifest_model.h"
#include "reliability_util.h"

namespace moeprep::reliability {
namespace {

// checkpoint_config_fuzz: {"model_type": 4} (and 7.0) in config.json. json::value("model_type",
// "") throws when the key holds another type; detect, the GPT-OSS reader and inspect used it.
TEST(FuzzRegressions, ConfigModelTypeThatIsNotAStringIsBadInput) {
  TempDir dir;
  const fs::path src = dir / "src";
  fs::copy(tiny_checkpoint(), src, fs::copy_options::recursive);
  for (const char* value : {"4", "7.0", "null", "[\"gpt_oss\"]", "{}", "true"}) {
    auto config = nlohmann::json::parse(slurp(src / "config.json"));
    config["model_type"] = nlohmann::json::parse(value);
    spit(src / "config.json", config.dump(2));
    const bool is_null = std::string(value) == "null";  // null reads as absent: no model_type
    ChildResult r = run_moeprep({"convert", src.string(), "-o", (dir / "out").string(), "-q"}, dir.path());
    EXPECT_TRUE(r.exited && r.code == 3) << value << ": " << describe(r);
    EXPECT_NE(r.err.find(is_null ? "model_type ''" : "config.json: \"model_type\" must be a string"), std::string::npos)
        << value << ": " << r.err;
    // inspect still describes the checkpoint and says why no adapter applies.
    r = run_moeprep({"inspect", src.string(), "--json"}, dir.path());
    ASSERT_TRUE(r.exited && r.code == 0) << value << ": " << describe(r);
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_TRUE(j["model"]["adapter"].is_null()) << value;
    EXPECT_NE(j["model"]["adapter_note"].get<std::string>().find("model_type"), std::string::npos) << value;
  }
}

// The same json::value() pattern in model_from_manifest (family, model_type, activation and its
// kind, alpha, limit), which verify calls on every converted directory. Not reached by
// manifest_fuzz in its runs (tests/fuzz/RESULTS.md); found by looking for the pattern found above.
TEST(FuzzRegressions, ManifestModelFieldsOfTheWrongTypeAreBadInput) {
  const nlohmann::json seed = nlohmann::json::parse(
      slurp(fs::path(MOEPREP_SOURCE_DIR) / "testdata" / "fuzz-corpus" / "manifest" / "ok-tiny"));
  const plan::Manifest good = plan::Manifest::from_json(seed, "seed");
  EXPECT_NO_THROW(plan::model_from_manifest(good, "seed"));
  struct Case {
    std::string path;  // in "model"
    nlohmann::json value;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"family", 5, "\"family\" must be a string"},
      {"model_type", false, "\"model_type\" must be a string"},
      {"activation", "swiglu", "\"activation\" must be an object"},
      {"activation/kind", 1, "activation: \"kind\" must be a string"},
      {"activation/alpha", "1.7", "activation: \"alpha\" must be a number"},
      {"activation/limit", nullptr, "activation: \"limit\" must be a number"},
  };
  for (const Case& c : cases) {
    nlohmann::json j = seed;
    j["model"][nlohmann::json::json_pointer("/" + c.path)] = c.value;
    const plan::Manifest m = plan::Manifest::from_json(j, "moeprep.json");
    try {
      plan::model_from_manifest(m, "moeprep.json");
      ADD_FAILURE() << c.path << " = " << c.value.dump() << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::BadInput) << c.path;
      EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << c.path << ": " << e.what();
    }
  }
}

}  // namespace
}  // namespace moeprep::reliability
