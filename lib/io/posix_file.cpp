#include "io/posix_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "core/error.h"

namespace moeprep::io {

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

void UniqueFd::close_or_throw(const std::string& name) {
  int fd = fd_;
  fd_ = -1;
  // Linux releases the descriptor even when close fails, so it is never retried.
  if (fd >= 0 && ::close(fd) != 0 && errno != EINTR) throw_io(name + ": close failed");
}

UniqueFd open_or_throw(const std::filesystem::path& path, int flags, unsigned mode) {
  int fd;
  do {
    fd = ::open(path.c_str(), flags | O_CLOEXEC, static_cast<mode_t>(mode));
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) throw_io(path.string() + ": cannot open");
  return UniqueFd(fd);
}

void write_all(int fd, const void* data, size_t size, const std::string& name) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, std::min(size, kMaxWritePiece));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_io(name + ": write failed");
    }
    if (n == 0) {
      errno = 0;
      throw_io(name + ": write made no progress");
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
}

size_t read_up_to(int fd, void* data, size_t size, const std::string& name) {
  auto* p = static_cast<char*>(data);
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::read(fd, p + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_io(name + ": read failed");
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

void fsync_or_throw(int fd, const std::string& name) {
  int rc;
  do {
    rc = ::fsync(fd);
  } while (rc != 0 && errno == EINTR);
  // Directories on some file systems refuse fsync with EINVAL; nothing more can be done there.
  if (rc != 0 && errno != EINVAL) throw_io(name + ": fsync failed");
}

void write_file_durably(const std::filesystem::path& path, std::string_view contents) {
  const std::string name = path.string();
  UniqueFd fd = open_or_throw(path, O_WRONLY | O_CREAT | O_TRUNC);
  write_all(fd.get(), contents.data(), contents.size(), name);
  fsync_or_throw(fd.get(), name);
  fd.close_or_throw(name);
}

}  // namespace moeprep::io
