#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <memory>
#include <mutex>
#include <string>

#include <grpcpp/grpcpp.h>

#include "coordinator/artifact_store.h"
#include "tern/v1/agent.grpc.pb.h"

#include "coordinator/auth.h"

namespace tern {

class AgentStream;

// No agent message is this large (a hello with every service's status is a
// few KiB); a bigger one ends the stream.
inline constexpr std::size_t kMaxAgentMessageBytes = 256 << 10;
// Any one string an agent sends (an event's text, a slot's message) is cut
// to this and has its control characters escaped before anything logs,
// stores or forwards it.
inline constexpr std::size_t kMaxAgentTextBytes = 2048;
// Artifact downloads: at most this many open per caller and in all, each
// cancelled when it is still open after kFetchDeadline (2 GiB at 2 MB/s).
inline constexpr int kMaxFetchesPerHost = 4;
inline constexpr int kMaxFetchesInAll = 256;
inline constexpr std::chrono::minutes kFetchDeadline{20};

// The coordinator's handle on one agent stream, held by the event loop. It
// outlives the reactor: once the stream is done, send() and close() become
// no-ops. Thread-safe.
//
// send(), close() and read_next() are virtual so that a test or a fuzzer
// can stand in for the stream and hand its session to the coordinator's
// AgentStreamListener directly; the coordinator only ever uses the base.
class AgentSession {
 public:
  explicit AgentSession(uint64_t id, std::string certified_host = "",
                        std::map<std::string, std::string> certified_labels = {}, std::string certified_serial = "")
      : id_(id),
        certified_host_(std::move(certified_host)),
        certified_labels_(std::move(certified_labels)),
        certified_serial_(std::move(certified_serial)) {}
  virtual ~AgentSession() = default;
  uint64_t id() const { return id_; }
  // The host id the agent's certificate names (its CN); empty without TLS.
  // A hello for any other host is refused.
  const std::string& certified_host() const { return certified_host_; }
  // The labels the agent's certificate carries (empty without TLS).
  const std::map<std::string, std::string>& certified_labels() const { return certified_labels_; }
  // The serial of the agent's certificate (hex; empty without TLS).
  const std::string& certified_serial() const { return certified_serial_; }
  // Queues a message; false when the stream is already gone.
  virtual bool send(tern::v1::CoordinatorMessage msg);
  // Ends the stream with `status` after queued writes drain.
  virtual void close(grpc::Status status);
  // Reads the agent's next message. A stream reads one message at a time:
  // the next only once the loop has taken the last, so an agent that sends
  // faster than the coordinator handles waits (HTTP/2 flow control) rather
  // than filling the coordinator's memory.
  virtual void read_next();

 private:
  friend class AgentStream;
  const uint64_t id_;
  const std::string certified_host_;
  const std::map<std::string, std::string> certified_labels_;
  const std::string certified_serial_;
  std::mutex mu_;
  AgentStream* stream_ = nullptr;
};

// Which artifacts each host was sent a command naming. FetchArtifact serves
// a blob to an agent (known by its certificate) only then: one agent key
// cannot download every release by hash. Thread-safe.
class ArtifactGrants {
 public:
  void grant(const std::string& host, const std::string& sha256);
  bool allowed(const std::string& host, const std::string& sha256) const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::set<std::string>> by_host_;
};

// What an AgentStream reports; called on gRPC threads, so implementations
// must only hand the work on (post to the event loop), never block.
class AgentStreamListener {
 public:
  virtual ~AgentStreamListener() = default;
  virtual void on_agent_stream_open(const std::shared_ptr<AgentSession>& session) = 0;
  virtual void on_agent_message(const std::shared_ptr<AgentSession>& session, const std::string& peer,
                                tern::v1::AgentMessage msg) = 0;
  virtual void on_agent_stream_done(const std::shared_ptr<AgentSession>& session, const std::string& reason) = 0;
};

// Reactor for one AgentService.Connect call: one read in flight, started
// again by AgentSession::read_next(); writes from a mutex-guarded queue with
// one write in flight; deletes itself in OnDone.
class AgentStream final : public grpc::ServerBidiReactor<tern::v1::AgentMessage, tern::v1::CoordinatorMessage> {
 public:
  AgentStream(grpc::CallbackServerContext* ctx, uint64_t session_id, AgentStreamListener& listener,
              std::atomic<int64_t>* sent_counter, std::string certified_host = "",
              std::map<std::string, std::string> certified_labels = {}, std::string certified_serial = "");

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone() override;
  void OnCancel() override;

 private:
  friend class AgentSession;
  // Both called with session_->mu_ held.
  void enqueue(tern::v1::CoordinatorMessage msg);
  void finish(grpc::Status status);
  void finish_locked(grpc::Status status);
  void read_next();

  grpc::CallbackServerContext* ctx_;
  std::shared_ptr<AgentSession> session_;
  AgentStreamListener& listener_;
  std::atomic<int64_t>* sent_counter_;
  std::string peer_;
  tern::v1::AgentMessage incoming_;

  std::mutex mu_;
  std::deque<tern::v1::CoordinatorMessage> outbox_;
  bool write_in_flight_ = false;
  bool finish_requested_ = false;
  bool finished_ = false;
  grpc::Status finish_status_;
  std::string done_reason_ = "stream closed";
};

// AgentService.Connect: creates one AgentStream per call.
class AgentServiceImpl final : public tern::v1::AgentService::CallbackService {
 public:
  // `auth` null: no checks (tests of the stream mechanics).
  // `grants` null: any authenticated agent may fetch any blob.
  AgentServiceImpl(AgentStreamListener& listener, std::atomic<int64_t>* sent_counter,
                   const ArtifactStore* artifacts = nullptr, const Authenticator* auth = nullptr,
                   const ArtifactGrants* grants = nullptr)
      : listener_(listener), sent_counter_(sent_counter), artifacts_(artifacts), auth_(auth), grants_(grants) {}

  grpc::ServerBidiReactor<tern::v1::AgentMessage, tern::v1::CoordinatorMessage>* Connect(
      grpc::CallbackServerContext* ctx) override;
  // Streams a blob from the artifact store in 64 KiB chunks, reading the
  // file as the client takes them.
  grpc::ServerWriteReactor<tern::v1::ArtifactChunk>* FetchArtifact(grpc::CallbackServerContext* ctx,
                                                                   const tern::v1::FetchArtifactRequest* req) override;

 private:
  AgentStreamListener& listener_;
  std::atomic<int64_t>* sent_counter_;
  const ArtifactStore* artifacts_;
  const Authenticator* auth_;
  const ArtifactGrants* grants_;
  std::atomic<uint64_t> next_session_{1};
  std::mutex fetch_mu_;
  int fetches_total_ = 0;
  std::map<std::string, int> fetches_by_host_;
};

}  // namespace tern
