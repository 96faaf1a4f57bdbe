#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/config.h"
#include "tern/v1/rollout.pb.h"

namespace tern {

// Webhooks: what a receiver is told of a rollout event, and how it can
// check that the coordinator said it. The outbox (webhook_outbox.h) keeps
// the deliveries; the sender (webhook_sender.h) makes them.

// An event's name in webhook configs and payloads: its word (core/words.h)
// with spaces written as "_" ("rolling_back"), as the metrics label it.
std::string webhook_event_name(tern::v1::RolloutEventKind kind);
// The inverse; accepts the word with spaces too. nullopt for an unknown one.
std::optional<tern::v1::RolloutEventKind> webhook_event_kind(const std::string& name);
// What a webhook that names no events is sent: every rollout-level event
// (started, paused, resumed, succeeded, failed, rolling back, rolled back,
// aborted, wave started, awaiting approval, analysis verdicts, a host
// failed), not the per-host progress of a large fleet.
const std::set<tern::v1::RolloutEventKind>& webhook_default_events();

// The `webhooks:` list and webhook_max_age of a config: names unique and
// plain, URLs http(s) with a host, known event words, a secret file given.
// Errors name the key ("webhooks[1].url") and the reason.
absl::Status validate_webhooks(const CoordinatorConfig& cfg);

// One configured webhook, ready to send: its secret read.
struct WebhookTarget {
  std::string name;
  std::string url;
  std::string secret;
  std::set<tern::v1::RolloutEventKind> events;
  std::string ca_file;
  Millis timeout{10'000};
};
// Reads each webhook's secret file; an absent, unreadable or empty one is an
// error naming the key and the file (the coordinator then refuses to start).
absl::StatusOr<std::vector<WebhookTarget>> load_webhook_targets(const CoordinatorConfig& cfg);

// A delivery's id: "<rollout id>:<event sequence>". The journal's sequence
// is unique across rollouts, so the id is too; a receiver dedups by it.
std::string webhook_delivery_id(const std::string& rollout_id, uint64_t sequence);

// The JSON body of one event, from the journal entry that records it:
// {"id", "event", "rollout", "service", "release", "wave", "phase",
// "message", "time"} with time in RFC 3339 (UTC).
std::string webhook_payload(const std::string& id, tern::v1::RolloutEventKind kind,
                            const tern::v1::Rollout& summary, const std::string& message, int64_t time_ms);

// "sha256=<lowercase hex of HMAC-SHA256(secret, body)>", the value of the
// X-Tern-Signature header.
std::string webhook_signature(const std::string& secret, const std::string& body);

}  // namespace tern
