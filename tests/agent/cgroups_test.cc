// Slots in cgroups, against the real kernel: each test makes a cgroup of its
// own under the host's cgroup v2 mount (root only; skips otherwise) and
// removes it after. The choice of placement is tested on written mountinfo.
#include "agent/cgroups.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/host_os.h"
#include "agent/process_launcher.h"
#include "agent/slot.h"
#include "tests/support/cgroup2.h"
#include "tests/support/eventually.h"
#include "tests/support/temp_dir.h"

namespace tern {
namespace {

using ::testing::HasSubstr;
using testing::cgroup2_mount;
using testing::eventually;
using ::testing::StartsWith;


bool running(int64_t pid) { return process_start_time(pid).has_value(); }

bool port_in_use(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool used = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return used;
}

// A port nobody listens on now (bound to 0, then released).
uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

class CgroupSlotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mount_ = cgroup2_mount();
    if (::geteuid() != 0 || mount_.empty()) GTEST_SKIP() << "needs root and a cgroup v2 mount";
    static std::atomic<int> n{0};
    parent_ = absl::StrCat(mount_, "/tern-test-", ::getpid(), "-", n++);
    auto tree = SlotCgroups::open(mount_, parent_);
    if (!tree.ok()) GTEST_SKIP() << tree.status();
    cgroups_ = std::shared_ptr<const SlotCgroups>(*std::move(tree));
    launcher_ = make_system_process_launcher(cgroups_, cgroups_->describe());
    os_ = make_system_host_os();
  }

  void TearDown() override {
    if (!cgroups_) return;
    for (const auto& name : cgroups_->children()) {
      cgroups_->kill(name);
      eventually([&] { return !cgroups_->populated(name); });
      cgroups_->remove(name);
    }
    ::rmdir(parent_.c_str());
  }

  Slot slot(ProcessLauncher* launcher) {
    Slot::Deps deps;
    deps.launcher = launcher;
    deps.os = os_.get();
    deps.log_dir = dir_.path().string();
    deps.pause = [this](Millis d) {
      os_->sleep_for(d);
      return false;
    };
    return Slot("web", tern::v1::SLOT_COLOR_BLUE, std::move(deps));
  }

  // A slot process that leaves behind, outside its process group (setsid),
  // a server holding `port` and a process that ignores SIGTERM; their pids
  // go to escaped_pids().
  LaunchSpec escaping(uint16_t port) const {
    const std::string pids = dir_.file("escaped.pids");
    LaunchSpec spec;
    spec.argv = {"/bin/sh", "-c",
                 absl::StrCat("setsid ", TERN_DEMO_APP_BIN, " --port ", port,
                              " --version esc </dev/null >/dev/null 2>&1 & echo $! >>", pids,
                              "; setsid sh -c 'trap \"\" TERM; exec sleep 300' </dev/null >/dev/null 2>&1 & echo $! >>",
                              pids, "; exec sleep 300")};
    spec.log_path = dir_.file("slot.log");
    spec.cgroup = SlotCgroups::slot_name("web", "blue");
    return spec;
  }

  std::vector<int64_t> escaped_pids() const {
    std::vector<int64_t> out;
    std::ifstream in(dir_.file("escaped.pids"));
    for (int64_t pid; in >> pid;) out.push_back(pid);
    return out;
  }

  std::string mount_, parent_;
  std::shared_ptr<const SlotCgroups> cgroups_;
  std::unique_ptr<ProcessLauncher> launcher_;
  std::unique_ptr<HostOs> os_;
  testing::TempDir dir_;
};

TEST_F(CgroupSlotTest, AStopLeavesNothingOfASlotWhoseChildrenLeftItsProcessGroup) {
  const uint16_t port = free_port();
  Slot s = slot(launcher_.get());
  auto h = launcher_->start(escaping(port));
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_TRUE(eventually([&] { return port_in_use(port) && escaped_pids().size() == 2; }));
  const auto members = cgroups_->pids("web.blue");
  EXPECT_EQ(members.size(), 3u) << "the slot and its two escaped children run in its cgroup";
  for (int64_t pid : escaped_pids()) EXPECT_TRUE(cgroups_->contains("web.blue", pid));
  EXPECT_TRUE(cgroups_->contains("web.blue", h->pid));

  s.stop(*h, Millis(300));

  for (int64_t pid : members) EXPECT_FALSE(running(pid)) << "process " << pid << " outlived its slot";
  EXPECT_FALSE(port_in_use(port)) << "the escaped server still holds port " << port;
  EXPECT_FALSE(std::filesystem::exists(cgroups_->path("web.blue"))) << "the slot's cgroup is removed once empty";
}

