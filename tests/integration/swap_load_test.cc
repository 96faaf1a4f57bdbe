// Zero failed requests across 100+ swaps: constant-rate client traffic
// through the public port while the host flips between two warm releases,
// with a new connection per request and with keep-alive connections. Every
// response must come from the release the mapping named when its connection
// was opened.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>
#include <thread>

#include "tests/integration/http_conn.h"
#include "tests/integration/one_host.h"

namespace tern::testing {
namespace {

using Clock = std::chrono::steady_clock;

struct Swap {
  Clock::time_point start, end;
  std::string after;  // the version serving new connections once it is done
};

class SwapLoadTest : public OneHostFixture, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override { OneHostFixture::set_up(GetParam(), /*keep_warm=*/true); }

  // Versions a connection opened within [a, b] may legitimately reach.
  std::set<std::string> allowed(Clock::time_point a, Clock::time_point b) {
    std::set<std::string> out;
    std::string current = initial_;
    for (const auto& s : swaps_) {
      if (s.end <= a) {
        current = s.after;
        continue;
      }
      if (s.start <= b) {  // overlaps: old and new are both possible
        out.insert(current);
        out.insert(s.after);
        current = s.after;
        continue;
      }
      break;
    }
    out.insert(current);
    return out;
  }

  void run_load(bool keep_alive) {
    ASSERT_NO_FATAL_FAILURE(deploy_ok("v1"));
    ASSERT_NO_FATAL_FAILURE(deploy_ok("v2"));
    initial_ = "v2";
    std::atomic<bool> stop{false};
    std::atomic<int> requests{0}, failures{0}, wrong{0};
    std::mutex err_mu;
    std::vector<std::string> errors;
    auto note = [&](const std::string& e) {
      std::lock_guard lock(err_mu);
      if (errors.size() < 10) errors.push_back(e);
    };
    // Two clients at a constant rate of one request per 2 ms each.
    std::vector<std::thread> clients;
    for (int c = 0; c < 2; ++c) {
      clients.emplace_back([&, c] {
        if (!ns_->enter()) return note("cannot enter the namespace");
        auto next = Clock::now();
        while (!stop.load()) {
          HttpConn conn;
          const auto a = Clock::now();
          bool connected = conn.connect_to(kPublicPort);
          const auto b = Clock::now();
          if (!connected) {
            ++failures;
            note("connect failed");
            continue;
          }
          // Keep-alive: up to 40 requests per connection, all to one release.
          const int per_conn = keep_alive ? 40 : 1;
          std::string first;
          for (int i = 0; i < per_conn && !stop.load(); ++i) {
            next += std::chrono::milliseconds(2);
            std::this_thread::sleep_until(next);
            std::string v = conn.get(keep_alive && i + 1 < per_conn);
            ++requests;
            if (v.empty()) {
              ++failures;
              note("client " + std::to_string(c) + ": request failed");
              break;
            }
            if (first.empty()) {
              first = v;
              std::lock_guard lock(mu_);
              opened_.push_back({a, b, v});
            } else if (v != first) {
              ++wrong;
              note("a keep-alive connection moved from " + first + " to " + v);
            }
          }
        }
      });
    }
    // 100 swaps back and forth, each a real `ternctl host deploy` of the
    // release kept warm in the idle slot: a flip. (A rollback goes to the
    // last known-good release, which is the one serving here.)
    std::string version = "v2";
    for (int i = 0; i < 100; ++i) {
      version = version == "v2" ? "v1" : "v2";
      const auto start = Clock::now();
      auto r = ctl({"host", "deploy", "h1", "web", "--version", version});
      const auto end = Clock::now();
      {
        std::lock_guard lock(mu_);
        swaps_.push_back({start, end, version});
      }
      if (r.code != 0) {
        ADD_FAILURE() << "swap " << i << ": " << r.err;
        break;
      }
    }
    stop = true;
    for (auto& t : clients) t.join();
    // Judged afterwards, against the complete swap timeline.
    for (const auto& o : opened_) {
      auto ok = allowed(o.a, o.b);
      if (!ok.count(o.version)) {
        ++wrong;
        note("a connection opened when the mapping said " + *ok.begin() + " reached " + o.version);
      }
    }
    EXPECT_EQ(swaps_.size(), 100u);
    EXPECT_GT(requests.load(), 500);
    EXPECT_EQ(failures.load(), 0) << ::testing::PrintToString(errors);
    EXPECT_EQ(wrong.load(), 0) << ::testing::PrintToString(errors);
    EXPECT_EQ(serving(), "v2 green") << "after an even number of flips the newer release serves";
  }

