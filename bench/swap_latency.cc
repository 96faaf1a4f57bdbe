// tern-bench-swap: how long a blue/green swap takes on one host, and what a
// naive restart costs instead, measured in the same run.
//
//   sudo build/bench/tern-bench-swap [--swaps 200] [--restarts 30] [--backend nftables|iptables|both] [--realtime]
//
// Runs in a private network namespace (it unshares one; needs root) with two
// real tern-demo-app slots. Three figures per backend:
//   kernel swap  PortMapper::apply() starts -> the first new connection to
//                the public port is answered by the new slot
//   agent swap   a switch command reaches the service supervisor -> the first
//                new connection lands on the new slot (includes the agent
//                writing its intended state: temp file, fsync, rename, twice)
//   naive        stop blue, start the new release on the same port: requests
//                failed by a constant-rate client, and the gap in service

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "agent/artifact_stager.h"
#include "agent/exec.h"
#include "agent/health.h"
#include "agent/port_mapper.h"
#include "agent/process_launcher.h"
#include "agent/service_supervisor.h"
#include "agent/state_store.h"
#include "agent/traffic.h"
#include "core/sha256.h"
#include "tern/v1/agent_state.pb.h"

namespace tern {
namespace {

using SteadyClock = std::chrono::steady_clock;
constexpr uint16_t kPublic = 8080, kBlue = 9001, kGreen = 9002;

double us_since(SteadyClock::time_point t0) {
  return std::chrono::duration<double, std::micro>(SteadyClock::now() - t0).count();
}

// Why requests failed, for the report.
std::atomic<long> g_refused{0}, g_reset{0}, g_timeout{0}, g_other{0};

// One request on a new connection; the body's first word, empty on failure.
std::string version_at(uint16_t port, bool count_errors = false) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string out;
  int err = 0;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    const char req[] = "GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n";
    if (::send(fd, req, sizeof req - 1, MSG_NOSIGNAL) > 0) {
      char buf[1024];
      std::string resp;
      ssize_t n;
      while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0 || (n < 0 && errno == EINTR)) {
        if (n > 0) resp.append(buf, static_cast<std::size_t>(n));
      }
      if (n < 0) err = errno;
      auto p = resp.find("\r\n\r\n");
      if (resp.rfind("HTTP/1.1 200", 0) == 0 && p != std::string::npos) {
        out = resp.substr(p + 4);
        out = out.substr(0, out.find_first_of(" \n"));
      }
    } else {
      err = errno;
    }
  } else {
    err = errno;
  }
  ::close(fd);
  if (out.empty() && count_errors) {
    if (err == ECONNREFUSED) ++g_refused;
    else if (err == ECONNRESET || err == EPIPE) ++g_reset;
    else if (err == EAGAIN || err == ETIMEDOUT) ++g_timeout;
    else ++g_other;
  }
  return out;
}

std::string failure_kinds() {
  char b[160];
  std::snprintf(b, sizeof b, "refused %ld, reset %ld, timed out %ld, other %ld", g_refused.exchange(0),
                g_reset.exchange(0), g_timeout.exchange(0), g_other.exchange(0));
  return b;
}

// Polls new connections until one is answered by `want`.
void wait_for(const std::string& want) {
  while (version_at(kPublic) != want) {
  }
}

struct Stats {
  std::vector<double> v;
  double pct(double p) {
    std::sort(v.begin(), v.end());
    if (v.empty()) return 0;
    return v[std::min(v.size() - 1, static_cast<std::size_t>(p / 100.0 * static_cast<double>(v.size())))];
  }
  std::string line(const char* what, const char* unit = "us") {
    char b[256];
    std::snprintf(b, sizeof b, "  %-44s n=%-4zu p50 %8.1f %s   p99 %8.1f %s   max %8.1f %s", what, v.size(), pct(50),
                  unit, pct(99), unit, pct(100), unit);
    return b;
  }
};

