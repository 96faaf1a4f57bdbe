// Real third-party servers as the app: Debian's nginx and caddy, each taking
// its port from a config file rendered per slot and stopped the way it wants
// (nginx: SIGQUIT), deployed back and forth under a constant-rate client
// that opens a new connection per request. No request may fail and every
// answer must come from one of the two releases.

#include <gtest/gtest.h>

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
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
        << "drain: 1s\n"
        << "grace: 5s\n";
    auto r = ctl({"service", "apply", "-f", dir_.file("app.yaml")});
    ASSERT_EQ(r.code, 0) << r.out << r.err;
  }

  std::string writable_;
};

// Clients at a constant rate through the public port while `change` runs:
// with a new connection per request, or kept-alive connections that are
// reused until the server says "Connection: close" (as a client's pool
// does). A failure is a request that got no answer (or a refused connect).
struct LoadResult {
  int requests = 0, failures = 0, strangers = 0;
  std::vector<std::string> errors;
};

LoadResult run_load(const NetNs& ns, bool keep_alive, int clients, const std::function<void()>& change) {
  std::atomic<bool> stop{false};
  std::atomic<int> requests{0}, failures{0}, strangers{0};
  std::mutex err_mu;
  std::vector<std::string> errors;
  auto note = [&](const std::string& e) {
    std::lock_guard lock(err_mu);
    if (errors.size() < 10) errors.push_back(e);
  };
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&] {
      if (!ns.enter()) return note("cannot enter the namespace");
      auto next = Clock::now();
      while (!stop.load()) {
        HttpConn conn;
        if (!conn.connect_to(kPublicPort)) {
          ++requests;
          ++failures;
          note("connect failed");
          next += std::chrono::milliseconds(2);
          std::this_thread::sleep_until(next);
          continue;
        }
        bool closing = !keep_alive;
        do {
          next += std::chrono::milliseconds(2);
          std::this_thread::sleep_until(next);
          bool told = false;
          const std::string v = conn.get(keep_alive, &told);
          ++requests;
          if (v.empty()) {
            ++failures;
            note(keep_alive ? "a request on a kept-alive connection got no answer" : "a request got no answer");
            break;
          }
          if (v != "1.0" && v != "1.1") {
            ++strangers;
            note("answered by " + v);
          }
          closing = closing || told;
        } while (!closing && !stop.load());
      }
    });
  }
  change();
  stop = true;
  for (auto& t : threads) t.join();
  return LoadResult{requests.load(), failures.load(), strangers.load(), errors};
}

// How many deploys each test makes (more for a benchmark run:
// TERN_REAL_APP_DEPLOYS=50).
int deploys() {
  const char* n = std::getenv("TERN_REAL_APP_DEPLOYS");
  return n != nullptr && std::atoi(n) > 0 ? std::atoi(n) : 10;
}

class RealAppDeployTest : public RealAppTest {
 protected:
  // Pushes 1.0 and 1.1 and deploys 1.0.
  void prepare() {
    ASSERT_NO_FATAL_FAILURE(apply_app());
    const std::string site = bundle(GetParam().name, {{"conf/app.conf.tmpl", with_var(GetParam().config_template)}});
    ASSERT_NO_FATAL_FAILURE(push("1.0", site));
    ASSERT_NO_FATAL_FAILURE(push("1.1", site));
    auto r = ctl({"host", "deploy", "h1", "web", "--version", "1.0"});
    ASSERT_EQ(r.code, 0) << r.out << r.err << agent_->log();
    ASSERT_EQ(serving(), "1.0 blue");
  }

  // Each deploy starts the other release in the idle slot (keep_warm off),
  // switches, drains and stops the old one with the app's stop signal.
  void deploy_back_and_forth(int n) {
    std::string version = "1.0";
    for (int i = 0; i < n; ++i) {
      version = version == "1.0" ? "1.1" : "1.0";
      auto r = ctl({"host", "deploy", "h1", "web", "--version", version});
      if (r.code != 0) {
        ADD_FAILURE() << "deploy " << i << " of " << version << ": " << r.out << r.err;
        return;
      }
    }
  }
};

TEST_P(RealAppDeployTest, DeploysBackAndForthUnderLoadLoseNoNewConnectionRequest) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  ASSERT_NO_FATAL_FAILURE(prepare());
  const int n = deploys();
  LoadResult load = run_load(*ns_, /*keep_alive=*/false, 2, [&] { deploy_back_and_forth(n); });
  RecordProperty("requests", load.requests);
  RecordProperty("failed", load.failures);
  std::printf("%s, a new connection per request, %d deploys through Tern: %d of %d requests failed\n",
              GetParam().name.c_str(), n, load.failures, load.requests);
  EXPECT_GT(load.requests, 500);
  EXPECT_EQ(load.failures, 0) << ::testing::PrintToString(load.errors);
  EXPECT_EQ(load.strangers, 0) << ::testing::PrintToString(load.errors);
  EXPECT_EQ(serving(), n % 2 == 0 ? "1.0 blue" : "1.1 green");
  if (GetParam().name == "nginx") {
    // SIGQUIT, its graceful stop, and never a kill after the grace.
    EXPECT_EQ(agent_->log().find("outlived its"), std::string::npos) << agent_->log();
  }
}

