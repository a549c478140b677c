#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

#include <gtest/gtest.h>

#include "io/atomic_dir.h"
#include "io_test_util.h"

namespace moeprep::io {
namespace {

namespace fs = std::filesystem;
using testing::bad_input;
using testing::read_bytes;
using testing::TempDir;

// The pid of a process that has exited and been reaped.
pid_t dead_pid() {
  pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  return child;
}

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(AtomicOutputDir, CommitMovesCompleteDirectoryIntoPlace) {
  TempDir root;
  fs::path dst = root / "out";
  {
    AtomicOutputDir out(dst, false);
    EXPECT_EQ(out.destination(), dst);
    std::string staging_name = out.staging().filename().string();
    EXPECT_EQ(staging_name.rfind("out.moeprep-tmp-" + std::to_string(::getpid()) + "-", 0), 0u) << staging_name;
    EXPECT_EQ(out.staging().parent_path(), root.path());
    out.write_file("a.json", "{}\n");
    out.write_file("a.json", "{\"v\":2}\n");  // replaced atomically
    testing::write_bytes(out.staging() / "shard.bin", "data");
    EXPECT_FALSE(fs::exists(dst)) << "nothing visible before commit";
    out.commit();
    EXPECT_FALSE(fs::exists(out.staging()));
    EXPECT_TRUE(testing::throws_error([&] { out.commit(); }, ErrorKind::Internal, {"commit() called twice"}));
  }
  EXPECT_EQ(entries(dst), (std::vector<std::string>{"a.json", "shard.bin"}));
  EXPECT_EQ(read_bytes(dst / "a.json"), "{\"v\":2}\n");
  EXPECT_EQ(entries(root.path()), (std::vector<std::string>{"out"}));
}

TEST(AtomicOutputDir, DestructorRemovesUncommittedStaging) {
  TempDir root;
  fs::path staging;
  {
    AtomicOutputDir out(root / "out", false);
    staging = out.staging();
    out.write_file("partial", "x");
    EXPECT_TRUE(fs::exists(staging));
  }
  EXPECT_FALSE(fs::exists(staging));
  EXPECT_FALSE(fs::exists(root / "out"));
  EXPECT_TRUE(entries(root.path()).empty());
}

TEST(AtomicOutputDir, RefusesExistingDestination) {
  TempDir root;
  fs::create_directories(root / "out");
  testing::write_bytes(root / "out" / "keep", "precious");
  EXPECT_TRUE(bad_input([&] { AtomicOutputDir out(root / "out", false); },
                        {(root / "out").string(), "already exists; refusing to overwrite it"}));
  EXPECT_EQ(read_bytes(root / "out" / "keep"), "precious");
  EXPECT_EQ(entries(root.path()), (std::vector<std::string>{"out"}));
  testing::write_bytes(root / "file", "x");
  EXPECT_TRUE(bad_input([&] { AtomicOutputDir out(root / "file", false); }, {"already exists"}));
}

TEST(AtomicOutputDir, ReplaceSwapsOldForNew) {
  TempDir root;
  fs::create_directories(root / "out");
  testing::write_bytes(root / "out" / "old-only", "old");
  {
    AtomicOutputDir out(root / "out/", true);  // a trailing slash names the same directory
    EXPECT_EQ(out.destination(), root / "out");
    out.write_file("new-only", "new");
    EXPECT_TRUE(fs::exists(root / "out" / "old-only")) << "old output untouched until commit";
    out.commit();
  }
  EXPECT_EQ(entries(root / "out"), (std::vector<std::string>{"new-only"}));
  EXPECT_EQ(entries(root.path()), (std::vector<std::string>{"out"})) << "no staging or old copy left";
}

TEST(AtomicOutputDir, ReplaceWithoutExistingDestinationJustCommits) {
  TempDir root;
  AtomicOutputDir out(root / "nested" / "out", true);  // missing parents are created
  out.write_file("f", "1");
  out.commit();
  EXPECT_EQ(read_bytes(root / "nested" / "out" / "f"), "1");
}

TEST(AtomicOutputDir, CommitRefusesDestinationThatAppearedMeanwhile) {
  TempDir root;
  AtomicOutputDir out(root / "out", false);
  out.write_file("f", "1");
  fs::create_directories(root / "out");  // an empty directory rename(2) would silently replace
  EXPECT_TRUE(bad_input([&] { out.commit(); }, {(root / "out").string(), "appeared while the output was being written"}));
  EXPECT_TRUE(fs::is_empty(root / "out"));
}

TEST(AtomicOutputDir, WriteFileRefusesPathsOutsideStaging) {
  TempDir root;
  AtomicOutputDir out(root / "out", false);
  for (const std::string name : {"../escape", "a/b", "", ".."})
    EXPECT_TRUE(bad_input([&] { out.write_file(name, "x"); }, {"is not a plain file name"})) << name;
  EXPECT_FALSE(fs::exists(root / "escape"));
}

TEST(AtomicOutputDir, RemovesStaleStagingOfDeadProcesses) {
  TempDir root;
  fs::path dst = root / "out";
  pid_t dead = dead_pid();
  std::string live = std::to_string(::getppid());  // our parent is alive while we run
  fs::create_directories(root / ("out.moeprep-tmp-" + std::to_string(dead) + "-0"));
  fs::create_directories(root / ("out.moeprep-tmp-" + std::to_string(dead) + "-17") / "sub");
  fs::create_directories(root / ("out.moeprep-old-" + std::to_string(dead)));
  fs::create_directories(root / ("out.moeprep-tmp-" + live + "-0"));
  fs::create_directories(root / ("out.moeprep-tmp-" + std::to_string(::getpid()) + "-999"));
  fs::create_directories(root / ("other.moeprep-tmp-" + std::to_string(dead) + "-0"));  // another destination
  fs::create_directories(root / ("out.moeprep-tmp-" + std::to_string(dead) + "-x"));    // not our pattern
  EXPECT_EQ(remove_stale_staging(dst), 3);
  std::vector<std::string> kept = {"other.moeprep-tmp-" + std::to_string(dead) + "-0",
                                   "out.moeprep-tmp-" + std::to_string(dead) + "-x",
                                   "out.moeprep-tmp-" + std::to_string(::getpid()) + "-999",
                                   "out.moeprep-tmp-" + live + "-0"};
  std::sort(kept.begin(), kept.end());
  EXPECT_EQ(entries(root.path()), kept);
  EXPECT_EQ(remove_stale_staging(root / "missing-parent" / "out"), 0);
}

TEST(AtomicOutputDir, ConstructorCleansStaleStaging) {
  TempDir root;
  fs::path stale = root / ("out.moeprep-tmp-" + std::to_string(dead_pid()) + "-3");
  fs::create_directories(stale);
  AtomicOutputDir out(root / "out", false);
  EXPECT_FALSE(fs::exists(stale));
}

TEST(AtomicOutputDir, FsyncPathReportsMissingFile) {
  TempDir root;
  fsync_path(root.path());
  EXPECT_TRUE(testing::throws_error([&] { fsync_path(root / "none"); }, ErrorKind::Io, {"none", "cannot open"}));
}

TEST(DestinationLock, SecondLockOnSameDestinationFails) {
  TempDir root;
  fs::path dst = root / "out";
  {
    DestinationLock first(dst);
    EXPECT_EQ(first.lock_path(), root / "out.moeprep-lock");
    EXPECT_TRUE(fs::exists(first.lock_path()));
    EXPECT_TRUE(bad_input([&] { DestinationLock second(dst); }, {"another moeprep is writing " + dst.string()}));
    DestinationLock other(root / "elsewhere");  // a different destination is independent
  }
  EXPECT_FALSE(fs::exists(root / "out.moeprep-lock")) << "released lock removes its file";
  DestinationLock again(dst);
}

TEST(DestinationLock, HeldAcrossProcesses) {
  TempDir root;
  fs::path dst = root / "out";
  auto child_can_lock = [&] {
    pid_t child = ::fork();
    if (child == 0) {
      try {
        DestinationLock lock(dst);
        ::_exit(0);
      } catch (const Error& e) {
        ::_exit(e.kind() == ErrorKind::BadInput && std::string(e.what()).find("another moeprep") != std::string::npos ? 1
                                                                                                                      : 2);
      } catch (...) {
        ::_exit(3);
      }
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  {
    DestinationLock held(dst);
    EXPECT_EQ(child_can_lock(), 1) << "child must see the lock held";
  }
  EXPECT_EQ(child_can_lock(), 0) << "child must get the lock once released";
}

}  // namespace
}  // namespace moeprep::io
