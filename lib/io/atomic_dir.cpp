// AtomicOutputDir: the output appears under its final name complete or not at all.
#include "io/atomic_dir.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <stdio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <vector>

#include "core/error.h"
#include "io/mapped_input_guard.h"
#include "io/names.h"
#include "io/posix_file.h"

namespace fs = std::filesystem;

namespace moeprep::io {
namespace {

constexpr const char* kStagingInfix = ".moeprep-tmp-";
constexpr const char* kOldInfix = ".moeprep-old-";

fs::path sibling(const fs::path& destination, const std::string& suffix) {
  return destination.parent_path() / (destination.filename().string() + suffix);
}

bool exists_or_is_link(const fs::path& p) {
  std::error_code ec;
  return fs::exists(fs::symlink_status(p, ec));
}

void remove_tree(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
  if (ec) throw Error(ErrorKind::Io, p.string() + ": cannot remove: " + ec.message());
}

bool all_digits(const std::string& text) {
  if (text.empty()) return false;
  for (char c : text)
    if (c < '0' || c > '9') return false;
  return true;
}

// "<digits>" -> pid, or -1 when `text` is not a plausible pid.
long parse_pid(const std::string& text) {
  if (!all_digits(text) || text.size() > 10) return -1;
  long value = 0;
  for (char c : text) value = value * 10 + (c - '0');
  return value > 0 && value <= INT_MAX ? value : -1;
}

bool process_is_gone(long pid) { return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH; }

// Renames without ever replacing an existing `to` (rename(2) would replace an empty directory).
void rename_no_replace(const fs::path& from, const fs::path& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return;
  if (errno == EEXIST) throw_bad_input(to.string() + ": appeared while the output was being written; not replaced");
  if (errno != ENOSYS && errno != EINVAL) throw_io(to.string() + ": cannot rename " + from.string() + " into place");
  // The file system cannot refuse to replace; check, then rename (a small window remains).
  if (exists_or_is_link(to)) throw_bad_input(to.string() + ": appeared while the output was being written; not replaced");
  if (::rename(from.c_str(), to.c_str()) != 0) throw_io(to.string() + ": cannot rename " + from.string() + " into place");
}

void fsync_tree(const fs::path& root) {
  std::error_code ec;
  for (fs::recursive_directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    fs::file_status st = it->symlink_status(ec);
    if (ec) break;
    if (fs::is_regular_file(st) || fs::is_directory(st)) fsync_path(it->path());
  }
  if (ec) throw Error(ErrorKind::Io, root.string() + ": cannot list for fsync: " + ec.message());
  fsync_path(root);
}

}  // namespace

fs::path normalize_destination(const fs::path& destination) {
  std::error_code ec;
  fs::path p = fs::absolute(destination, ec);
  if (ec) throw Error(ErrorKind::Io, destination.string() + ": cannot make absolute: " + ec.message());
  p = p.lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  if (p == p.root_path()) throw_bad_input(destination.string() + ": not usable as an output directory");
  return p;
}

AtomicOutputDir::AtomicOutputDir(const fs::path& destination, bool replace_existing)
    : destination_(normalize_destination(destination)), replace_(replace_existing) {
  const std::string dst = destination_.string();
  if (exists_or_is_link(destination_) && !replace_)
    throw_bad_input(dst + ": already exists; refusing to overwrite it");
  std::error_code ec;
  fs::create_directories(destination_.parent_path(), ec);
  if (ec) throw Error(ErrorKind::Io, destination_.parent_path().string() + ": cannot create: " + ec.message());
  remove_stale_staging(destination_);

  static std::atomic<unsigned> counter{0};
  const std::string prefix = kStagingInfix + std::to_string(::getpid()) + "-";
  for (;;) {
    fs::path candidate = sibling(destination_, prefix + std::to_string(counter++));
    if (::mkdir(candidate.c_str(), 0755) == 0) {
      staging_ = candidate;
      return;
    }
    if (errno != EEXIST) throw_io(candidate.string() + ": cannot create the staging directory");
  }
}

AtomicOutputDir::~AtomicOutputDir() {
  if (committed_ || staging_.empty()) return;
  std::error_code ec;
  fs::remove_all(staging_, ec);  // best effort: a destructor must not throw
}

void AtomicOutputDir::write_file(const std::string& name, const std::string& contents) {
  if (committed_) throw_internal(destination_.string() + ": write_file('" + printable(name) + "') after commit()");
  check_plain_file_name(name, "file name", staging_.string());
  fs::path temp = staging_ / (".moeprep-write-" + name);
  fs::path final_path = staging_ / name;
  write_file_durably(temp, contents);
  if (::rename(temp.c_str(), final_path.c_str()) != 0) throw_io(final_path.string() + ": cannot rename into place");
}

void AtomicOutputDir::commit() {
  if (committed_) throw_internal(destination_.string() + ": commit() called twice");
  // The last chance to notice that an input was truncated while it was read (its bytes came in
  // as zeros): nothing made from it may appear under the destination's name.
  throw_if_mapped_input_changed();
  fsync_tree(staging_);
  const fs::path parent = destination_.parent_path();
  if (replace_ && exists_or_is_link(destination_)) {
    fs::path old = sibling(destination_, kOldInfix + std::to_string(::getpid()));
    if (exists_or_is_link(old)) remove_tree(old);
    if (::rename(destination_.c_str(), old.c_str()) != 0)
      throw_io(destination_.string() + ": cannot move the existing output aside");
    if (::rename(staging_.c_str(), destination_.c_str()) != 0) {
      int saved = errno;
      ::rename(old.c_str(), destination_.c_str());  // put the old output back
      errno = saved;
      throw_io(destination_.string() + ": cannot rename " + staging_.string() + " into place");
    }
    committed_ = true;
    fsync_path(parent);
    // The new output is in place; an old copy that cannot be removed now is removed by the
    // next run's remove_stale_staging once this process is gone.
    std::error_code ec;
    fs::remove_all(old, ec);
    return;
  }
  rename_no_replace(staging_, destination_);
  committed_ = true;
  fsync_path(parent);
}

int remove_stale_staging(const fs::path& destination) {
  const fs::path dst = normalize_destination(destination);
  const std::string base = dst.filename().string();
  const std::string staging_prefix = base + kStagingInfix;
  const std::string old_prefix = base + kOldInfix;
  std::vector<fs::path> stale;
  std::error_code ec;
  for (fs::directory_iterator it(dst.parent_path(), ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    long pid = -1;
    if (name.compare(0, staging_prefix.size(), staging_prefix) == 0) {
      std::string rest = name.substr(staging_prefix.size());
      auto dash = rest.find('-');
      if (dash != std::string::npos && all_digits(rest.substr(dash + 1))) pid = parse_pid(rest.substr(0, dash));
    } else if (name.compare(0, old_prefix.size(), old_prefix) == 0) {
      pid = parse_pid(name.substr(old_prefix.size()));
    }
    std::error_code st_ec;
    if (pid > 0 && pid != ::getpid() && fs::is_directory(it->symlink_status(st_ec)) && process_is_gone(pid))
      stale.push_back(it->path());
  }
  // A missing parent simply has nothing stale in it.
  if (ec && ec != std::errc::no_such_file_or_directory)
    throw Error(ErrorKind::Io, dst.parent_path().string() + ": cannot list: " + ec.message());
  for (const fs::path& p : stale) remove_tree(p);
  return static_cast<int>(stale.size());
}

void fsync_path(const fs::path& path) {
  UniqueFd fd = open_or_throw(path, O_RDONLY);
  fsync_or_throw(fd.get(), path.string());
}

}  // namespace moeprep::io
