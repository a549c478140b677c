// Hostile names and paths in a checkpoint: shard names in the index that climb out ("..", "/",
// absolute paths), hold NUL or are very long; shards, config.json or the index that are symlinks
// to files outside; a lock file planted as a symlink; a destination that is a symlink. Each is
// refused with one clear line (convert and inspect), or, where a name is only data (tensor
// names), is carried as data and never used as a path. A canary directory beside SRC and DST
// proves that nothing outside them is read into the output, written, created or removed.
#include <sys/stat.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "io/names.h"
#include "io/safetensors_writer.h"
#include "reliability_util.h"

namespace moeprep::reliability {
namespace {

const char* const kIndex = "model.safetensors.index.json";
const char* const kShard1 = "model-00001-of-00002.safetensors";

// The state of a directory that must not change: every entry with its type, size, mode,
// mtime and contents.
std::string snapshot(const fs::path& dir) {
  std::string s;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    struct stat st {};
    ::lstat(e.path().c_str(), &st);
    s += e.path().string() + " mode " + std::to_string(st.st_mode) + " size " + std::to_string(st.st_size) +
         " mtime " + std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + "\n";
    if (fs::is_regular_file(fs::symlink_status(e.path()))) s += slurp(e.path()) + "\n";
  }
  return s;
}

class HostilePaths : public ::testing::Test {
 protected:
  void SetUp() override {
    outside_ = dir_ / "outside";
    fs::create_directories(outside_);
    spit(outside_ / "canary.txt", "canary: must never be read into an output or changed\n");
    // A valid shard outside, so that an escape would find something to read.
    fs::copy_file(tiny_checkpoint() / kShard1, outside_ / kShard1);
    spit(outside_ / "config.json", slurp(tiny_checkpoint() / "config.json"));
    src_ = dir_ / "src";
    fs::copy(tiny_checkpoint(), src_, fs::copy_options::recursive);
    dst_ = dir_ / "dst";
    outside_before_ = snapshot(outside_);
  }

  void set_shard_of_first_tensor(const std::string& shard) {
    auto index = nlohmann::json::parse(slurp(src_ / kIndex));
    index["weight_map"][index["weight_map"].begin().key()] = shard;
    spit(src_ / kIndex, index.dump(2));
  }

  // convert and inspect both refuse with exit 3 and one line holding every needle; nothing is
  // left behind, and the canary directory is untouched.
  void expect_refused(const std::vector<std::string>& needles, const std::string& what) {
    for (const std::string command : {"convert", "inspect"}) {
      std::vector<std::string> args = {command, src_.string()};
      if (command == "convert") args.insert(args.end(), {"-o", dst_.string(), "-q"});
      const ChildResult r = run_moeprep(args, dir_.path());
      EXPECT_TRUE(r.exited && r.code == 3) << what << ": " << command << ": " << describe(r);
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << what << ": " << r.err;
      for (const auto& n : needles)
        EXPECT_NE(r.err.find(n), std::string::npos) << what << ": lacks " << n << ": " << r.err;
    }
    EXPECT_FALSE(fs::exists(fs::symlink_status(dst_))) << what;
    EXPECT_TRUE(leftovers(dir_.path()).empty()) << what;
    EXPECT_FALSE(fs::exists(dir_ / "dst.moeprep-lock")) << what;
    EXPECT_EQ(snapshot(outside_), outside_before_) << what;
  }

