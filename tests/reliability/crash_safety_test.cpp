// Crash safety of convert: SIGKILL at seeded random moments of a run must leave DST absent or
// complete and valid, never partial; a rerun must succeed and write exactly the bytes of an
// uninterrupted run. SIGTERM (the Ctrl-C path) must stop cleanly and leave nothing behind.
#include <chrono>
#include <iostream>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "plan/verify.h"
#include "reliability_util.h"

namespace moeprep::reliability {
namespace {

// Big enough (42 MB) that convert takes 100-300 ms (several shards, fsyncs), so that kills land
// in every phase: planning, writing shards, the manifest, the rename.
fs::path make_source(const TempDir& dir) { return make_gpt_oss_source(dir, 3, 1024); }

std::vector<std::string> convert_args(const fs::path& src, const fs::path& dst) {
  return {"convert", src.string(), "-o", dst.string(), "-q", "--threads", "2", "--max-shard-size", "8MB"};
}

bool verifies(const fs::path& dst) {
  plan::VerifyOptions o;
  plan::NullProgress p;
  const plan::VerifyReport r = plan::verify_checkpoint(dst, o, p);
  for (const auto& s : r.stages)
    for (const auto& f : s.failures) ADD_FAILURE() << dst << ": " << s.name << ": " << f;
  return r.passed();
}

TEST(CrashSafety, SigkillAtRandomPointsLeavesDestinationAbsentOrCompleteAndRerunsIdentically) {
  TempDir dir;
  const fs::path src = make_source(dir);
  const fs::path ref = dir / "reference";
  const ChildResult first = run_moeprep(convert_args(src, ref), dir.path());
  ASSERT_TRUE(first.exited && first.code == 0) << describe(first);
  const auto reference = tree_contents(ref);
  ASSERT_GE(reference.size(), 5u);  // shards, index, manifest, config
  // The length of a run, re-measured on every uninterrupted rerun: on a busy machine it drifts.
  double run_seconds = first.seconds;

  // At least 50 kills, and more (up to 100) until kills have landed both in the middle of a run
  // and after its end, however the machine's load stretched the runs.
  constexpr int kMinKills = 50, kMaxKills = 100;
  std::mt19937_64 rng(20240607);
  // Kill moments spread over the whole run and a little past it.
  std::uniform_real_distribution<double> when(0.0, 1.2);
  int kills = 0, absent = 0, absent_with_staging = 0, complete = 0, finished_before_kill = 0;
  const fs::path dst = dir / "out";
  for (; kills < kMaxKills && (kills < kMinKills || absent_with_staging < 10 || complete < 3); ++kills) {
    SCOPED_TRACE("kill " + std::to_string(kills));
    {
      Child child(convert_args(src, dst), dir.path());
      std::this_thread::sleep_for(std::chrono::duration<double>(when(rng) * run_seconds));
      child.kill(SIGKILL);
      const ChildResult r = child.wait();
      if (r.exited) {
        ASSERT_EQ(r.code, 0) << describe(r);
        ++finished_before_kill;
      } else {
        ASSERT_EQ(r.signal, SIGKILL);
      }
    }
    if (!fs::exists(fs::symlink_status(dst))) {
      ++absent;
      if (!leftovers(dir.path()).empty()) ++absent_with_staging;
      // The rerun removes the dead run's staging directory and writes the same bytes.
      const ChildResult again = run_moeprep(convert_args(src, dst), dir.path());
      ASSERT_TRUE(again.exited && again.code == 0) << describe(again);
      run_seconds = again.seconds;
    } else {
      ++complete;
      ASSERT_TRUE(verifies(dst));
    }
    ASSERT_EQ(tree_contents(dst), reference) << "output differs from an uninterrupted run";
    EXPECT_TRUE(leftovers(dir.path()).empty()) << ::testing::PrintToString(leftovers(dir.path()));
    fs::remove_all(dst);
  }
  std::cout << "[figure] SIGKILL during convert (run " << static_cast<int>(first.seconds * 1000) << " ms): " << kills
            << " kills survived: " << absent << " left DST absent (" << absent_with_staging
            << " with a staging directory, removed by the rerun), " << complete
            << " left DST complete and valid (" << finished_before_kill << " runs had finished); every rerun "
            << "byte-identical\n";
  ::testing::Test::RecordProperty("kills", kills);
  ::testing::Test::RecordProperty("absent", absent);
  ::testing::Test::RecordProperty("complete", complete);
  // The kills must have hit the run in the middle, not only before it started or after it ended.
  EXPECT_GE(absent_with_staging, 10);
  EXPECT_GE(complete, 3);
}

TEST(CrashSafety, SigtermStopsCleanlyWithNothingLeftBehind) {
  TempDir dir;
  const fs::path src = make_source(dir);
  const ChildResult first = run_moeprep(convert_args(src, dir / "reference"), dir.path());
  ASSERT_TRUE(first.exited && first.code == 0) << describe(first);
  std::mt19937_64 rng(99);
  // Early in the run: cancellation is checked between pieces of tensor data, and the last part of
  // a run (fsync, manifest, rename) finishes regardless.
  // 10 runs, more (at most 20) until 5 were interrupted; the run length is re-measured on every run that
  // finished first, so a change in the machine's load does not starve the test.
  std::uniform_real_distribution<double> when(0.1, 0.5);
  double run_seconds = first.seconds;
  int runs = 0, interrupted = 0, finished = 0, before_handler = 0;
  for (; runs < 20 && (runs < 10 || interrupted < 5); ++runs) {
    const fs::path dst = dir / "out";
    Child child(convert_args(src, dst), dir.path());
    std::this_thread::sleep_for(std::chrono::duration<double>(when(rng) * run_seconds));
    child.kill(SIGTERM);
    const ChildResult r = child.wait();
    if (r.exited && r.code == 0) {  // finished first: then complete
      EXPECT_TRUE(verifies(dst));
      fs::remove_all(dst);
      ++finished;
      run_seconds = r.seconds;
      continue;
    }
    if (!r.exited) {
      // The signal came before convert installed its handler, so before it created anything.
      ASSERT_EQ(r.signal, SIGTERM) << describe(r);
      EXPECT_FALSE(fs::exists(dst));
      EXPECT_TRUE(leftovers(dir.path()).empty());
      ++before_handler;
      continue;
    }
    // Interrupted: exit 4 with one line, and the run's own staging directory and lock removed.
    EXPECT_EQ(r.code, 4) << describe(r);
    EXPECT_NE(r.err.find("interrupted"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dst));
    EXPECT_TRUE(leftovers(dir.path()).empty());
    EXPECT_FALSE(fs::exists(dir / "out.moeprep-lock"));
    ++interrupted;
  }
  std::cout << "[figure] SIGTERM during convert: " << runs << " runs: " << interrupted
            << " stopped with exit 4 and nothing left, " << finished << " had finished, " << before_handler
            << " ended before convert began\n";
  EXPECT_GE(interrupted, 3);
}

}  // namespace
}  // namespace moeprep::reliability
