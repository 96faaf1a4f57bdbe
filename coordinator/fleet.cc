#include "coordinator/fleet.h"

#include <google/protobuf/util/time_util.h>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "core/status_fmt.h"
#include "core/label_selector.h"
#include "core/service_spec.h"
#include "core/version.h"
#include "core/words.h"

namespace tern {
namespace {

using google::protobuf::util::TimeUtil;

void set_time(TimePoint t, google::protobuf::Timestamp* out) {
  *out = TimeUtil::MillisecondsToTimestamp(to_unix_millis(t));
}

void host_to_proto(const HostRegistry::Entry& entry, tern::v1::Host* out) {
  const HostRecord& r = entry.record;
  out->set_host_id(r.host_id);
  out->mutable_labels()->insert(r.labels.begin(), r.labels.end());
  out->set_agent_version(r.agent_version);
  out->set_state(to_proto(r.state));
  set_time(r.first_seen, out->mutable_first_seen());
  set_time(r.last_seen, out->mutable_last_seen());
  set_time(r.state_since, out->mutable_state_since());
  out->set_connect_count(r.connect_count);
  out->set_peer(r.peer);
  out->set_slot_placement(entry.slot_placement);
  out->set_cordoned(r.cordoned);
  out->set_cordon_reason(r.cordon_reason);
  for (const auto& u : entry.usage) *out->add_usage() = u;
}

}  // namespace

tern::v1::Host Fleet::host_view(const HostRegistry::Entry& entry) const {
  tern::v1::Host h;
  host_to_proto(entry, &h);
  for (auto& svc : catalog_.host_services(entry.record.host_id)) *h.add_services() = std::move(svc);
  return h;
}

absl::StatusOr<std::vector<tern::v1::Host>> Fleet::list_hosts(const std::string& selector) {
  auto sel = LabelSelector::parse(selector);
  if (!sel.ok()) return sel.status();
  std::vector<tern::v1::Host> out;
  for (const auto* entry : registry_.list(*sel)) out.push_back(host_view(*entry));
  return out;
}

absl::StatusOr<tern::v1::Host> Fleet::cordon_host(const std::string& host_id, bool cordoned,
                                                  const std::string& reason, const std::string& by) {
  if (reason.size() > 256) return absl::InvalidArgumentError("a cordon's reason is at most 256 characters");
  if (auto st = registry_.set_cordon(host_id, cordoned, reason, by); !st.ok()) return st;
  return get_host(host_id);
}

absl::StatusOr<tern::v1::Host> Fleet::get_host(const std::string& host_id) {
  const auto* entry = registry_.find(host_id);
  if (entry == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("no host \"", host_id, "\" in the registry; `ternctl hosts` lists the known ones"));
  }
  return host_view(*entry);
}

absl::StatusOr<std::vector<tern::v1::HostEvent>> Fleet::host_history(const std::string& host_id,
                                                                           uint32_t limit) {
  if (registry_.find(host_id) == nullptr) {
    return absl::NotFoundError(absl::StrCat("no host \"", host_id, "\" in the registry"));
  }
  auto events = store_.history(host_id, limit);
  if (!events.ok()) return events.status();
  std::vector<tern::v1::HostEvent> out;
  for (const auto& e : *events) {
    auto& ev = out.emplace_back();
    ev.set_host_id(e.host_id);
    set_time(e.time, ev.mutable_time());
    ev.set_kind(e.kind);
    ev.set_detail(e.detail);
  }
  return out;
}

tern::v1::VersionInfo Fleet::version() {
  tern::v1::VersionInfo v;
  v.set_version(kVersion);
  v.set_epoch(epoch_);
  set_time(started_, v.mutable_started());
  return v;
}

absl::Status Fleet::check_not_in_rollout(const std::string& host, const std::string& service, bool force,
                                         const std::string& what) {
  const auto* r = rollouts_.active_rollout_with(service, host);
  if (r == nullptr) return absl::OkStatus();
  if (!force) {
    return absl::FailedPreconditionError(absl::StrCat(
        "host ", host, " is in rollout ", r->id(), " (", word(r->phase()), ", wave ", r->current_wave() + 1, "/",
        r->spec().waves_size(), "), which would then report what the host does not serve; pause or abort it "
        "first (`ternctl rollout pause ", r->id(), "` or `ternctl rollout abort ", r->id(),
        "`), or pass --force, which the rollout records and marks the host drifted"));
  }
  spdlog::warn("{} on {} by hand during rollout {} (forced)", what, host, r->id());
  rollouts_.host_changed_by_hand(r->id(), host, absl::StrCat(what, " by hand (forced)"));
  return absl::OkStatus();
}

