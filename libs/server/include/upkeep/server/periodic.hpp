#pragma once

// A background thread that calls one function every period until it is stopped: the server's
// periodic work (incident delivery, campaign advancement) runs on it. The function runs on the
// task's own thread, one call at a time; the period is counted from the end of one call to the
// start of the next, so a slow call never piles up calls behind it.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace upkeep::server {

class PeriodicTask {
 public:
  // Starts the thread; the first call happens at once, the next `period` after it returns.
  // `period` below 1 ms counts as 1 ms. An exception from `fn` is caught and logged, and the task
  // goes on.
  PeriodicTask(std::chrono::milliseconds period, std::function<void()> fn);
  // Stop().
  ~PeriodicTask();
  PeriodicTask(const PeriodicTask&) = delete;
  PeriodicTask& operator=(const PeriodicTask&) = delete;

  // Ends the task: no call starts after Stop begins; a call in progress is waited for, so Stop
  // returns as soon as that call does (at once when the task is waiting). Joins the thread.
  // Idempotent and thread-safe; called from inside `fn` it only asks the task to end (the task
  // must then still be destroyed from another thread).
  void Stop();

 private:
  void Run();

  const std::chrono::milliseconds period_;
  const std::function<void()> fn_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;  // guarded by mutex_
  std::mutex join_mutex_;  // one joiner at a time
  std::thread thread_;
};

}  // namespace upkeep::server