std::unique_ptr<ProcessLauncher> g_launcher;

ProcessHandle start_app(uint16_t port, const std::string& version) {
  LaunchSpec ls;
  ls.argv = {TERN_DEMO_APP_BIN, "--port", std::to_string(port), "--version", version, "--drain", "0s"};
  ls.env = {{"PATH", "/usr/bin:/bin"}};
  ls.log_path = "/dev/null";
  auto h = g_launcher->start(ls);
  if (!h.ok()) {
    std::fprintf(stderr, "cannot start the demo app: %s\n", std::string(h.status().message()).c_str());
    std::exit(1);
  }
  while (version_at(port) != version) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  return *h;
}

void stop_app(const ProcessHandle& h) {
  g_launcher->signal_group(h, SIGKILL);
  while (!g_launcher->poll(h)) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

DesiredMapping to(uint16_t port) {
  return DesiredMapping{{PortRoute{"web", "tcp", kPublic, {{port, 100}}}}};
}

void kernel_swaps(const std::string& backend, int swaps) {
  auto mapper = make_port_mapper(PortMapperOptions{.backend = backend, .table = "ternbench"});
  if (!mapper.ok()) {
    std::printf("  %s unavailable: %s\n", backend.c_str(), std::string(mapper.status().message()).c_str());
    return;
  }
  auto blue = start_app(kBlue, "blue");
  auto green = start_app(kGreen, "green");
  (void)(*mapper)->apply(to(kBlue));
  wait_for("blue");
  // What the measuring probe itself costs: a new connection and a GET,
  // straight to a slot.
  Stats probe;
  for (int i = 0; i < swaps; ++i) {
    const auto t0 = SteadyClock::now();
    (void)version_at(kBlue);
    probe.v.push_back(us_since(t0));
  }
  // Pass 1: latency, nothing else running. Pass 2: the same swaps under a
  // constant-rate client (one new connection per millisecond), counting failures.
  Stats total, apply_only;
  std::atomic<bool> stop{false};
  std::atomic<long> sent{0}, failed{0};
  std::thread client;
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1) {
      client = std::thread([&] {
        auto next = SteadyClock::now();
        while (!stop) {
          next += std::chrono::milliseconds(1);
          std::this_thread::sleep_until(next);
          ++sent;
          if (version_at(kPublic, true).empty()) ++failed;
        }
      });
    }
    for (int i = 0; i < swaps; ++i) {
      const bool to_green = i % 2 == 0;
      const auto t0 = SteadyClock::now();
      auto st = (*mapper)->apply(to(to_green ? kGreen : kBlue));
      const double applied = us_since(t0);
      if (!st.ok()) {
        std::printf("  apply failed: %s\n", std::string(st.message()).c_str());
        break;
      }
      wait_for(to_green ? "green" : "blue");
      // Under load, swaps are paced so the client sees plenty of each.
      if (pass == 1) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      if (pass == 0) {
        apply_only.v.push_back(applied);
        total.v.push_back(us_since(t0));
      }
    }
  }
  stop = true;
  client.join();
  std::printf("%s\n%s\n%s\n", total.line("kernel swap -> first new conn on new slot").c_str(),
              apply_only.line("  of which PortMapper::apply()").c_str(),
              probe.line("  probe alone (new conn + GET, direct)").c_str());
  std::printf("  tern swaps under load: %ld of %ld client requests failed during %d swaps (%s)\n", failed.load(),
              sent.load(), swaps, failure_kinds().c_str());
  (void)(*mapper)->remove_all();
  stop_app(blue);
  stop_app(green);
}

// Artifact bytes from a local file, so the agent bench needs no coordinator.
class FileFetcher final : public ArtifactFetcher {
 public:
  explicit FileFetcher(std::string path) : path_(std::move(path)) {}
  absl::Status fetch(const std::string&, const Sink& sink) override {
    std::ifstream in(path_, std::ios::binary);
    std::string buf(64 * 1024, '\0');
    while (in) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      if (auto st = sink(buf.data(), static_cast<std::size_t>(in.gcount())); !st.ok()) return st;
    }
    return absl::OkStatus();
  }

 private:
  std::string path_;
};

