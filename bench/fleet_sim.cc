// tern-bench-fleet: one process that plays N agents against a real
// coordinator, each on its own gRPC connection and AgentService.Connect
// stream, so that the coordinator, not the fleet, is what gets measured.
//
// A simulated agent says hello (host id sim-NNNNN, labels role=web and
// zone=zK), heartbeats at the interval the coordinator's HelloAck gives,
// answers every command with a result after --latency (failing a share
// --fail-rate of them), and when its stream ends redials as tern-agent
// does: on a fresh channel, after the agent's own jittered exponential
// backoff (core/backoff.h, the agent's default policy). No slots, no port
// mapping: a command's result is all the coordinator sees of a host anyway.
//
// It prints one line per event that a benchmark script needs, with the wall
// clock in milliseconds:
//   all_connected <n> <unix_ms>       every agent has its HelloAck (again)
//   hello <host> <unix_ms>             an agent got its HelloAck (when --log-hellos)
//   command <kind> <host> <unix_ms>    a command arrived (when --log-commands)
//   stats <connected> <commands> <reconnects>   every 5 s
//
//   tern-bench-fleet --coordinator 127.0.0.1:7400 --agents 10000 [--latency 0ms] [--fail-rate 0]
#include <signal.h>
#include <sys/resource.h>

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "core/backoff.h"
#include "core/duration.h"
#include "core/runtime_init.h"
#include "tern/v1/agent.grpc.pb.h"

namespace tern {
namespace {

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct Options {
  std::string coordinator = "127.0.0.1:7400";
  int agents = 1000;
  Millis latency{0};
  double fail_rate = 0;
  bool log_commands = false;
  bool log_hellos = false;
  int zones = 10;
};

// Work scheduled for later (command results after --latency, redials),
// on one thread for the whole fleet.
class Timers {
 public:
  Timers() : thread_([this] { run(); }) {}
  ~Timers() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void after(Millis d, std::function<void()> fn) {
    {
      std::lock_guard lock(mu_);
      q_.emplace(std::chrono::steady_clock::now() + d, std::move(fn));
    }
    cv_.notify_all();
  }

