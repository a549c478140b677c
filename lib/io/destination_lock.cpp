// DestinationLock: one writer per destination, across processes and within one.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "core/error.h"
#include "io/atomic_dir.h"
#include "io/posix_file.h"

namespace fs = std::filesystem;

namespace moeprep::io {
namespace {

// O_NOFOLLOW: a symlink planted under the lock's name (say in a shared /tmp) must not make us
// create or lock a file somewhere else.
UniqueFd open_lock_file(const fs::path& path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0 && errno == ELOOP)
    throw_bad_input(path.string() + ": is a symbolic link; a lock file is never followed (remove it if it is stale)");
  if (fd < 0) throw_io(path.string() + ": cannot open");
  return UniqueFd(fd);
}

}  // namespace

DestinationLock::DestinationLock(const fs::path& destination) {
  const fs::path dst = normalize_destination(destination);
  lock_path_ = dst.parent_path() / (dst.filename().string() + ".moeprep-lock");
  std::error_code ec;
  fs::create_directories(dst.parent_path(), ec);
  if (ec) throw Error(ErrorKind::Io, dst.parent_path().string() + ": cannot create: " + ec.message());
  for (;;) {
    UniqueFd fd = open_lock_file(lock_path_);
    int rc;
    do {
      rc = ::flock(fd.get(), LOCK_EX | LOCK_NB);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
      if (errno == EWOULDBLOCK)
        throw_bad_input("another moeprep is writing " + dst.string() + " (" + lock_path_.string() + " is locked)");
      throw_io(lock_path_.string() + ": cannot lock");
    }
    // The holder removes the file before releasing it, so the file we locked may no longer be
    // the one at lock_path_; only a lock on the current file counts.
    struct stat locked {}, current {};
    if (::fstat(fd.get(), &locked) != 0) throw_io(lock_path_.string() + ": cannot stat");
    if (::stat(lock_path_.c_str(), &current) == 0 && current.st_dev == locked.st_dev &&
        current.st_ino == locked.st_ino) {
      fd_ = fd.release();
      return;
    }
  }
}

DestinationLock::~DestinationLock() {
  if (fd_ < 0) return;
  ::unlink(lock_path_.c_str());
  ::close(fd_);
}

}  // namespace moeprep::io
