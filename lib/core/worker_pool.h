#pragma once
// A fixed set of worker threads that run submitted tasks in submission order and hand results
// back through futures. Convert used one std::async thread per 8 MiB slice: over a large
// checkpoint that created thousands of threads, and each new thread could take its own malloc
// arena, so freed slice buffers piled up in arenas that no thread used again (peak RSS of
// ~250 MB for a 1 GB input instead of the slices actually in flight).
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace moeprep {

class WorkerPool {
 public:
  explicit WorkerPool(int threads);
  // Waits for the tasks already running; tasks not yet started are dropped (their futures
  // report std::future_errc::broken_promise), so an error does not wait for queued work.
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Runs `task` on a worker; its result or exception arrives through the future.
  template <typename F>
  auto submit(F task) -> std::future<std::invoke_result_t<F>> {
    using R = std::invoke_result_t<F>;
    auto packaged = std::make_shared<std::packaged_task<R()>>(std::move(task));
    std::future<R> result = packaged->get_future();
    enqueue([packaged] { (*packaged)(); });
    return result;
  }

 private:
  void enqueue(std::function<void()> job);
  void run();

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace moeprep
