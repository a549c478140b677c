#pragma once
// The few POSIX file calls the io layer makes, wrapped once: EINTR and short counts retried,
// every failure an Io error naming the file (with strerror appended by throw_io).
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace moeprep::io {

// Owns a file descriptor; closes it (ignoring errors) unless close_or_throw() was called.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd();
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  // close(2) can report a delayed write error; writers must see it.
  void close_or_throw(const std::string& name);

 private:
  int fd_ = -1;
};

UniqueFd open_or_throw(const std::filesystem::path& path, int flags, unsigned mode = 0644);
// The largest piece handed to one write/pwrite call. Measured on Linux 6.18/ext4 (bench/RESULTS.md,
// "Convert against cp"): one 8 MiB write into the page cache costs 5-8x the system time of the
// same bytes in 256 KiB writes (1.4-1.8 s against 0.2 s per GB), so big writes are split.
inline constexpr size_t kMaxWritePiece = size_t(256) << 10;
void write_all(int fd, const void* data, size_t size, const std::string& name);
// Reads until `size` bytes or end of file; returns the count read.
size_t read_up_to(int fd, void* data, size_t size, const std::string& name);
void fsync_or_throw(int fd, const std::string& name);
// Creates or truncates `path`, writes `contents`, fsyncs and closes.
void write_file_durably(const std::filesystem::path& path, std::string_view contents);

}  // namespace moeprep::io
