#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/webhook.h"
#include "coordinator/webhook_sender.h"
#include "core/metrics.h"
#include "tern/v1/rollout.pb.h"

namespace tern {

// Blocking gates: before a wave with a `gate_webhook` deploys anything, the
// coordinator POSTs the question to that webhook (one of its config's, by
// name) and the wave starts only on a 2xx.
//
// The request is the event payload of webhook.h with "event": "gate", the
// wave about to start (1-based, in "message" too) and the rollout as it is,
// signed like every delivery (X-Tern-Signature) and sent with
// "X-Tern-Event: gate". Its X-Tern-Delivery id, "<rollout>:gate:<wave>:<n>",
// is the same for every attempt of one ask: a receiver may dedup by it.
//
// The answer: 2xx allows the wave; any other status is a "no" (its body's
// start is quoted in the pause message); no answer at all (refused, timed
// out, TLS) is retried twice after 1 s and 2 s, then also a "no". A "no"
// pauses the rollout and never rolls it back. Asked on a thread of its own,
// never the event loop's; the answer goes to `done`, on that thread.
//
// Metrics: tern_webhook_gate_answers_total{webhook,answer} with answer
// allowed, denied or unanswered, at zero for every webhook from the start.
class WebhookGates {
 public:
  struct Ask {
    std::string webhook;
    tern::v1::Rollout rollout;
    uint32_t wave = 0;  // 0-based
    // Distinguishes the asks of one wave (a resume asks again).
    uint64_t attempt = 0;
  };
  struct Answer {
    bool allowed = false;
    std::string message;  // "HTTP 403: \"change freeze until Monday\"", ...
  };
  using Done = std::function<void(const Ask&, const Answer&)>;

  WebhookGates(std::vector<WebhookTarget> targets, std::unique_ptr<WebhookTransport> transport, const Clock& clock,
               Metrics& metrics, Millis retry_delay = Millis(1'000));
  ~WebhookGates();
  WebhookGates(const WebhookGates&) = delete;
  WebhookGates& operator=(const WebhookGates&) = delete;

  bool has(const std::string& webhook) const { return targets_.count(webhook) > 0; }
  std::vector<std::string> names() const;

  void start();
  // Queues an ask; thread-safe. An unknown webhook is answered "no" at once.
  void ask(Ask ask, Done done);
  // Finishes the ask in flight, drops the rest, joins.
  void stop();

  // The request body of an ask.
  static std::string payload(const Ask& ask, int64_t time_ms);

 private:
  Answer put(const Ask& ask);
  void run();

  std::map<std::string, WebhookTarget> targets_;
  std::unique_ptr<WebhookTransport> transport_;
  const Clock& clock_;
  Metrics& metrics_;
  const Millis retry_delay_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<Ask, Done>> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tern
