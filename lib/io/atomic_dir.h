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

// Removes staging directories of `destination` left behind by earlier runs whose process is
// gone. Returns how many were removed.
int remove_stale_staging(const std::filesystem::path& destination);

// fsync a file or directory by path; throws Io.
void fsync_path(const std::filesystem::path& path);

}  // namespace moeprep::io
