// PeriodicTask: the server's background loop (incident delivery and other periodic work).

#include "upkeep/server/periodic.hpp"

#include <gtest/gtest.h>

#include <condition_variable>
#include <future>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace upkeep::server {
namespace {

using namespace std::chrono_literals;

// Counts calls and lets the test wait (boundedly) for a number of them.
class Calls {
 public:
  void Add() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++count_;
    }
    changed_.notify_all();
  }
  bool WaitFor(int n) {
    std::unique_lock<std::mutex> lock(mutex_);
    return changed_.wait_for(lock, 30s, [&] { return count_ >= n; });
  }
  int count() {
    std::lock_guard<std::mutex> lock(mutex_);
    return count_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  int count_ = 0;
};

TEST(PeriodicTaskTest, CallsRepeatedlyAndNeverAfterStop) {
  Calls calls;
  PeriodicTask task(1ms, [&] { calls.Add(); });
  ASSERT_TRUE(calls.WaitFor(3));
  task.Stop();
  const int after_stop = calls.count();
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(calls.count(), after_stop);
}

// Stop wakes a task waiting out a long period instead of waiting for it; a second Stop and the
// destructor do nothing more.
TEST(PeriodicTaskTest, StopsPromptlyDuringLongPeriodAndIsIdempotent) {
  Calls calls;
  PeriodicTask task(24h, [&] { calls.Add(); });
  ASSERT_TRUE(calls.WaitFor(1));  // the first call is immediate
  auto stopped = std::async(std::launch::async, [&] { task.Stop(); });
  ASSERT_EQ(stopped.wait_for(30s), std::future_status::ready);
  task.Stop();
  EXPECT_EQ(calls.count(), 1);
}

TEST(PeriodicTaskTest, StopFromInsideTheFunctionEndsTheTask) {
  Calls calls;
  std::unique_ptr<PeriodicTask> task;
  std::mutex m;
  {
    std::lock_guard<std::mutex> lock(m);  // the first call waits until `task` is set
    task = std::make_unique<PeriodicTask>(1ms, [&] {
      std::lock_guard<std::mutex> inner(m);
      calls.Add();
      if (calls.count() == 2) task->Stop();
    });
  }
  ASSERT_TRUE(calls.WaitFor(2));
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(calls.count(), 2);
  task.reset();
}

TEST(PeriodicTaskTest, KeepsRunningAfterAnException) {
  Calls calls;
  PeriodicTask task(1ms, [&] {
    calls.Add();
    if (calls.count() == 1) throw std::runtime_error("first call fails");
  });
  EXPECT_TRUE(calls.WaitFor(3));
}

}  // namespace
}  // namespace upkeep::server
