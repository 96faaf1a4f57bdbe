#include "coordinator/webhook_sender.h"

#include <curl/curl.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/bounded_body.h"
#include "core/status_fmt.h"

namespace tern {
namespace {

// Enough of an answer to quote in a log line; the rest is not read.
constexpr size_t kMaxReplyBytes = 4 << 10;
constexpr size_t kQuotedReplyChars = 200;
// The sender looks at the outbox at least this often even when nobody wakes
// it: rows of a webhook held back, pruning.
constexpr Millis kIdleLook{30'000};

void init_curl_once() {
  static std::once_flag once;
  std::call_once(once, [] { ::curl_global_init(CURL_GLOBAL_DEFAULT); });
}

class CurlTransport final : public WebhookTransport {
 public:
  absl::StatusOr<Reply> post(const WebhookTarget& target, const std::vector<std::string>& headers,
                             const std::string& body) override {
    init_curl_once();
    std::unique_ptr<CURL, void (*)(CURL*)> curl(::curl_easy_init(), ::curl_easy_cleanup);
    if (curl == nullptr) return absl::ResourceExhaustedError("cannot create a libcurl handle");
    std::unique_ptr<curl_slist, void (*)(curl_slist*)> list(nullptr, ::curl_slist_free_all);
    for (const auto& h : headers) {
      curl_slist* next = ::curl_slist_append(list.get(), h.c_str());
      if (next == nullptr) return absl::ResourceExhaustedError("cannot build the request's headers");
      (void)list.release();
      list.reset(next);
    }
    BoundedBody reply_body(kMaxReplyBytes);
    char error[CURL_ERROR_SIZE] = {};
    CURL* c = curl.get();
    const bool https = target.url.rfind("https", 0) == 0 || target.url.rfind("HTTPS", 0) == 0;
    ::curl_easy_setopt(c, CURLOPT_URL, target.url.c_str());
    ::curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, https ? "https" : "http");
    ::curl_easy_setopt(c, CURLOPT_PROXY, "");  // never through a proxy from the environment
    ::curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    ::curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    ::curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(target.timeout.count()));
    ::curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(target.timeout.count()));
    ::curl_easy_setopt(c, CURLOPT_USERAGENT, "tern-coordinator-webhook");
    ::curl_easy_setopt(c, CURLOPT_HTTPHEADER, list.get());
    ::curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
    ::curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
    ::curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, append_bounded);
    ::curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply_body);
    ::curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
    ::curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    ::curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!target.ca_file.empty()) {
      // Only this CA: without clearing CAPATH libcurl would trust the system's too.
      ::curl_easy_setopt(c, CURLOPT_CAINFO, target.ca_file.c_str());
      ::curl_easy_setopt(c, CURLOPT_CAPATH, nullptr);
    }
    const CURLcode rc = ::curl_easy_perform(c);
    Reply reply;
    ::curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply.status);
    reply.body = std::move(reply_body.text);
    // A long answer is cut off on purpose: its status is what counts.
    if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && reply_body.too_big && reply.status != 0)) {
      const std::string why = error[0] != 0 ? error : ::curl_easy_strerror(rc);
      if (rc == CURLE_OPERATION_TIMEDOUT) {
        return absl::DeadlineExceededError(absl::StrCat("no answer within ", target.timeout.count(), "ms: ", why));
      }
      return absl::UnavailableError(why);
    }
    return reply;
  }
};

std::string quoted(std::string text) {
  if (text.size() > kQuotedReplyChars) text = text.substr(0, kQuotedReplyChars) + "...";
  for (char& c : text) {
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  }
  return text;
}

}  // namespace

std::unique_ptr<WebhookTransport> curl_webhook_transport() { return std::make_unique<CurlTransport>(); }

WebhookSender::WebhookSender(std::unique_ptr<Database> db, std::unique_ptr<WebhookOutbox> outbox,
                             std::unique_ptr<WebhookTransport> transport, const Clock& clock, Options options)
    : db_(std::move(db)),
      outbox_(std::move(outbox)),
      transport_(std::move(transport)),
      clock_(clock),
      options_(options) {}

absl::StatusOr<std::unique_ptr<WebhookSender>> WebhookSender::create(std::vector<WebhookTarget> targets,
                                                                     std::unique_ptr<Database> db,
                                                                     std::unique_ptr<WebhookTransport> transport,
                                                                     const Clock& clock, Metrics& metrics,
                                                                     Options options) {
  auto outbox = WebhookOutbox::open(*db);
  if (!outbox.ok()) return outbox.status();
  std::unique_ptr<WebhookSender> s(
      new WebhookSender(std::move(db), *std::move(outbox), std::move(transport), clock, options));
  for (auto& t : targets) {
    auto hook = std::make_unique<Hook>(Hook{std::move(t), Backoff(options.backoff)});
    const std::string name = hook->target.name;
    auto result = [&](const char* r) {
      return &metrics.counter("tern_webhook_deliveries_total",
                              "Webhook delivery attempts, by webhook and result (delivered, failed, given_up).",
                              absl::StrCat("webhook=\"", name, "\",result=\"", r, "\""));
    };
    hook->delivered = result("delivered");
    hook->failed = result("failed");
    hook->given_up = result("given_up");
    hook->pending = &metrics.gauge("tern_webhook_pending", "Webhook deliveries not yet delivered or given up.",
                                   absl::StrCat("webhook=\"", name, "\""));
    s->hooks_.push_back(std::move(hook));
  }
  s->settle_orphans();
  s->count_pending();
  return s;
}

