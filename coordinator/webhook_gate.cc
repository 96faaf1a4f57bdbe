#include "coordinator/webhook_gate.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "core/words.h"

namespace tern {
namespace {

constexpr int kAttempts = 3;
constexpr char kAnswersHelp[] = "Answers of gate webhooks to the question whether a wave may start.";
constexpr size_t kQuotedReplyChars = 200;

std::string quoted(const std::string& body) {
  std::string out;
  for (char c : body.substr(0, kQuotedReplyChars)) out += (c == '\n' || c == '\r') ? ' ' : c;
  return absl::StrCat("\"", out, body.size() > kQuotedReplyChars ? "...\"" : "\"");
}

}  // namespace

WebhookGates::WebhookGates(std::vector<WebhookTarget> targets, std::unique_ptr<WebhookTransport> transport,
                           const Clock& clock, Metrics& metrics, Millis retry_delay)
    : transport_(std::move(transport)), clock_(clock), metrics_(metrics), retry_delay_(retry_delay) {
  for (auto& t : targets) {
    for (const char* answer : {"allowed", "denied", "unanswered"}) {
      metrics_.counter("tern_webhook_gate_answers_total", kAnswersHelp,
                       absl::StrCat("webhook=\"", t.name, "\",answer=\"", answer, "\""));
    }
    std::string name = t.name;
    targets_.emplace(std::move(name), std::move(t));
  }
}

WebhookGates::~WebhookGates() { stop(); }

std::vector<std::string> WebhookGates::names() const {
  std::vector<std::string> out;
  for (const auto& [name, t] : targets_) out.push_back(name);
  return out;
}

void WebhookGates::start() { thread_ = std::thread([this] { run(); }); }

void WebhookGates::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    queue_.clear();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void WebhookGates::ask(Ask ask, Done done) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    queue_.emplace_back(std::move(ask), std::move(done));
  }
  cv_.notify_all();
}

std::string WebhookGates::payload(const Ask& ask, int64_t time_ms) {
  using google::protobuf::Struct;
  Struct body;
  auto& f = *body.mutable_fields();
  const auto& r = ask.rollout;
  f["id"].set_string_value(absl::StrCat(r.id(), ":gate:", ask.wave + 1, ":", ask.attempt));
  f["event"].set_string_value("gate");
  f["rollout"].set_string_value(r.id());
  f["service"].set_string_value(r.spec().service());
  f["release"].set_string_value(r.spec().release().version());
  f["previous_release"].set_string_value(r.previous_release().version());
  f["wave"].set_number_value(ask.wave);
  f["waves"].set_number_value(r.spec().waves_size());
  uint32_t in_wave = 0;
  for (const auto& h : r.hosts()) in_wave += h.wave() == ask.wave;
  f["hosts"].set_number_value(in_wave);
  f["failed_hosts"].set_number_value(r.failed_hosts());
  f["phase"].set_string_value(word(r.phase()));
  f["message"].set_string_value(absl::StrCat("may wave ", ask.wave + 1, " of ", r.spec().waves_size(), " (", in_wave,
                                             " host(s)) of rollout ", r.id(), " deploy ", r.spec().service(), " ",
                                             r.spec().release().version(), "? answer 2xx to allow it"));
  f["time"].set_string_value(
      google::protobuf::util::TimeUtil::ToString(google::protobuf::util::TimeUtil::MillisecondsToTimestamp(time_ms)));
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(body, &out);
  return out;
}

WebhookGates::Answer WebhookGates::put(const Ask& ask) {
  auto it = targets_.find(ask.webhook);
  if (it == targets_.end()) return {false, "it is not a webhook of the coordinator's config"};
  const WebhookTarget& target = it->second;
  const std::string body = payload(ask, to_unix_millis(clock_.now()));
  const std::vector<std::string> headers{
      "Content-Type: application/json",
      absl::StrCat("X-Tern-Delivery: ", ask.rollout.id(), ":gate:", ask.wave + 1, ":", ask.attempt),
      absl::StrCat("X-Tern-Signature: ", webhook_signature(target.secret, body)),
      "X-Tern-Event: gate",
      "Expect:",
  };
  auto count = [&](const char* answer) {
    metrics_
        .counter("tern_webhook_gate_answers_total", kAnswersHelp,
                 absl::StrCat("webhook=\"", target.name, "\",answer=\"", answer, "\""))
        .fetch_add(1, std::memory_order_relaxed);
  };
  std::string last_error;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    if (attempt > 0) {
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, retry_delay_ * (1 << (attempt - 1)), [this] { return stopping_; })) break;
    }
    auto reply = transport_->post(target, headers, body);
    if (!reply.ok()) {
      last_error = std::string(reply.status().message());
      spdlog::warn("gate webhook {} (rollout {}, wave {}): no answer: {}", target.name, ask.rollout.id(),
                   ask.wave + 1, last_error);
      continue;
    }
    if (reply->status >= 200 && reply->status <= 299) {
      count("allowed");
      return {true, reply->body.empty() ? "" : quoted(reply->body)};
    }
    count("denied");
    return {false, absl::StrCat("HTTP ", reply->status, reply->body.empty() ? "" : ": ", quoted(reply->body))};
  }
  count("unanswered");
  return {false, absl::StrCat("no answer after ", kAttempts, " attempts (", last_error, ")")};
}

void WebhookGates::run() {
  for (;;) {
    std::pair<Ask, Done> next;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      next = std::move(queue_.front());
      queue_.pop_front();
    }
    const Answer a = put(next.first);
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;  // the loop that would take the answer is gone
    }
    next.second(next.first, a);
  }
}

}  // namespace tern