absl::Status Fleet::deploy_host(const tern::v1::DeployHostRequest& req, CommandObserver observer) {
  auto svc = catalog_.get_service(req.service());
  if (!svc.ok()) return svc.status();
  if (auto st = catalog_.check_host_for(req.host_id(), *svc); !st.ok()) return st;
  if (req.weight() > 100) return absl::InvalidArgumentError(absl::StrCat("weight ", req.weight(), " is not 1-100"));
  if (req.has_release()) {
    // A URL a deploy names would let whoever may deploy run any code on the
    // host; what runs is what an admin put in the store.
    return absl::InvalidArgumentError(absl::StrCat(
        "a deploy names a version in the artifact store, not a release by URL; an admin registers a release "
        "that lives elsewhere first (ternctl artifact register --service ", req.service(), " --version ",
        req.release().version().empty() ? "V" : req.release().version(),
        " --url URL --sha256 HEX), then deploy that version"));
  }
  if (req.version().empty()) return absl::InvalidArgumentError("give the version to deploy");
  auto stored = catalog_.release(req.service(), req.version());
  if (!stored.ok()) return stored.status();
  tern::v1::ReleaseRef release = *std::move(stored);
  if (auto st = check_not_in_rollout(req.host_id(), req.service(), req.force(),
                                     absl::StrCat("deploy ", req.service(), " ", release.version()));
      !st.ok()) {
    return st;
  }
  // The agent runs the newest spec before it deploys (same stream, in order).
  catalog_.push_spec(req.host_id(), *svc);
  tern::v1::Command cmd;
  auto* d = cmd.mutable_deploy();
  d->set_service(req.service());
  *d->mutable_release() = release;
  d->set_switch_on_healthy(!req.no_switch());
  d->set_weight(effective_weight(req.weight()));
  d->set_spec_generation(svc->generation());
  spdlog::info("deploying {} {} to {}", req.service(), release.version(), req.host_id());
  // Once the agent has taken the order (whatever came of it), the host
  // should serve the release; until it does, it is drifted. A refused
  // order (the host's policy, a stale epoch) changes nothing.
  auto done = [this, host = req.host_id(), service = req.service(), version = release.version(),
               weight = req.weight(), wanted = !req.no_switch(),
               then = std::move(observer.done)](const tern::v1::CommandResult& r) {
    if (wanted && r.outcome() != tern::v1::COMMAND_OUTCOME_REFUSED) {
      catalog_.set_desired(host, service, version, weight);
    }
    if (then) then(r);
  };
  return commands_.send(req.host_id(), std::move(cmd), CommandObserver{std::move(observer.progress), std::move(done)});
}

absl::Status Fleet::rollback_host(const tern::v1::RollbackHostRequest& req, CommandObserver observer) {
  auto svc = catalog_.get_service(req.service());
  if (!svc.ok()) return svc.status();
  if (auto st = catalog_.check_host_for(req.host_id(), *svc); !st.ok()) return st;
  if (auto st =
          check_not_in_rollout(req.host_id(), req.service(), req.force(), absl::StrCat("rollback ", req.service()));
      !st.ok()) {
    return st;
  }
  tern::v1::Command cmd;
  if (!req.to_version().empty() && !is_valid_version(req.to_version())) {
    return absl::InvalidArgumentError(absl::StrCat("invalid version \"", req.to_version(),
                                                   "\": a version is 1-64 of letters, digits, '.', '_', '+', '-'"));
  }
  cmd.mutable_rollback()->set_service(req.service());
  cmd.mutable_rollback()->set_to_version(req.to_version());
  spdlog::info("rolling back {} on {} to {}", req.service(), req.host_id(),
               req.to_version().empty() ? "its last known-good release" : req.to_version());
  // The agent picks the release (its last known-good, unless named); what it
  // then serves is what the host should serve.
  auto done = [this, host = req.host_id(), service = req.service(),
               then = std::move(observer.done)](const tern::v1::CommandResult& r) {
    if (r.outcome() == tern::v1::COMMAND_OUTCOME_SUCCEEDED) {
      for (const auto& s : r.service().slots()) {
        if (s.active()) catalog_.set_desired(host, service, s.release().version(), s.weight());
      }
    }
    if (then) then(r);
  };
  return commands_.send(req.host_id(), std::move(cmd), CommandObserver{std::move(observer.progress), std::move(done)});
}

}  // namespace tern