// The same slot as process groups (the fallback): its escaped children
// survive the stop. This is what cgroups fix, and why `host status` says
// which of the two a host uses.
TEST_F(CgroupSlotTest, AsAProcessGroupTheSameSlotsEscapedChildrenSurviveItsStop) {
  auto plain = make_system_process_launcher();
  const uint16_t port = free_port();
  LaunchSpec spec = escaping(port);
  spec.cgroup.clear();
  Slot s = slot(plain.get());
  auto h = plain->start(spec);
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_TRUE(eventually([&] { return port_in_use(port); }));
  ASSERT_TRUE(eventually([&] { return escaped_pids().size() == 2; }));
  s.stop(*h, Millis(300));
  EXPECT_TRUE(port_in_use(port)) << "a setsid child escapes a process group";
  for (int64_t pid : escaped_pids()) {
    EXPECT_TRUE(running(pid)) << "escaped process " << pid << " survives";
    ::kill(static_cast<pid_t>(pid), SIGKILL);
  }
}

TEST_F(CgroupSlotTest, UsageIsTheCgroupsCpuTimeMemoryAndProcesses) {
  LaunchSpec spec;
  spec.argv = {"/bin/sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; exec sleep 300"};
  spec.log_path = dir_.file("slot.log");
  spec.cgroup = "web.blue";
  auto h = launcher_->start(spec);
  ASSERT_TRUE(h.ok()) << h.status();
  std::optional<ResourceUsage> u;
  ASSERT_TRUE(eventually([&] {
    u = launcher_->usage(*h, "web.blue");
    return u && u->cpu_usec >= 50'000;
  })) << "a busy loop shows as CPU time";
  EXPECT_GT(u->memory_bytes, 0u);
  EXPECT_EQ(u->processes, 1u);
  launcher_->kill_slot(*h, "web.blue");
  EXPECT_TRUE(eventually([&] { return launcher_->slot_ended(*h, "web.blue"); }));
}

TEST_F(CgroupSlotTest, AdoptionMovesASlotStartedOutsideCgroupsIntoItsOwn) {
  // Started by an agent that did not use cgroups (before an upgrade).
  auto plain = make_system_process_launcher();
  LaunchSpec spec;
  spec.argv = {"/bin/sh", "-c", "sleep 300 & exec sleep 300"};
  spec.log_path = dir_.file("slot.log");
  auto h = plain->start(spec);
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_TRUE(eventually([&] { return launcher_->usage(*h, "").has_value() && launcher_->usage(*h, "")->processes == 2; }))
      << "without a cgroup, usage counts the slot's session";
  EXPECT_FALSE(cgroups_->contains("web.blue", h->pid));

  auto moved = launcher_->adopt(*h, "web.blue", CgroupLimits{});
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(*moved, 2) << "the slot and its child";
  EXPECT_TRUE(cgroups_->contains("web.blue", h->pid));
  EXPECT_EQ(cgroups_->pids("web.blue").size(), 2u);
  EXPECT_EQ(*launcher_->adopt(*h, "web.blue", CgroupLimits{}), 0) << "already there";
  launcher_->kill_slot(*h, "web.blue");
  EXPECT_TRUE(eventually([&] { return plain->poll(*h).has_value() && !cgroups_->populated("web.blue"); }));
}

TEST_F(CgroupSlotTest, LimitsAreSetWhereTheControllerIsAndRefusedWhereItIsNot) {
  CgroupLimits limits;
  limits.memory_max = 256ull << 20;
  limits.tasks_max = 64;
  auto st = cgroups_->prepare("web.green", limits);
  if (cgroups_->controllers().count("memory") && cgroups_->controllers().count("pids")) {
    ASSERT_TRUE(st.ok()) << st;
    std::ifstream mem(cgroups_->path("web.green") + "/memory.max"), pids(cgroups_->path("web.green") + "/pids.max");
    std::string m, p;
    mem >> m;
    pids >> p;
    EXPECT_EQ(m, std::to_string(256ull << 20));
    EXPECT_EQ(p, "64");
  } else {
    ASSERT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(st.message()), HasSubstr("controller to enforce it"));
    EXPECT_THAT(std::string(st.message()), HasSubstr(parent_));
  }
  LaunchSpec spec;
  spec.argv = {"/bin/true"};
  spec.cgroup = "web.green";
  spec.limits = limits;
  auto plain = make_system_process_launcher(nullptr, "process groups (cgroup_parent is off in the agent's config)");
  auto refused = plain->start(spec);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("cannot enforce them"));
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("cgroup_parent is off"));
}