WebhookSender::~WebhookSender() { stop(); }

void WebhookSender::start() {
  if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
}

void WebhookSender::wake() {
  {
    std::lock_guard lock(mu_);
    woken_ = true;
  }
  cv_.notify_all();
}

void WebhookSender::stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool WebhookSender::stopping() {
  std::lock_guard lock(mu_);
  return stop_;
}

void WebhookSender::settle_orphans() {
  auto pending = outbox_->pending();
  if (!pending.ok()) {
    spdlog::error("webhooks: cannot read the outbox: {}", pending.status().message());
    return;
  }
  for (const auto& [webhook, count] : *pending) {
    // A structured binding cannot be captured by a lambda in C++20 on every
    // compiler (clang 14 refuses it); the lambda gets a plain variable.
    const std::string& name = webhook;
    const bool known = std::any_of(hooks_.begin(), hooks_.end(), [&](const auto& h) { return h->target.name == name; });
    if (known) continue;
    spdlog::error("webhooks: {} delivery(ies) for webhook {} are given up: it is no longer in the config", count, name);
    for (;;) {
      auto d = outbox_->next(name);
      if (!d.ok() || !d->has_value()) break;
      if (!outbox_->given_up((*d)->row, "the webhook is no longer configured", to_unix_millis(clock_.now())).ok()) {
        break;
      }
    }
  }
}

void WebhookSender::count_pending() {
  auto pending = outbox_->pending();
  if (!pending.ok()) return;
  for (auto& h : hooks_) {
    auto it = pending->find(h->target.name);
    h->pending->store(it == pending->end() ? 0 : it->second);
  }
}

void WebhookSender::run() {
  TimePoint next_prune{};
  for (;;) {
    if (stopping()) return;
    const TimePoint now = clock_.now();
    for (auto& h : hooks_) {
      if (now >= h->hold_until) drain(*h);
      if (stopping()) return;
    }
    count_pending();
    if (now >= next_prune) {
      next_prune = now + Millis(3'600'000);
      if (auto gone = outbox_->prune(to_unix_millis(now - options_.keep_settled)); !gone.ok()) {
        spdlog::warn("webhooks: cannot prune settled deliveries: {}", gone.status().message());
      }
    }
    // Sleep until the first held-back webhook may try again, a wake() or the idle look.
    TimePoint until = clock_.now() + kIdleLook;
    for (const auto& h : hooks_) {
      if (h->hold_until > clock_.now()) until = std::min(until, h->hold_until);
    }
    const auto wait = std::max(Millis(1), std::chrono::duration_cast<Millis>(until - clock_.now()));
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, wait, [this] { return stop_ || woken_; });
    woken_ = false;
  }
}

void WebhookSender::drain(Hook& h) {
  for (;;) {
    if (stopping()) return;
    auto next = outbox_->next(h.target.name);
    if (!next.ok()) {
      spdlog::error("webhooks: cannot read the outbox: {}", next.status().message());
      h.hold_until = h.backoff.next_attempt(clock_.now());
      return;
    }
    if (!next->has_value()) return;
    const auto& d = **next;
    const int64_t now_ms = to_unix_millis(clock_.now());
    if (now_ms - d.created_ms > options_.max_age.count()) {
      spdlog::error("webhook {}: delivery {} given up after {} attempt(s) over {}s; the receiver never took it",
                    h.target.name, d.delivery_id, d.attempts, options_.max_age.count() / 1000);
      if (auto st = outbox_->given_up(d.row, "older than webhook_max_age", now_ms); !st.ok()) {
        spdlog::error("webhooks: cannot record a given-up delivery: {}", st.message());
        h.hold_until = h.backoff.next_attempt(clock_.now());
        return;
      }
      h.given_up->fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    const std::vector<std::string> headers{
        "Content-Type: application/json",
        absl::StrCat("X-Tern-Delivery: ", d.delivery_id),
        absl::StrCat("X-Tern-Signature: ", webhook_signature(h.target.secret, d.body)),
        "Expect:",  // no 100-continue round trip for a small body
    };
    auto reply = transport_->post(h.target, headers, d.body);
    std::string error;
    if (!reply.ok()) {
      error = std::string(reply.status().message());
    } else if (reply->status < 200 || reply->status > 299) {
      error = absl::StrCat("HTTP ", reply->status, reply->body.empty() ? "" : ": ", quoted(reply->body));
    }
    if (error.empty()) {
      h.backoff.reset();
      if (auto st = outbox_->delivered(d.row, to_unix_millis(clock_.now())); !st.ok()) {
        // The receiver has it; a later attempt sends it again under the same id.
        spdlog::error("webhooks: cannot record delivery {}: {}", d.delivery_id, st.message());
        h.hold_until = h.backoff.next_attempt(clock_.now());
        return;
      }
      h.delivered->fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    h.failed->fetch_add(1, std::memory_order_relaxed);
    h.hold_until = h.backoff.next_attempt(clock_.now());
    spdlog::warn("webhook {}: delivery {} failed (attempt {}): {}; trying again in {}ms", h.target.name, d.delivery_id,
                 d.attempts + 1, error, (h.hold_until - clock_.now()).count());
    (void)outbox_->attempt_failed(d.row, error);
    return;
  }
}

}  // namespace tern
