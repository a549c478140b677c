#include "core/worker_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>

namespace moeprep {
namespace {

TEST(WorkerPool, EveryTaskRunsAndItsResultArrives) {
  WorkerPool pool(3);
  std::vector<std::future<int>> results;
  for (int i = 0; i < 200; ++i) results.push_back(pool.submit([i] { return i * i; }));
  for (int i = 0; i < 200; ++i) EXPECT_EQ(results[static_cast<size_t>(i)].get(), i * i);
}

TEST(WorkerPool, RunsTasksOnSeveralThreadsAtOnce) {
  WorkerPool pool(2);
  std::atomic<int> arrived{0};
  // Each task waits until both have started: with one worker this would never finish.
  auto meet = [&arrived] {
    arrived.fetch_add(1);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (arrived.load() < 2 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    return arrived.load();
  };
  auto a = pool.submit(meet);
  auto b = pool.submit(meet);
  EXPECT_EQ(a.get(), 2);
  EXPECT_EQ(b.get(), 2);
}

TEST(WorkerPool, ExceptionReachesTheFuture) {
  WorkerPool pool(1);
  auto f = pool.submit([]() -> int { throw std::runtime_error("slice 7 failed"); });
  try {
    f.get();
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "slice 7 failed");
  }
  EXPECT_EQ(pool.submit([] { return 5; }).get(), 5);  // the worker survived
}

TEST(WorkerPool, DestructionWaitsForRunningTasksAndDropsQueuedOnes) {
  std::atomic<bool> started{false}, finished{false};
  std::atomic<int> queued_ran{0};
  std::future<void> queued;
  {
    WorkerPool pool(1);
    pool.submit([&] {
      started = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      finished = true;
    });
    queued = pool.submit([&] { queued_ran.fetch_add(1); });
    while (!started) std::this_thread::yield();
  }
  EXPECT_TRUE(finished.load());  // the running task completed before the pool went away
  EXPECT_EQ(queued_ran.load(), 0);
  try {
    queued.get();
    FAIL() << "a dropped task's future must report it";
  } catch (const std::future_error& e) {
    EXPECT_EQ(e.code(), std::future_errc::broken_promise);
  }
}

}  // namespace
}  // namespace moeprep