TEST_F(CgroupSlotTest, DescribeNamesTheParentAndTheControllersItLacks) {
  EXPECT_THAT(cgroups_->describe(), StartsWith("cgroup v2 at " + parent_));
  if (cgroups_->controllers().size() < 3) {
    EXPECT_THAT(cgroups_->describe(), HasSubstr("cannot be set"));
  }
  EXPECT_THAT(launcher_->placement(), StartsWith("cgroup v2 at "));
}

TEST_F(CgroupSlotTest, OnlySlotNamedCgroupsAreTakenForSlots) {
  // A parent given by mistake as a directory of other cgroups: those are
  // never listed, so never killed as belonging to no service.
  for (const char* other : {"cron.service", "user.slice", "web.blue.extra", "Web.blue"}) {
    ASSERT_EQ(::mkdir((parent_ + "/" + other).c_str(), 0755), 0) << other;
  }
  ASSERT_EQ(::mkdir((parent_ + "/web.green").c_str(), 0755), 0);
  EXPECT_EQ(cgroups_->children(), (std::vector<std::string>{"web.green"}));
  for (const char* other : {"cron.service", "user.slice", "web.blue.extra", "Web.blue"}) {
    ::rmdir((parent_ + "/" + other).c_str());
  }
  auto root = SlotCgroups::open(mount_, mount_);
  EXPECT_EQ(root.status().code(), absl::StatusCode::kInvalidArgument) << "never the hierarchy's root";
}

// ---- choosing, from mountinfo ----

class ChooseTest : public ::testing::Test {
 protected:
  std::string mountinfo(const std::string& text) {
    std::ofstream(dir_.file("mountinfo")) << text;
    return dir_.file("mountinfo");
  }
  testing::TempDir dir_;
};

constexpr char kHybrid[] =
    "30 23 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n"
    "31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n"
    "32 30 0:28 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n";

TEST_F(ChooseTest, AutoOnAHybridHierarchyUsesProcessGroupsAndSaysHowToUseCgroupV2) {
  auto c = SlotCgroups::choose("auto", mountinfo(kHybrid));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->tree, nullptr);
  EXPECT_THAT(c->placement, StartsWith("process groups (this host mounts cgroup v1 controllers"));
  EXPECT_THAT(c->placement, HasSubstr("set cgroup_parent to a directory under /sys/fs/cgroup/unified"));
}

TEST_F(ChooseTest, AutoWithoutCgroupV2AndOffUseProcessGroups) {
  auto none = SlotCgroups::choose("auto", mountinfo("22 1 0:21 / /proc rw - proc proc rw\n"));
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->tree, nullptr);
  EXPECT_EQ(none->placement, "process groups (this host has no cgroup v2 hierarchy mounted)");
  auto off = SlotCgroups::choose("off", mountinfo(kHybrid));
  ASSERT_TRUE(off.ok());
  EXPECT_EQ(off->tree, nullptr);
  EXPECT_THAT(off->placement, HasSubstr("cgroup_parent is off"));
}

// A cgroup2 mount elsewhere (a container runtime's, another test's) is not
// the host's hierarchy: auto never puts slots there.
TEST_F(ChooseTest, AutoUsesOnlyTheHostsUnifiedHierarchy) {
  auto c = SlotCgroups::choose("auto", mountinfo("40 30 0:27 / /tmp/x/cgroup2 rw - cgroup2 cgroup2 rw\n"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->tree, nullptr);
  EXPECT_THAT(c->placement, HasSubstr("cgroup v2 is not mounted at /sys/fs/cgroup"));
  EXPECT_THAT(c->placement, HasSubstr("a directory under /tmp/x/cgroup2"));
}

TEST_F(ChooseTest, AnExplicitParentMustLieInACgroupV2Mount) {
  auto outside = SlotCgroups::choose("/srv/tern", mountinfo(kHybrid));
  ASSERT_EQ(outside.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(outside.status().message()), HasSubstr("not inside a cgroup v2 mount"));
  EXPECT_THAT(std::string(outside.status().message()), HasSubstr("/sys/fs/cgroup/unified"));
  auto relative = SlotCgroups::choose("tern", mountinfo(kHybrid));
  EXPECT_EQ(relative.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ChooseTest, MountPointsWithBlanksAreUnescaped) {
  auto c = SlotCgroups::choose(
      "/no/such", mountinfo("31 30 0:27 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n"));
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("this host has /mnt/cg two"));
}

}  // namespace
}  // namespace tern
