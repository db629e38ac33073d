#include "upkeep/server/periodic.hpp"

#include <algorithm>
#include <exception>

#include "upkeep/common/log.hpp"

namespace upkeep::server {

PeriodicTask::PeriodicTask(std::chrono::milliseconds period, std::function<void()> fn)
    : period_(std::max(period, std::chrono::milliseconds(1))), fn_(std::move(fn)) {
  thread_ = std::thread([this] { Run(); });
}

PeriodicTask::~PeriodicTask() { Stop(); }

void PeriodicTask::Stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  std::lock_guard<std::mutex> join_lock(join_mutex_);
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void PeriodicTask::Run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    lock.unlock();
    try {
      fn_();
    } catch (const std::exception& e) {
      log::error("periodic task: {}", e.what());
    } catch (...) {
      log::error("periodic task: unknown exception");
    }
    lock.lock();
    wake_.wait_for(lock, period_, [this] { return stopping_; });
  }
}

}  // namespace upkeep::server
