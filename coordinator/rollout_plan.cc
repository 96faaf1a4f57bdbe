#include "coordinator/rollout_plan.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"

namespace tern {

std::vector<uint32_t> wave_targets(const tern::v1::RolloutSpec& spec, uint32_t total) {
  std::vector<uint32_t> out;
  uint32_t covered = 0;
  for (const auto& w : spec.waves()) {
    uint32_t target = 0;
    if (w.size_case() == tern::v1::Wave::kHosts) {
      target = w.hosts();
    } else {
      // Ceiling of percent * total / 100, and never zero for a non-empty fleet.
      target = static_cast<uint32_t>((static_cast<uint64_t>(w.percent()) * total + 99) / 100);
      if (target == 0 && total > 0) target = 1;
    }
    covered = std::max(covered, std::min(target, total));
    out.push_back(covered);
  }
  if (!out.empty()) out.back() = total;
  return out;
}

std::vector<PlanHost> spread_order(std::vector<PlanHost> hosts, const std::string& label) {
  std::sort(hosts.begin(), hosts.end(), [](const PlanHost& a, const PlanHost& b) { return a.host_id < b.host_id; });
  if (label.empty()) return hosts;
  std::map<std::string, std::vector<PlanHost>> groups;  // "" sorts first; moved last below
  std::vector<PlanHost> unlabelled;
  for (auto& h : hosts) {
    auto it = h.labels.find(label);
    if (it == h.labels.end()) {
      unlabelled.push_back(std::move(h));
    } else {
      groups[it->second].push_back(std::move(h));
    }
  }
  std::vector<std::vector<PlanHost>*> order;
  for (auto& [value, g] : groups) order.push_back(&g);
  if (!unlabelled.empty()) order.push_back(&unlabelled);
  std::vector<PlanHost> out;
  for (std::size_t round = 0;; ++round) {
    bool any = false;
    for (auto* g : order) {
      if (round < g->size()) {
        out.push_back(std::move((*g)[round]));
        any = true;
      }
    }
    if (!any) break;
  }
  return out;
}

absl::StatusOr<RolloutPlanResult> plan_rollout(const tern::v1::RolloutSpec& spec, std::vector<PlanHost> eligible) {
  if (eligible.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no hosts to roll ", spec.service(), " out to: none is selected by the service and the rollout selector \"",
        spec.selector(), "\" (`ternctl hosts` lists the fleet)"));
  }
  const auto ordered = spread_order(std::move(eligible), spec.spread_label());
  const auto targets = wave_targets(spec, static_cast<uint32_t>(ordered.size()));
  RolloutPlanResult plan;
  uint32_t taken = 0;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    WavePlan w;
    for (; taken < targets[i]; ++taken) w.host_ids.push_back(ordered[taken].host_id);
    if (w.host_ids.empty()) {
      const auto& wave = spec.waves(static_cast<int>(i));
      return absl::InvalidArgumentError(absl::StrCat(
          "waves[", i, "] (", wave.size_case() == tern::v1::Wave::kPercent ? absl::StrCat(wave.percent(), "%")
                                                                            : absl::StrCat(wave.hosts(), " hosts"),
          ") adds no hosts: on these ", ordered.size(), " hosts the waves before it already reach ", taken,
          "; drop it or make it larger (`ternctl rollout plan` shows the hosts of each wave)"));
    }
    plan.waves.push_back(std::move(w));
  }
  const auto& last = spec.waves(spec.waves_size() - 1);
  const bool last_is_all = last.size_case() == tern::v1::Wave::kPercent ? last.percent() == 100
                                                                          : last.hosts() >= ordered.size();
  if (!last_is_all) {
    plan.warnings.push_back(absl::StrCat("the last wave covers the remaining hosts (", ordered.size(),
                                         " in all), beyond the size it names"));
  }
  return plan;
}

}  // namespace tern
