// One host's agent with slots in cgroups (cgroup_parent set to a cgroup of
// the test's own under the host's cgroup v2 mount; needs root): where its
// slots run, what `host status` shows of them, adoption across an agent
// kill, and a release whose child escapes its process group.
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/words.h"
#include "tests/integration/one_host.h"
#include "tests/support/cgroup2.h"

namespace tern::testing {
namespace {


std::vector<int64_t> members(const std::string& cgroup) {
  std::vector<int64_t> out;
  std::ifstream in(cgroup + "/cgroup.procs");
  for (int64_t pid; in >> pid;) out.push_back(pid);
  return out;
}

// The cgroup v2 path of a process, under its mount.
std::string cgroup_of(int64_t pid, const std::string& mount) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/cgroup"));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("0::", 0) == 0) return mount + line.substr(3);
  }
  return "";
}

constexpr uint16_t kEscapedPort = 9555;

class CgroupSlotsTest : public OneHostFixture {
 protected:
  void SetUp() override {
    host_mount_ = cgroup2_mount();
    if (::geteuid() != 0 || host_mount_.empty()) GTEST_SKIP() << "needs root and a cgroup v2 mount";
    static std::atomic<int> n{0};
    const std::string name = absl::StrCat("tern-onehost-", ::getpid(), "-", n++);
    // `ip netns exec` gives the agent a fresh /sys without the host's cgroup
    // mounts: the agent runs in a mount namespace of its own where the same
    // hierarchy is mounted again, seen by nobody else.
    mount_ = dir_.file("cgroup2");
    agent_wrapper_ = {"unshare", "--mount", "--propagation", "private", "sh", "-c",
                      "mkdir -p \"$0\" && mount -t cgroup2 cgroup2 \"$0\" && exec \"$@\"", mount_};
    parent_ = absl::StrCat(mount_, "/", name);
    host_parent_ = absl::StrCat(host_mount_, "/", name);
    extra_agent_config_ = absl::StrCat("cgroup_parent: ", parent_, "\n");
    set_up("nftables", /*keep_warm=*/false);
    if (skipped()) GTEST_SKIP() << skip_reason();
  }

  void TearDown() override {
    OneHostFixture::TearDown();
    if (host_parent_.empty()) return;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(host_parent_, ec)) {
      if (!e.is_directory()) continue;
      std::ofstream(e.path() / "cgroup.kill") << "1";
      eventually([&] { return members(e.path().string()).empty(); });
      ::rmdir(e.path().c_str());
    }
    ::rmdir(host_parent_.c_str());
  }

  // The running slot's color and pid.
  std::pair<tern::v1::SlotColor, int64_t> running_slot() const {
    auto h = host_status();
    if (h && h->services_size() == 1) {
      for (const auto& s : h->services(0).slots()) {
        if (s.active() && s.pid() > 0) return {s.color(), s.pid()};
      }
    }
    return {tern::v1::SLOT_COLOR_UNSPECIFIED, 0};
  }

  bool escaped_port_open() const {
    bool open = false;
    ns_->run([&] { open = !http_get(absl::StrCat("127.0.0.1:", kEscapedPort), "/").empty(); });
    return open;
  }

  // The agent's view (its mount namespace) and the test's (the host's).
  std::string mount_, parent_;
  std::string host_mount_, host_parent_;
};

