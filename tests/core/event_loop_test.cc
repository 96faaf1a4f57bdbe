#include "core/event_loop.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <vector>

namespace tern {
namespace {

TEST(EventLoopTest, RunsPostedTasksInOrderOnItsThread) {
  EventLoop loop("test");
  loop.start();
  std::vector<int> seen;
  std::promise<void> done;
  std::atomic<bool> on_loop{true};
  for (int i = 0; i < 100; ++i) {
    loop.post([&, i] {
      if (!loop.in_loop_thread()) on_loop = false;
      seen.push_back(i);
      if (i == 99) done.set_value();
    });
  }
  ASSERT_EQ(done.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_TRUE(on_loop);
  ASSERT_EQ(seen.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(seen[i], i);
}

TEST(EventLoopTest, TimersFireInDeadlineOrder) {
  EventLoop loop("test");
  loop.start();
  std::vector<int> order;
  std::promise<void> done;
  loop.post_after(std::chrono::milliseconds(30), [&] {
    order.push_back(2);
    done.set_value();
  });
  loop.post_after(std::chrono::milliseconds(1), [&] { order.push_back(1); });
  ASSERT_EQ(done.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
}

TEST(EventLoopTest, RunSyncWaitsAndStopDropsLaterWork) {
  EventLoop loop("test");
  loop.start();
  int value = 0;
  loop.run_sync([&] { value = 7; });
  EXPECT_EQ(value, 7);
  loop.stop();
  loop.post([&] { value = 8; });
  loop.run_sync([&] { value = 9; });
  EXPECT_EQ(value, 7);
}

}  // namespace
}  // namespace tern
