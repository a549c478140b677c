#pragma once
// Helpers shared by the io tests: a per-test temporary directory, raw safetensors bytes from a
// header text, and an assertion that a call throws moeprep::Error of a kind with given text.
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/error.h"

namespace moeprep::io::testing {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string test = info ? std::string(info->test_suite_name()) + "." + info->name() : "io";
    for (char& c : test)
      if (c == '/') c = '_';  // parameterized tests: keep one directory level
    path_ = fs::temp_directory_path() /
            ("moeprep-io-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" + test);
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

inline std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// A whole safetensors file: length prefix, header text as given (no padding), data.
inline std::string safetensors_bytes(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

inline void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

inline std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Passes when `f` throws moeprep::Error of `kind` whose message contains every needle.
inline ::testing::AssertionResult throws_error(const std::function<void()>& f, ErrorKind kind,
                                               const std::vector<std::string>& needles) {
  try {
    f();
  } catch (const Error& e) {
    std::string what = e.what();
    if (e.kind() != kind)
      return ::testing::AssertionFailure() << "error kind " << error_kind_name(e.kind()) << " instead of "
                                           << error_kind_name(kind) << ": " << what;
    if (what.find('\n') != std::string::npos)
      return ::testing::AssertionFailure() << "message is not one line: " << what;
    for (const auto& needle : needles)
      if (what.find(needle) == std::string::npos)
        return ::testing::AssertionFailure() << "message lacks \"" << needle << "\": " << what;
    return ::testing::AssertionSuccess() << what;
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-moeprep exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

inline ::testing::AssertionResult bad_input(const std::function<void()>& f, const std::vector<std::string>& needles) {
  return throws_error(f, ErrorKind::BadInput, needles);
}

}  // namespace moeprep::io::testing