TEST_F(CgroupSlotsTest, SlotsRunInTheirOwnCgroupsAreAdoptedByThemAndLeaveNothingBehind) {
  ASSERT_NO_FATAL_FAILURE(deploy_ok("1.0"));
  auto [color, pid] = running_slot();
  ASSERT_GT(pid, 0);
  const std::string cgroup =
      absl::StrCat(host_parent_, "/web.", color == tern::v1::SLOT_COLOR_BLUE ? "blue" : "green");
  EXPECT_EQ(cgroup_of(pid, host_mount_), cgroup);

  // host status says where slots run and what they use.
  std::optional<tern::v1::Host> h;
  ASSERT_TRUE(eventually([&] {
    h = host_status();
    return h && h->usage_size() == 1 && h->usage(0).memory_bytes() > 0;
  })) << agent_->log();
  EXPECT_EQ(h->slot_placement().rfind("cgroup v2 at " + parent_, 0), 0u) << h->slot_placement();
  EXPECT_EQ(h->usage(0).service(), "web");
  EXPECT_EQ(h->usage(0).color(), color);
  EXPECT_EQ(h->usage(0).processes(), 1u);
  auto table = ctl({"host", "status", "h1"});
  EXPECT_NE(table.out.find("slots run in cgroup v2 at " + parent_), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("MEMORY"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find(" MiB"), std::string::npos) << table.out;
  auto metrics = agent_metrics();
  EXPECT_NE(metrics.find(absl::StrCat("tern_agent_slot_processes{service=\"web\",slot=\"", word(color), "\"} 1")),
            std::string::npos)
      << metrics;

  // The agent dies; the next one adopts the slot (same process, same cgroup).
  agent_->signal(SIGKILL);
  agent_->wait();
  start_agent();
  ASSERT_TRUE(eventually([&] {
    auto s = host_status();
    return s && s->state() == tern::v1::HOST_STATE_CONNECTED && s->usage_size() == 1;
  })) << agent_->log();
  EXPECT_EQ(running_slot().second, pid) << "adopted, not restarted";
  EXPECT_EQ(cgroup_of(pid, host_mount_), cgroup);

  // 2.0 leaves a server of its own outside its process group (setsid).
  const auto bundle_dir = dir_.path() / "bundle-escaping";
  std::filesystem::create_directories(bundle_dir);
  std::ofstream(bundle_dir / "app") << "#!/bin/sh\nsetsid " << TERN_DEMO_APP_BIN << " --port " << kEscapedPort
                                    << " --version stray </dev/null >/dev/null 2>&1 &\nexec " << TERN_DEMO_APP_BIN
                                    << " \"$@\"\n";
  std::filesystem::permissions(bundle_dir / "app", std::filesystem::perms::all);
  const std::string escaping = dir_.file("escaping.tar.gz");
  ASSERT_EQ(run_cmd({"tar", "-czf", escaping, "-C", bundle_dir.string(), "app"}).code, 0);
  ASSERT_NO_FATAL_FAILURE(push("2.0", escaping));
  ASSERT_NO_FATAL_FAILURE(deploy_ok("2.0", /*push_first=*/false));
  ASSERT_TRUE(eventually([&] { return escaped_port_open(); }))
      << read_file(dir_.file("agent/logs/web-blue.log")) << read_file(dir_.file("agent/logs/web-green.log"));
  const auto [color2, pid2] = running_slot();
  const std::string cgroup2 = absl::StrCat(host_parent_, "/web.", word(color2));
  EXPECT_EQ(members(cgroup2).size(), 2u) << "the slot and its escaped server";

  // 3.0 replaces it; keep_warm is off, so 2.0's slot is stopped, whole.
  ASSERT_NO_FATAL_FAILURE(deploy_ok("3.0"));
  ASSERT_TRUE(eventually([&] { return !escaped_port_open(); })) << "the escaped server outlived its slot";
  EXPECT_TRUE(members(cgroup2).empty());
  EXPECT_EQ(serving().substr(0, 3), "3.0");
  (void)pid2;
}

TEST_F(CgroupSlotsTest, LimitsTheHostCannotEnforceFailTheDeployAndTheRunningReleaseServesOn) {
  ASSERT_NO_FATAL_FAILURE(deploy_ok("1.0"));
  std::ifstream ctl_file(host_parent_ + "/cgroup.subtree_control");
  std::string enabled((std::istreambuf_iterator<char>(ctl_file)), std::istreambuf_iterator<char>());
  extra_spec_ = "memory_max: 256MiB\ntasks_max: 64\n";
  // write_spec is private to the fixture: apply the same spec with the limits.
  std::string spec = read_file(dir_.file("web.yaml")) + extra_spec_;
  std::ofstream(dir_.file("web-limited.yaml")) << spec;
  auto applied = ctl({"service", "apply", "-f", dir_.file("web-limited.yaml")});
  ASSERT_EQ(applied.code, 0) << applied.err;
  ASSERT_NO_FATAL_FAILURE(push("2.0", good_bundle_));
  auto r = ctl({"host", "deploy", "h1", "web", "--version", "2.0"});
  if (enabled.find("memory") != std::string::npos && enabled.find("pids") != std::string::npos) {
    ASSERT_EQ(r.code, 0) << r.out << r.err;
    const auto [color, pid] = running_slot();
    std::ifstream mem(absl::StrCat(host_parent_, "/web.", word(color), "/memory.max"));
    std::string limit;
    mem >> limit;
    EXPECT_EQ(limit, std::to_string(256 << 20));
    (void)pid;
  } else {
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("the spec sets memory_max"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("without the memory controller to enforce it"), std::string::npos) << r.err;
    EXPECT_EQ(serving().substr(0, 3), "1.0") << "the running release serves on";
  }
}

}  // namespace
}  // namespace tern::testing
