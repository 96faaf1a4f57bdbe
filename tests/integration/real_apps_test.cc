// Real third-party servers as the app: Debian's nginx and caddy, each taking
// its port from a config file rendered per slot and stopped the way it wants
// (nginx: SIGQUIT), deployed back and forth under a constant-rate client
// that opens a new connection per request. No request may fail and every
// answer must come from one of the two releases.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/http_conn.h"
#include "tests/integration/one_host.h"

namespace tern::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct RealApp {
  std::string name;
  std::string binary;
  // The service spec's argv, stop_signal and env lines, and its template.
  std::string spec;
  std::string config_template;
  friend void PrintTo(const RealApp& a, std::ostream* os) { *os << a.name; }
};

// Where an app may write (pid files, temp dirs, caddy's data dir): the
// render dir is the agent's, read-only for the slot.
constexpr const char* kWritable = "@VAR@";

RealApp nginx() {
  return {"nginx", "/usr/sbin/nginx",
          "argv: [/usr/sbin/nginx, -e, stderr, -p, \"{render_dir}\", -c, \"{render_dir}/app.conf\", -g, "
          "\"daemon off;\"]\n"
          "stop_signal: SIGQUIT\n",
          "worker_processes 1;\n"
          "error_log stderr warn;\n"
          "pid @VAR@/{slot}.pid;\n"
          "events {\n  worker_connections 512;\n}\n"
          "http {\n"
          "  access_log off;\n"
          "  keepalive_timeout 5s;\n"
          "  client_body_temp_path @VAR@/{slot}-body;\n"
          "  proxy_temp_path @VAR@/{slot}-proxy;\n"
          "  fastcgi_temp_path @VAR@/{slot}-fastcgi;\n"
          "  uwsgi_temp_path @VAR@/{slot}-uwsgi;\n"
          "  scgi_temp_path @VAR@/{slot}-scgi;\n"
          "  server {\n"
          "    listen {port};\n"
          "    location = /healthz { return 200 \"ok\\n\"; }\n"
          "    location / { default_type text/plain; return 200 \"{version} {slot}\\n\"; }\n"
          "  }\n"
          "}\n"};
}

RealApp caddy() {
  // SIGTERM (the default) is caddy's graceful stop; grace_period bounds it.
  return {"caddy", "/usr/bin/caddy",
          "argv: [/usr/bin/caddy, run, --adapter, caddyfile, --config, \"{render_dir}/app.conf\"]\n"
          "env: {HOME: \"@VAR@\", XDG_DATA_HOME: \"@VAR@/{slot}-data\", XDG_CONFIG_HOME: \"@VAR@/{slot}-config\"}\n",
          "{\n"
          "  admin off\n"
          "  auto_https off\n"
          "  grace_period 2s\n"
          "}\n"
          "http://:{port} {\n"
          "  respond /healthz \"ok\" 200\n"
          "  respond \"{version} {slot}\" 200\n"
          "}\n"};
}

class RealAppTest : public OneHostFixture, public ::testing::WithParamInterface<RealApp> {
 protected:
  void SetUp() override {
    if (!fs::exists(GetParam().binary)) {
      skip_reason_ = GetParam().binary + " is not installed (scripts/setup.sh installs nginx and caddy)";
      return;
    }
    OneHostFixture::set_up("nftables", /*keep_warm=*/false);
    if (skipped()) return;
    // Slots run as nobody: the release and render dirs below the test's dir
    // must be reachable for it, and the app needs a dir it may write.
    fs::permissions(dir_.path(), fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                     fs::perms::others_read | fs::perms::others_exec);
    writable_ = dir_.file("app-var");
    fs::create_directories(writable_);
    fs::permissions(writable_, fs::perms::all | fs::perms::sticky_bit);
  }

  std::string with_var(std::string s) const {
    for (auto at = s.find(kWritable); at != std::string::npos; at = s.find(kWritable)) {
      s.replace(at, std::string(kWritable).size(), writable_);
    }
    return s;
  }

