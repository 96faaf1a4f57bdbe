#include "core/event_loop.h"

#include <future>

#include <pthread.h>

namespace tern {

EventLoop::EventLoop(std::string name) : name_(std::move(name)) {}

EventLoop::~EventLoop() { stop(); }

void EventLoop::start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (started_) return;
  started_ = true;
  thread_ = std::thread([this] { run(); });
  pthread_setname_np(thread_.native_handle(), name_.substr(0, 15).c_str());
}

void EventLoop::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void EventLoop::post(Task task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
}

void EventLoop::post_after(std::chrono::milliseconds delay, Task task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    timers_.emplace(std::chrono::steady_clock::now() + delay, std::move(task));
  }
  cv_.notify_one();
}

void EventLoop::every(std::chrono::milliseconds period, Task task) {
  post_after(period, [this, period, task = std::move(task)]() mutable {
    task();
    every(period, std::move(task));
  });
}

void EventLoop::run_sync(const Task& task) {
  bool started;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    started = started_;
  }
  if (!started) {
    // Nothing else can touch the loop's state before it starts.
    task();
    return;
  }
  std::promise<void> done;
  auto fut = done.get_future();
  post([&] {
    task();
    done.set_value();
  });
  fut.wait();
}

void EventLoop::run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (!queue_.empty()) {
      std::vector<Task> batch;
      batch.swap(queue_);
      lock.unlock();
      for (auto& t : batch) t();
      lock.lock();
      continue;
    }
    if (stopping_) return;
    auto now = std::chrono::steady_clock::now();
    if (!timers_.empty() && timers_.begin()->first <= now) {
      Task t = std::move(timers_.begin()->second);
      timers_.erase(timers_.begin());
      lock.unlock();
      t();
      lock.lock();
      continue;
    }
    if (timers_.empty()) {
      cv_.wait(lock);
    } else {
      cv_.wait_until(lock, timers_.begin()->first);
    }
  }
}

}  // namespace tern
