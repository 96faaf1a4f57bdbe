#include "coordinator/agent_stream.h"

#include "core/grpc_status.h"

#include <spdlog/spdlog.h>

#include "core/status_fmt.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/sha256.h"
#include "core/text.h"

#include <grpcpp/alarm.h>

namespace tern {

void ArtifactGrants::grant(const std::string& host, const std::string& sha256) {
  std::lock_guard<std::mutex> lock(mu_);
  by_host_[host].insert(sha256);
}

bool ArtifactGrants::allowed(const std::string& host, const std::string& sha256) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_host_.find(host);
  return it != by_host_.end() && it->second.count(sha256) > 0;
}

bool AgentSession::send(tern::v1::CoordinatorMessage msg) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stream_ == nullptr) return false;
  stream_->enqueue(std::move(msg));
  return true;
}

void AgentSession::close(grpc::Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stream_ != nullptr) stream_->finish(std::move(status));
}

void AgentSession::read_next() {
  std::lock_guard<std::mutex> lock(mu_);
  if (stream_ != nullptr) stream_->read_next();
}

AgentStream::AgentStream(grpc::CallbackServerContext* ctx, uint64_t session_id, AgentStreamListener& listener,
                         std::atomic<int64_t>* sent_counter, std::string certified_host,
                         std::map<std::string, std::string> certified_labels, std::string certified_serial)
    : ctx_(ctx),
      session_(std::make_shared<AgentSession>(session_id, std::move(certified_host), std::move(certified_labels),
                                              std::move(certified_serial))),
      listener_(listener),
      sent_counter_(sent_counter),
      peer_(ctx->peer()) {
  session_->stream_ = this;
  listener_.on_agent_stream_open(session_);
  StartRead(&incoming_);
}

void AgentStream::OnReadDone(bool ok) {
  if (!ok) {
    // The agent half-closed or the call broke: end our side too.
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_reason_ = ctx_->IsCancelled() ? "stream broken" : "agent closed the stream";
    }
    finish(grpc::Status::OK);
    return;
  }
  if (const std::size_t size = incoming_.ByteSizeLong(); size > kMaxAgentMessageBytes) {
    spdlog::warn("closing the agent stream from {}: a message of {} bytes (the limit is {})", peer_, size,
                 kMaxAgentMessageBytes);
    finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("agent message of ", size, " bytes; the limit is ", kMaxAgentMessageBytes)));
    return;
  }
  // Here, on a gRPC thread, not on the loop: nothing an agent wrote reaches
  // a log, the database or an operator's terminal unescaped.
  make_printable(incoming_, kMaxAgentTextBytes);
  listener_.on_agent_message(session_, peer_, std::move(incoming_));
  // The next read waits for the loop: AgentSession::read_next().
}

void AgentStream::read_next() {
  std::lock_guard<std::mutex> lock(mu_);
  if (finish_requested_) return;
  incoming_.Clear();
  StartRead(&incoming_);
}

void AgentStream::OnCancel() {
  // Without a read in flight nothing else would notice.
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_reason_ = "stream broken";
  }
  finish(grpc::Status(grpc::StatusCode::CANCELLED, "stream broken"));
}

void AgentStream::enqueue(tern::v1::CoordinatorMessage msg) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finish_requested_) return;
  outbox_.push_back(std::move(msg));
  if (!write_in_flight_) {
    write_in_flight_ = true;
    StartWrite(&outbox_.front());
  }
}

void AgentStream::OnWriteDone(bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  write_in_flight_ = false;
  if (!ok) {
    // The peer is gone; reads will fail too and finish the call.
    outbox_.clear();
  } else {
    if (sent_counter_) sent_counter_->fetch_add(1, std::memory_order_relaxed);
    outbox_.pop_front();
  }
  if (!outbox_.empty()) {
    write_in_flight_ = true;
    StartWrite(&outbox_.front());
    return;
  }
  if (finish_requested_ && !finished_) {
    finished_ = true;
    Finish(finish_status_);
  }
}

