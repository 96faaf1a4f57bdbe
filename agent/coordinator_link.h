#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "core/backoff.h"
#include "core/clock.h"
#include "tern/v1/agent.grpc.pb.h"

namespace tern {

// The agent's one long-lived stream to the coordinator. A thread of its own
// dials, sends the hello, heartbeats, hands commands to the handler and, when
// the stream breaks, reconnects after a jittered exponential backoff that is
// reset by the first good message (the HelloAck) of each connection.
//
// Thread-safe. The handlers run on the link's reader thread and must not block.
class CoordinatorLink {
 public:
  struct Options {
    std::string target;
    BackoffPolicy backoff;
    Millis heartbeat_interval{5'000};
    // TLS (the agent's certificate and the fleet CA); null: plaintext.
    std::shared_ptr<grpc::ChannelCredentials> credentials;
    // Name expected in the coordinator's certificate, when not the dialled host.
    std::string server_name;
  };
  // Builds the hello for each new connection (state may have changed). Each
  // heartbeat calls it too and carries its services when they differ from
  // what this stream last reported.
  using HelloBuilder = std::function<tern::v1::Hello()>;
  using CommandHandler = std::function<void(const tern::v1::Command&)>;

  CoordinatorLink(Options options, HelloBuilder hello, CommandHandler on_command);
  ~CoordinatorLink();

  // What each heartbeat carries as the slots' resource use; set before
  // start().
  void set_usage_source(std::function<std::vector<tern::v1::SlotUsage>()> usage) { usage_ = std::move(usage); }

  void start();
  // Half-closes the stream so the coordinator records a clean disconnect,
  // waits briefly for it to answer, then cancels whatever is left.
  void stop();

  // Sends on the current stream; false when not connected (the caller's
  // state goes up again in the next hello).
  bool send(const tern::v1::AgentMessage& msg);

  bool connected() const { return connected_.load(); }
  uint64_t connections() const { return connections_.load(); }
  uint64_t epoch() const { return epoch_.load(); }
  // Connection attempts that ended without a HelloAck, over the link's life.
  uint64_t failed_attempts() const { return failed_attempts_.load(); }
  uint64_t heartbeats_sent() const { return heartbeats_sent_.load(); }
  // Heartbeats that carried the agent's state because it had changed.
  uint64_t reports_sent() const { return reports_sent_.load(); }

 private:
  void run();
  // One connection's life; returns when the stream ends.
  void session();
  // `reported`: the services as the hello carried them.
  void heartbeat_loop(Millis interval, std::string reported);
  // Waits up to `d`; false when stopping.
  bool wait_for(Millis d);

  Options options_;
  HelloBuilder hello_;
  CommandHandler on_command_;
  std::function<std::vector<tern::v1::SlotUsage>()> usage_;
  Backoff backoff_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  grpc::ClientContext* active_ctx_ = nullptr;

  std::mutex write_mu_;
  grpc::ClientReaderWriter<tern::v1::AgentMessage, tern::v1::CoordinatorMessage>* stream_ = nullptr;
  bool writes_done_ = false;

  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> connections_{0};
  std::atomic<uint64_t> epoch_{0};
  std::atomic<uint64_t> failed_attempts_{0};
  std::atomic<uint64_t> heartbeats_sent_{0};
  std::atomic<uint64_t> reports_sent_{0};
  std::thread thread_;
};

}  // namespace tern
