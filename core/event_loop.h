#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tern {

// One thread that runs posted tasks in order, plus timers. State owned by
// logic that runs only on this thread needs no locks; other threads (gRPC
// reactions, signal handlers) hand work to it with post(). Tasks must not
// block for long: they delay everything behind them.
//
// Thread-safe. Tasks posted after stop() are dropped.
class EventLoop {
 public:
  using Task = std::function<void()>;
  using SteadyTime = std::chrono::steady_clock::time_point;

  explicit EventLoop(std::string name);
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  void start();
  // Runs what is already queued, then joins the thread.
  void stop();

  void post(Task task);
  void post_after(std::chrono::milliseconds delay, Task task);
  // Runs `task` every `period`, first after one period, until stop().
  void every(std::chrono::milliseconds period, Task task);
  // Posts and waits for the result; never call from the loop thread itself.
  // Before start() it runs inline; after stop() it does nothing.
  void run_sync(const Task& task);

  bool in_loop_thread() const { return std::this_thread::get_id() == thread_.get_id(); }

 private:
  void run();

  std::string name_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Task> queue_;
  std::multimap<SteadyTime, Task> timers_;
  bool stopping_ = false;
  bool started_ = false;
  std::thread thread_;
};

}  // namespace tern
