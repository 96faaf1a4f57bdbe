#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/database.h"
#include "coordinator/webhook.h"
#include "coordinator/webhook_outbox.h"
#include "core/backoff.h"
#include "core/clock.h"
#include "core/metrics.h"

namespace tern {

// One HTTP POST to a webhook. Implementations are called from the sender's
// thread only and may block up to the target's timeout.
class WebhookTransport {
 public:
  virtual ~WebhookTransport() = default;
  struct Reply {
    long status = 0;
    std::string body;  // the start of it, for messages
  };
  // The receiver's answer, whatever its status; an error when there was
  // none (refused, timed out, TLS failed).
  virtual absl::StatusOr<Reply> post(const WebhookTarget& target, const std::vector<std::string>& headers,
                                     const std::string& body) = 0;
};
// libcurl: no proxy from the environment, no redirects, the target's CA
// file alone when it names one.
std::unique_ptr<WebhookTransport> curl_webhook_transport();

// Delivers the outbox on a thread of its own, never the event loop's, over a
// database connection of its own.
//
// Each webhook's deliveries go in the order their events were journaled, one
// at a time: a 2xx settles the row; anything else (another status, no answer)
// holds that webhook back for a jittered exponential backoff and tries the
// same row again, until the row is older than max_age: then it is given up,
// logged as an error and counted. One webhook's outage never holds up another.
// A crash between a receiver's 2xx and the row's update sends that delivery
// again after the restart: receivers dedup by X-Tern-Delivery.
//
// Metrics (created at construction, so increase() works from zero):
// tern_webhook_deliveries_total{webhook,result} with result delivered, failed
// (an attempt) or given_up; tern_webhook_pending{webhook}.
//
// wake() is thread-safe; the rest is for the owner's thread.
class WebhookSender {
 public:
  struct Options {
    Millis max_age{24LL * 3600 * 1000};
    BackoffPolicy backoff{Millis(1'000), Millis(300'000), 2.0, 0.2};
    // Settled rows are kept this long, for `sqlite3` and support questions.
    Millis keep_settled{7LL * 24 * 3600 * 1000};
  };
  // `db` is the sender's own connection to the coordinator's database.
  static absl::StatusOr<std::unique_ptr<WebhookSender>> create(std::vector<WebhookTarget> targets,
                                                               std::unique_ptr<Database> db,
                                                               std::unique_ptr<WebhookTransport> transport,
                                                               const Clock& clock, Metrics& metrics, Options options);
  ~WebhookSender();
  WebhookSender(const WebhookSender&) = delete;
  WebhookSender& operator=(const WebhookSender&) = delete;

  void start();
  // New rows were committed: look now rather than at the next timer.
  void wake();
  // Finishes the attempt in flight (up to its timeout), then joins.
  void stop();

 private:
  struct Hook {
    WebhookTarget target;
    Backoff backoff;
    TimePoint hold_until{};
    Metrics::Value* delivered = nullptr;
    Metrics::Value* failed = nullptr;
    Metrics::Value* given_up = nullptr;
    Metrics::Value* pending = nullptr;
  };
  WebhookSender(std::unique_ptr<Database> db, std::unique_ptr<WebhookOutbox> outbox,
                std::unique_ptr<WebhookTransport> transport, const Clock& clock, Options options);
  void run();
  // Sends what `hook` owes until it is empty or an attempt fails.
  void drain(Hook& hook);
  // Rows of webhooks no longer configured are given up at start.
  void settle_orphans();
  void count_pending();
  bool stopping();

  std::unique_ptr<Database> db_;
  std::unique_ptr<WebhookOutbox> outbox_;
  std::unique_ptr<WebhookTransport> transport_;
  const Clock& clock_;
  Options options_;
  std::vector<std::unique_ptr<Hook>> hooks_;  // sender thread only, after start()

  std::mutex mu_;
  std::condition_variable cv_;
  bool woken_ = false;  // guarded
  bool stop_ = false;   // guarded
  std::thread thread_;
};

}  // namespace tern
