// One slot's mechanics alone: launch, ports, probes until healthy, drain and
// stop, on fakes of the host and a FakeClock.
#include "agent/slot.h"

#include <google/protobuf/util/time_util.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <utility>

#include "tests/support/temp_dir.h"
#include "tests/support/agent_fakes.h"

namespace tern {
namespace {

using google::protobuf::util::TimeUtil;
using testing::FakeHostOs;
using testing::FakeLauncher;
using testing::FakeProber;

class SlotTest : public ::testing::Test {
 protected:
  SlotTest() {
    spec_.set_name("web");
    auto* p = spec_.add_ports();
    p->set_name("http");
    p->set_protocol("tcp");
    p->set_public_port(8080);
    p->set_blue_port(9001);
    p->set_green_port(9002);
    auto* admin = spec_.add_ports();
    admin->set_name("admin");
    admin->set_protocol("tcp");
    admin->set_public_port(8081);
    admin->set_blue_port(9101);
    admin->set_green_port(9102);
    release_.set_version("1.4");
  }

  Slot make(tern::v1::SlotColor color, const std::string& state_dir = "") {
    Slot::Deps deps;
    deps.state_dir = state_dir;
    deps.launcher = &launcher_;
    deps.prober = &prober_;
    deps.os = &os_;
    deps.log_dir = dir_.path().string();
    deps.pause = [this](Millis d) {
      os_.sleep_for(d);
      return stopping_;
    };
    return Slot("web", color, std::move(deps));
  }

  Millis elapsed() const { return os_.clock().now() - start_; }

  testing::TempDir dir_;
  FakeLauncher launcher_;
  FakeProber prober_;
  FakeHostOs os_;
  const TimePoint start_ = os_.clock().now();
  bool stopping_ = false;
  tern::v1::ServiceSpec spec_;
  tern::v1::ReleaseRef release_;
};

TEST_F(SlotTest, TheLaunchSubstitutesTheSpecsPlaceholders) {
  std::ofstream(dir_.file("app")) << "#!/bin/sh\n";
  for (const char* a : {"app", "--port={port}", "--admin={port:admin}", "{service}/{slot}/{version}"}) {
    spec_.add_argv(a);
  }
  (*spec_.mutable_env())["ADMIN"] = "{port:admin}";
  spec_.set_user("nobody");
  const LaunchSpec ls = make(tern::v1::SLOT_COLOR_GREEN).launch(spec_, release_, dir_.path().string());
  EXPECT_EQ(ls.argv, (std::vector<std::string>{dir_.file("app"), "--port=9002", "--admin=9102", "web/green/1.4"}))
      << "a bare argv[0] shipped in the release runs from there";
  EXPECT_EQ(ls.env.at("TERN_SLOT"), "green");
  EXPECT_EQ(ls.env.at("TERN_PORT"), "9002");
  EXPECT_EQ(ls.env.at("TERN_RELEASE_DIR"), dir_.path().string());
  EXPECT_EQ(ls.env.at("ADMIN"), "9102");
  EXPECT_EQ(ls.working_dir, dir_.path().string()) << "no working_dir: the release dir";
  EXPECT_EQ(ls.user, "nobody");
  EXPECT_EQ(ls.log_path, dir_.file("web-green.log"));
}

TEST_F(SlotTest, TheSlotsTemplatesAreRenderedIntoItsOwnDirWhichArgvCanName) {
  const std::string state = dir_.file("state"), release = dir_.file("release");
  std::filesystem::create_directories(release + "/conf");
  std::ofstream(release + "/conf/app.conf.tmpl") << "port={port}\nadmin={port:admin}\nversion={version}\n";
  auto* t = spec_.add_templates();
  t->set_source("conf/app.conf.tmpl");
  t->set_dest("app.conf");
  for (const char* a : {"app", "--config", "{render_dir}/app.conf"}) spec_.add_argv(a);
  Slot green = make(tern::v1::SLOT_COLOR_GREEN, state);
  EXPECT_EQ(green.render_dir(), state + "/web/green/rendered") << "beside the slot's name, one dir per slot";
  const LaunchSpec ls = green.launch(spec_, release_, release);
  EXPECT_EQ(ls.argv[2], state + "/web/green/rendered/app.conf");
  EXPECT_EQ(ls.env.at("TERN_RENDER_DIR"), state + "/web/green/rendered");
  ASSERT_TRUE(green.render(spec_, release_, release, ls).ok()) << green.render(spec_, release_, release, ls);
  EXPECT_EQ(testing::read_file(state + "/web/green/rendered/app.conf"), "port=9002\nadmin=9102\nversion=1.4\n");

  Slot blue = make(tern::v1::SLOT_COLOR_BLUE, state);
  ASSERT_TRUE(blue.render(spec_, release_, release, blue.launch(spec_, release_, release)).ok());
  EXPECT_EQ(testing::read_file(state + "/web/blue/rendered/app.conf"), "port=9001\nadmin=9101\nversion=1.4\n");
  EXPECT_EQ(testing::read_file(state + "/web/green/rendered/app.conf"), "port=9002\nadmin=9102\nversion=1.4\n")
      << "rendering one slot never touches the other's files";

  spec_.mutable_templates(0)->set_source("conf/missing.tmpl");
  auto st = green.render(spec_, release_, release, ls);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("cannot start green (1.4): rendering its config files failed: templates[0] "
                              "(conf/missing.tmpl -> app.conf)"),
            std::string::npos)
      << st;
}

TEST_F(SlotTest, APortHeldByAnotherProcessIsRefusedByName) {
  os_.taken.insert(9101);
  auto st = make(tern::v1::SLOT_COLOR_BLUE).check_ports(spec_, "1.4");
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("port 9101 is already in use"), std::string::npos) << st;
  EXPECT_TRUE(make(tern::v1::SLOT_COLOR_GREEN).check_ports(spec_, "1.4").ok());
}

