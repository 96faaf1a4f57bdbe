#include "agent/health.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <google/protobuf/util/time_util.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#include "tests/support/eventually.h"
#include "tests/support/temp_dir.h"

namespace tern {
namespace {

using State = HealthTracker::State;
using google::protobuf::util::TimeUtil;

// ---------------------------------------------------------------------------
// health_params

TEST(HealthParamsTest, UnsetFieldsTakeTheDefaults) {
  const HealthParams p = health_params(tern::v1::HealthCheck());
  const HealthParams defaults;
  EXPECT_EQ(p.interval, defaults.interval);
  EXPECT_EQ(p.timeout, defaults.timeout);
  EXPECT_EQ(p.success_threshold, defaults.success_threshold);
  EXPECT_EQ(p.failure_threshold, defaults.failure_threshold);
  EXPECT_EQ(p.min_healthy_time, defaults.min_healthy_time);
  EXPECT_EQ(p.healthy_deadline, defaults.healthy_deadline);
}

TEST(HealthParamsTest, ZeroFieldsTakeTheDefaults) {
  tern::v1::HealthCheck check;
  *check.mutable_interval() = TimeUtil::MillisecondsToDuration(0);
  *check.mutable_timeout() = TimeUtil::MillisecondsToDuration(0);
  *check.mutable_healthy_deadline() = TimeUtil::MillisecondsToDuration(0);
  check.set_success_threshold(0);
  check.set_failure_threshold(0);
  const HealthParams p = health_params(check);
  EXPECT_EQ(p.interval, Millis(1'000));
  EXPECT_EQ(p.timeout, Millis(1'000));
  EXPECT_EQ(p.healthy_deadline, Millis(60'000));
  EXPECT_EQ(p.success_threshold, 1u);
  EXPECT_EQ(p.failure_threshold, 3u);
}

TEST(HealthParamsTest, SetFieldsAreUsed) {
  tern::v1::HealthCheck check;
  *check.mutable_interval() = TimeUtil::MillisecondsToDuration(250);
  *check.mutable_timeout() = TimeUtil::MillisecondsToDuration(2'000);
  *check.mutable_min_healthy_time() = TimeUtil::MillisecondsToDuration(10'000);
  *check.mutable_healthy_deadline() = TimeUtil::MillisecondsToDuration(90'000);
  check.set_success_threshold(2);
  check.set_failure_threshold(5);
  const HealthParams p = health_params(check);
  EXPECT_EQ(p.interval, Millis(250));
  EXPECT_EQ(p.timeout, Millis(2'000));
  EXPECT_EQ(p.min_healthy_time, Millis(10'000));
  EXPECT_EQ(p.healthy_deadline, Millis(90'000));
  EXPECT_EQ(p.success_threshold, 2u);
  EXPECT_EQ(p.failure_threshold, 5u);
}

// ---------------------------------------------------------------------------
// HealthTracker, on a fake clock

const ProbeResult kPass{true, "pass"};
const ProbeResult kFail{false, "fail"};

HealthParams params(uint32_t success, uint32_t failure, Millis min_healthy = Millis(0),
                    Millis deadline = Millis(60'000)) {
  HealthParams p;
  p.success_threshold = success;
  p.failure_threshold = failure;
  p.min_healthy_time = min_healthy;
  p.healthy_deadline = deadline;
  return p;
}

TEST(HealthTrackerTest, StartsStarting) {
  FakeClock clock;
  HealthTracker t(params(1, 3), clock.now());
  EXPECT_EQ(t.state(), State::kStarting);
  EXPECT_EQ(t.tick(clock.now()), State::kStarting);
}

TEST(HealthTrackerTest, AKnownHealthySlotStartsHealthyAndNeedsItsFailuresToTurn) {
  FakeClock clock;
  HealthTracker t(params(3, 2, Millis(5'000), Millis(1'000)), clock.now(), State::kHealthy);
  EXPECT_EQ(t.state(), State::kHealthy);
  clock.advance(Millis(10'000));  // far past the healthy deadline: it no longer applies
  EXPECT_EQ(t.tick(clock.now()), State::kHealthy);
  EXPECT_EQ(t.observe(kFail, clock.now()), State::kHealthy);
  EXPECT_EQ(t.observe(kFail, clock.now()), State::kUnhealthy);
}

TEST(HealthTrackerTest, OnePassWithThresholdOne) {
  FakeClock clock;
  HealthTracker t(params(1, 3), clock.now());
  clock.advance(Millis(100));
  EXPECT_EQ(t.observe(kPass, clock.now()), State::kHealthy);
}

TEST(HealthTrackerTest, ThreePassesWithThresholdThree) {
  FakeClock clock;
  HealthTracker t(params(3, 3), clock.now());
  EXPECT_EQ(t.observe(kPass, clock.now()), State::kStarting);
  clock.advance(Millis(1'000));
  EXPECT_EQ(t.observe(kPass, clock.now()), State::kStarting);
  clock.advance(Millis(1'000));
  EXPECT_EQ(t.observe(kPass, clock.now()), State::kHealthy);
}

TEST(HealthTrackerTest, AFailureStartsTheRunOver) {
  FakeClock clock;
  HealthTracker t(params(3, 3), clock.now());
  t.observe(kPass, clock.now());
  clock.advance(Millis(1'000));
  t.observe(kPass, clock.now());
  clock.advance(Millis(1'000));
  EXPECT_EQ(t.observe(kFail, clock.now()), State::kStarting);
  clock.advance(Millis(1'000));
  EXPECT_EQ(t.observe(kPass, clock.now()), State::kStarting);
  clock.advance(Millis(1'000));
  EXPECT_EQ(t.observe(kPass, clock.now()), State::kStarting);
  clock.advance(Millis(1'000));
  EXPECT_EQ(t.observe(kPass, clock.now()), State::kHealthy);
}

TEST(HealthTrackerTest, MinHealthyTimeHoldsBackHealthy) {
  FakeClock clock;
  HealthTracker t(params(1, 3, Millis(5'000)), clock.now());
  EXPECT_EQ(t.observe(kPass, clock.now()), State::kStarting);  // the run starts here
  clock.advance(Millis(4'999));
  EXPECT_EQ(t.observe(kPass, clock.now()), State::kStarting);
  EXPECT_EQ(t.tick(clock.now() + Millis(10)), State::kStarting);  // time alone does not promote
  clock.advance(Millis(1));
  EXPECT_EQ(t.observe(kPass, clock.now()), State::kHealthy);
}

TEST(HealthTrackerTest, MinHealthyTimeCountsFromTheFirstPassOfTheCurrentRun) {
  FakeClock clock;
  HealthTracker t(params(1, 3, Millis(5'000)), clock.now());
  t.observe(kPass, clock.now());
  clock.advance(Millis(3'000));
  EXPECT_EQ(t.observe(kFail, clock.now()), State::kStarting);
  clock.advance(Millis(2'000));
  EXPECT_EQ(t.observe(kPass, clock.now()), State::kStarting);  // new run starts: 5s after the first pass
  clock.advance(Millis(4'000));
  EXPECT_EQ(t.observe(kPass, clock.now()), State::kStarting);
  clock.advance(Millis(1'000));
  EXPECT_EQ(t.observe(kPass, clock.now()), State::kHealthy);
}

TEST(HealthTrackerTest, MinHealthyTimeAndThresholdBothNeeded) {
  FakeClock clock;
  HealthTracker t(params(3, 3, Millis(1'000)), clock.now());
  t.observe(kPass, clock.now());
  clock.advance(Millis(2'000));
  EXPECT_EQ(t.observe(kPass, clock.now()), State::kStarting);  // time is up, but only 2 passes
  clock.advance(Millis(10));
  EXPECT_EQ(t.observe(kPass, clock.now()), State::kHealthy);
}

TEST(HealthTrackerTest, DeadlineFailsAStartingSlotOnAProbe) {
  FakeClock clock;
  const TimePoint started = clock.now();
  HealthTracker t(params(1, 3, Millis(0), Millis(10'000)), started);
  EXPECT_EQ(t.observe(kFail, started + Millis(9'999)), State::kStarting);
  EXPECT_EQ(t.observe(kFail, started + Millis(10'000)), State::kFailed);
}

TEST(HealthTrackerTest, DeadlineFailsAStartingSlotOnTick) {
  FakeClock clock;
  const TimePoint started = clock.now();
  HealthTracker t(params(1, 3, Millis(0), Millis(10'000)), started);
  EXPECT_EQ(t.tick(started + Millis(9'999)), State::kStarting);
  EXPECT_EQ(t.tick(started + Millis(10'000)), State::kFailed);
  EXPECT_EQ(t.state(), State::kFailed);
}

TEST(HealthTrackerTest, APassAtTheDeadlineInstantStillCounts) {
  FakeClock clock;
  const TimePoint started = clock.now();
  HealthTracker t(params(1, 3, Millis(0), Millis(10'000)), started);
  EXPECT_EQ(t.observe(kPass, started + Millis(10'000)), State::kHealthy);
}

TEST(HealthTrackerTest, APassAfterTheDeadlineIsTooLate) {
  FakeClock clock;
  const TimePoint started = clock.now();
  HealthTracker t(params(1, 3, Millis(0), Millis(10'000)), started);
  EXPECT_EQ(t.observe(kPass, started + Millis(10'001)), State::kFailed);
}

TEST(HealthTrackerTest, MinHealthyTimeBeyondTheDeadlineFails) {
  FakeClock clock;
  const TimePoint started = clock.now();
  HealthTracker t(params(1, 3, Millis(5'000), Millis(10'000)), started);
  EXPECT_EQ(t.observe(kPass, started + Millis(6'000)), State::kStarting);
  EXPECT_EQ(t.observe(kPass, started + Millis(10'000)), State::kFailed);  // 4s of the 5s needed
}

TEST(HealthTrackerTest, HealthyToUnhealthyAfterFailureThresholdAndBack) {
  FakeClock clock;
  HealthTracker t(params(2, 3), clock.now());
  t.observe(kPass, clock.now());
  ASSERT_EQ(t.observe(kPass, clock.now()), State::kHealthy);

  EXPECT_EQ(t.observe(kFail, clock.now()), State::kHealthy);
  EXPECT_EQ(t.observe(kFail, clock.now()), State::kHealthy);
  EXPECT_EQ(t.observe(kPass, clock.now()), State::kHealthy);  // resets the failure count
  EXPECT_EQ(t.observe(kFail, clock.now()), State::kHealthy);
  EXPECT_EQ(t.observe(kFail, clock.now()), State::kHealthy);
  EXPECT_EQ(t.observe(kFail, clock.now()), State::kUnhealthy);

  EXPECT_EQ(t.observe(kPass, clock.now()), State::kUnhealthy);
  EXPECT_EQ(t.observe(kFail, clock.now()), State::kUnhealthy);  // resets the pass count
  EXPECT_EQ(t.observe(kPass, clock.now()), State::kUnhealthy);
  EXPECT_EQ(t.observe(kPass, clock.now()), State::kHealthy);

  // And down again: the failure count starts from zero.
  EXPECT_EQ(t.observe(kFail, clock.now()), State::kHealthy);
  EXPECT_EQ(t.observe(kFail, clock.now()), State::kHealthy);
  EXPECT_EQ(t.observe(kFail, clock.now()), State::kUnhealthy);
}

TEST(HealthTrackerTest, FailureThresholdOne) {
  FakeClock clock;
  HealthTracker t(params(1, 1), clock.now());
  ASSERT_EQ(t.observe(kPass, clock.now()), State::kHealthy);
  EXPECT_EQ(t.observe(kFail, clock.now()), State::kUnhealthy);
  EXPECT_EQ(t.observe(kPass, clock.now()), State::kHealthy);
}

TEST(HealthTrackerTest, TheDeadlineOnlyAppliesWhileStarting) {
  FakeClock clock;
  const TimePoint started = clock.now();
  HealthTracker t(params(1, 1, Millis(0), Millis(10'000)), started);
  ASSERT_EQ(t.observe(kPass, started + Millis(1'000)), State::kHealthy);
  EXPECT_EQ(t.tick(started + Millis(60'000)), State::kHealthy);
  EXPECT_EQ(t.observe(kFail, started + Millis(61'000)), State::kUnhealthy);
  EXPECT_EQ(t.tick(started + Millis(120'000)), State::kUnhealthy);
  EXPECT_EQ(t.observe(kPass, started + Millis(121'000)), State::kHealthy);
}

TEST(HealthTrackerTest, FailedIsTerminal) {
  FakeClock clock;
  const TimePoint started = clock.now();
  HealthTracker t(params(1, 3, Millis(0), Millis(1'000)), started);
  ASSERT_EQ(t.tick(started + Millis(1'000)), State::kFailed);
  EXPECT_EQ(t.observe(ProbeResult{true, "late pass"}, started + Millis(2'000)), State::kFailed);
  EXPECT_EQ(t.observe(kPass, started + Millis(3'000)), State::kFailed);
  EXPECT_EQ(t.tick(started + Millis(4'000)), State::kFailed);
  EXPECT_EQ(t.state(), State::kFailed);
}

TEST(HealthTrackerTest, KeepsTheLastDetail) {
  FakeClock clock;
  HealthTracker t(params(3, 3), clock.now());
  EXPECT_EQ(t.last_detail(), "");
  t.observe(ProbeResult{false, "GET /healthz: HTTP 503"}, clock.now());
  EXPECT_EQ(t.last_detail(), "GET /healthz: HTTP 503");
  t.observe(ProbeResult{true, "GET /healthz: HTTP 200"}, clock.now());
  EXPECT_EQ(t.last_detail(), "GET /healthz: HTTP 200");
}

TEST(HealthTrackerTest, ZeroThresholdsInHandBuiltParamsMeanOne) {
  FakeClock clock;
  HealthTracker t(params(0, 0), clock.now());
  EXPECT_EQ(t.observe(kFail, clock.now()), State::kStarting);
  EXPECT_EQ(t.observe(kPass, clock.now()), State::kHealthy);
  EXPECT_EQ(t.observe(kFail, clock.now()), State::kUnhealthy);
}

TEST(HealthTrackerTest, StateNames) {
  EXPECT_STREQ(to_string(State::kStarting), "starting");
  EXPECT_STREQ(to_string(State::kHealthy), "healthy");
  EXPECT_STREQ(to_string(State::kUnhealthy), "unhealthy");
  EXPECT_STREQ(to_string(State::kFailed), "failed");
}

// ---------------------------------------------------------------------------
// The system prober, against real servers on 127.0.0.1

using testing::eventually;

// Generous: the prober must give up near its timeout; this only catches a hang.
constexpr Millis kSlack{2'000};

struct Timed {
  ProbeResult result;
  Millis elapsed;
};

Timed timed_probe(Prober& prober, const tern::v1::HealthCheck& check, uint16_t port, Millis timeout) {
  const auto start = std::chrono::steady_clock::now();
  ProbeResult r = prober.probe(check, port, timeout, {});
  return {std::move(r), std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - start)};
}

uint16_t port_of(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return 0;
  return ntohs(addr.sin_port);
}

// A socket bound to 127.0.0.1 on a port the kernel picked; listening if asked.
int bind_loopback(bool listening) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return -1;
  if (listening && ::listen(fd, 128) != 0) return -1;
  return fd;
}

// A port nothing listens on: bound by us, then released.
uint16_t closed_port() {
  const int fd = bind_loopback(false);
  const uint16_t port = port_of(fd);
  ::close(fd);
  return port;
}

// A one-thread HTTP server on 127.0.0.1:0 that answers every request the same way.
class TestHttpServer {
 public:
  enum class Mode { kOk, kUnavailable, kHang, kOkThenHang };

  explicit TestHttpServer(Mode mode) : mode_(mode) {
    listen_fd_ = bind_loopback(true);
    port_ = port_of(listen_fd_);
    if (::pipe2(stop_, O_CLOEXEC) != 0) stop_[0] = stop_[1] = -1;
    thread_ = std::thread([this] { run(); });
  }
  ~TestHttpServer() {
    [[maybe_unused]] ssize_t n = ::write(stop_[1], "x", 1);
    thread_.join();
    for (int fd : held_) ::close(fd);
    ::close(listen_fd_);
    ::close(stop_[0]);
    ::close(stop_[1]);
  }

  uint16_t port() const { return port_; }
  std::string last_request() const {
    std::lock_guard<std::mutex> lock(mu_);
    return last_request_;
  }
  int requests() const { return requests_.load(); }

 private:
  // Waits for `fd` to be readable; false when the server is stopping.
  bool wait_readable(int fd) {
    pollfd p[2] = {{fd, POLLIN, 0}, {stop_[0], POLLIN, 0}};
    while (::poll(p, 2, -1) < 0) {
    }
    return p[1].revents == 0;
  }

  void run() {
    for (;;) {
      if (!wait_readable(listen_fd_)) return;
      const int conn = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn < 0) continue;
      std::string request;
      char buf[1024];
      while (request.find("\r\n\r\n") == std::string::npos) {
        if (!wait_readable(conn)) {
          ::close(conn);
          return;
        }
        const ssize_t n = ::read(conn, buf, sizeof buf);
        if (n <= 0) break;
        request.append(buf, static_cast<size_t>(n));
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        last_request_ = request;
      }
      ++requests_;
      std::string response;
      switch (mode_) {
        case Mode::kOk:
          response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
          break;
        case Mode::kUnavailable:
          response = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\nConnection: close\r\n\r\ndown\n";
          break;
        case Mode::kHang:
          break;
        case Mode::kOkThenHang:  // a status, then neither a length nor a close
          response = "HTTP/1.1 200 OK\r\n\r\nstill typing";
          break;
      }
      if (!response.empty()) {
        [[maybe_unused]] ssize_t n = ::send(conn, response.data(), response.size(), MSG_NOSIGNAL);
      }
      if (mode_ == Mode::kHang || mode_ == Mode::kOkThenHang) {
        held_.push_back(conn);
      } else {
        ::close(conn);
      }
    }
  }

  const Mode mode_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  int stop_[2] = {-1, -1};
  std::vector<int> held_;  // server thread only
  mutable std::mutex mu_;
  std::string last_request_;
  std::atomic<int> requests_{0};
  std::thread thread_;
};

tern::v1::HealthCheck http_check(const std::string& path) {
  tern::v1::HealthCheck c;
  c.mutable_http()->set_path(path);
  return c;
}

tern::v1::HealthCheck tcp_check() {
  tern::v1::HealthCheck c;
  c.mutable_tcp();
  return c;
}

tern::v1::HealthCheck exec_check(const std::vector<std::string>& argv) {
  tern::v1::HealthCheck c;
  for (const auto& a : argv) c.mutable_exec()->add_argv(a);
  return c;
}

tern::v1::HealthCheck grpc_check(const std::string& service) {
  tern::v1::HealthCheck c;
  c.mutable_grpc()->set_service(service);
  return c;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// ---- http

TEST(SystemProberHttpTest, TwoHundredIsHealthy) {
  TestHttpServer server(TestHttpServer::Mode::kOk);
  auto prober = make_system_prober();
  const ProbeResult r = prober->probe(http_check("/healthz"), server.port(), Millis(5'000), {});
  EXPECT_TRUE(r.ok) << r.detail;
  EXPECT_EQ(r.detail, "GET /healthz: HTTP 200");

  const std::string req = server.last_request();
  EXPECT_TRUE(req.starts_with("GET /healthz HTTP/1.1\r\n")) << req;
  EXPECT_TRUE(contains(req, "\r\nHost: 127.0.0.1:" + std::to_string(server.port()) + "\r\n")) << req;
  EXPECT_TRUE(contains(req, "\r\nConnection: close\r\n")) << req;
}

TEST(SystemProberHttpTest, EmptyPathMeansRoot) {
  TestHttpServer server(TestHttpServer::Mode::kOk);
  const ProbeResult r = make_system_prober()->probe(http_check(""), server.port(), Millis(5'000), {});
  EXPECT_TRUE(r.ok) << r.detail;
  EXPECT_TRUE(server.last_request().starts_with("GET / HTTP/1.1\r\n"));
}

TEST(SystemProberHttpTest, FiveOhThreeIsUnhealthy) {
  TestHttpServer server(TestHttpServer::Mode::kUnavailable);
  const ProbeResult r = make_system_prober()->probe(http_check("/healthz"), server.port(), Millis(5'000), {});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.detail, "GET /healthz: HTTP 503");
}

TEST(SystemProberHttpTest, AHangingServerTimesOut) {
  TestHttpServer server(TestHttpServer::Mode::kHang);
  auto prober = make_system_prober();
  const Millis timeout(300);
  const Timed t = timed_probe(*prober, http_check("/healthz"), server.port(), timeout);
  EXPECT_FALSE(t.result.ok) << t.result.detail;
  EXPECT_LT(t.elapsed, timeout + kSlack);
  EXPECT_TRUE(eventually([&] { return server.requests() == 1; }));
}

TEST(SystemProberHttpTest, TheStatusCountsEvenIfTheBodyNeverEnds) {
  TestHttpServer server(TestHttpServer::Mode::kOkThenHang);
  auto prober = make_system_prober();
  const Millis timeout(300);
  const Timed t = timed_probe(*prober, http_check("/healthz"), server.port(), timeout);
  EXPECT_TRUE(t.result.ok) << t.result.detail;
  EXPECT_LT(t.elapsed, timeout + kSlack);
}

TEST(SystemProberHttpTest, ARefusedConnectionIsUnhealthy) {
  const uint16_t port = closed_port();
  const ProbeResult r = make_system_prober()->probe(http_check("/healthz"), port, Millis(5'000), {});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.detail, "GET /healthz: connect 127.0.0.1:" + std::to_string(port) + ": Connection refused");
}

TEST(SystemProberHttpTest, APathWithSpacesIsRefusedWithoutSending) {
  TestHttpServer server(TestHttpServer::Mode::kOk);
  const ProbeResult r =
      make_system_prober()->probe(http_check("/x HTTP/1.1\r\nEvil: 1"), server.port(), Millis(5'000), {});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(server.requests(), 0);
}

// ---- tcp

TEST(SystemProberTcpTest, AListeningPortIsHealthy) {
  const int fd = bind_loopback(true);
  ASSERT_GE(fd, 0);
  const ProbeResult r = make_system_prober()->probe(tcp_check(), port_of(fd), Millis(5'000), {});
  EXPECT_TRUE(r.ok) << r.detail;
  ::close(fd);
}

TEST(SystemProberTcpTest, AClosedPortIsUnhealthy) {
  auto prober = make_system_prober();
  const Timed t = timed_probe(*prober, tcp_check(), closed_port(), Millis(1'000));
  EXPECT_FALSE(t.result.ok);
  EXPECT_TRUE(contains(t.result.detail, "Connection refused")) << t.result.detail;
  EXPECT_LT(t.elapsed, Millis(1'000) + kSlack);
}

TEST(SystemProberTcpTest, PortZeroIsUnhealthy) {
  EXPECT_FALSE(make_system_prober()->probe(tcp_check(), 0, Millis(1'000), {}).ok);
}

// ---- exec

TEST(SystemProberExecTest, ExitZeroIsHealthy) {
  const ProbeResult r = make_system_prober()->probe(exec_check({"/bin/true"}), 0, Millis(5'000), {});
  EXPECT_TRUE(r.ok) << r.detail;
}

TEST(SystemProberExecTest, NonZeroExitIsUnhealthy) {
  const ProbeResult r = make_system_prober()->probe(exec_check({"/bin/false"}), 0, Millis(5'000), {});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.detail, "exec /bin/false: exit 1");
}

TEST(SystemProberExecTest, LooksTheProgramUpOnPath) {
  const ProbeResult r = make_system_prober()->probe(exec_check({"true"}), 0, Millis(5'000), {});
  EXPECT_TRUE(r.ok) << r.detail;
}

TEST(SystemProberExecTest, TheFirstLineOfOutputIsInTheDetail) {
  const ProbeResult r = make_system_prober()->probe(
      exec_check({"/bin/sh", "-c", "echo; echo 'database unreachable' >&2; echo more; exit 3"}), 0, Millis(5'000), {});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.detail, "exec /bin/sh: exit 3: database unreachable");
}

TEST(SystemProberExecTest, AMissingProgramIsUnhealthy) {
  const ProbeResult r = make_system_prober()->probe(exec_check({"/nonexistent/tern-probe"}), 0, Millis(5'000), {});
  EXPECT_FALSE(r.ok);
  EXPECT_FALSE(r.detail.empty());
}

// What the probe's process is, on one line: uid, effective and bounding
// capabilities, no_new_privs, whether it sees the agent's environment or
// the slot's, where it runs and whether it leads its own process group.
const std::vector<std::string> kIdentityProbe = {
    "/bin/sh", "-c",
    "echo \"uid=$(id -u) eff=$(sed -n 's/^CapEff:\\t//p' /proc/self/status) "
    "bnd=$(sed -n 's/^CapBnd:\\t//p' /proc/self/status) nnp=$(sed -n 's/^NoNewPrivs:\\t//p' /proc/self/status) "
    "agent=${TERN_TEST_AGENT_SECRET:-unset} app=${APP_MODE:-unset} cwd=$(pwd) "
    "leader=$([ \"$(ps -o pgid= $$ | tr -d ' ')\" = \"$$\" ] && echo yes || echo no)\"; exit 1"};

TEST(SystemProberExecTest, RunsAsTheSlotsUserWithNoCapabilitiesAndOnlyTheSlotsEnvironment) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to change users (CI runs as root)";
  ::setenv("TERN_TEST_AGENT_SECRET", "s3cret", 1);
  LaunchSpec as;
  as.user = "nobody";
  as.env = {{"APP_MODE", "canary"}};
  as.working_dir = "/tmp";
  const ProbeResult r = make_system_prober()->probe(exec_check(kIdentityProbe), 0, Millis(5'000), as);
  ::unsetenv("TERN_TEST_AGENT_SECRET");
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.detail.find("uid=65534 eff=0000000000000000 bnd=0000000000000000 nnp=1 agent=unset app=canary "
                          "cwd=/tmp leader=yes"),
            std::string::npos)
      << r.detail;
}

TEST(SystemProberExecTest, ASpecWithoutAUserStillGetsNoCapabilities) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (CI runs as root)";
  const ProbeResult r = make_system_prober()->probe(exec_check(kIdentityProbe), 0, Millis(5'000), {});
  EXPECT_NE(r.detail.find("uid=0 eff=0000000000000000 bnd=0000000000000000 nnp=1"), std::string::npos) << r.detail;
}

TEST(SystemProberExecTest, AProbeAsAnotherUserCannotReadTheAgentsFiles) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to change users (CI runs as root)";
  testing::TempDir dir;
  std::filesystem::permissions(dir.path(), std::filesystem::perms::owner_all | std::filesystem::perms::others_read |
                                               std::filesystem::perms::others_exec);
  const std::string secret = dir.file("root-only");
  std::ofstream(secret) << "TOPSECRET\n";
  std::filesystem::permissions(secret, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  LaunchSpec as;
  as.user = "nobody";
  const ProbeResult r = make_system_prober()->probe(exec_check({"/bin/cat", secret}), 0, Millis(5'000), as);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.detail.find("Permission denied"), std::string::npos) << r.detail;
  EXPECT_EQ(r.detail.find("TOPSECRET"), std::string::npos) << r.detail;
}

TEST(SystemProberExecTest, AnUnknownUserIsUnhealthyAndSaysWhy) {
  LaunchSpec as;
  as.user = "no-such-user-tern";
  const ProbeResult r = make_system_prober()->probe(exec_check({"/bin/true"}), 0, Millis(5'000), as);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.detail.find("\"no-such-user-tern\" does not exist"), std::string::npos) << r.detail;
}

TEST(SystemProberExecTest, AnEmptyArgvIsUnhealthy) {
  EXPECT_FALSE(make_system_prober()->probe(exec_check({}), 0, Millis(5'000), {}).ok);
}

TEST(SystemProberExecTest, WorksWhenTheAgentRunsWithoutStdio) {
  // The probe's pipe then lands on fds 0 and 1, which the child's stdio setup reuses.
  std::fflush(stdout);
  const int saved_in = ::dup(0), saved_out = ::dup(1);
  ASSERT_GE(saved_in, 0);
  ASSERT_GE(saved_out, 0);
  ::close(0);
  ::close(1);
  const ProbeResult r =
      make_system_prober()->probe(exec_check({"/bin/sh", "-c", "echo said this; exit 1"}), 0, Millis(5'000), {});
  ::dup2(saved_in, 0);
  ::dup2(saved_out, 1);
  ::close(saved_in);
  ::close(saved_out);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.detail, "exec /bin/sh: exit 1: said this");
}

TEST(SystemProberExecTest, SubstitutesThePortInEachArgument) {
  auto prober = make_system_prober();
  // argv, not a shell string: the port arrives as $0 and $1 of the script.
  const auto check = exec_check({"/bin/sh", "-c", "test \"$0\" = 1234 && test \"$1\" = :1234/x", "{port}", ":{port}/x"});
  EXPECT_TRUE(prober->probe(check, 1234, Millis(5'000), {}).ok);
  EXPECT_FALSE(prober->probe(check, 1235, Millis(5'000), {}).ok);
}

TEST(SystemProberExecTest, ATimeoutKillsTheProbe) {
  auto prober = make_system_prober();
  const Millis timeout(300);
  const Timed t = timed_probe(*prober, exec_check({"sleep", "10"}), 0, timeout);
  EXPECT_FALSE(t.result.ok);
  EXPECT_TRUE(contains(t.result.detail, "timed out")) << t.result.detail;
  EXPECT_LT(t.elapsed, timeout + kSlack);
}

pid_t read_pid(const std::string& path) {
  std::ifstream in(path);
  pid_t pid = 0;
  in >> pid;
  return pid;
}

// True when `pid` no longer runs (gone, or a zombie waiting for its reaper).
bool not_running(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return true;
  std::string line;
  std::getline(stat, line);
  const size_t paren = line.rfind(')');
  return paren == std::string::npos || paren + 2 >= line.size() || line[paren + 2] == 'Z' ||
         line[paren + 2] == 'X';
}

TEST(SystemProberExecTest, ATimeoutKillsWhatTheProbeStarted) {
  testing::TempDir dir;
  const std::string pidfile = dir.file("helper.pid");
  auto prober = make_system_prober();
  const ProbeResult r = prober->probe(
      exec_check({"/bin/sh", "-c", "sleep 30 & echo $! > \"$0.tmp\" && mv \"$0.tmp\" \"$0\"; wait", pidfile}), 0,
      Millis(1'500), {});
  EXPECT_FALSE(r.ok);
  const pid_t helper = read_pid(pidfile);
  ASSERT_GT(helper, 0) << "the script did not start its helper within the timeout";
  EXPECT_TRUE(eventually([&] { return not_running(helper); })) << "helper " << helper << " survived";
  ::kill(helper, SIGKILL);
}

TEST(SystemProberExecTest, AHelperLeftRunningDoesNotHoldTheProbe) {
  testing::TempDir dir;
  const std::string pidfile = dir.file("helper.pid");
  auto prober = make_system_prober();
  // The helper inherits the output pipe; the probe must not wait for it.
  const ProbeResult r = prober->probe(exec_check({"/bin/sh", "-c", "sleep 30 & echo $! > \"$0\"", pidfile}), 0,
                                      Millis(5'000), {});
  EXPECT_TRUE(r.ok) << r.detail;
  const pid_t helper = read_pid(pidfile);
  if (helper > 0) ::kill(helper, SIGKILL);
}

// ---- grpc

class TestGrpcServer {
 public:
  TestGrpcServer() {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    // A server needs some service of its own besides the default health one;
    // this one answers UNIMPLEMENTED to everything.
    builder.RegisterCallbackGenericService(&unimplemented_);
    server_ = builder.BuildAndStart();
  }
  ~TestGrpcServer() {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + Millis(1'000));
  }
  bool started() const { return server_ != nullptr && port_ > 0; }
  uint16_t port() const { return static_cast<uint16_t>(port_); }
  grpc::HealthCheckServiceInterface* health() { return server_->GetHealthCheckService(); }

 private:
  int port_ = 0;
  grpc::CallbackGenericService unimplemented_;
  std::unique_ptr<grpc::Server> server_;
};

TEST(SystemProberGrpcTest, ServingIsHealthy) {
  TestGrpcServer server;
  ASSERT_TRUE(server.started());
  const ProbeResult r = make_system_prober()->probe(grpc_check(""), server.port(), Millis(5'000), {});
  EXPECT_TRUE(r.ok) << r.detail;
  EXPECT_EQ(r.detail, "grpc health: SERVING");
}

TEST(SystemProberGrpcTest, ANamedServiceNotServingIsUnhealthy) {
  TestGrpcServer server;
  ASSERT_TRUE(server.started());
  ASSERT_NE(server.health(), nullptr);
  server.health()->SetServingStatus("tern.demo.Api", false);
  auto prober = make_system_prober();
  const ProbeResult r = prober->probe(grpc_check("tern.demo.Api"), server.port(), Millis(5'000), {});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.detail, "grpc health \"tern.demo.Api\": NOT_SERVING");

  server.health()->SetServingStatus("tern.demo.Api", true);
  EXPECT_TRUE(prober->probe(grpc_check("tern.demo.Api"), server.port(), Millis(5'000), {}).ok);
  // The overall status is unaffected by the named one.
  EXPECT_TRUE(prober->probe(grpc_check(""), server.port(), Millis(5'000), {}).ok);
}

TEST(SystemProberGrpcTest, AnUnknownServiceIsUnhealthy) {
  TestGrpcServer server;
  ASSERT_TRUE(server.started());
  const ProbeResult r = make_system_prober()->probe(grpc_check("no.such.Service"), server.port(), Millis(5'000), {});
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(contains(r.detail, "NOT_FOUND")) << r.detail;
}

TEST(SystemProberGrpcTest, AClosedPortIsUnhealthy) {
  auto prober = make_system_prober();
  const Millis timeout(1'000);
  const Timed t = timed_probe(*prober, grpc_check(""), closed_port(), timeout);
  EXPECT_FALSE(t.result.ok);
  EXPECT_LT(t.elapsed, timeout + kSlack);
}

TEST(SystemProberGrpcTest, APlainHttpServerIsUnhealthy) {
  TestHttpServer server(TestHttpServer::Mode::kHang);
  auto prober = make_system_prober();
  const Millis timeout(500);
  const Timed t = timed_probe(*prober, grpc_check(""), server.port(), timeout);
  EXPECT_FALSE(t.result.ok);
  EXPECT_LT(t.elapsed, timeout + kSlack);
}

// ---- all kinds at once

TEST(SystemProberTest, NoKindIsUnhealthy) {
  EXPECT_FALSE(make_system_prober()->probe(tern::v1::HealthCheck(), 8080, Millis(1'000), {}).ok);
}

TEST(SystemProberTest, OneProberServesManyThreads) {
  TestHttpServer http(TestHttpServer::Mode::kOk);
  TestGrpcServer grpc_server;
  ASSERT_TRUE(grpc_server.started());
  const int tcp = bind_loopback(true);
  auto prober = make_system_prober();

  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      for (int j = 0; j < 5; ++j) {
        if (!prober->probe(http_check("/healthz"), http.port(), Millis(5'000), {}).ok) ++failures;
        if (!prober->probe(tcp_check(), port_of(tcp), Millis(5'000), {}).ok) ++failures;
        if (!prober->probe(exec_check({"/bin/true"}), 0, Millis(5'000), {}).ok) ++failures;
        if (!prober->probe(grpc_check(""), grpc_server.port(), Millis(5'000), {}).ok) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  ::close(tcp);
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace tern