  struct Opened {
    Clock::time_point a, b;
    std::string version;
  };
  std::mutex mu_;
  std::vector<Swap> swaps_;
  std::vector<Opened> opened_;
  std::string initial_;
};

TEST_P(SwapLoadTest, NewConnectionPerRequestAcrossHundredSwaps) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  run_load(/*keep_alive=*/false);
}

TEST_P(SwapLoadTest, KeepAliveConnectionsAcrossHundredSwaps) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  run_load(/*keep_alive=*/true);
}

// Deploys that start each release anew and stop the old one (keep_warm off),
// under kept-alive clients that follow "Connection: close". With the app told
// it is draining (drain_signal), it closes each connection after a response,
// so no client is cut off mid-request when the old slot stops.
class DrainLoadTest : public OneHostFixture, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override {
    extra_spec_ = "drain_signal: SIGUSR1\n";
    OneHostFixture::set_up(GetParam(), /*keep_warm=*/false);
  }
};

TEST_P(DrainLoadTest, KeptAliveClientsLoseNothingWhenTheOldReleaseStops) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v1"));
  push("v2", good_bundle_);
  std::atomic<bool> stop{false};
  std::atomic<int> requests{0}, failures{0}, reconnects{0};
  std::mutex err_mu;
  std::vector<std::string> errors;
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&] {
      if (!ns_->enter()) {
        ++failures;
        return;
      }
      auto next = Clock::now();
      while (!stop.load()) {
        HttpConn conn;
        if (!conn.connect_to(kPublicPort)) {
          ++failures;
          continue;
        }
        // As a client with a connection pool: the connection is reused
        // until the server says it closes it.
        bool closing = false;
        while (!closing && !stop.load()) {
          next += std::chrono::milliseconds(2);
          std::this_thread::sleep_until(next);
          const std::string v = conn.get(/*keep_alive=*/true, &closing);
          ++requests;
          if (v.empty()) {
            ++failures;
            std::lock_guard lock(err_mu);
            if (errors.size() < 10) errors.push_back("a request on a kept-alive connection got no answer");
            break;
          }
        }
        if (closing) ++reconnects;
      }
    });
  }
  // Each deploy starts the other release in the idle slot, switches, tells
  // the old slot it drains, waits for its connections, then stops it.
  std::string version = "v1";
  const char* env_deploys = std::getenv("TERN_REAL_APP_DEPLOYS");
  const int deploys = env_deploys != nullptr && std::atoi(env_deploys) > 0 ? std::atoi(env_deploys) : 10;
  for (int i = 0; i < deploys; ++i) {
    version = version == "v1" ? "v2" : "v1";
    auto r = ctl({"host", "deploy", "h1", "web", "--version", version});
    if (r.code != 0) {
      ADD_FAILURE() << "deploy " << i << ": " << r.out << r.err;
      break;
    }
  }
  stop = true;
  for (auto& t : clients) t.join();
  std::printf("tern-demo-app with drain_signal, kept-alive clients, %d deploys: %d of %d requests failed\n", deploys,
              failures.load(), requests.load());
  EXPECT_GT(requests.load(), 1000);
  EXPECT_GE(reconnects.load(), deploys) << "every deploy moved the clients by telling them to close";
  EXPECT_EQ(failures.load(), 0) << ::testing::PrintToString(errors);
  const std::string log = agent_->log();
  EXPECT_NE(log.find("sent blue its drain signal SIGUSR1"), std::string::npos);
  // Told, the clients left the old slot at their next request: no drain ran
  // out its time with connections still open (without the signal, every one
  // does, and the stop cuts them).
  EXPECT_EQ(log.find("drain time passed with"), std::string::npos) << log;
}

INSTANTIATE_TEST_SUITE_P(Backends, DrainLoadTest, ::testing::Values("nftables", "iptables"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

INSTANTIATE_TEST_SUITE_P(Backends, SwapLoadTest, ::testing::Values("nftables", "iptables"),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace tern::testing
