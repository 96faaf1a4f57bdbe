// ServiceSupervisor against fakes of the host: launcher, prober, port mapper,
// and time on a FakeClock.
#include "agent/service_supervisor.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <future>

#include <google/protobuf/util/time_util.h>

#include "core/service_spec.h"
#include "core/sha256.h"
#include "tests/support/eventually.h"
#include "tests/support/temp_dir.h"
#include "tests/support/agent_fakes.h"

namespace tern {
namespace {

using testing::FakeFetcher;
using testing::FakeHostOs;
using testing::FakeLauncher;
using testing::FakeMapper;
using testing::FakeProber;

class SupervisorTest : public ::testing::Test {
 protected:
  SupervisorTest() : stager_(dir_.path().string(), &fetcher_), traffic_(&mapper_) {}

  std::unique_ptr<ServiceSupervisor> make(tern::v1::ServiceState state = {}) {
    if (!state.has_spec()) {
      auto* spec = state.mutable_spec();
      *spec->mutable_health()->mutable_min_healthy_time() =
          google::protobuf::util::TimeUtil::MillisecondsToDuration(min_healthy_.count());
      spec->set_name("web");
      auto* p = spec->add_ports();
      p->set_protocol("tcp");
      p->set_public_port(8080);
      p->set_blue_port(9001);
      p->set_green_port(9002);
      spec->add_argv("{release_dir}/app");
      spec->add_argv("--port={port}");
      auto* h = spec->mutable_health();
      h->mutable_tcp();
      h->mutable_interval()->set_nanos(10'000'000);
      h->mutable_healthy_deadline()->set_nanos(300'000'000);
      spec->mutable_grace()->set_nanos(100'000'000);
      spec->mutable_restart()->set_policy("on-failure");
      spec->mutable_restart()->set_max_restarts(1);
      spec->set_keep_warm(keep_warm_);
      for (const auto& t : templates_) *spec->add_templates() = t;
      *spec->mutable_hooks() = hooks_;
      *spec->mutable_drain() = google::protobuf::util::TimeUtil::MillisecondsToDuration(drain_.count());
    }
    SupervisorDeps deps;
    deps.launcher = &launcher_;
    deps.prober = &prober_;
    deps.stager = &stager_;
    deps.traffic = &traffic_;
    deps.os = &os_;
    deps.persist = [] { return absl::OkStatus(); };
    deps.emit = [this](const tern::v1::AgentEvent& e) {
      std::lock_guard lock(events_mu_);
      events_.push_back(e);
    };
    deps.log_dir = dir_.path().string();
    deps.state_dir = state_dir_;
    deps.monitor_interval = Millis(10);
    deps.keep_releases = keep_releases_;
    auto s = std::make_unique<ServiceSupervisor>(state, deps);
    return s;
  }

  tern::v1::CommandResult run(ServiceSupervisor& s, tern::v1::Command cmd) {
    std::promise<tern::v1::CommandResult> p;
    auto f = p.get_future();
    progress_.clear();
    s.submit(cmd, [this](const std::string& m) { progress_ += m + "\n"; },
             [&](const tern::v1::CommandResult& r) { p.set_value(r); });
    return f.get();
  }

  static tern::v1::ReleaseRef release(const std::string& version) {
    tern::v1::ReleaseRef r;
    r.set_version(version);
    Sha256 h;
    h.update("app", 3);
    r.set_sha256(h.hex_digest());
    r.set_kind("executable");
    return r;
  }

  // A state as a running agent would have recorded it: `active` on blue at
  // 100% and healthy, `idle` on green (a live process unless stopped).
  tern::v1::ServiceState recorded_state(const std::string& active, const std::string& idle,
                                        tern::v1::SlotPhase idle_phase) {
    tern::v1::ServiceState st = make()->snapshot();
    auto put = [&](tern::v1::SlotState* s, const std::string& version, tern::v1::SlotPhase phase) {
      *s->mutable_release() = release(version);
      s->set_phase(phase);
      if (phase == tern::v1::SLOT_PHASE_STOPPED) return;
      LaunchSpec ls;
      ls.argv = {"app"};
      auto h = launcher_.start(ls);
      s->set_pid(h->pid);
      s->set_start_time(h->start_time);
    };
    put(st.mutable_blue(), active, tern::v1::SLOT_PHASE_HEALTHY);
    if (!idle.empty()) put(st.mutable_green(), idle, idle_phase);
    st.set_active(tern::v1::SLOT_COLOR_BLUE);
    st.set_active_weight(100);
    return st;
  }

  bool has_event(tern::v1::AgentEventKind kind, const std::string& text) {
    std::lock_guard lock(events_mu_);
    for (const auto& e : events_) {
      if (e.kind() == kind && e.message().find(text) != std::string::npos) return true;
    }
    return false;
  }

  bool alive(int64_t pid) { return launcher_.recover(ProcessHandle{pid, 1}); }

  // Gives the spec's hook `name` the command `argv` (FakeLauncher: a program
  // in `finishes` exits at once, any other runs until killed).
  void hook(const std::string& name, std::vector<std::string> argv, const std::string& on_failure = "",
            Millis timeout = Millis(0), bool idempotent = false) {
    tern::v1::Hook* h = find_mutable_hook(hooks_, name);
    ASSERT_NE(h, nullptr) << name;
    for (auto& a : argv) h->add_argv(a);
    h->set_on_failure(on_failure);
    if (timeout > Millis(0)) {
      *h->mutable_timeout() = google::protobuf::util::TimeUtil::MillisecondsToDuration(timeout.count());
    }
    h->set_idempotent(idempotent);
  }

  // The processes started with argv[0] `program`, in order.
  std::vector<LaunchSpec> runs_of(const std::string& program) {
    std::lock_guard lock(launcher_.mu);
    std::vector<LaunchSpec> out;
    for (const auto& ls : launcher_.started) {
      if (!ls.argv.empty() && ls.argv[0] == program) out.push_back(ls);
    }
    return out;
  }

  // The index in launcher_.started of the first process started with argv[0] `program`; -1: none.
  int started_at(const std::string& program) {
    std::lock_guard lock(launcher_.mu);
    for (size_t i = 0; i < launcher_.started.size(); ++i) {
      if (!launcher_.started[i].argv.empty() && launcher_.started[i].argv[0] == program) return static_cast<int>(i);
    }
    return -1;
  }

  tern::v1::CommandResult deploy(ServiceSupervisor& s, const std::string& version, uint32_t weight = 100,
                                 const std::string& rollout_id = "", uint32_t wave = 0) {
    tern::v1::Command cmd;
    auto* d = cmd.mutable_deploy();
    d->set_rollout_id(rollout_id);
    d->set_wave(wave);
    d->set_service("web");
    d->mutable_release()->set_version(version);
    Sha256 h;
    h.update("app", 3);
    d->mutable_release()->set_sha256(h.hex_digest());
    d->mutable_release()->set_kind("executable");
    d->set_switch_on_healthy(true);
    d->set_weight(weight);
    return run(s, cmd);
  }

  // A started supervisor that deployed `versions`, in order, each at 100%.
  std::unique_ptr<ServiceSupervisor> deployed(std::initializer_list<std::string> versions) {
    auto s = make();
    s->start();
    for (const auto& v : versions) {
      auto r = deploy(*s, v);
      EXPECT_EQ(r.outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED) << v << ": " << r.message();
    }
    return s;
  }

