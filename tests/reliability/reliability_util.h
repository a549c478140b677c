#pragma once
// Helpers for the reliability tests: a temporary directory, running the moeprep binary as a
// child process (so that it can be killed, limited with setrlimit, and measured with wait4),
// and comparing whole directory trees.
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "io/io_test_util.h"
#include "models/gpt_oss_synth.h"

namespace moeprep::reliability {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() / ("moeprep-rel-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    // Tests make read-only directories; give write permission back before removing.
    for (fs::recursive_directory_iterator it(path_, ec), end; !ec && it != end; it.increment(ec))
      if (it->is_directory(ec)) fs::permissions(it->path(), fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path_, ec);
  }
  fs::path operator/(const std::string& name) const { return path_ / name; }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// A synthetic GPT-OSS source of `layers` layers of 8 experts at hidden = intermediate = `width`
// under dir/src.
inline fs::path make_gpt_oss_source(const TempDir& dir, int64_t layers, int64_t width) {
  models::gpt_oss::SynthOptions o;
  o.layers = layers;
  o.experts = 8;
  o.hidden = width;
  o.intermediate = width;
  const fs::path src = dir / "src";
  models::gpt_oss::write_synthetic_checkpoint(src, o, false);
  return src;
}

inline std::string binary() { return std::string(MOEPREP_BINARY_DIR) + "/moeprep"; }
inline fs::path tiny_checkpoint() { return fs::path(MOEPREP_SOURCE_DIR) / "testdata" / "tiny-gpt-oss"; }

inline std::string slurp(const fs::path& p) { return io::testing::read_bytes(p); }
inline void spit(const fs::path& p, const std::string& s) { io::testing::write_bytes(p, s); }

struct ChildResult {
  bool exited = false;  // false: killed by a signal
  int code = -1;        // exit status when exited
  int signal = 0;       // the signal when killed
  // ru_maxrss of the child. A forked child starts with the test process's resident pages and
  // exec keeps the larger figure, so this is an upper bound of moeprep's own peak; the test
  // process trims its heap before forking and parent_rss_kb says how much it held then.
  long max_rss_kb = 0;
  long parent_rss_kb = 0;
  double seconds = 0;
  std::string out, err;
};

// A started moeprep process; stdout and stderr go to files in `dir`.
class Child {
 public:
  // `in_child` runs after fork, before exec (setrlimit, signal dispositions); async-signal-safe
  // calls only.
  Child(const std::vector<std::string>& args, const fs::path& dir, const std::function<void()>& in_child = {}) {
    static std::atomic<int> counter{0};
    const int n = counter++;
    out_path_ = dir / ("child-" + std::to_string(n) + ".out");
    err_path_ = dir / ("child-" + std::to_string(n) + ".err");
    std::vector<std::string> argv_s = {binary()};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string out = out_path_.string(), err = err_path_.string();
    ::malloc_trim(0);
    parent_rss_kb_ = current_rss_kb();
    start_ = std::chrono::steady_clock::now();
    pid_ = ::fork();
    if (pid_ == 0) {
      int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int i = ::open("/dev/null", O_RDONLY);
      if (o < 0 || e < 0 || i < 0) ::_exit(127);
      ::dup2(i, 0);
      ::dup2(o, 1);
      ::dup2(e, 2);
      if (in_child) in_child();
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }
  ~Child() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      wait();
    }
  }
  pid_t pid() const { return pid_; }
  void kill(int sig) { ::kill(pid_, sig); }
  ChildResult wait() {
    ChildResult r;
    int status = 0;
    struct rusage ru {};
    while (::wait4(pid_, &status, 0, &ru) < 0 && errno == EINTR) {
    }
    reaped_ = true;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    r.exited = WIFEXITED(status);
    r.code = r.exited ? WEXITSTATUS(status) : -1;
    r.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    r.max_rss_kb = ru.ru_maxrss;
    r.parent_rss_kb = parent_rss_kb_;
    r.out = slurp(out_path_);
    r.err = slurp(err_path_);
    return r;
  }

 private:
  static long current_rss_kb() {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    return 0;
  }
  pid_t pid_ = -1;
  long parent_rss_kb_ = 0;
  bool reaped_ = false;
  fs::path out_path_, err_path_;
  std::chrono::steady_clock::time_point start_;
};

inline ChildResult run_moeprep(const std::vector<std::string>& args, const fs::path& dir,
                               const std::function<void()>& in_child = {}) {
  Child c(args, dir, in_child);
  return c.wait();
}

inline std::string describe(const ChildResult& r) {
  std::ostringstream s;
  if (r.exited) s << "exit " << r.code;
  else s << "killed by signal " << r.signal;
  s << "; stderr: " << r.err;
  return s.str();
}

// Every regular file under `root`, by relative path, with its bytes.
inline std::map<std::string, std::string> tree_contents(const fs::path& root) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file()) files[fs::relative(e.path(), root).string()] = slurp(e.path());
  return files;
}

// Names in `dir` (not recursive), sorted.
inline std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// Names in `dir` that are staging or set-aside directories of a destination.
inline std::vector<std::string> leftovers(const fs::path& dir) {
  std::vector<std::string> found;
  for (const auto& name : entries(dir))
    if (name.find(".moeprep-tmp-") != std::string::npos || name.find(".moeprep-old-") != std::string::npos)
      found.push_back(name);
  return found;
}

}  // namespace moeprep::reliability
