// Two converts writing the same DST at once: exactly one wins, the other fails cleanly with
// "another moeprep is writing" (the lock beside DST) and leaves the winner's output intact.
#include <iostream>

#include <gtest/gtest.h>

#include "io/atomic_dir.h"
#include "plan/verify.h"
#include "reliability_util.h"

namespace moeprep::reliability {
namespace {

TEST(Concurrency, ConvertFailsCleanlyWhileAnotherHoldsTheLock) {
  TempDir dir;
  const fs::path dst = dir / "out";
  io::DestinationLock held(dst);  // as a running convert holds it
  for (const char* force : {"", "--force"}) {
    std::vector<std::string> args = {"convert", tiny_checkpoint().string(), "-o", dst.string(), "-q"};
    if (*force) args.push_back(force);
    const ChildResult r = run_moeprep(args, dir.path());
    EXPECT_TRUE(r.exited && r.code == 3) << describe(r);
    EXPECT_NE(r.err.find("another moeprep is writing " + dst.string()), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(fs::exists(dst));
    EXPECT_TRUE(leftovers(dir.path()).empty());
  }
  EXPECT_TRUE(fs::exists(held.lock_path())) << "the loser must not remove the holder's lock";
}

TEST(Concurrency, TwoConvertsToTheSameDestinationExactlyOneWins) {
  TempDir dir;
  const fs::path src = make_gpt_oss_source(dir, 2, 512);
  const fs::path ref = dir / "reference";
  ASSERT_EQ(run_moeprep({"convert", src.string(), "-o", ref.string(), "-q"}, dir.path()).code, 0);
  const auto reference = tree_contents(ref);
  constexpr int kRounds = 8;
  int saw_lock = 0, saw_exists = 0;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const fs::path dst = dir / "out";
    const std::vector<std::string> args = {"convert", src.string(), "-o", dst.string(), "-q", "--threads", "1"};
    Child a(args, dir.path());
    Child b(args, dir.path());
    const ChildResult ra = a.wait(), rb = b.wait();
    ASSERT_TRUE(ra.exited && rb.exited) << describe(ra) << " / " << describe(rb);
    ASSERT_EQ((ra.code == 0) + (rb.code == 0), 1) << describe(ra) << " / " << describe(rb);
    const ChildResult& loser = ra.code == 0 ? rb : ra;
    EXPECT_EQ(loser.code, 3) << describe(loser);
    EXPECT_EQ(std::count(loser.err.begin(), loser.err.end(), '\n'), 1) << loser.err;
    // Either it found the winner writing, or (started late) the winner's finished output.
    if (loser.err.find("another moeprep is writing") != std::string::npos) ++saw_lock;
    else if (loser.err.find("already exists") != std::string::npos) ++saw_exists;
    else ADD_FAILURE() << "unexpected refusal: " << loser.err;
    ASSERT_EQ(tree_contents(dst), reference);
    plan::VerifyOptions vo;
    plan::NullProgress progress;
    EXPECT_TRUE(plan::verify_checkpoint(dst, vo, progress).passed());
    EXPECT_TRUE(leftovers(dir.path()).empty());
    EXPECT_FALSE(fs::exists(dir / "out.moeprep-lock"));
    fs::remove_all(dst);
  }
  std::cout << "[figure] two simultaneous converts to one DST, " << kRounds << " rounds: exactly one winner each; "
            << "loser saw the lock " << saw_lock << "x, the finished DST " << saw_exists << "x\n";
  EXPECT_GE(saw_lock, kRounds / 2);
}

}  // namespace
}  // namespace moeprep::reliability
