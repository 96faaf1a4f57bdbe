#include "coordinator/host_registry.h"

#include <spdlog/spdlog.h>

#include "core/status_fmt.h"

#include "absl/strings/str_cat.h"
#include "core/duration.h"

namespace tern {

HostRegistry::HostRegistry(HostStore& store, const Clock& clock, Options options, Metrics* metrics)
    : store_(store), clock_(clock), options_(options), metrics_(metrics) {
  if (metrics_ == nullptr) return;
  for (HostState s : {HostState::kConnected, HostState::kDisconnected, HostState::kUnreachable}) {
    state_gauges_[static_cast<int>(s)] = &metrics_->gauge(
        "tern_hosts", "Hosts in the registry by state.", absl::StrCat("state=\"", host_state_name(s), "\""));
  }
}

absl::Status HostRegistry::load() {
  auto all = store_.load_all();
  if (!all.ok()) return all.status();
  const TimePoint now = clock_.now();
  hosts_.clear();
  for (HostRecord& r : *all) {
    Entry e;
    e.record = std::move(r);
    e.heard_from = now;
    e.persisted_last_seen = e.record.last_seen;
    e.counted = true;
    ++state_counts_[static_cast<int>(e.record.state)];
    const std::string id = e.record.host_id;
    auto [it, inserted] = hosts_.emplace(id, std::move(e));
    if (it->second.record.state == HostState::kConnected) {
      if (auto st = transition(it->second, HostState::kDisconnected, "disconnected", "coordinator restarted");
          !st.ok()) {
        return st;
      }
    }
  }
  publish_gauges();
  spdlog::info("host registry loaded: {} hosts", hosts_.size());
  return absl::OkStatus();
}

absl::Status HostRegistry::transition(Entry& e, HostState to, const std::string& kind, const std::string& detail) {
  HostRecord next = e.record;
  next.state = to;
  next.state_since = clock_.now();
  HostEventRecord ev{next.host_id, next.state_since, kind, detail};
  // Persist first: what ternctl shows must survive a crash right after.
  if (auto st = store_.save(next, &ev); !st.ok()) return st;
  if (e.counted) --state_counts_[static_cast<int>(e.record.state)];
  ++state_counts_[static_cast<int>(to)];
  e.counted = true;
  e.record = std::move(next);
  e.persisted_last_seen = e.record.last_seen;
  publish_gauges();
  return absl::OkStatus();
}

absl::StatusOr<HostRegistry::HelloResult> HostRegistry::on_hello(uint64_t session, const std::string& host_id,
                                                                 const Labels& labels,
                                                                 const std::string& agent_version,
                                                                 const std::string& peer) {
  const TimePoint now = clock_.now();
  HelloResult result;
  auto [it, is_new] = hosts_.try_emplace(host_id);
  Entry& e = it->second;
  if (is_new) {
    e.record.host_id = host_id;
    e.record.first_seen = now;
  } else if (e.session != 0 && e.session != session) {
    result.superseded_session = e.session;
  }
  HostRecord before = e.record;
  e.session = session;
  e.heard_from = now;
  e.record.labels = labels;
  e.record.agent_version = agent_version;
  e.record.peer = peer;
  e.record.last_seen = now;
  e.record.connect_count += 1;
  std::string detail = absl::StrCat("from ", peer, ", agent ", agent_version);
  if (!is_new && before.labels != labels) {
    absl::StrAppend(&detail, ", labels ", format_labels(before.labels), " -> ", format_labels(labels));
  }
  auto st = transition(e, HostState::kConnected, is_new ? "registered" : "connected", detail);
  if (!st.ok()) {
    // Leave the in-memory view as the store has it.
    if (is_new) {
      hosts_.erase(it);
    } else {
      e.record = before;
      e.session = 0;
    }
    return st;
  }
  spdlog::info("host {} {} ({}; connect #{})", host_id, is_new ? "registered" : "connected", detail,
               e.record.connect_count);
  return result;
}

bool HostRegistry::on_heartbeat(uint64_t session, const std::string& host_id) {
  auto it = hosts_.find(host_id);
  if (it == hosts_.end() || it->second.session != session) return false;
  Entry& e = it->second;
  const TimePoint now = clock_.now();
  e.heard_from = now;
  e.record.last_seen = now;
  if (e.record.state == HostState::kUnreachable) {
    // A stream that went silent (e.g. a network partition) came back.
    if (auto st = transition(e, HostState::kConnected, "connected", "heartbeats resumed"); !st.ok()) {
      spdlog::error("host {}: cannot record recovery: {}", host_id, st.message());
    } else {
      spdlog::info("host {} reachable again (heartbeats resumed)", host_id);
      return true;
    }
  }
  return false;
}

absl::Status HostRegistry::set_cordon(const std::string& host_id, bool cordoned, const std::string& reason,
                                      const std::string& by) {
  auto it = hosts_.find(host_id);
  if (it == hosts_.end()) {
    return absl::NotFoundError(
        absl::StrCat("no host \"", host_id, "\" in the registry; `ternctl hosts` lists the known ones"));
  }
  HostRecord next = it->second.record;
  next.cordoned = cordoned;
  next.cordon_reason = cordoned ? reason : "";
  const HostEventRecord event{host_id, clock_.now(), cordoned ? "cordoned" : "uncordoned",
                              absl::StrCat("by ", by.empty() ? "an operator" : by,
                                           reason.empty() ? "" : absl::StrCat(": ", reason))};
  if (auto st = store_.save(next, &event); !st.ok()) return st;
  it->second.record = std::move(next);
  return absl::OkStatus();
}

void HostRegistry::set_slot_placement(const std::string& host_id, const std::string& placement) {
  // An agent's own words: bounded, like everything it sends.
  if (auto it = hosts_.find(host_id); it != hosts_.end()) it->second.slot_placement = placement.substr(0, 512);
}

void HostRegistry::set_usage(uint64_t session, const std::string& host_id,
                             const google::protobuf::RepeatedPtrField<tern::v1::SlotUsage>& usage) {
  auto it = hosts_.find(host_id);
  if (it == hosts_.end() || it->second.session != session) return;
  constexpr int kMaxSlots = 1024;  // two per service; more is not an agent's report
  it->second.usage.assign(usage.begin(), usage.begin() + std::min(usage.size(), kMaxSlots));
}

absl::Status HostRegistry::on_stream_closed(uint64_t session, const std::string& host_id, const std::string& reason) {
  auto it = hosts_.find(host_id);
  if (it == hosts_.end() || it->second.session != session) return absl::OkStatus();
  Entry& e = it->second;
  e.session = 0;
  e.usage.clear();
  if (e.record.state != HostState::kConnected) return absl::OkStatus();
  // The grace runs from the disconnect: until then the host was there.
  e.heard_from = clock_.now();
  spdlog::warn("host {} disconnected: {}", host_id, reason);
  return transition(e, HostState::kDisconnected, "disconnected", reason);
}

absl::Status HostRegistry::tick() {
  const TimePoint now = clock_.now();
  std::vector<std::pair<std::string, TimePoint>> flush;
  absl::Status first_error;
  for (auto& [id, e] : hosts_) {
    const Millis silent = std::chrono::duration_cast<Millis>(now - e.heard_from);
    if (e.record.state != HostState::kUnreachable && silent > options_.unreachable_after) {
      std::string detail = absl::StrCat("no word for ", format_duration(silent), " (grace ",
                                        format_duration(options_.unreachable_after), ")");
      spdlog::warn("host {} unreachable: {}", id, detail);
      if (auto st = transition(e, HostState::kUnreachable, "unreachable", detail); !st.ok() && first_error.ok()) {
        first_error = st;
      }
      continue;
    }
    if (e.record.last_seen - e.persisted_last_seen >= options_.last_seen_flush) {
      flush.emplace_back(id, e.record.last_seen);
    }
  }
  if (auto st = store_.save_last_seen(flush); !st.ok()) {
    if (first_error.ok()) first_error = st;
  } else {
    for (const auto& [id, t] : flush) hosts_[id].persisted_last_seen = t;
  }
  return first_error;
}

std::vector<const HostRegistry::Entry*> HostRegistry::list(const LabelSelector& selector) const {
  std::vector<const Entry*> out;
  for (const auto& [id, e] : hosts_) {
    if (selector.matches(e.record.labels)) out.push_back(&e);
  }
  return out;
}

const HostRegistry::Entry* HostRegistry::find(const std::string& host_id) const {
  auto it = hosts_.find(host_id);
  return it == hosts_.end() ? nullptr : &it->second;
}

size_t HostRegistry::connected_count() const {
  return static_cast<size_t>(state_counts_[static_cast<int>(HostState::kConnected)]);
}

void HostRegistry::publish_gauges() {
  if (metrics_ == nullptr) return;
  for (int i = 0; i < 3; ++i) state_gauges_[i]->store(state_counts_[i]);
}

}  // namespace tern