 private:
  void run() {
    std::unique_lock lock(mu_);
    while (!stop_) {
      if (q_.empty()) {
        cv_.wait(lock);
        continue;
      }
      auto it = q_.begin();
      if (it->first > std::chrono::steady_clock::now()) {
        cv_.wait_until(lock, it->first);
        continue;
      }
      auto fn = std::move(it->second);
      q_.erase(it);
      lock.unlock();
      fn();
      lock.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::multimap<std::chrono::steady_clock::time_point, std::function<void()>> q_;
  bool stop_ = false;
  std::thread thread_;
};

struct Fleet;

// One simulated agent: its channel outlives each connection's reactor.
class SimAgent {
 public:
  SimAgent(Fleet& fleet, int index);
  void connect();
  void heartbeat();
  void on_stream_done();
  const std::string& id() const { return id_; }

 private:
  class Stream;
  Fleet& fleet_;
  const int index_;
  const std::string id_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<tern::v1::AgentService::Stub> stub_;
  std::mutex mu_;
  Stream* stream_ = nullptr;  // the live connection, if any
  Backoff backoff_;
  friend class Stream;
};

struct Fleet {
  Options opt;
  Timers timers;
  std::vector<std::unique_ptr<SimAgent>> agents;
  std::atomic<int> acked{0};
  std::atomic<int64_t> commands{0};
  std::atomic<int64_t> reconnects{0};
  std::atomic<int64_t> heartbeat_ms{5000};
  std::mutex out_mu;

  void note_acked() {
    if (acked.fetch_add(1) + 1 == static_cast<int>(agents.size())) {
      std::lock_guard lock(out_mu);
      std::printf("all_connected %zu %lld\n", agents.size(), static_cast<long long>(wall_ms()));
      std::fflush(stdout);
    }
  }
};

class SimAgent::Stream final
    : public grpc::ClientBidiReactor<tern::v1::AgentMessage, tern::v1::CoordinatorMessage> {
 public:
  explicit Stream(SimAgent& agent) : agent_(agent) {
    agent_.stub_->async()->Connect(&ctx_, this);
    tern::v1::AgentMessage hello;
    auto* h = hello.mutable_hello();
    h->set_host_id(agent_.id_);
    h->set_agent_version("sim");
    h->set_protocol(1);
    (*h->mutable_labels())["role"] = "web";
    (*h->mutable_labels())["zone"] = "z" + std::to_string(agent_.index_ % agent_.fleet_.opt.zones);
    send(std::move(hello));
    StartRead(&in_);
    StartCall();
  }

  void send(tern::v1::AgentMessage msg) {
    std::lock_guard lock(mu_);
    if (done_) return;
    out_.push_back(std::move(msg));
    if (!writing_) {
      writing_ = true;
      StartWrite(&out_.front());
    }
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard lock(mu_);
    out_.pop_front();
    if (!ok || out_.empty()) {
      writing_ = false;
      return;
    }
    StartWrite(&out_.front());
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    Fleet& fleet = agent_.fleet_;
    if (in_.has_hello_ack()) {
      if (in_.hello_ack().has_heartbeat_interval()) {
        fleet.heartbeat_ms = in_.hello_ack().heartbeat_interval().seconds() * 1000 +
                             in_.hello_ack().heartbeat_interval().nanos() / 1'000'000;
      }
      {
        std::lock_guard lock(agent_.mu_);
        agent_.backoff_.reset();
      }
      acked_ = true;
      if (fleet.opt.log_hellos) {
        std::lock_guard lock(fleet.out_mu);
        std::printf("hello %s %lld\n", agent_.id_.c_str(), static_cast<long long>(wall_ms()));
      }
      fleet.note_acked();
    } else if (in_.has_command()) {
      const auto& cmd = in_.command();
      fleet.commands.fetch_add(1);
      if (fleet.opt.log_commands) {
        const char* kind = cmd.has_deploy()          ? "deploy"
                           : cmd.has_rollback()      ? "rollback"
                           : cmd.has_apply_service() ? "apply_service"
                                                     : "other";
        std::lock_guard lock(fleet.out_mu);
        std::printf("command %s %s %lld\n", kind, agent_.id_.c_str(), static_cast<long long>(wall_ms()));
      }
      tern::v1::AgentMessage reply;
      auto* r = reply.mutable_result();
      r->set_command_id(cmd.command_id());
      thread_local std::mt19937_64 rng{std::random_device{}()};
      const bool fail = fleet.opt.fail_rate > 0 && std::uniform_real_distribution<>(0, 1)(rng) < fleet.opt.fail_rate;
      r->set_outcome(fail ? tern::v1::COMMAND_OUTCOME_FAILED : tern::v1::COMMAND_OUTCOME_SUCCEEDED);
      if (fail) r->set_message("simulated failure");
      // What a real agent reports with its result: the coordinator counts a
      // deploy or a rollback only when the host's status bears it out.
      if (!fail && (cmd.has_deploy() || cmd.has_rollback())) {
        auto* status = r->mutable_service();
        status->set_service(cmd.has_deploy() ? cmd.deploy().service() : cmd.rollback().service());
        auto* slot = status->add_slots();
        slot->set_color(tern::v1::SLOT_COLOR_BLUE);
        slot->set_phase(tern::v1::SLOT_PHASE_HEALTHY);
        slot->set_active(true);
        if (cmd.has_deploy()) {
          *slot->mutable_release() = cmd.deploy().release();
          slot->set_weight(cmd.deploy().weight() == 0 ? 100 : cmd.deploy().weight());
        } else {
          slot->mutable_release()->set_version(cmd.rollback().to_version());
          slot->set_weight(100);
        }
      }
      if (fleet.opt.latency.count() == 0) {
        send(std::move(reply));
      } else {
        SimAgent* a = &agent_;
        fleet.timers.after(fleet.opt.latency, [a, reply = std::move(reply)]() mutable {
          std::lock_guard lock(a->mu_);
          if (a->stream_ != nullptr) a->stream_->send(std::move(reply));
        });
      }
    }
    StartRead(&in_);
  }

  void OnDone(const grpc::Status&) override {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    if (acked_) agent_.fleet_.acked.fetch_sub(1);
    agent_.on_stream_done();
    delete this;
  }

 private:
  SimAgent& agent_;
  grpc::ClientContext ctx_;
  tern::v1::CoordinatorMessage in_;
  std::mutex mu_;
  std::deque<tern::v1::AgentMessage> out_;
  bool writing_ = false;
  bool done_ = false;
  bool acked_ = false;
};

SimAgent::SimAgent(Fleet& fleet, int index)
    : fleet_(fleet),
      index_(index),
      id_([index] {
        char buf[32];
        std::snprintf(buf, sizeof(buf), "sim-%05d", index);
        return std::string(buf);
      }()),
      backoff_(BackoffPolicy{}, std::random_device{}()) {}

void SimAgent::connect() {
  std::lock_guard lock(mu_);
  // A fresh channel with a private subchannel per attempt, as the agent's
  // CoordinatorLink dials: its own backoff, not gRPC's, paces redials.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  channel_ = grpc::CreateCustomChannel(fleet_.opt.coordinator, grpc::InsecureChannelCredentials(), args);
  stub_ = tern::v1::AgentService::NewStub(channel_);
  stream_ = new Stream(*this);
}

void SimAgent::heartbeat() {
  std::lock_guard lock(mu_);
  if (stream_ == nullptr) return;
  tern::v1::AgentMessage hb;
  hb.mutable_heartbeat();
  stream_->send(std::move(hb));
}

void SimAgent::on_stream_done() {
  Millis delay;
  {
    std::lock_guard lock(mu_);
    stream_ = nullptr;
    delay = backoff_.next_delay();
  }
  fleet_.reconnects.fetch_add(1);
  fleet_.timers.after(delay, [this] { connect(); });
}

std::atomic<bool> g_stop{false};

}  // namespace
}  // namespace tern

int main(int argc, char** argv) {
  tern::init_runtime();
  tern::Options opt;
  std::string latency = "0ms";
  CLI::App app{"tern-bench-fleet: N simulated agents against a real coordinator"};
  app.add_option("--coordinator", opt.coordinator, "coordinator address (plaintext: start it with --insecure)");
  app.add_option("--agents", opt.agents, "how many agents");
  app.add_option("--latency", latency, "delay before each command's result (e.g. 50ms)");
  app.add_option("--fail-rate", opt.fail_rate, "share of commands that fail (0-1)");
  app.add_flag("--log-commands", opt.log_commands, "print a line per command received");
  app.add_flag("--log-hellos", opt.log_hellos, "print a line per HelloAck received");
  CLI11_PARSE(app, argc, argv);
  auto lat = tern::parse_duration(latency);
  if (!lat.ok()) {
    std::fprintf(stderr, "tern-bench-fleet: --latency: %s\n", std::string(lat.status().message()).c_str());
    return 2;
  }
  opt.latency = *lat;
  // One socket per agent (two for a moment while one redials): lift the
  // soft limit to the hard one.
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  signal(SIGINT, [](int) { tern::g_stop = true; });
  signal(SIGTERM, [](int) { tern::g_stop = true; });

  // Line-buffered: the benchmark script reads the lines as they come.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  tern::Fleet fleet;
  fleet.opt = opt;
  for (int i = 0; i < opt.agents; ++i) fleet.agents.push_back(std::make_unique<tern::SimAgent>(fleet, i));
  for (auto& a : fleet.agents) a->connect();

  // Heartbeats spread evenly over the interval, as a fleet's are.
  std::thread beats([&fleet] {
    std::size_t i = 0;
    while (!tern::g_stop) {
      const int64_t interval = std::max<int64_t>(fleet.heartbeat_ms.load(), 10);
      const auto step = std::chrono::microseconds(interval * 1000 / static_cast<int64_t>(fleet.agents.size()));
      const auto next = std::chrono::steady_clock::now() + std::max(step, std::chrono::microseconds(1));
      fleet.agents[i]->heartbeat();
      i = (i + 1) % fleet.agents.size();
      std::this_thread::sleep_until(next);
    }
  });
  auto last = std::chrono::steady_clock::now();
  while (!tern::g_stop) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (std::chrono::steady_clock::now() - last >= std::chrono::seconds(5)) {
      last = std::chrono::steady_clock::now();
      std::lock_guard lock(fleet.out_mu);
      std::printf("stats %d %lld %lld\n", fleet.acked.load(), static_cast<long long>(fleet.commands.load()),
                  static_cast<long long>(fleet.reconnects.load()));
      std::fflush(stdout);
    }
  }
  beats.join();
  std::fflush(stdout);
  // Streams and channels are torn down by the OS: the benchmark is over.
  std::_Exit(0);
}