void agent_swaps(const std::string& backend, int swaps) {
  auto mapper = make_port_mapper(PortMapperOptions{.backend = backend, .table = "ternbench"});
  if (!mapper.ok()) return;
  const std::string dir = "/var/tmp/tern-bench-swap-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir + "/logs");
  auto prober = make_system_prober();
  auto os = make_system_host_os();
  FileFetcher fetcher(TERN_DEMO_APP_BIN);
  ArtifactStager stager(dir, &fetcher);
  TrafficMap traffic(mapper->get());
  StateStore store(dir);
  ServiceSupervisor* sup_ptr = nullptr;
  SupervisorDeps deps;
  deps.launcher = g_launcher.get();
  deps.prober = prober.get();
  deps.stager = &stager;
  deps.traffic = &traffic;
  deps.os = os.get();
  deps.persist = [&] {
    tern::v1::AgentState s;
    *s.add_services() = sup_ptr->snapshot();
    return store.save(s);
  };
  deps.log_dir = dir + "/logs";
  tern::v1::ServiceState state;
  auto* spec = state.mutable_spec();
  spec->set_name("web");
  auto* p = spec->add_ports();
  p->set_name("http");
  p->set_protocol("tcp");
  p->set_public_port(kPublic);
  p->set_blue_port(kBlue);
  p->set_green_port(kGreen);
  for (const char* a : {"{release_dir}/app", "--port", "{port}", "--version", "{version}", "--drain", "0s"}) {
    spec->add_argv(a);
  }
  spec->mutable_health()->mutable_tcp();
  spec->mutable_health()->mutable_interval()->set_nanos(20'000'000);
  spec->set_keep_warm(true);
  spec->mutable_grace()->set_seconds(2);
  ServiceSupervisor sup(state, deps);
  sup_ptr = &sup;
  sup.start();
  auto run = [&](tern::v1::Command cmd) {
    std::promise<tern::v1::CommandResult> done;
    auto f = done.get_future();
    sup.submit(cmd, [](const std::string&) {}, [&](const tern::v1::CommandResult& r) { done.set_value(r); });
    return f.get();
  };
  const std::string sha = *sha256_file(TERN_DEMO_APP_BIN);
  for (const char* v : {"blue", "green"}) {
    tern::v1::Command cmd;
    auto* d = cmd.mutable_deploy();
    d->set_service("web");
    d->mutable_release()->set_version(v);
    d->mutable_release()->set_sha256(sha);
    d->mutable_release()->set_kind("executable");
    d->mutable_release()->set_name("app");
    d->set_switch_on_healthy(true);
    auto r = run(cmd);
    if (r.outcome() != tern::v1::COMMAND_OUTCOME_SUCCEEDED) {
      std::printf("  agent deploy failed: %s\n", r.message().c_str());
      return;
    }
  }
  wait_for("green");
  Stats total;
  for (int i = 0; i < swaps; ++i) {
    const bool to_blue = i % 2 == 0;
    tern::v1::Command cmd;
    cmd.mutable_switch_traffic()->set_service("web");
    cmd.mutable_switch_traffic()->set_to(to_blue ? tern::v1::SLOT_COLOR_BLUE : tern::v1::SLOT_COLOR_GREEN);
    cmd.mutable_switch_traffic()->set_weight(100);
    const auto t0 = SteadyClock::now();
    std::promise<void> done;
    auto f = done.get_future();
    sup.submit(cmd, [](const std::string&) {}, [&](const tern::v1::CommandResult&) { done.set_value(); });
    wait_for(to_blue ? "blue" : "green");
    total.v.push_back(us_since(t0));
    f.wait();
  }
  std::printf("%s\n", total.line("agent swap -> first new conn on new slot").c_str());
  tern::v1::Command rm;
  rm.mutable_remove_service()->set_service("web");
  run(rm);
  sup.shutdown();
  (void)(*mapper)->remove_all();
  std::filesystem::remove_all(dir);
}