void AgentStream::finish(grpc::Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  finish_locked(std::move(status));
}

void AgentStream::finish_locked(grpc::Status status) {
  if (finish_requested_) return;
  finish_requested_ = true;
  finish_status_ = std::move(status);
  if (!finish_status_.ok()) done_reason_ = finish_status_.error_message();
  // Never Finish with a write outstanding; OnWriteDone finishes instead.
  if (!write_in_flight_) {
    finished_ = true;
    Finish(finish_status_);
  }
}

void AgentStream::OnDone() {
  {
    std::lock_guard<std::mutex> lock(session_->mu_);
    session_->stream_ = nullptr;
  }
  std::string reason;
  {
    std::lock_guard<std::mutex> lock(mu_);
    reason = done_reason_;
  }
  listener_.on_agent_stream_done(session_, reason);
  delete this;
}

namespace {

// An agent stream refused before it starts (not an agent certificate).
class RefusedAgentStream final
    : public grpc::ServerBidiReactor<tern::v1::AgentMessage, tern::v1::CoordinatorMessage> {
 public:
  explicit RefusedAgentStream(grpc::Status st) { Finish(std::move(st)); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerBidiReactor<tern::v1::AgentMessage, tern::v1::CoordinatorMessage>* AgentServiceImpl::Connect(
    grpc::CallbackServerContext* ctx) {
  std::string certified, serial;
  std::map<std::string, std::string> labels;
  if (auth_ != nullptr) {
    auto p = auth_->authorize(*ctx, Rpc::kConnect);
    if (!p.ok()) {
      spdlog::warn("refused an agent stream from {}: {}", ctx->peer(), p.status().message());
      return new RefusedAgentStream(to_grpc(p.status()));
    }
    if (p->via() == "certificate") {
      certified = p->name();
      serial = p->cert_serial();
      labels.insert(p->labels().begin(), p->labels().end());
    }
  }
  return new AgentStream(ctx, next_session_.fetch_add(1), listener_, sent_counter_, std::move(certified),
                         std::move(labels), std::move(serial));
}

namespace {

class FetchReactor final : public grpc::ServerWriteReactor<tern::v1::ArtifactChunk> {
 public:
  // `release` runs once the stream is done (it frees the caller's slot).
  FetchReactor(const ArtifactStore* store, const tern::v1::FetchArtifactRequest& req, grpc::CallbackServerContext* ctx,
               std::function<void()> release)
      : release_(std::move(release)), guard_(std::make_shared<Guard>()) {
    // A download nobody reads holds a file descriptor and a stream: past
    // the deadline the call is cancelled.
    guard_->ctx = ctx;
    deadline_.Set(std::chrono::system_clock::now() + kFetchDeadline, [g = guard_](bool fired) {
      if (!fired) return;
      std::lock_guard<std::mutex> lock(g->mu);
      if (g->ctx != nullptr) g->ctx->TryCancel();
    });
    start(store, req);
  }
  ~FetchReactor() override {
    if (fd_ >= 0) ::close(fd_);
  }
  void OnWriteDone(bool ok) override {
    if (!ok) return Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
    next();
  }
  void OnDone() override {
    {
      std::lock_guard<std::mutex> lock(guard_->mu);
      guard_->ctx = nullptr;
    }
    deadline_.Cancel();
    if (release_) release_();
    delete this;
  }

 private:
  struct Guard {
    std::mutex mu;
    grpc::CallbackServerContext* ctx = nullptr;
  };

  void start(const ArtifactStore* store, const tern::v1::FetchArtifactRequest& req) {
    if (store == nullptr) {
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "this coordinator has no artifact store"));
      return;
    }
    if (!is_sha256_hex(req.sha256())) {
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "sha256 must be 64 lower-case hex digits"));
      return;
    }
    auto size = store->size(req.sha256());
    if (!size.ok()) {
      Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, std::string(size.status().message())));
      return;
    }
    total_ = *size;
    offset_ = req.offset();
    fd_ = ::open(store->path(req.sha256()).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) {
      Finish(grpc::Status(grpc::StatusCode::INTERNAL, absl::StrCat("cannot open the artifact: ", std::strerror(errno))));
      return;
    }
    first_ = true;
    next();
  }

  void next() {
    if (offset_ >= total_ && !first_) return Finish(grpc::Status::OK);
    std::string buf(64 * 1024, '\0');
    ssize_t n;
    do {
      n = ::pread(fd_, buf.data(), buf.size(), static_cast<off_t>(offset_));
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      return Finish(grpc::Status(grpc::StatusCode::INTERNAL, absl::StrCat("reading the artifact: ", std::strerror(errno))));
    }
    buf.resize(static_cast<std::size_t>(n));
    chunk_.Clear();
    chunk_.set_offset(offset_);
    if (first_) chunk_.set_total_size(total_);
    first_ = false;
    offset_ += static_cast<uint64_t>(n);
    *chunk_.mutable_data() = std::move(buf);
    if (n == 0 && offset_ >= total_) {
      // Empty blob or an offset at the end: one chunk carrying the size.
      StartWrite(&chunk_);
      return;
    }
    StartWrite(&chunk_);
  }

  std::function<void()> release_;
  std::shared_ptr<Guard> guard_;
  grpc::Alarm deadline_;
  int fd_ = -1;
  uint64_t total_ = 0;
  uint64_t offset_ = 0;
  bool first_ = true;
  tern::v1::ArtifactChunk chunk_;
};

}  // namespace