  TempDir dir_;
  fs::path outside_, src_, dst_;
  std::string outside_before_;
};

TEST_F(HostilePaths, ShardNamesThatAreNotPlainFileNamesAreRefused) {
  const std::string index = slurp(src_ / kIndex);
  const std::vector<std::string> names = {
      "..",
      ".",
      "../outside/" + std::string(kShard1),
      "../../../../../../../../etc/passwd",
      (outside_ / kShard1).string(),  // absolute
      "/etc/passwd",
      "sub/" + std::string(kShard1),
      "..\\" + std::string(kShard1),
      std::string(kShard1) + std::string(1, '\0') + ".txt",  // NUL inside the name
      std::string("\x1b[31m") + kShard1,                        // an escape sequence for the terminal
  };
  for (const auto& name : names) {
    spit(src_ / kIndex, index);
    set_shard_of_first_tensor(name);
    expect_refused({kIndex, "is not a plain file name"}, "shard name " + io::printable(name));
  }
}

TEST_F(HostilePaths, VeryLongShardAndTensorNamesAreRefusedAndCutInTheMessage) {
  const std::string index = slurp(src_ / kIndex);
  set_shard_of_first_tensor(std::string(100000, 'a') + ".safetensors");
  expect_refused({kIndex, "does not exist", "..."}, "100000-byte shard name");
  // The message cuts the name (printable() keeps 120 bytes).
  const ChildResult r = run_moeprep({"inspect", src_.string()}, dir_.path());
  EXPECT_LT(r.err.size(), 600u) << r.err.size();

  auto j = nlohmann::json::parse(index);
  j["weight_map"][std::string(5000, 'n')] = kShard1;
  spit(src_ / kIndex, j.dump());
  expect_refused({kIndex, "is 5000 bytes, over the limit of 1024"}, "5000-byte tensor name");
}

TEST_F(HostilePaths, SymlinksOutOfTheCheckpointAreRefused) {
  // A shard.
  fs::remove(src_ / kShard1);
  fs::create_symlink(outside_ / kShard1, src_ / kShard1);
  expect_refused({"shard '" + std::string(kShard1) + "' is a symlink resolving outside the checkpoint"}, "shard link");
  // The same escape written as a relative link.
  fs::remove(src_ / kShard1);
  fs::create_symlink(fs::path("..") / "outside" / kShard1, src_ / kShard1);
  expect_refused({"is a symlink resolving outside the checkpoint"}, "relative shard link");
  fs::remove(src_ / kShard1);
  fs::copy_file(tiny_checkpoint() / kShard1, src_ / kShard1);
  // config.json and the index are read too: the same rule.
  fs::remove(src_ / "config.json");
  fs::create_symlink(outside_ / "config.json", src_ / "config.json");
  expect_refused({"config.json is a symlink resolving outside the checkpoint"}, "config link");
  fs::remove(src_ / "config.json");
  fs::copy_file(tiny_checkpoint() / "config.json", src_ / "config.json");
  fs::rename(src_ / kIndex, outside_ / kIndex);
  outside_before_ = snapshot(outside_);
  fs::create_symlink(outside_ / kIndex, src_ / kIndex);
  expect_refused({std::string(kIndex) + " is a symlink resolving outside the checkpoint"}, "index link");
}

TEST_F(HostilePaths, LinksInsideTheCheckpointStillWork) {
  fs::create_directories(src_ / "blobs");
  fs::rename(src_ / kShard1, src_ / "blobs" / "0123abcd");
  fs::create_symlink(fs::path("blobs") / "0123abcd", src_ / kShard1);
  const ChildResult r = run_moeprep({"convert", src_.string(), "-o", dst_.string(), "-q"}, dir_.path());
  ASSERT_TRUE(r.exited && r.code == 0) << describe(r);
  EXPECT_EQ(run_moeprep({"verify", dst_.string(), "--source", src_.string(), "--tokens", "1"}, dir_.path()).code, 0);
}

TEST_F(HostilePaths, ExtraFilesThatAreSymlinksAreNotCopiedThrough) {
  // tokenizer-like files are copied into DST; a link to a file outside must not be followed.
  fs::create_symlink(outside_ / "canary.txt", src_ / "tokenizer.json");
  const ChildResult r = run_moeprep({"convert", src_.string(), "-o", dst_.string(), "-q"}, dir_.path());
  ASSERT_TRUE(r.exited && r.code == 0) << describe(r);
  EXPECT_FALSE(fs::exists(fs::symlink_status(dst_ / "tokenizer.json")));
  for (const auto& [name, bytes] : tree_contents(dst_))
    EXPECT_EQ(bytes.find("canary: must never"), std::string::npos) << name;
  EXPECT_EQ(snapshot(outside_), outside_before_);
}

// Adds one extra shard holding `names` (4 bytes each) to the source checkpoint and its index.
// Written by hand (not ShardWriter, which refuses such names), as a hostile file would be.
void add_raw_shard(const fs::path& src, const std::vector<std::string>& names) {
  nlohmann::ordered_json header;
  uint64_t offset = 0;
  for (const auto& n : names) {
    header[n] = {{"dtype", "U8"}, {"shape", {4}}, {"data_offsets", {offset, offset + 4}}};
    offset += 4;
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8) text += ' ';
  std::string bytes = io::testing::le64(text.size()) + text;
  for (size_t i = 0; i < names.size(); ++i) bytes += "evil";
  spit(src / "model-extra.safetensors", bytes);
  auto index = nlohmann::json::parse(slurp(src / kIndex));
  for (const auto& n : names) index["weight_map"][n] = "model-extra.safetensors";
  index["metadata"]["total_size"] = index["metadata"]["total_size"].get<uint64_t>() + 4 * names.size();
  spit(src / kIndex, index.dump(2));
}

// Tensor names that read as absolute paths or climb with ".." are refused, naming the tensor,
// and nothing is created anywhere.
TEST_F(HostilePaths, TensorNamesThatLookLikePathsAreRefused) {
  for (const std::string name : {"../../outside/evil", "/tmp/evil-absolute", "a/../../b", ".."}) {
    TempDir dir;
    const fs::path src = dir / "src";
    fs::copy(tiny_checkpoint(), src);
    add_raw_shard(src, {name});
    const ChildResult r = run_moeprep({"convert", src.string(), "-o", (dir / "dst").string(), "-q"}, dir.path());
    EXPECT_TRUE(r.exited && r.code == 3) << name << ": " << describe(r);
    EXPECT_NE(r.err.find("tensor name '" + name + "' looks like"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dir / "dst"));
  }
  EXPECT_FALSE(fs::exists("/tmp/evil-absolute"));
  EXPECT_EQ(snapshot(outside_), outside_before_);
}

// Interior '/' is legal (TensorFlow writes "dense/kernel:0"): such a name is carried through as
// a name, never used as a path, and nothing is created outside DST.
TEST_F(HostilePaths, TensorNamesWithInteriorSlashesAreCarriedThroughAsNames) {
  const std::vector<std::string> names = {"dense/kernel:0", "outside/evil", "a/b/c"};
  add_raw_shard(src_, names);
  const auto root_before = entries(dir_.path());
  const ChildResult r = run_moeprep({"convert", src_.string(), "-o", dst_.string(), "-q"}, dir_.path());
  ASSERT_TRUE(r.exited && r.code == 0) << describe(r);
  const io::Checkpoint out = io::Checkpoint::open(dst_);
  for (const auto& n : names) EXPECT_NE(out.try_find(n), nullptr) << n;
  auto root_after = entries(dir_.path());
  // Only DST is new (and the test's own captured stdout/stderr of the child).
  root_after.erase(std::remove_if(root_after.begin(), root_after.end(),
                                  [](const std::string& n) { return n == "dst" || n.rfind("child-", 0) == 0; }),
                   root_after.end());
  EXPECT_EQ(root_after, root_before);
  EXPECT_EQ(snapshot(outside_), outside_before_);
  EXPECT_EQ(run_moeprep({"verify", dst_.string(), "--source", src_.string(), "--tokens", "1"}, dir_.path()).code, 0);
}

TEST_F(HostilePaths, LockFilePlantedAsASymlinkIsNotFollowed) {
  // Someone with write access to DST's parent plants the lock name as a link to a file of ours.
  fs::create_symlink(outside_ / "canary.txt", dir_ / "dst.moeprep-lock");
  fs::create_symlink(outside_ / "new-file", dir_ / "dst2.moeprep-lock");  // O_CREAT would make it
  for (const std::string dst : {"dst", "dst2"}) {
    const ChildResult r = run_moeprep({"convert", src_.string(), "-o", (dir_ / dst).string(), "-q"}, dir_.path());
    EXPECT_TRUE(r.exited && r.code == 3) << describe(r);
    EXPECT_NE(r.err.find(dst + ".moeprep-lock: is a symbolic link; a lock file is never followed"), std::string::npos)
        << r.err;
    EXPECT_FALSE(fs::exists(dir_ / dst));
  }
  EXPECT_FALSE(fs::exists(outside_ / "new-file"));
  EXPECT_EQ(snapshot(outside_), outside_before_);
}

TEST_F(HostilePaths, ForcedReplaceOfASymlinkDestinationReplacesTheLinkNotItsTarget) {
  fs::create_directories(dir_ / "victim");
  spit(dir_ / "victim" / "keep.txt", "keep");
  fs::create_symlink(dir_ / "victim", dst_);
  ChildResult r = run_moeprep({"convert", src_.string(), "-o", dst_.string(), "-q"}, dir_.path());
  EXPECT_TRUE(r.exited && r.code == 3) << describe(r);
  EXPECT_NE(r.err.find("already exists"), std::string::npos) << r.err;
  r = run_moeprep({"convert", src_.string(), "-o", dst_.string(), "-q", "--force"}, dir_.path());
  ASSERT_TRUE(r.exited && r.code == 0) << describe(r);
  EXPECT_FALSE(fs::is_symlink(dst_));
  EXPECT_TRUE(fs::exists(dst_ / "moeprep.json"));
  EXPECT_EQ(entries(dir_ / "victim"), std::vector<std::string>{"keep.txt"});
  EXPECT_EQ(slurp(dir_ / "victim" / "keep.txt"), "keep");
  EXPECT_TRUE(leftovers(dir_.path()).empty());
}

}  // namespace
}  // namespace moeprep::reliability