  void apply_app() {
    std::ofstream(dir_.file("app.yaml"))
        << "name: web\n"
        << "selector: role=web\n"
        << "ports: [{name: http, protocol: tcp, public: " << kPublicPort << ", blue: " << kBluePort
        << ", green: " << kGreenPort << "}]\n"
        << with_var(GetParam().spec) << "templates: [{source: conf/app.conf.tmpl, dest: app.conf}]\n"
        << "health: {http: {path: /healthz}, interval: 100ms, timeout: 1s, healthy_deadline: 10s}\n"
        << "drain: 3s\n"
        << "grace: 5s\n";
    auto r = ctl({"service", "apply", "-f", dir_.file("app.yaml")});
    ASSERT_EQ(r.code, 0) << r.out << r.err;
  }

  std::string writable_;
};

TEST_P(RealAppTest, DeploysBackAndForthUnderLoadLoseNoNewConnectionRequest) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  ASSERT_NO_FATAL_FAILURE(apply_app());
  const std::string site = bundle(GetParam().name, {{"conf/app.conf.tmpl", with_var(GetParam().config_template)}});
  ASSERT_NO_FATAL_FAILURE(push("1.0", site));
  ASSERT_NO_FATAL_FAILURE(push("1.1", site));
  auto r = ctl({"host", "deploy", "h1", "web", "--version", "1.0"});
  ASSERT_EQ(r.code, 0) << r.out << r.err << agent_->log();
  ASSERT_EQ(serving(), "1.0 blue");

  std::atomic<bool> stop{false};
  std::atomic<int> requests{0}, failures{0}, strangers{0};
  std::mutex err_mu;
  std::vector<std::string> errors;
  auto note = [&](const std::string& e) {
    std::lock_guard lock(err_mu);
    if (errors.size() < 10) errors.push_back(e);
  };
  std::vector<std::thread> clients;
  for (int c = 0; c < 2; ++c) {
    clients.emplace_back([&] {
      if (!ns_->enter()) return note("cannot enter the namespace");
      auto next = Clock::now();
      while (!stop.load()) {
        next += std::chrono::milliseconds(2);
        std::this_thread::sleep_until(next);
        HttpConn conn;
        ++requests;
        if (!conn.connect_to(kPublicPort)) {
          ++failures;
          note("connect failed");
          continue;
        }
        const std::string v = conn.get(/*keep_alive=*/false);
        if (v.empty()) {
          ++failures;
          note("a request got no answer");
        } else if (v != "1.0" && v != "1.1") {
          ++strangers;
          note("answered by " + v);
        }
      }
    });
  }
  // Each deploy starts the other release in the idle slot (keep_warm off),
  // switches, drains and stops the old one with the app's stop signal.
  std::string version = "1.0";
  for (int i = 0; i < 10; ++i) {
    version = version == "1.0" ? "1.1" : "1.0";
    r = ctl({"host", "deploy", "h1", "web", "--version", version});
    if (r.code != 0) {
      ADD_FAILURE() << "deploy " << i << " of " << version << ": " << r.out << r.err;
      break;
    }
  }
  stop = true;
  for (auto& t : clients) t.join();
  EXPECT_GT(requests.load(), 500);
  EXPECT_EQ(failures.load(), 0) << ::testing::PrintToString(errors);
  EXPECT_EQ(strangers.load(), 0) << ::testing::PrintToString(errors);
  EXPECT_EQ(serving(), "1.0 blue") << "after an even number of deploys";
  if (GetParam().name == "nginx") {
    // SIGQUIT, its graceful stop, and never a kill after the grace.
    EXPECT_EQ(agent_->log().find("outlived its"), std::string::npos) << agent_->log();
  }
}

INSTANTIATE_TEST_SUITE_P(Apps, RealAppTest, ::testing::Values(nginx(), caddy()),
                         [](const ::testing::TestParamInfo<RealApp>& i) { return i.param.name; });

}  // namespace
}  // namespace tern::testing
