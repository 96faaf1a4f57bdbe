#include "coordinator/service_catalog.h"

#include <google/protobuf/util/message_differencer.h>
#include <google/protobuf/util/time_util.h>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "core/status_fmt.h"
#include "core/label_selector.h"
#include "core/service_spec.h"
#include "core/words.h"

namespace tern {
namespace {

bool selects(const tern::v1::ServiceRecord& svc, const Labels& labels) {
  auto sel = LabelSelector::parse(svc.spec().selector());
  return sel.ok() && sel->matches(labels);
}

}  // namespace

std::string drift(const tern::v1::ServiceStatus& reported, const std::string& version, uint32_t weight) {
  for (const auto& s : reported.slots()) {
    if (!s.active()) continue;
    const std::string& runs = s.release().version();
    if (runs != version) return absl::StrCat("runs ", runs.empty() ? "nothing" : runs, ", not ", version);
    if (s.phase() != tern::v1::SLOT_PHASE_HEALTHY) return absl::StrCat(version, " is ", word(s.phase()));
    if (effective_weight(s.weight()) != effective_weight(weight)) {
      return absl::StrCat(version, " gets ", effective_weight(s.weight()), "% of new connections, not ",
                          effective_weight(weight), "%");
    }
    return "";
  }
  return absl::StrCat("nothing is active, not ", version);
}

absl::Status ServiceCatalog::load() {
  auto services = store_.load_services();
  if (!services.ok()) return services.status();
  for (auto& r : *services) services_[r.spec().name()] = std::move(r);
  auto desired = store_.load_desired();
  if (!desired.ok()) return desired.status();
  for (auto& d : *desired) desired_[d.host_id][d.service] = std::move(d);
  return absl::OkStatus();
}

void ServiceCatalog::set_desired(const std::string& host_id, const std::string& service, const std::string& version,
                                 uint32_t weight) {
  ServiceStore::Desired d{host_id, service, version, effective_weight(weight)};
  if (auto st = store_.save_desired(d); !st.ok()) {
    spdlog::error("host {}: cannot record that it should run {} {}: {}", host_id, service, version, st.message());
  }
  desired_[host_id][service] = std::move(d);
}

absl::StatusOr<tern::v1::ApplyServiceResponse> ServiceCatalog::apply_service(const tern::v1::ApplyServiceRequest& req) {
  const auto& spec = req.spec();
  // What is stored here is sent to every selected agent: never store a spec they would refuse or could not receive.
  if (auto st = validate_service_spec(spec); !st.ok()) return st;
  for (const auto& [name, other] : services_) {
    if (name == spec.name()) continue;
    if (auto st = check_ports_free(spec, other.spec()); !st.ok()) return st;
  }
  tern::v1::ApplyServiceResponse resp;
  auto it = services_.find(spec.name());
  const uint64_t have = it == services_.end() ? 0 : it->second.generation();
  if (req.expected_generation() != 0 && req.expected_generation() != have) {
    return absl::FailedPreconditionError(absl::StrCat("service ", spec.name(), " is at generation ", have,
                                                      ", not ", req.expected_generation(),
                                                      "; someone changed it meanwhile: re-read and apply again"));
  }
  if (it != services_.end() && google::protobuf::util::MessageDifferencer::Equals(it->second.spec(), spec)) {
    *resp.mutable_service() = it->second;
    resp.set_changed(false);
    return resp;
  }
  tern::v1::ServiceRecord rec;
  if (it != services_.end()) rec = it->second;
  *rec.mutable_spec() = spec;
  rec.set_generation(have + 1);
  *rec.mutable_updated() = google::protobuf::util::TimeUtil::MillisecondsToTimestamp(to_unix_millis(clock_.now()));
  if (auto st = store_.save_service(rec); !st.ok()) return st;
  services_[spec.name()] = rec;
  spdlog::info("service {} applied (generation {})", spec.name(), rec.generation());
  for (const auto* e : registry_.list(LabelSelector{})) {
    if (e->session != 0) push_spec(e->record.host_id, rec);
  }
  *resp.mutable_service() = rec;
  resp.set_changed(true);
  return resp;
}

const tern::v1::ServiceRecord* ServiceCatalog::find(const std::string& name) const {
  auto it = services_.find(name);
  return it == services_.end() ? nullptr : &it->second;
}

absl::StatusOr<tern::v1::ServiceRecord> ServiceCatalog::get_service(const std::string& name) {
  if (const auto* svc = find(name)) return *svc;
  return absl::NotFoundError(absl::StrCat("no service \"", name, "\"; `ternctl service list` shows them"));
}

std::vector<tern::v1::ServiceRecord> ServiceCatalog::list_services() {
  std::vector<tern::v1::ServiceRecord> out;
  for (const auto& [name, r] : services_) out.push_back(r);
  return out;
}

absl::Status ServiceCatalog::delete_service(const std::string& name) {
  if (services_.count(name) == 0) return absl::NotFoundError(absl::StrCat("no service \"", name, "\""));
  if (auto st = store_.delete_service(name); !st.ok()) return st;
  services_.erase(name);
  for (auto& [host, wants] : desired_) wants.erase(name);
  for (auto& [host, svcs] : host_services_) {
    if (svcs.count(name) == 0) continue;
    tern::v1::Command cmd;
    cmd.mutable_remove_service()->set_service(name);
    const std::string h = host;
    auto st = commands_.send(h, cmd, CommandObserver{nullptr, [this, h, name](const tern::v1::CommandResult& r) {
                                                        if (r.outcome() == tern::v1::COMMAND_OUTCOME_SUCCEEDED) {
                                                          host_services_[h].erase(name);
                                                        }
                                                      }});
    if (!st.ok()) spdlog::warn("service {} deleted, but host {} could not be told: {}", name, host, st.message());
  }
  return absl::OkStatus();
}

absl::StatusOr<tern::v1::Artifact> ServiceCatalog::register_artifact(const tern::v1::Artifact& artifact,
                                                                     const std::string& file_name) {
  if (services_.count(artifact.service()) == 0) {
    return absl::FailedPreconditionError(absl::StrCat("no service \"", artifact.service(),
                                                      "\"; apply its spec before pushing artifacts"));
  }
  auto existing = store_.find_artifact(artifact.service(), artifact.version());
  if (!existing.ok()) return existing.status();
  if (existing->has_value()) {
    const auto& [have, name] = **existing;
    if (have.sha256() == artifact.sha256() && have.url() == artifact.url()) return have;  // the same again
    return absl::AlreadyExistsError(absl::StrCat(artifact.service(), " ", artifact.version(),
                                                 " already exists with sha256 ", have.sha256().substr(0, 12),
                                                 "; versions are immutable, push this build as a new version"));
  }
  tern::v1::Artifact a = artifact;
  *a.mutable_created() = google::protobuf::util::TimeUtil::MillisecondsToTimestamp(to_unix_millis(clock_.now()));
  a.set_file_name(file_name);
  if (auto st = store_.save_artifact(a, file_name); !st.ok()) return st;
  if (a.url().empty()) {
    spdlog::info("artifact {} {} stored ({} bytes, sha256 {})", a.service(), a.version(), a.size(), a.sha256());
  } else {
    spdlog::info("artifact {} {} registered at {} (sha256 {})", a.service(), a.version(), a.url(), a.sha256());
  }
  return a;
}

absl::StatusOr<std::vector<tern::v1::Artifact>> ServiceCatalog::list_artifacts(const std::string& service) {
  return store_.list_artifacts(service);
}

absl::StatusOr<tern::v1::ReleaseRef> ServiceCatalog::release(const std::string& service, const std::string& version) {
  auto found = store_.find_artifact(service, version);
  if (!found.ok()) return found.status();
  if (!found->has_value()) {
    return absl::NotFoundError(absl::StrCat("no artifact for ", service, " ", version,
                                            "; push it first: ternctl artifact push FILE --service ", service,
                                            " --version ", version, " (or, for a release elsewhere, an admin "
                                            "registers it: ternctl artifact register --url URL --sha256 HEX)"));
  }
  const auto& [artifact, name] = **found;
  tern::v1::ReleaseRef release;
  release.set_version(artifact.version());
  release.set_sha256(artifact.sha256());
  release.set_kind(artifact.kind());
  release.set_name(name);
  release.set_signature(artifact.signature());
  release.set_url(artifact.url());
  return release;
}

absl::Status ServiceCatalog::check_host_for(const std::string& host_id, const tern::v1::ServiceRecord& svc) const {
  const auto* entry = registry_.find(host_id);
  if (entry == nullptr) {
    return absl::NotFoundError(absl::StrCat("no host \"", host_id, "\" in the registry; `ternctl hosts` lists them"));
  }
  if (!selects(svc, entry->record.labels)) {
    return absl::FailedPreconditionError(absl::StrCat("host ", host_id, " is not selected by service ",
                                                      svc.spec().name(), " (selector \"", svc.spec().selector(),
                                                      "\"); change its labels or the selector"));
  }
  if (entry->session == 0) {
    return absl::UnavailableError(absl::StrCat("host ", host_id, " is ", host_state_name(entry->record.state),
                                               "; its agent must be running and connected"));
  }
  return absl::OkStatus();
}

void ServiceCatalog::push_spec(const std::string& host_id, const tern::v1::ServiceRecord& svc) {
  const auto* entry = registry_.find(host_id);
  if (entry == nullptr || !selects(svc, entry->record.labels)) return;
  const auto& known = host_services_[host_id];
  if (auto k = known.find(svc.spec().name()); k != known.end() && k->second.spec_generation() == svc.generation()) {
    return;
  }
  tern::v1::Command cmd;
  *cmd.mutable_apply_service()->mutable_spec() = svc.spec();
  cmd.mutable_apply_service()->set_spec_generation(svc.generation());
  const std::string name = svc.spec().name();
  auto st = commands_.send(host_id, std::move(cmd),
                           CommandObserver{nullptr, [host_id, name](const tern::v1::CommandResult& r) {
                                             if (r.outcome() != tern::v1::COMMAND_OUTCOME_SUCCEEDED) {
                                               spdlog::warn("host {} refused the spec of {}: {}", host_id, name,
                                                            r.message());
                                             }
                                           }});
  if (!st.ok()) spdlog::debug("spec of {} not pushed to {}: {}", name, host_id, st.message());
}

void ServiceCatalog::on_report(const std::string& host_id,
                               const google::protobuf::RepeatedPtrField<tern::v1::ServiceStatus>& services) {
  auto& known = host_services_[host_id];
  known.clear();
  for (const auto& s : services) keep_status(known, s);
}

void ServiceCatalog::on_hello(const std::string& host_id, const tern::v1::Hello& hello) {
  on_report(host_id, hello.services());
  // Specs the host should run (or run a newer generation of).
  for (const auto& [name, svc] : services_) push_spec(host_id, svc);
}

void ServiceCatalog::on_status(const std::string& host_id, const tern::v1::ServiceStatus& status) {
  keep_status(host_services_[host_id], status);
}

void ServiceCatalog::keep_status(std::map<std::string, tern::v1::ServiceStatus>& known,
                                 const tern::v1::ServiceStatus& status) const {
  if (status.service().empty()) return;
  // Services the catalogue knows are always kept; an agent naming others
  // (stale ones, or made-up ones) gets a few, not unbounded memory.
  constexpr std::size_t kMaxUnknownServices = 16;
  if (services_.count(status.service()) == 0 && known.count(status.service()) == 0) {
    std::size_t unknown = 0;
    for (const auto& [name, s] : known) unknown += services_.count(name) == 0;
    if (unknown >= kMaxUnknownServices) return;
  }
  known[status.service()] = status;
}

std::vector<tern::v1::ServiceStatus> ServiceCatalog::host_services(const std::string& host_id) const {
  std::vector<tern::v1::ServiceStatus> out;
  auto it = host_services_.find(host_id);
  if (it == host_services_.end()) return out;
  const auto wants = desired_.find(host_id);
  for (const auto& [name, s] : it->second) {
    auto& status = out.emplace_back(s);
    if (wants == desired_.end()) continue;
    if (auto d = wants->second.find(name); d != wants->second.end()) {
      status.set_desired_version(d->second.version);
      status.set_desired_weight(d->second.weight);
      status.set_drift(drift(s, d->second.version, d->second.weight));
    }
  }
  return out;
}

}  // namespace tern