  tern::v1::CommandResult rollback(ServiceSupervisor& s, const std::string& to_version = "") {
    tern::v1::Command cmd;
    cmd.mutable_rollback()->set_service("web");
    cmd.mutable_rollback()->set_to_version(to_version);
    return run(s, cmd);
  }

  testing::TempDir dir_;
  FakeLauncher launcher_;
  FakeProber prober_;
  FakeMapper mapper_;
  FakeFetcher fetcher_;
  FakeHostOs os_;
  ArtifactStager stager_;
  TrafficMap traffic_;
  bool keep_warm_ = false;
  std::size_t keep_releases_ = 5;
  Millis drain_{0};
  Millis min_healthy_{0};
  std::string state_dir_;
  std::vector<tern::v1::TemplateFile> templates_;
  tern::v1::Hooks hooks_;
  std::string progress_;
  std::mutex events_mu_;
  std::vector<tern::v1::AgentEvent> events_;
};

TEST_F(SupervisorTest, FirstDeployGoesToBlueThenGreenThenRollsBack) {
  auto s = make();
  s->start();
  ASSERT_EQ(deploy(*s, "1").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  EXPECT_EQ(mapper_.target(), 9001);
  EXPECT_EQ(launcher_.started.back().argv[1], "--port=9001");
  ASSERT_EQ(deploy(*s, "2").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  EXPECT_EQ(mapper_.target(), 9002);
  auto st = s->snapshot();
  EXPECT_EQ(st.blue().phase(), tern::v1::SLOT_PHASE_STOPPED) << "keep_warm off: blue stopped after the switch";
  EXPECT_EQ(st.last_good().version(), "2");
  // 2 turns unhealthy while it serves: 1 is the last known-good release again.
  prober_.unhealthy.insert(9002);
  ASSERT_TRUE(testing::eventually([&] { return s->status().last_good().version() == "1"; }));
  // Rollback restarts the stopped 1 in blue before flipping.
  const auto starts = launcher_.started.size();
  ASSERT_EQ(rollback(*s).outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  EXPECT_EQ(mapper_.target(), 9001);
  EXPECT_EQ(launcher_.started.size(), starts + 1);
  EXPECT_EQ(s->snapshot().blue().release().version(), "1");
  s->shutdown();
}

TEST_F(SupervisorTest, TheOldSlotIsToldItDrainsThenStoppedWithTheSpecsSignal) {
  tern::v1::ServiceState st = make()->snapshot();
  st.mutable_spec()->set_drain_signal("SIGUSR1");
  st.mutable_spec()->set_stop_signal("SIGQUIT");
  auto s = make(st);
  s->start();
  ASSERT_EQ(deploy(*s, "1").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  const int64_t blue = s->snapshot().blue().pid();
  ASSERT_EQ(deploy(*s, "2").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  std::vector<int> to_blue;
  for (const auto& [pid, sig] : launcher_.signals) {
    if (pid == blue) to_blue.push_back(sig);
  }
  EXPECT_EQ(to_blue, (std::vector<int>{SIGUSR1, SIGQUIT})) << "told it drains, then stopped the way it asks";
  s->shutdown();
}

TEST_F(SupervisorTest, ADeployRendersTheTemplatesBeforeEveryStartOfTheSlot) {
  state_dir_ = dir_.path().string();
  tern::v1::TemplateFile t;
  t.set_source("app.conf.tmpl");
  t.set_dest("app.conf");
  templates_.push_back(t);
  ASSERT_TRUE(stager_.stage("web", release("1"), [](const std::string&) {}).ok());
  std::ofstream(stager_.release_dir("web", "1") + "/app.conf.tmpl") << "port={port}\nversion={version}\n";
  auto s = make();
  s->start();
  ASSERT_EQ(deploy(*s, "1").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED) << progress_;
  const std::string rendered = state_dir_ + "/web/blue/rendered/app.conf";
  EXPECT_EQ(testing::read_file(rendered), "port=9001\nversion=1\n");

  // A crash restart renders again: a slot starts on the files of its own start.
  std::filesystem::remove(rendered);
  const auto starts = launcher_.started.size();
  launcher_.crash(s->snapshot().blue().pid());
  ASSERT_TRUE(testing::eventually([&] {
    std::lock_guard lock(launcher_.mu);
    return s->snapshot().blue().phase() == tern::v1::SLOT_PHASE_HEALTHY && launcher_.started.size() == starts + 1;
  }));
  EXPECT_EQ(testing::read_file(rendered), "port=9001\nversion=1\n");
  s->shutdown();
}

TEST_F(SupervisorTest, ATemplateThatCannotBeRenderedLeavesTheActiveReleaseServing) {
  state_dir_ = dir_.path().string();
  tern::v1::TemplateFile t;
  t.set_source("app.conf.tmpl");
  t.set_dest("app.conf");
  templates_.push_back(t);
  ASSERT_TRUE(stager_.stage("web", release("1"), [](const std::string&) {}).ok());
  std::ofstream(stager_.release_dir("web", "1") + "/app.conf.tmpl") << "port={port}\n";
  ASSERT_TRUE(stager_.stage("web", release("2"), [](const std::string&) {}).ok());
  std::ofstream(stager_.release_dir("web", "2") + "/app.conf.tmpl") << "port={port}\nlisten={prot}\n";
  auto s = make();
  s->start();
  ASSERT_EQ(deploy(*s, "1").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED) << progress_;
  const auto blue = s->snapshot().blue();
  const auto starts = launcher_.started.size();

  auto r = deploy(*s, "2");
  EXPECT_EQ(r.outcome(), tern::v1::COMMAND_OUTCOME_FAILED);
  EXPECT_NE(r.message().find("cannot start green (2): rendering its config files failed: templates[0] "
                             "(app.conf.tmpl -> app.conf): app.conf.tmpl line 2: unknown placeholder {prot}"),
            std::string::npos)
      << r.message();
  EXPECT_EQ(launcher_.started.size(), starts) << "green was never started";
  EXPECT_EQ(mapper_.target(), 9001) << "traffic stays on blue";
  EXPECT_TRUE(alive(blue.pid()));
  const auto st = s->snapshot();
  EXPECT_EQ(st.active(), tern::v1::SLOT_COLOR_BLUE);
  EXPECT_EQ(st.green().phase(), tern::v1::SLOT_PHASE_CRASHED);
  EXPECT_NE(st.green().message().find("unknown placeholder {prot}"), std::string::npos) << st.green().message();
  EXPECT_EQ(testing::read_file(state_dir_ + "/web/blue/rendered/app.conf"), "port=9001\n")
      << "blue's files are its own";
  s->shutdown();
}

TEST_F(SupervisorTest, ADeployPrunesOldReleasesButNeverOnesInUseOrKnownGood) {
  keep_releases_ = 1;
  keep_warm_ = true;
  for (const char* v : {"1", "2", "3", "4", "5", "6"}) {
    ASSERT_TRUE(stager_.stage("web", release(v), [](const std::string&) {}).ok()) << v;
  }
  // 3 active on blue, 4 warm on green; 2 is the last known-good release, 1 the one before.
  auto st = recorded_state("3", "4", tern::v1::SLOT_PHASE_HEALTHY);
  *st.mutable_last_good() = release("2");
  *st.mutable_previous_good() = release("1");
  auto s = make(st);
  ASSERT_TRUE(s->recover().ok());
  s->start();
  // A canary at 50%: 7 does not become known-good, so the titles stay put.
  ASSERT_EQ(deploy(*s, "7", 50).outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED) << progress_;
  const auto now = s->snapshot();
  EXPECT_EQ(now.green().release().version(), "7");
  EXPECT_EQ(now.blue().release().version(), "3");
  EXPECT_EQ(now.last_good().version(), "2");
  EXPECT_EQ(now.previous_good().version(), "1");
  for (const char* kept : {"1", "2", "3", "7"}) {
    EXPECT_TRUE(std::filesystem::exists(stager_.release_dir("web", kept))) << kept << " is in use\n" << progress_;
  }
  for (const char* gone : {"4", "5", "6"}) {
    EXPECT_FALSE(std::filesystem::exists(stager_.release_dir("web", gone))) << gone << " is not in use";
  }
  EXPECT_NE(progress_.find("removed 3 old release(s)"), std::string::npos) << progress_;
  s->shutdown();
}

TEST_F(SupervisorTest, AnUnhealthyGreenIsStoppedAndTrafficStays) {
  auto s = make();
  s->start();
  ASSERT_EQ(deploy(*s, "1").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  const int applies = mapper_.applies;
  prober_.unhealthy.insert(9002);
  auto r = deploy(*s, "2");
  EXPECT_EQ(r.outcome(), tern::v1::COMMAND_OUTCOME_FAILED);
  EXPECT_NE(r.message().find("did not turn healthy"), std::string::npos) << r.message();
  EXPECT_EQ(mapper_.applies, applies) << "the mapping was never touched";
  EXPECT_EQ(mapper_.target(), 9001);
  auto st = s->snapshot();
  EXPECT_EQ(st.green().pid(), 0);
  EXPECT_EQ(st.green().phase(), tern::v1::SLOT_PHASE_CRASHED);
  EXPECT_EQ(st.blue().phase(), tern::v1::SLOT_PHASE_HEALTHY);
  s->shutdown();
}

TEST_F(SupervisorTest, AFailedSwitchLeavesTheOldMappingAndReportsIt) {
  auto s = make();
  s->start();
  ASSERT_EQ(deploy(*s, "1").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  mapper_.fail_next = absl::InternalError("netlink: EPERM");
  auto r = deploy(*s, "2");
  EXPECT_EQ(r.outcome(), tern::v1::COMMAND_OUTCOME_FAILED);
  EXPECT_NE(r.message().find("previous mapping stays"), std::string::npos) << r.message();
  EXPECT_EQ(mapper_.target(), 9001);
  EXPECT_EQ(s->snapshot().active(), tern::v1::SLOT_COLOR_BLUE);
  s->shutdown();
}

TEST_F(SupervisorTest, ACrashedSlotIsRestartedWithinItsPolicyThenLeftCrashed) {
  auto s = make();
  s->start();
  ASSERT_EQ(deploy(*s, "1").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  const int64_t first = s->snapshot().blue().pid();
  launcher_.crash(first);
  ASSERT_TRUE(testing::eventually([&] {
    auto b = s->snapshot().blue();
    return b.restarts() == 1 && b.pid() > 0 && b.pid() != first;
  }));
  launcher_.crash(s->snapshot().blue().pid());  // max_restarts is 1
  ASSERT_TRUE(testing::eventually([&] { return s->snapshot().blue().phase() == tern::v1::SLOT_PHASE_CRASHED; }));
  s->shutdown();
}

TEST_F(SupervisorTest, RecoverAdoptsLiveSlotsAndReappliesTheMapping) {
  keep_warm_ = true;
  tern::v1::ServiceState saved;
  {
    auto s = make();
    s->start();
    ASSERT_EQ(deploy(*s, "1").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
    ASSERT_EQ(deploy(*s, "2").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
    s->shutdown();
    saved = s->snapshot();
  }
  // A new agent: the kernel mapping is gone, blue died meanwhile, green lives.
  mapper_.current_ = {};
  launcher_.crash(saved.blue().pid());
  const auto starts = launcher_.started.size();
  auto s = make(saved);
  ASSERT_TRUE(s->recover().ok());
  EXPECT_EQ(mapper_.target(), 9002) << "the recorded mapping is back";
  auto st = s->snapshot();
  EXPECT_EQ(st.green().pid(), saved.green().pid()) << "adopted, not restarted";
  EXPECT_EQ(st.blue().pid(), 0);
  EXPECT_EQ(st.blue().phase(), tern::v1::SLOT_PHASE_CRASHED);
  EXPECT_EQ(launcher_.started.size(), starts);
}

TEST_F(SupervisorTest, RecoverStopsSlotProcessesTheStateNeverRecorded) {
  state_dir_ = "/var/lib/tern";
  tern::v1::ServiceState saved;
  {
    auto s = make();
    s->start();
    ASSERT_EQ(deploy(*s, "1").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
    s->shutdown();
    saved = s->snapshot();
  }
  EXPECT_EQ(launcher_.started.back().slot_id, "/var/lib/tern/web/blue");
  // The agent died right after it started green, before it recorded the pid.
  LaunchSpec ls;
  ls.argv = {"app"};
  ls.slot_id = "/var/lib/tern/web/green";
  auto orphan = launcher_.start(ls);
  // Another agent's slot (another state dir) is none of this one's business.
  ls.slot_id = "/var/lib/tern2/web/green";
  auto foreign = launcher_.start(ls);
  ASSERT_TRUE(orphan.ok() && foreign.ok());

  auto s = make(saved);
  ASSERT_TRUE(s->recover().ok());
  EXPECT_FALSE(launcher_.recover(*orphan)) << "the orphan was stopped";
  EXPECT_TRUE(launcher_.recover(*foreign));
  const auto blue = s->snapshot().blue();
  EXPECT_EQ(blue.pid(), saved.blue().pid()) << "the recorded blue is adopted";
  EXPECT_TRUE(launcher_.recover(ProcessHandle{blue.pid(), blue.start_time()}));
}

TEST_F(SupervisorTest, AWeightedDeploySplitsAndARepeatPromotes) {
  auto s = make();
  s->start();
  ASSERT_EQ(deploy(*s, "1").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  ASSERT_EQ(deploy(*s, "2", 20).outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  ASSERT_EQ(mapper_.current_.routes[0].backends.size(), 2u);
  EXPECT_EQ(mapper_.current_.routes[0].backends[0], (PortRoute::Backend{9002, 20}));
  EXPECT_EQ(mapper_.current_.routes[0].backends[1], (PortRoute::Backend{9001, 80}));
  ASSERT_EQ(deploy(*s, "2").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  EXPECT_EQ(mapper_.current_.routes[0].backends[0], (PortRoute::Backend{9002, 100}));
  EXPECT_EQ(mapper_.current_.routes[0].backends[1], (PortRoute::Backend{9001, 0})) << "listed, so it is counted";
  EXPECT_EQ(mapper_.target(), 9002);
  EXPECT_EQ(s->snapshot().blue().phase(), tern::v1::SLOT_PHASE_STOPPED);
  s->shutdown();
}

TEST_F(SupervisorTest, ASpecThatChangesTheSplitTakesEffectAtOnce) {
  auto s = make();
  s->start();
  ASSERT_EQ(deploy(*s, "1").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  ASSERT_EQ(deploy(*s, "2", 20).outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  ASSERT_EQ(mapper_.current_.routes.size(), 1u);
  EXPECT_EQ(mapper_.current_.routes[0].split, TrafficSplit::kConnection);

  auto apply = [&](const std::string& split, uint64_t generation) {
    tern::v1::Command cmd;
    auto* a = cmd.mutable_apply_service();
    *a->mutable_spec() = s->snapshot().spec();
    a->mutable_spec()->set_split(split);
    a->set_spec_generation(generation);
    return run(*s, cmd);
  };
  // The kernel refuses: the spec is not taken, so what is recorded still
  // describes what is in force.
  mapper_.fail_next = absl::InternalError("no cluster match");
  auto r = apply("client", 2);
  EXPECT_EQ(r.outcome(), tern::v1::COMMAND_OUTCOME_FAILED);
  EXPECT_NE(r.message().find("no cluster match"), std::string::npos) << r.message();
  EXPECT_EQ(s->snapshot().spec().split(), "");
  EXPECT_EQ(mapper_.current_.routes[0].split, TrafficSplit::kConnection);

  // Spelling the default out is no change: nothing is applied.
  const int applies = mapper_.applies;
  ASSERT_EQ(apply("connection", 2).outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  EXPECT_EQ(mapper_.applies, applies);

  ASSERT_EQ(apply("client", 3).outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED) << progress_;
  EXPECT_EQ(mapper_.current_.routes[0].split, TrafficSplit::kClient);
  EXPECT_EQ(mapper_.current_.routes[0].backends[0], (PortRoute::Backend{9002, 20})) << "the weights are kept";
  EXPECT_EQ(s->snapshot().spec().split(), "client");
  // The next switch keeps the split.
  ASSERT_EQ(deploy(*s, "2", 60).outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  EXPECT_EQ(mapper_.current_.routes[0].split, TrafficSplit::kClient);
  EXPECT_EQ(mapper_.current_.routes[0].backends[0], (PortRoute::Backend{9002, 60}));
  s->shutdown();
}

TEST_F(SupervisorTest, DrainingWaitsForOpenConnectionsOnlyUntilTheDrainTime) {
  drain_ = Millis(30'000);
  auto s = make();
  s->start();
  ASSERT_EQ(deploy(*s, "1").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  TimePoint before = os_.clock().now();
  ASSERT_EQ(deploy(*s, "2").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  EXPECT_LT(os_.clock().now() - before, drain_) << "nothing open on blue: no wait";
  {
    std::lock_guard lock(os_.mu);
    os_.sockets[9002] = PortSockets{.accept_queue = 0, .established = 2, .listening = true};
  }
  before = os_.clock().now();
  ASSERT_EQ(deploy(*s, "3").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  EXPECT_GE(os_.clock().now() - before, drain_) << "two clients that never hang up: the whole drain time";
  EXPECT_EQ(mapper_.target(), 9001);
  EXPECT_EQ(s->snapshot().green().phase(), tern::v1::SLOT_PHASE_STOPPED);
  s->shutdown();
}

TEST_F(SupervisorTest, TheLastGoodReleaseIsTheOneThatServedAllTrafficHealthyForTheMinimumHealthyTime) {
  min_healthy_ = Millis(100);  // below the healthy deadline (300ms)
  auto s = make();
  s->start();
  ASSERT_EQ(deploy(*s, "1").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  ASSERT_TRUE(testing::eventually([&] { return s->status().last_good().version() == "1"; }));
  EXPECT_EQ(s->snapshot().last_good().version(), "1") << "recorded, so it survives a restart";
  // A canary never serves all the traffic: 1 stays the last good.
  ASSERT_EQ(deploy(*s, "2", 20).outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  const TimePoint later = os_.clock().now() + Millis(2'000);
  ASSERT_TRUE(testing::eventually([&] { return os_.clock().now() > later; }));
  EXPECT_EQ(s->status().last_good().version(), "1");
  ASSERT_EQ(deploy(*s, "2").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  ASSERT_TRUE(testing::eventually([&] { return s->status().last_good().version() == "2"; }));
  EXPECT_EQ(s->snapshot().previous_good().version(), "1");
  s->shutdown();
}

TEST_F(SupervisorTest, RollbackFlipsToTheLastGoodWhenItIsWarmAndHealthyAndThenStaysThere) {
  keep_warm_ = true;
  auto s = deployed({"1", "2", "3"});
  EXPECT_NE(progress_.find("stopping idle blue (1, not the last known-good release)"), std::string::npos)
      << progress_;
  EXPECT_EQ(mapper_.target(), 9001);
  // 3 goes bad after the switch.
  prober_.unhealthy.insert(9001);
  ASSERT_TRUE(testing::eventually([&] { return s->snapshot().blue().phase() == tern::v1::SLOT_PHASE_UNHEALTHY; }));
  EXPECT_EQ(s->status().last_good().version(), "2");
  const auto starts = launcher_.started.size();
  ASSERT_EQ(rollback(*s).outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  EXPECT_EQ(mapper_.target(), 9002) << "a flip to the warm 2";
  EXPECT_EQ(launcher_.started.size(), starts);
  // 3 stays warm beside it; rolling back again must not flip to it.
  auto r = rollback(*s);
  EXPECT_EQ(r.outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED) << r.message();
  EXPECT_NE(progress_.find("already active on green"), std::string::npos) << progress_;
  EXPECT_EQ(mapper_.target(), 9002);
  s->shutdown();
}

TEST_F(SupervisorTest, RollbackStartsTheLastGoodInTheIdleSlotWhenThatHoldsSomethingElse) {
  auto st = recorded_state("3", "3-bad", tern::v1::SLOT_PHASE_UNHEALTHY);
  *st.mutable_last_good() = release("2");
  const int64_t bad = st.green().pid();
  auto s = make(st);
  const auto starts = launcher_.started.size();
  // Queued before the thread starts, so it runs before any health check
  // could make the healthy 3 the last good release.
  std::promise<tern::v1::CommandResult> done;
  tern::v1::Command cmd;
  cmd.mutable_rollback()->set_service("web");
  s->submit(cmd, [](const std::string&) {}, [&](const tern::v1::CommandResult& res) { done.set_value(res); });
  s->start();
  auto r = done.get_future().get();
  ASSERT_EQ(r.outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED) << r.message();
  EXPECT_FALSE(alive(bad)) << "the release in the idle slot was stopped";
  EXPECT_EQ(launcher_.started.size(), starts + 1);
  EXPECT_EQ(s->snapshot().green().release().version(), "2");
  EXPECT_EQ(mapper_.target(), 9002);
  EXPECT_EQ(s->snapshot().active(), tern::v1::SLOT_COLOR_GREEN);
  s->shutdown();
}

TEST_F(SupervisorTest, RollbackWithoutAKnownGoodReleaseIsRefused) {
  min_healthy_ = Millis(3'600'000);  // the active release never qualifies in this test
  auto s = make(recorded_state("2", "1", tern::v1::SLOT_PHASE_STOPPED));
  s->start();
  const auto starts = launcher_.started.size();
  auto r = rollback(*s);
  EXPECT_EQ(r.outcome(), tern::v1::COMMAND_OUTCOME_FAILED);
  EXPECT_EQ(r.code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_NE(r.message().find("no release has been known-good"), std::string::npos) << r.message();
  EXPECT_EQ(launcher_.started.size(), starts);
  EXPECT_EQ(s->snapshot().active(), tern::v1::SLOT_COLOR_BLUE);
  s->shutdown();
}

TEST_F(SupervisorTest, RollbackToAReleaseTheHostDoesNotHaveLeavesTheIdleSlotRunning) {
  keep_warm_ = true;
  auto s = deployed({"1", "2"});
  const int64_t warm = s->snapshot().blue().pid();
  ASSERT_TRUE(alive(warm));
  auto r = rollback(*s, "0.9");
  EXPECT_EQ(r.outcome(), tern::v1::COMMAND_OUTCOME_FAILED);
  EXPECT_NE(r.message().find("no record of that release"), std::string::npos) << r.message();
  EXPECT_NE(r.message().find("ternctl host deploy"), std::string::npos) << r.message();
  EXPECT_TRUE(alive(warm)) << "the warm 1 was stopped for a rollback that could not happen";
  EXPECT_EQ(s->snapshot().blue().phase(), tern::v1::SLOT_PHASE_HEALTHY);
  // A name that would reach outside the releases directory is refused as such.
  r = rollback(*s, "../../../bin");
  EXPECT_EQ(r.code(), static_cast<int>(absl::StatusCode::kInvalidArgument)) << r.message();
  EXPECT_TRUE(alive(warm));
  // The version named is one this host ran: a flip to it.
  r = rollback(*s, "1");
  EXPECT_EQ(r.outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED) << r.message();
  EXPECT_EQ(mapper_.target(), 9001);
  s->shutdown();
}

// A fleet rollback names the release to return to: from then on that is
// the host's known-good release, even if the one it left had looked
// healthy here long enough to earn the title.
TEST_F(SupervisorTest, ARollbackByNameMakesItsReleaseTheLastGoodOne) {
  keep_warm_ = true;
  auto s = deployed({"1", "2"});
  ASSERT_TRUE(testing::eventually([&] { return s->status().last_good().version() == "2"; }));
  auto r = rollback(*s, "1");
  ASSERT_EQ(r.outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED) << r.message();
  EXPECT_EQ(mapper_.target(), 9001);
  EXPECT_EQ(s->status().last_good().version(), "1");
  EXPECT_EQ(s->snapshot().last_good().version(), "1") << "recorded";
  // A host rollback afterwards stays on 1: it never returns to 2, left warm.
  r = rollback(*s);
  EXPECT_EQ(r.outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED) << r.message();
  EXPECT_EQ(mapper_.target(), 9001);
  EXPECT_NE(progress_.find("already active"), std::string::npos) << progress_;
  s->shutdown();
}

TEST_F(SupervisorTest, SwitchingTrafficToAnUnhealthySlotIsRefused) {
  auto st = recorded_state("1", "2", tern::v1::SLOT_PHASE_UNHEALTHY);
  // Green stays unhealthy, and is not given up on while the test runs.
  prober_.unhealthy.insert(9002);
  st.mutable_spec()->mutable_health()->mutable_healthy_deadline()->set_seconds(3600);
  auto s = make(st);
  s->start();
  for (uint32_t weight : {100u, 30u}) {
    tern::v1::Command cmd;
    cmd.mutable_switch_traffic()->set_service("web");
    cmd.mutable_switch_traffic()->set_to(tern::v1::SLOT_COLOR_GREEN);
    cmd.mutable_switch_traffic()->set_weight(weight);
    auto r = run(*s, cmd);
    EXPECT_EQ(r.outcome(), tern::v1::COMMAND_OUTCOME_FAILED);
    EXPECT_EQ(r.code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
    EXPECT_NE(r.message().find("green (2, unhealthy"), std::string::npos) << r.message();
    EXPECT_EQ(mapper_.applies, 0) << "the mapping was never touched";
    EXPECT_EQ(s->snapshot().active(), tern::v1::SLOT_COLOR_BLUE);
  }
  s->shutdown();
}

TEST_F(SupervisorTest, AFailedDeployKeepsTheLastGoodWarm) {
  keep_warm_ = true;
  auto s = deployed({"1", "2"});
  const int64_t blue = s->snapshot().blue().pid();
  prober_.unhealthy.insert(9002);  // 2 goes bad: 1, warm in blue, is the last good again
  ASSERT_TRUE(testing::eventually([&] { return s->status().last_good().version() == "1"; }));
  auto r = deploy(*s, "3");
  EXPECT_EQ(r.outcome(), tern::v1::COMMAND_OUTCOME_FAILED);
  EXPECT_EQ(r.code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_NE(r.message().find("holds 1, the last known-good release"), std::string::npos) << r.message();
  EXPECT_TRUE(alive(blue));
  EXPECT_EQ(s->snapshot().blue().release().version(), "1");
  // So the rollback is still a flip.
  const auto starts = launcher_.started.size();
  ASSERT_EQ(rollback(*s).outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  EXPECT_EQ(mapper_.target(), 9001);
  EXPECT_EQ(launcher_.started.size(), starts);
  s->shutdown();
}

TEST_F(SupervisorTest, RecoverUndoesAStartTheAgentWasKilledIn) {
  auto st = recorded_state("1", "2", tern::v1::SLOT_PHASE_STARTING);
  *st.mutable_last_good() = release("1");
  st.set_starting_slot(tern::v1::SLOT_COLOR_GREEN);
  st.set_operation("probing green 2");
  const int64_t half = st.green().pid();
  auto s = make(st);
  ASSERT_TRUE(s->recover().ok());
  EXPECT_FALSE(alive(half)) << "the half-started release does not stay behind";
  auto now = s->snapshot();
  EXPECT_EQ(now.green().phase(), tern::v1::SLOT_PHASE_STOPPED);
  EXPECT_EQ(now.green().pid(), 0);
  EXPECT_EQ(now.starting_slot(), tern::v1::SLOT_COLOR_UNSPECIFIED);
  EXPECT_EQ(now.operation(), "");
  EXPECT_TRUE(alive(now.blue().pid()));
  EXPECT_EQ(mapper_.target(), 9001);
  EXPECT_TRUE(has_event(tern::v1::AGENT_EVENT_KIND_OPERATION_INTERRUPTED, "stopped green (2)"));
}

TEST_F(SupervisorTest, RecoverKeepsAnInterruptedStartOfTheLastGoodOrAHealthyWarmOne) {
  keep_warm_ = true;
  for (const std::string version : {"1", "2"}) {
    // "1": the last known-good release (a rollback was starting it); "2": healthy, with keep_warm.
    auto st = recorded_state("3", version,
                             version == "1" ? tern::v1::SLOT_PHASE_STARTING : tern::v1::SLOT_PHASE_HEALTHY);
    *st.mutable_last_good() = release("1");
    st.set_starting_slot(tern::v1::SLOT_COLOR_GREEN);
    auto s = make(st);
    ASSERT_TRUE(s->recover().ok());
    EXPECT_TRUE(alive(st.green().pid())) << version;
    EXPECT_EQ(s->snapshot().starting_slot(), tern::v1::SLOT_COLOR_UNSPECIFIED);
    EXPECT_TRUE(has_event(tern::v1::AGENT_EVENT_KIND_OPERATION_INTERRUPTED, "kept green (" + version + ")"))
        << version;
  }
}

TEST_F(SupervisorTest, AnInterruptedDrainIsFinishedAfterARestart) {
  for (bool keep_warm : {false, true}) {
    keep_warm_ = keep_warm;
    auto st = recorded_state("2", "1", tern::v1::SLOT_PHASE_DRAINING);
    st.set_operation("draining green");
    const int64_t old = st.green().pid();
    auto s = make(st);
    ASSERT_TRUE(s->recover().ok());
    s->start();
    if (keep_warm) {
      // The drain would have ended with the slot kept warm: it is idle and healthy.
      EXPECT_EQ(s->snapshot().green().phase(), tern::v1::SLOT_PHASE_HEALTHY);
      EXPECT_TRUE(alive(old));
    } else {
      EXPECT_TRUE(has_event(tern::v1::AGENT_EVENT_KIND_OPERATION_INTERRUPTED, "green (1) finishes its drain"));
      ASSERT_TRUE(testing::eventually([&] { return s->snapshot().green().phase() == tern::v1::SLOT_PHASE_STOPPED; }));
      EXPECT_FALSE(alive(old)) << "the old release stayed behind although keep_warm is off";
    }
    EXPECT_EQ(mapper_.target(), 9001);
    EXPECT_TRUE(alive(s->snapshot().blue().pid()));
    s->shutdown();
  }
}

// Lifecycle hooks.

TEST_F(SupervisorTest, APreStartHookThatFailsStartsNothingAndBlueKeepsServing) {
  hook("pre_start", {"migrate-check"});
  launcher_.finishes.emplace("migrate-check", true);
  auto s = make();
  s->start();
  ASSERT_EQ(deploy(*s, "1").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED) << progress_;
  const int64_t blue = s->snapshot().blue().pid();
  launcher_.finishes.insert_or_assign(std::string("migrate-check"), false);
  launcher_.writes.emplace("migrate-check", "schema 41 is older than 42\n");
  const auto starts = launcher_.started.size();
  auto r = deploy(*s, "2");
  EXPECT_EQ(r.outcome(), tern::v1::COMMAND_OUTCOME_FAILED);
  EXPECT_EQ(r.code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_NE(r.message().find("cannot start green (2): hook pre_start (2, green) failed: it exited with status 1; "
                             "its output: schema 41 is older than 42; nothing was started"),
            std::string::npos)
      << r.message();
  ASSERT_EQ(launcher_.started.size(), starts + 1) << "the hook ran, green never started";
  EXPECT_EQ(launcher_.started.back().argv[0], "migrate-check");
  EXPECT_EQ(mapper_.target(), 9001);
  EXPECT_TRUE(alive(blue));
  EXPECT_EQ(s->snapshot().green().pid(), 0);
  EXPECT_FALSE(s->snapshot().has_hook()) << "the record of a hook that ended is cleared";
  EXPECT_TRUE(has_event(tern::v1::AGENT_EVENT_KIND_HOOK_FAILED, "schema 41 is older than 42"));
  s->shutdown();
}

TEST_F(SupervisorTest, APreTrafficHookRunsOnAHealthyGreenBeforeTrafficMovesWithTheDeploysEnvironment) {
  state_dir_ = dir_.path().string();
  hook("pre_traffic", {"smoke", "http://127.0.0.1:{port}/", "{version}", "{slot}"});
  launcher_.finishes.emplace("smoke", true);
  launcher_.writes.emplace("smoke", "GET / 200\n");
  auto s = make();
  s->start();
  ASSERT_EQ(deploy(*s, "1").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED) << progress_;
  auto r = deploy(*s, "2", 100, "r-17", 2);
  ASSERT_EQ(r.outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED) << r.message();
  EXPECT_EQ(mapper_.target(), 9002);
  auto runs = runs_of("smoke");
  ASSERT_EQ(runs.size(), 2u);
  const LaunchSpec& h = runs[1];
  EXPECT_EQ(h.argv, (std::vector<std::string>{"smoke", "http://127.0.0.1:9002/", "2", "green"}));
  EXPECT_EQ(h.env.at("TERN_HOOK"), "pre_traffic");
  EXPECT_EQ(h.env.at("TERN_SERVICE"), "web");
  EXPECT_EQ(h.env.at("TERN_RELEASE"), "2");
  EXPECT_EQ(h.env.at("TERN_PREVIOUS_RELEASE"), "1");
  EXPECT_EQ(h.env.at("TERN_SLOT"), "green");
  EXPECT_EQ(h.env.at("TERN_PORT"), "9002");
  EXPECT_EQ(h.env.at("TERN_ROLLOUT_ID"), "r-17");
  EXPECT_EQ(h.env.at("TERN_WAVE"), "2");
  EXPECT_EQ(runs[0].env.at("TERN_ROLLOUT_ID"), "") << "a deploy of one host belongs to no rollout";
  EXPECT_EQ(runs[0].env.at("TERN_WAVE"), "");
  EXPECT_EQ(h.slot_id, state_dir_ + "/web/green/hook") << "named below its slot, never as the slot";
  EXPECT_EQ(h.working_dir, stager_.release_dir("web", "2"));
  // After green's start, before the switch (the switch's drain of blue comes later).
  EXPECT_LT(progress_.find("green is healthy"), progress_.find("hook pre_traffic (2, green) passed; its output: GET / 200"));
  EXPECT_LT(progress_.find("passed"), progress_.find("switched traffic to green")) << progress_;
  // Its output is in green's log, framed.
  EXPECT_NE(testing::read_file(dir_.path().string() + "/web-green.log").find("GET / 200"), std::string::npos);
  s->shutdown();
}

TEST_F(SupervisorTest, APreTrafficHookThatFailsStopsGreenAndLeavesAllTrafficOnBlue) {
  hook("pre_traffic", {"smoke"});
  launcher_.finishes.emplace("smoke", true);
  auto s = make();
  s->start();
  ASSERT_EQ(deploy(*s, "1").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED) << progress_;
  const int64_t blue = s->snapshot().blue().pid();
  const int applies = mapper_.applies;
  launcher_.finishes.insert_or_assign(std::string("smoke"), false);
  launcher_.writes.emplace("smoke", "GET /checkout 500\x01\xff\ntraceback: KeyError\n");
  auto r = deploy(*s, "2");
  EXPECT_EQ(r.outcome(), tern::v1::COMMAND_OUTCOME_FAILED);
  EXPECT_NE(r.message().find("deploy of 2 stopped before any traffic moved: hook pre_traffic (2, green) failed: "
                             "it exited with status 1; its output: GET /checkout 500 ? | traceback: KeyError; "
                             "green was stopped and traffic stays on blue"),
            std::string::npos)
      << r.message();
  EXPECT_EQ(mapper_.applies, applies) << "the mapping was never touched";
  EXPECT_EQ(mapper_.target(), 9001);
  EXPECT_TRUE(alive(blue));
  const auto st = s->snapshot();
  EXPECT_EQ(st.green().pid(), 0);
  EXPECT_EQ(st.green().phase(), tern::v1::SLOT_PHASE_STOPPED);
  EXPECT_EQ(st.active(), tern::v1::SLOT_COLOR_BLUE);
  s->shutdown();
}

TEST_F(SupervisorTest, AHookThatDoesNotFinishIsKilledAtItsTimeoutAndHasFailed) {
  hook("pre_traffic", {"hang"}, "", Millis(2'000));
  auto s = make();
  s->start();
  ASSERT_EQ(deploy(*s, "1").outcome(), tern::v1::COMMAND_OUTCOME_FAILED) << "no blue to fall back on, still a failure";
  auto runs = runs_of("hang");
  ASSERT_EQ(runs.size(), 1u);
  bool killed = false;
  {
    std::lock_guard lock(launcher_.mu);
    for (const auto& [pid, sig] : launcher_.signals) killed |= sig == SIGKILL && !launcher_.alive.count(pid);
  }
  EXPECT_TRUE(killed) << "the hook's process group was killed";
  EXPECT_EQ(mapper_.target(), 0) << "no traffic was ever mapped";
  EXPECT_TRUE(has_event(tern::v1::AGENT_EVENT_KIND_HOOK_FAILED, "did not finish within 2s and was killed"));
  s->shutdown();
}

TEST_F(SupervisorTest, APostSwitchHookThatFailsNeverUndoesTheSwitch) {
  for (const std::string on_failure : {"warn", "fail"}) {
    {
      std::lock_guard lock(events_mu_);
      events_.clear();
    }
    hooks_.Clear();
    hook("post_switch", {"announce"}, on_failure);
    launcher_.finishes.insert_or_assign(std::string("announce"), false);
    auto s = make();
    s->start();
    ASSERT_EQ(deploy(*s, "1").outcome(), on_failure == "warn" ? tern::v1::COMMAND_OUTCOME_SUCCEEDED
                                                               : tern::v1::COMMAND_OUTCOME_FAILED);
    auto r = deploy(*s, "2");
    EXPECT_EQ(mapper_.target(), 9002) << on_failure;
    EXPECT_EQ(s->snapshot().active(), tern::v1::SLOT_COLOR_GREEN) << on_failure;
    EXPECT_EQ(s->snapshot().blue().phase(), tern::v1::SLOT_PHASE_STOPPED) << "the old slot is dealt with as usual";
    if (on_failure == "warn") {
      EXPECT_EQ(r.outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED) << r.message();
      EXPECT_NE(progress_.find("hook post_switch (2, green) failed: it exited with status 1; it printed nothing "
                               "(warn: going on)"),
                std::string::npos)
          << progress_;
    } else {
      EXPECT_EQ(r.outcome(), tern::v1::COMMAND_OUTCOME_FAILED);
      EXPECT_NE(r.message().find("traffic switched to green (2) and stays there, but hook post_switch (2, green) "
                                 "failed"),
                std::string::npos)
          << r.message();
    }
    EXPECT_TRUE(has_event(tern::v1::AGENT_EVENT_KIND_HOOK_FAILED, "hook post_switch (2, green) failed"));
    s->shutdown();
  }
}

TEST_F(SupervisorTest, APreStopHookRunsAboutTheOldSlotAfterItsDrainAndAFailureKeepsItUp) {
  hook("pre_stop", {"deregister", "{port}", "{slot}"}, "fail");
  launcher_.finishes.emplace("deregister", true);
  auto s = make();
  s->start();
  ASSERT_EQ(deploy(*s, "1").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED) << progress_;
  EXPECT_TRUE(runs_of("deregister").empty()) << "nothing to stop on a first deploy";
  ASSERT_EQ(deploy(*s, "2").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED) << progress_;
  auto runs = runs_of("deregister");
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].argv, (std::vector<std::string>{"deregister", "9001", "blue"})) << "about the slot it stops";
  EXPECT_EQ(runs[0].env.at("TERN_RELEASE"), "2") << "from the release being deployed";
  EXPECT_EQ(runs[0].env.at("TERN_PREVIOUS_RELEASE"), "1");
  EXPECT_LT(progress_.find("blue drained"), progress_.find("running hook pre_stop"));
  EXPECT_LT(progress_.find("running hook pre_stop"), progress_.find("stopped blue")) << progress_;

  launcher_.finishes.insert_or_assign(std::string("deregister"), false);
  const int64_t green = s->snapshot().green().pid();
  auto r = deploy(*s, "3");
  EXPECT_EQ(r.outcome(), tern::v1::COMMAND_OUTCOME_FAILED);
  EXPECT_NE(r.message().find("green was left running, drained and idle"), std::string::npos) << r.message();
  EXPECT_EQ(mapper_.target(), 9001) << "the switch stands";
  EXPECT_TRUE(alive(green));
  EXPECT_EQ(s->snapshot().green().phase(), tern::v1::SLOT_PHASE_HEALTHY);
  s->shutdown();
}

// A warm slot that served is "deregistered" by pre_stop however it comes
// to be stopped, not only after a switch's drain: replaced by a deploy,
// stopped by command, or with its service removed (whatever the hook says).
TEST_F(SupervisorTest, APreStopHookRunsBeforeAWarmSlotIsStoppedOnEveryPath) {
  keep_warm_ = true;
  hook("pre_stop", {"deregister", "{port}", "{slot}"}, "fail");
  launcher_.finishes.emplace("deregister", true);
  auto s = deployed({"1", "2"});
  EXPECT_TRUE(runs_of("deregister").empty()) << "blue (1) is kept warm, not stopped";

  launcher_.finishes.insert_or_assign(std::string("deregister"), false);
  const int64_t warm = s->snapshot().blue().pid();
  auto refused = deploy(*s, "3");
  EXPECT_EQ(refused.outcome(), tern::v1::COMMAND_OUTCOME_FAILED);
  EXPECT_NE(refused.message().find("blue was left running, idle, and nothing was deployed"), std::string::npos)
      << refused.message();
  ASSERT_EQ(runs_of("deregister").size(), 1u);
  EXPECT_EQ(runs_of("deregister")[0].argv, (std::vector<std::string>{"deregister", "9001", "blue"}));
  EXPECT_EQ(runs_of("deregister")[0].env.at("TERN_RELEASE"), "1") << "from the slot's own release";
  EXPECT_TRUE(alive(warm));
  EXPECT_EQ(mapper_.target(), 9002) << "2 serves on";

  launcher_.finishes.insert_or_assign(std::string("deregister"), true);
  ASSERT_EQ(deploy(*s, "3").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED) << progress_;
  EXPECT_EQ(runs_of("deregister").size(), 2u);
  EXPECT_FALSE(alive(warm));
  EXPECT_LT(progress_.find("running hook pre_stop"), progress_.find("staging 3")) << progress_;

  // Now green (2) is warm beside blue (3). A stop command asks the hook first.
  tern::v1::Command stop;
  stop.mutable_stop_slot()->set_service("web");
  stop.mutable_stop_slot()->set_slot(tern::v1::SLOT_COLOR_GREEN);
  ASSERT_EQ(run(*s, stop).outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED) << progress_;
  EXPECT_EQ(runs_of("deregister").size(), 3u);
  EXPECT_EQ(runs_of("deregister").back().argv[2], "green");

  // Removing the service stops the active slot too, after its hook, even
  // when the hook fails.
  launcher_.finishes.insert_or_assign(std::string("deregister"), false);
  const int64_t active = s->snapshot().blue().pid();
  tern::v1::Command remove;
  remove.mutable_remove_service()->set_service("web");
  ASSERT_EQ(run(*s, remove).outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED) << progress_;
  EXPECT_EQ(runs_of("deregister").size(), 4u);
  EXPECT_FALSE(alive(active));
  s->shutdown();
}

// A rollout wave may split by client where the service splits by
// connection: the deploy names it, its switch maps with it, it survives a
// restart in the state, and the next deploy that names none returns to the
// service's own.
TEST_F(SupervisorTest, ADeploysSplitOverridesTheSpecsUntilTheNextDeploy) {
  auto s = deployed({"1"});
  auto deploy_split = [&](const std::string& version, uint32_t weight, const std::string& split) {
    tern::v1::Command cmd;
    auto* d = cmd.mutable_deploy();
    d->set_service("web");
    d->mutable_release()->set_version(version);
    Sha256 h;
    h.update("app", 3);
    d->mutable_release()->set_sha256(h.hex_digest());
    d->mutable_release()->set_kind("executable");
    d->set_switch_on_healthy(true);
    d->set_weight(weight);
    d->set_split(split);
    return run(*s, cmd);
  };
  ASSERT_EQ(deploy_split("2", 10, "client").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED) << progress_;
  ASSERT_FALSE(mapper_.current().routes.empty());
  EXPECT_EQ(mapper_.current().routes[0].split, TrafficSplit::kClient);
  EXPECT_EQ(s->snapshot().split(), "client") << "kept in the state, so a restart maps the same";
  ASSERT_EQ(deploy_split("2", 50, "").outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED) << progress_;
  EXPECT_EQ(mapper_.current().routes[0].split, TrafficSplit::kConnection) << "the spec's split again";
  auto bad = deploy_split("2", 60, "hash");
  EXPECT_EQ(bad.outcome(), tern::v1::COMMAND_OUTCOME_FAILED);
  EXPECT_NE(bad.message().find("split \"hash\" is not connection or client"), std::string::npos) << bad.message();
  s->shutdown();
}

TEST_F(SupervisorTest, ARollbackSkipsTheGuardsAndWaitsOnlyBrieflyForItsHooks) {
  // Guards that would refuse anything, and a post_rollback that never ends.
  hook("pre_start", {"guard"});
  hook("pre_traffic", {"guard"});
  hook("post_switch", {"guard"}, "fail");
  hook("post_rollback", {"hang"}, "warn", Millis(3'600'000));
  launcher_.finishes.emplace("guard", true);
  auto s = deployed({"1", "2"});
  prober_.unhealthy.insert(9002);  // 2 goes bad: 1 is the last known-good release again
  ASSERT_TRUE(testing::eventually([&] { return s->status().last_good().version() == "1"; }));
  launcher_.finishes.insert_or_assign(std::string("guard"), false);
  const auto guards = runs_of("guard").size();
  const TimePoint before = os_.clock().now();
  auto r = rollback(*s);
  ASSERT_EQ(r.outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED) << r.message() << "\n" << progress_;
  EXPECT_EQ(mapper_.target(), 9001);
  EXPECT_EQ(runs_of("guard").size(), guards) << "pre_start, pre_traffic and post_switch do not hold up a rollback";
  ASSERT_EQ(runs_of("hang").size(), 1u);
  EXPECT_LT(os_.clock().now() - before, ServiceSupervisor::kRollbackHookWait + Millis(2'000))
      << "not the hook's hour";
  EXPECT_NE(progress_.find("did not finish within 5s and was killed"), std::string::npos) << progress_;
  EXPECT_NE(progress_.find("(the rollback goes on)"), std::string::npos) << progress_;
  EXPECT_EQ(runs_of("hang")[0].env.at("TERN_PREVIOUS_RELEASE"), "2");
  s->shutdown();
}

TEST_F(SupervisorTest, AnAgentKilledInAPreTrafficHookFailsTheDeployAndUndoesTheStart) {
  state_dir_ = "/var/lib/tern";
  auto st = recorded_state("1", "2", tern::v1::SLOT_PHASE_HEALTHY);
  st.set_starting_slot(tern::v1::SLOT_COLOR_GREEN);
  st.set_operation("running hook pre_traffic for green 2");
  // The hook still runs, named below green (the system launcher finds it by that).
  LaunchSpec ls;
  ls.argv = {"smoke"};
  ls.slot_id = "/var/lib/tern/web/green/hook";
  auto smoke = launcher_.start(ls);
  ASSERT_TRUE(smoke.ok());
  auto* h = st.mutable_hook();
  h->set_name("pre_traffic");
  h->set_command_id(42);
  h->set_idempotent(true);  // a guard never runs again: its deploy is not resumed
  h->set_slot(tern::v1::SLOT_COLOR_GREEN);
  *h->mutable_release() = release("2");
  h->set_pid(smoke->pid);
  h->set_start_time(smoke->start_time);
  const int64_t green = st.green().pid();
  auto s = make(st);
  ASSERT_TRUE(s->recover().ok());
  EXPECT_FALSE(alive(smoke->pid)) << "the hook does not outlive the agent that ran it";
  EXPECT_FALSE(alive(green)) << "green never passed its hook: its start is undone";
  EXPECT_TRUE(alive(s->snapshot().blue().pid()));
  EXPECT_EQ(mapper_.target(), 9001);
  EXPECT_FALSE(s->snapshot().has_hook());
  EXPECT_TRUE(has_event(tern::v1::AGENT_EVENT_KIND_HOOK_FAILED,
                        "the agent restarted while hook pre_traffic ran (command 42, green, release 2); the deploy "
                        "failed"));
  s->start();
  const auto started = launcher_.started.size();
  const TimePoint later = os_.clock().now() + Millis(1'000);
  ASSERT_TRUE(testing::eventually([&] { return os_.clock().now() > later; }));
  EXPECT_EQ(launcher_.started.size(), started) << "nothing runs again";
  s->shutdown();
}

TEST_F(SupervisorTest, AnAgentKilledInAPostSwitchHookRunsItAgainOnlyWhenItIsIdempotent) {
  hook("post_switch", {"announce"});
  launcher_.finishes.emplace("announce", true);
  for (bool idempotent : {true, false}) {
    auto st = recorded_state("2", "1", tern::v1::SLOT_PHASE_STOPPED);
    auto* h = st.mutable_hook();
    h->set_name("post_switch");
    h->set_command_id(7);
    h->set_idempotent(idempotent);
    h->set_slot(tern::v1::SLOT_COLOR_BLUE);
    *h->mutable_release() = release("2");
    h->set_previous_release("1");
    h->set_rollout_id("r-1");
    h->set_wave(3);
    const auto before = runs_of("announce").size();
    auto s = make(st);
    ASSERT_TRUE(s->recover().ok());
    s->start();
    if (idempotent) {
      ASSERT_TRUE(testing::eventually([&] { return runs_of("announce").size() == before + 1; }));
      const auto again = runs_of("announce").back();
      EXPECT_EQ(again.env.at("TERN_ROLLOUT_ID"), "r-1");
      EXPECT_EQ(again.env.at("TERN_WAVE"), "3");
      EXPECT_EQ(again.env.at("TERN_PREVIOUS_RELEASE"), "1");
      ASSERT_TRUE(testing::eventually([&] { return !s->snapshot().has_hook(); }));
    } else {
      EXPECT_TRUE(has_event(tern::v1::AGENT_EVENT_KIND_HOOK_FAILED,
                            "it was not run again, as it is not marked idempotent; the switch stands"));
      const TimePoint later = os_.clock().now() + Millis(1'000);
      ASSERT_TRUE(testing::eventually([&] { return os_.clock().now() > later; }));
      EXPECT_EQ(runs_of("announce").size(), before);
    }
    EXPECT_EQ(mapper_.target(), 9001) << "the switch stands";
    s->shutdown();
  }
}

}  // namespace
}  // namespace tern