// With kept-alive clients, an app without a drain signal can lose the one
// request per connection that crosses its close of an idle connection when
// the old slot stops: never more than that. (The figure, beside a naive
// restart's, is in docs/BENCHMARKS.md.)
TEST_P(RealAppDeployTest, KeptAliveClientsLoseAtMostTheRequestThatCrossesEachStop) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  ASSERT_NO_FATAL_FAILURE(prepare());
  const int n = deploys();
  constexpr int kClients = 4;
  LoadResult load = run_load(*ns_, /*keep_alive=*/true, kClients, [&] { deploy_back_and_forth(n); });
  RecordProperty("requests", load.requests);
  RecordProperty("failed", load.failures);
  std::printf("%s, kept-alive clients, %d deploys through Tern: %d of %d requests failed\n", GetParam().name.c_str(),
              n, load.failures, load.requests);
  EXPECT_GT(load.requests, 500);
  EXPECT_LE(load.failures, n * kClients) << ::testing::PrintToString(load.errors);
  EXPECT_EQ(load.strangers, 0) << ::testing::PrintToString(load.errors);
}

// The baseline the swap is measured against: the same app restarted in
// place on the public port (stop signal, wait for it to exit, start the new
// release), as a deploy without Tern does.
TEST_P(RealAppTest, ANaiveRestartInPlaceLosesRequests) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  // The app's config for the public port itself, rendered by hand.
  std::string conf = with_var(GetParam().config_template);
  auto render = [&](const std::string& version) {
    std::string out = conf;
    const std::pair<std::string, std::string> vars[] = {
        {"{port}", std::to_string(kPublicPort)}, {"{version}", version}, {"{slot}", "naive"}};
    for (const auto& [k, v] : vars) {
      for (auto at = out.find(k); at != std::string::npos; at = out.find(k)) out.replace(at, k.size(), v);
    }
    const std::string dir = dir_.file("naive-" + version);
    fs::create_directories(dir);
    std::ofstream(dir + "/app.conf") << out;
    return dir;
  };
  auto argv_for = [&](const std::string& dir) {
    std::vector<std::string> argv;
    if (GetParam().name == "nginx") {
      argv = {GetParam().binary, "-e", "stderr", "-p", dir, "-c", dir + "/app.conf", "-g", "daemon off;"};
    } else {
      argv = {"env", "HOME=" + writable_, "XDG_DATA_HOME=" + writable_ + "/naive-data",
              "XDG_CONFIG_HOME=" + writable_ + "/naive-config", GetParam().binary, "run", "--adapter", "caddyfile",
              "--config", dir + "/app.conf"};
    }
    return argv;
  };
  const int stop_signal = GetParam().name == "nginx" ? SIGQUIT : SIGTERM;
  std::unique_ptr<Process> app;
  auto start = [&](const std::string& version) {
    app = spawn_in_ns(argv_for(render(version)), dir_.file("naive-" + version + ".log"));
    ASSERT_TRUE(eventually([&] { return serving() == version + " naive"; })) << app->log();
  };
  ASSERT_NO_FATAL_FAILURE(start("1.0"));
  const int n = deploys();
  for (bool keep_alive : {false, true}) {
    LoadResult load = run_load(*ns_, keep_alive, keep_alive ? 4 : 2, [&] {
      std::string version = "1.0";
      for (int i = 0; i < n; ++i) {
        version = version == "1.0" ? "1.1" : "1.0";
        app->signal(stop_signal);
        app->wait();
        start(version);
      }
    });
    RecordProperty(keep_alive ? "kept_alive_failed" : "new_connection_failed", load.failures);
    RecordProperty(keep_alive ? "kept_alive_requests" : "new_connection_requests", load.requests);
    std::printf("%s, %s, %d naive restarts: %d of %d requests failed\n", GetParam().name.c_str(),
                keep_alive ? "kept-alive clients" : "a new connection per request", n, load.failures, load.requests);
    // Nothing listens between the stop and the start: new connections are
    // refused there, which the swap never does.
    if (!keep_alive) {
      EXPECT_GT(load.failures, 0) << "a restart in place has a gap";
    }
  }
  app->signal(SIGKILL);
  app->wait();
}

INSTANTIATE_TEST_SUITE_P(Apps, RealAppDeployTest, ::testing::Values(nginx(), caddy()),
                         [](const ::testing::TestParamInfo<RealApp>& i) { return i.param.name; });
INSTANTIATE_TEST_SUITE_P(Apps, RealAppTest, ::testing::Values(nginx(), caddy()),
                         [](const ::testing::TestParamInfo<RealApp>& i) { return i.param.name; });

}  // namespace
}  // namespace tern::testing