// Stop the old release, start the new one on the same port, with a client
// sending one request per millisecond throughout.
void naive_restarts(int restarts) {
  auto mapper = make_port_mapper(PortMapperOptions{.backend = "nftables", .table = "ternbench"});
  std::atomic<bool> stop{false};
  std::atomic<long> sent{0}, failed{0};
  std::thread client([&] {
    auto next = SteadyClock::now();
    while (!stop) {
      next += std::chrono::milliseconds(1);
      std::this_thread::sleep_until(next);
      ++sent;
      if (version_at(kBlue, true).empty()) ++failed;
    }
  });
  Stats gap;
  auto current = start_app(kBlue, "v0");
  for (int i = 0; i < restarts; ++i) {
    const auto t0 = SteadyClock::now();
    stop_app(current);
    current = start_app(kBlue, "v" + std::to_string(i + 1));
    gap.v.push_back(us_since(t0) / 1000.0);
  }
  stop = true;
  client.join();
  stop_app(current);
  std::printf("%s\n", gap.line("naive restart: old stopped -> new answering", "ms").c_str());
  std::printf("  naive restart: %ld of %ld requests failed (%.1f%%) over %d restarts (%s)\n", failed.load(),
              sent.load(), 100.0 * static_cast<double>(failed.load()) / static_cast<double>(std::max(1L, sent.load())),
              restarts, failure_kinds().c_str());
}

}  // namespace
}  // namespace tern

int main(int argc, char** argv) {
  int swaps = 200, restarts = 30;
  std::string backend = "both";
  bool realtime = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--realtime") realtime = true;
    else if (a == "--swaps" && has_value) swaps = std::max(2, std::atoi(argv[++i]));
    else if (a == "--restarts" && has_value) restarts = std::max(1, std::atoi(argv[++i]));
    else if (a == "--backend" && has_value) backend = argv[++i];
    else {
      std::fprintf(stderr, "usage: tern-bench-swap [--swaps N] [--restarts N] [--backend nftables|iptables|both] "
                           "[--realtime]\n");
      return 2;
    }
  }
  if (::geteuid() != 0 || ::unshare(CLONE_NEWNET) != 0) {
    std::fprintf(stderr, "tern-bench-swap: needs root to create a private network namespace: %s\n",
                 std::strerror(errno));
    return 2;
  }
  if (auto r = tern::run_command({"ip", "link", "set", "lo", "up"}); !r.ok() || r->exit_code != 0) {
    std::fprintf(stderr, "tern-bench-swap: cannot bring lo up\n");
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);
  spdlog::set_level(spdlog::level::warn);
  tern::g_launcher = tern::make_system_process_launcher();
  if (realtime) {
    // Measuring threads, the agent's threads and the slots (all forked from
    // here) run SCHED_FIFO, as a latency-critical host would pin them: the
    // figures then show the mechanism, not the scheduler of a busy 2-core VM.
    sched_param sp{};
    sp.sched_priority = 10;
    if (::sched_setscheduler(0, SCHED_FIFO, &sp) != 0) std::perror("sched_setscheduler");
  }
  std::printf("tern-bench-swap: %d swaps per figure, %d naive restarts, demo app %s\n", swaps, restarts,
              TERN_DEMO_APP_BIN);
  for (const std::string b : {"nftables", "iptables"}) {
    if (backend != "both" && backend != b) continue;
    std::printf("%s:\n", b.c_str());
    tern::kernel_swaps(b, swaps);
    tern::agent_swaps(b, swaps);
  }
  std::printf("naive restart (no tern):\n");
  tern::naive_restarts(restarts);
  return 0;
}