grpc::ServerWriteReactor<tern::v1::ArtifactChunk>* AgentServiceImpl::FetchArtifact(
    grpc::CallbackServerContext* ctx, const tern::v1::FetchArtifactRequest* req) {
  // Few downloads per host and few in all (each holds a descriptor, and an
  // exhausted descriptor table stops gRPC 1.51's listener for good): per
  // host by its certificate, without one (the insecure demo) per connection.
  std::string who = ctx->peer();
  if (auth_ != nullptr) {
    auto p = auth_->authorize(*ctx, Rpc::kFetchArtifact);
    if (!p.ok()) return new RefusedWriter<tern::v1::ArtifactChunk>(to_grpc(p.status()));
    if (p->via() == "certificate") who = p->name();
    if (grants_ != nullptr && p->via() == "certificate" && !grants_->allowed(p->name(), req->sha256())) {
      spdlog::warn("refused artifact {} to host {}: it was never sent a command naming it", req->sha256(), p->name());
      return new RefusedWriter<tern::v1::ArtifactChunk>(grpc::Status(
          grpc::StatusCode::PERMISSION_DENIED,
          absl::StrCat("host ", p->name(), " was sent no command naming artifact ", req->sha256().substr(0, 12),
                       "; agents fetch only the releases they are told to run")));
    }
  }
  {
    std::lock_guard<std::mutex> lock(fetch_mu_);
    if (fetches_total_ >= kMaxFetchesInAll || fetches_by_host_[who] >= kMaxFetchesPerHost) {
      const bool all = fetches_total_ >= kMaxFetchesInAll;
      if (fetches_by_host_[who] == 0) fetches_by_host_.erase(who);
      return new RefusedWriter<tern::v1::ArtifactChunk>(grpc::Status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          all ? absl::StrCat(kMaxFetchesInAll, " artifact downloads are open on this coordinator; try again shortly")
              : absl::StrCat(who.empty() ? "this client" : who, " already has ", kMaxFetchesPerHost,
                             " artifact downloads open; finish one first")));
    }
    ++fetches_total_;
    ++fetches_by_host_[who];
  }
  return new FetchReactor(artifacts_, *req, ctx, [this, who] {
    std::lock_guard<std::mutex> lock(fetch_mu_);
    --fetches_total_;
    if (--fetches_by_host_[who] <= 0) fetches_by_host_.erase(who);
  });
}

}  // namespace tern
