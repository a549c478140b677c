#pragma once
// All-or-nothing output directories. Files are written into a staging directory beside the
// destination (DST.moeprep-tmp-<pid>-<n>), fsync'd, and the staging directory is renamed to
// DST only when complete. An existing DST is never touched unless replace is allowed; then it
// is moved aside, the new one renamed in, and the old one removed. Staging directories left by
// a killed run are removed by the next run for the same DST.
#include <filesystem>
#include <string>

namespace moeprep::io {

class AtomicOutputDir {
 public:
  // Throws BadInput if `destination` exists and !replace_existing; Io on failure to create.
  AtomicOutputDir(const std::filesystem::path& destination, bool replace_existing);
  ~AtomicOutputDir();  // removes the staging directory unless committed
  AtomicOutputDir(const AtomicOutputDir&) = delete;
  AtomicOutputDir& operator=(const AtomicOutputDir&) = delete;

  const std::filesystem::path& staging() const { return staging_; }
  const std::filesystem::path& destination() const { return destination_; }
  // Atomically replaces a file inside the staging directory: write to a temp name, fsync, rename.
  void write_file(const std::string& name, const std::string& contents);
  // fsyncs every file and the staging directory, renames into place, fsyncs the parent.
  void commit();

 private:
  std::filesystem::path destination_;
  std::filesystem::path staging_;
  bool replace_ = false;
  bool committed_ = false;
};

// The absolute, lexically normal form of a destination (no trailing '/'), from which the
// sibling names DST.moeprep-tmp-*, DST.moeprep-old-* and DST.moeprep-lock are made.
std::filesystem::path normalize_destination(const std::filesystem::path& destination);

// Removes staging directories of `destination` left behind by earlier runs whose process is
// gone (kill(pid, 0) fails with ESRCH), and old copies set aside by an interrupted replace.
// Returns how many were removed. The constructor of AtomicOutputDir calls it. Pids are only
// meaningful on this host: do not share one output directory between machines.
int remove_stale_staging(const std::filesystem::path& destination);

// fsync a file or directory by path; throws Io.
void fsync_path(const std::filesystem::path& path);

// An advisory lock so that two runs writing the same destination cannot overlap: flock(2) on
// `<DST>.moeprep-lock` beside DST, taken without waiting. The lock file is removed on release;
// a run that locked a file which was removed meanwhile notices and locks the new one.
class DestinationLock {
 public:
  // Throws BadInput "another moeprep is writing <DST> ..." when the lock is held (by any
  // process, or by another DestinationLock in this one); Io when the lock file cannot be made.
  explicit DestinationLock(const std::filesystem::path& destination);
  ~DestinationLock();
  DestinationLock(const DestinationLock&) = delete;
  DestinationLock& operator=(const DestinationLock&) = delete;

  const std::filesystem::path& lock_path() const { return lock_path_; }

 private:
  std::filesystem::path lock_path_;
  int fd_ = -1;
};

}  // namespace moeprep::io