TEST_F(SlotTest, ProbingGivesUpAtTheHealthyDeadlineOfHostTime) {
  auto* h = spec_.mutable_health();
  h->mutable_tcp();
  *h->mutable_interval() = TimeUtil::MillisecondsToDuration(1'000);
  *h->mutable_healthy_deadline() = TimeUtil::MillisecondsToDuration(30'000);
  prober_.unhealthy.insert(9001);
  Slot slot = make(tern::v1::SLOT_COLOR_BLUE);
  auto started = slot.start(slot.launch(spec_, release_, dir_.path().string()));
  ASSERT_TRUE(started.ok());
  auto st = slot.wait_healthy(spec_.health(), 9001, *started, "1.4", {});
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("did not turn healthy within 30s: HTTP 503"), std::string::npos) << st;
  EXPECT_GE(elapsed(), Millis(30'000));
  EXPECT_EQ(prober_.probes, 31) << "one probe a second, from 0 s to 30 s";

  prober_.unhealthy.clear();
  EXPECT_TRUE(slot.wait_healthy(spec_.health(), 9001, *started, "1.4", {}).ok());
}

TEST_F(SlotTest, WhoeverWaitsHearsHowTheProbesGoOnEachChangeAndEveryFiveSeconds) {
  auto* h = spec_.mutable_health();
  h->mutable_tcp();
  *h->mutable_interval() = TimeUtil::MillisecondsToDuration(1'000);
  *h->mutable_healthy_deadline() = TimeUtil::MillisecondsToDuration(60'000);
  prober_.unhealthy.insert(9001);
  Slot slot = make(tern::v1::SLOT_COLOR_GREEN);
  auto started = slot.start(slot.launch(spec_, release_, dir_.path().string()));
  ASSERT_TRUE(started.ok());
  std::vector<std::string> heard;
  auto st = slot.wait_healthy(spec_.health(), 9001, *started, "1.4", {}, [&](const std::string& m) {
    heard.push_back(m);
    if (elapsed() >= Millis(10'000)) prober_.unhealthy.clear();  // healthy from the next probe on
  });
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_EQ(heard.size(), 3u) << "at 0, 5 and 10 s, not a line per probe (11 of them)";
  EXPECT_EQ(heard[0], "probing green (1.4): not healthy yet: HTTP 503 (0s of its 1m healthy deadline)");
  EXPECT_EQ(heard[1], "probing green (1.4): not healthy yet: HTTP 503 (5s of its 1m healthy deadline)")
      << "the same answer again only after 5 s";
}

TEST_F(SlotTest, AProcessThatExitsBeforeTurningHealthyIsReportedWithItsLastOutput) {
  Slot slot = make(tern::v1::SLOT_COLOR_BLUE);
  auto started = slot.start(slot.launch(spec_, release_, dir_.path().string()));
  ASSERT_TRUE(started.ok());
  std::ofstream(slot.log_path()) << "listening\n\nbind: address in use\n";
  launcher_.crash(started->pid);
  auto st = slot.wait_healthy(spec_.health(), 9001, *started, "1.4", {});
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("blue (1.4) exited with status 1 before turning healthy; last output: listening | "
                              "bind: address in use"),
            std::string::npos)
      << st;
}

TEST_F(SlotTest, ProbingStopsWhenTheOwnerShutsDown) {
  prober_.unhealthy.insert(9001);
  stopping_ = true;
  Slot slot = make(tern::v1::SLOT_COLOR_BLUE);
  auto started = slot.start(slot.launch(spec_, release_, dir_.path().string()));
  ASSERT_TRUE(started.ok());
  EXPECT_EQ(slot.wait_healthy(spec_.health(), 9001, *started, "1.4", {}).code(), absl::StatusCode::kAborted);
  os_.sockets[9001] = PortSockets{.accept_queue = 0, .established = 1, .listening = true};
  EXPECT_FALSE(slot.drain({9001}, Millis(10'000)).has_value());
}

TEST_F(SlotTest, StopGivesTheGraceThenKillsTheGroup) {
  Slot slot = make(tern::v1::SLOT_COLOR_BLUE);
  auto polite = slot.start(slot.launch(spec_, release_, dir_.path().string()));
  ASSERT_TRUE(polite.ok());
  slot.stop(*polite, Millis(10'000));
  EXPECT_LT(elapsed(), Millis(10'000)) << "it left on SIGTERM";
  EXPECT_EQ(launcher_.signals, (std::vector<std::pair<int64_t, int>>{{polite->pid, SIGTERM}}));

  auto stubborn = slot.start(slot.launch(spec_, release_, dir_.path().string()));
  ASSERT_TRUE(stubborn.ok());
  launcher_.ignore_sigterm.insert(stubborn->pid);
  const TimePoint before = os_.clock().now();
  slot.stop(*stubborn, Millis(10'000));
  EXPECT_GE(os_.clock().now() - before, Millis(10'000));
  EXPECT_EQ(launcher_.signals.back(), std::make_pair(stubborn->pid, SIGKILL));
  EXPECT_FALSE(launcher_.recover(*stubborn));
}

TEST_F(SlotTest, StopSendsTheSpecsSignalThenKills) {
  Slot slot = make(tern::v1::SLOT_COLOR_BLUE);
  auto nginx = slot.start(slot.launch(spec_, release_, dir_.path().string()));
  ASSERT_TRUE(nginx.ok());
  slot.stop(*nginx, Millis(10'000), SIGQUIT);
  EXPECT_EQ(launcher_.signals, (std::vector<std::pair<int64_t, int>>{{nginx->pid, SIGQUIT}}));
  EXPECT_LT(elapsed(), Millis(10'000));
}

TEST_F(SlotTest, ADrainSignalGoesToTheGroupAndLeavesItRunning) {
  Slot slot = make(tern::v1::SLOT_COLOR_BLUE);
  auto h = slot.start(slot.launch(spec_, release_, dir_.path().string()));
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(slot.begin_drain(spec_, release_, dir_.path().string(), *h, Millis(10'000)), "")
      << "a spec without drain_signal or drain_command tells the app nothing";
  EXPECT_TRUE(launcher_.signals.empty());
  spec_.set_drain_signal("SIGUSR1");
  EXPECT_EQ(slot.begin_drain(spec_, release_, dir_.path().string(), *h, Millis(10'000)),
            "sent blue its drain signal SIGUSR1");
  EXPECT_EQ(launcher_.signals, (std::vector<std::pair<int64_t, int>>{{h->pid, SIGUSR1}}));
  EXPECT_TRUE(launcher_.recover(*h)) << "draining, not stopped";
}

TEST_F(SlotTest, ADrainCommandRunsLikeTheSlotAndAHungOneIsKilledAtTheLimit) {
  Slot slot = make(tern::v1::SLOT_COLOR_GREEN);
  auto h = slot.start(slot.launch(spec_, release_, dir_.path().string()));
  ASSERT_TRUE(h.ok());
  const std::string dir = dir_.path().string();
  spec_.add_drain_command("/usr/bin/drain-web");
  spec_.add_drain_command("{port}");
  spec_.add_drain_command("{version}");
  launcher_.finishes["/usr/bin/drain-web"] = true;
  EXPECT_EQ(slot.begin_drain(spec_, release_, dir, *h, Millis(10'000)), "the drain command of green succeeded");
  const LaunchSpec& ran = launcher_.started.back();
  EXPECT_EQ(ran.argv, (std::vector<std::string>{"/usr/bin/drain-web", "9002", "1.4"}));
  EXPECT_EQ(ran.env.at("TERN_DRAIN"), "1");
  EXPECT_EQ(ran.env.at("TERN_SLOT"), "green");
  EXPECT_EQ(ran.slot_id, "") << "recovery must not take it for the slot";
  EXPECT_EQ(elapsed(), Millis(0));

  launcher_.finishes["/usr/bin/drain-web"] = false;
  EXPECT_NE(slot.begin_drain(spec_, release_, dir, *h, Millis(10'000)).find("failed (exited with status 1"),
            std::string::npos);

  launcher_.finishes.clear();  // now it hangs
  const std::string hung = slot.begin_drain(spec_, release_, dir, *h, Millis(3'000));
  EXPECT_NE(hung.find("did not finish within 3s and was killed"), std::string::npos) << hung;
  EXPECT_GE(elapsed(), Millis(3'000));
  EXPECT_EQ(launcher_.signals.back().second, SIGKILL);
  EXPECT_NE(launcher_.signals.back().first, h->pid) << "the command is killed, not the slot";
  EXPECT_TRUE(launcher_.recover(*h));
}

TEST_F(SlotTest, DrainWatchesEveryPortOfTheSlot) {
  Slot slot = make(tern::v1::SLOT_COLOR_BLUE);
  os_.sockets[9101] = PortSockets{.accept_queue = 0, .established = 2, .listening = true};
  auto left = slot.drain({9001, 9101}, Millis(5'000));
  ASSERT_TRUE(left.has_value());
  EXPECT_EQ(left->established, 2u) << "the admin port's connections count too";
  EXPECT_GE(elapsed(), Millis(5'000));
}

TEST_F(SlotTest, DrainEndsWhenTheLastConnectionDoesOrAtTheDrainTime) {
  Slot slot = make(tern::v1::SLOT_COLOR_BLUE);
  auto drained = slot.drain({9001}, Millis(10'000));
  ASSERT_TRUE(drained.has_value());
  EXPECT_EQ(drained->established, 0u);
  EXPECT_EQ(elapsed(), Millis(0)) << "nothing open: no wait";

  os_.sockets[9001] = PortSockets{.accept_queue = 1, .established = 3, .listening = true};
  auto left = slot.drain({9001}, Millis(10'000));
  ASSERT_TRUE(left.has_value());
  EXPECT_EQ(left->established, 3u);
  EXPECT_GE(elapsed(), Millis(10'000));
}

}  // namespace
}  // namespace tern
