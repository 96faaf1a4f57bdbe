#include "ctl/rollout_view.h"

#include <google/protobuf/util/time_util.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/duration.h"
#include "core/words.h"
#include "ctl/ctl_internal.h"

namespace tern {
namespace {

using google::protobuf::util::TimeUtil;

constexpr int kBarWidth = 20;
constexpr size_t kAwayNamed = 5;

bool failed_state(tern::v1::HostRolloutState s) {
  return s == tern::v1::HOST_ROLLOUT_STATE_FAILED_STAGE || s == tern::v1::HOST_ROLLOUT_STATE_UNHEALTHY ||
         s == tern::v1::HOST_ROLLOUT_STATE_UNREACHABLE || s == tern::v1::HOST_ROLLOUT_STATE_AGENT_GONE;
}

struct WaveCount {
  uint32_t total = 0, on_new = 0, failed = 0, deploying = 0, waiting = 0, rolled_back = 0;
};

std::string paint(bool color, const char* code, const std::string& text) {
  return color ? absl::StrCat("\x1b[", code, "m", text, "\x1b[0m") : text;
}

std::string wave_size(const tern::v1::Wave& w) {
  return w.size_case() == tern::v1::Wave::kHosts ? absl::StrCat(w.hosts(), w.hosts() == 1 ? " host" : " hosts")
                                                 : absl::StrCat(w.percent(), "%");
}

std::string ago_ms(int64_t then_ms, int64_t now_ms) {
  const int64_t d = std::max<int64_t>(0, now_ms - then_ms);
  return d < 1000 ? "just now" : format_duration(Millis(d - d % 1000)) + " ago";
}

bool folded_kind(tern::v1::RolloutEventKind k) {
  return k == tern::v1::ROLLOUT_EVENT_KIND_HOST_ON_NEW || k == tern::v1::ROLLOUT_EVENT_KIND_HOST_ROLLED_BACK ||
         k == tern::v1::ROLLOUT_EVENT_KIND_HOST_BACK;
}

}  // namespace

std::vector<std::string> rollout_view(const tern::v1::Rollout& r, int64_t now_ms,
                                      const std::vector<std::string>& recent,
                                      const std::map<std::string, AwayHost>& away, bool color) {
  std::vector<std::string> out;
  const int64_t created = r.has_created() ? TimeUtil::TimestampToMilliseconds(r.created()) : now_ms;
  const auto phase = r.phase();
  const char* phase_color = phase == tern::v1::ROLLOUT_PHASE_SUCCEEDED ? "32"
                            : phase == tern::v1::ROLLOUT_PHASE_RUNNING ? "36"
                            : phase == tern::v1::ROLLOUT_PHASE_PAUSED  ? "33"
                                                                       : "31";
  out.push_back(absl::StrCat(
      "rollout ", r.id(), ": ", r.spec().service(), " ",
      r.previous_release().version().empty() ? "" : absl::StrCat(r.previous_release().version(), " -> "),
      r.spec().release().version(), ", ", paint(color, phase_color, shown(phase)), ", started ",
      ago_ms(created, now_ms), r.failed_hosts() > 0 ? absl::StrCat(", ", r.failed_hosts(), " failed") : ""));
  std::vector<WaveCount> waves(static_cast<size_t>(std::max(r.spec().waves_size(), 1)));
  std::vector<std::string> waiting_on;
  for (const auto& h : r.hosts()) {
    if (h.wave() >= waves.size()) continue;
    auto& w = waves[h.wave()];
    ++w.total;
    switch (h.state()) {
      case tern::v1::HOST_ROLLOUT_STATE_ON_NEW: ++w.on_new; break;
      case tern::v1::HOST_ROLLOUT_STATE_DEPLOYING: ++w.deploying; break;
      case tern::v1::HOST_ROLLOUT_STATE_WAITING: ++w.waiting; break;
      case tern::v1::HOST_ROLLOUT_STATE_ROLLED_BACK: ++w.rolled_back; break;
      default:
        if (failed_state(h.state())) ++w.failed;
    }
    const bool pending = h.state() == tern::v1::HOST_ROLLOUT_STATE_DEPLOYING || h.rollback_pending() ||
                         (h.state() == tern::v1::HOST_ROLLOUT_STATE_WAITING && h.wave() == r.current_wave());
    if (pending && away.count(h.host_id())) waiting_on.push_back(h.host_id());
  }
  const bool running = phase == tern::v1::ROLLOUT_PHASE_RUNNING || phase == tern::v1::ROLLOUT_PHASE_PAUSED;
  for (int i = 0; i < r.spec().waves_size(); ++i) {
    const auto& w = waves[static_cast<size_t>(i)];
    const uint32_t wave = static_cast<uint32_t>(i);
    std::string bar;
    const uint32_t denom = std::max<uint32_t>(w.total, 1);
    const int ok = static_cast<int>(w.on_new * kBarWidth / denom);
    const int bad = std::min(kBarWidth - ok, static_cast<int>((w.failed + w.rolled_back) * kBarWidth / denom +
                                                              ((w.failed + w.rolled_back) > 0 ? 1 : 0)));
    bar = absl::StrCat("[", paint(color, "32", std::string(static_cast<size_t>(ok), '#')),
                       paint(color, "31", std::string(static_cast<size_t>(bad), 'x')),
                       std::string(static_cast<size_t>(kBarWidth - ok - bad), '.'), "]");
    std::string counts = absl::StrCat(w.on_new, "/", w.total, " on ", r.spec().release().version());
    if (w.failed) absl::StrAppend(&counts, ", ", w.failed, " failed");
    if (w.rolled_back) absl::StrAppend(&counts, ", ", w.rolled_back, " rolled back");
    if (w.deploying) absl::StrAppend(&counts, ", ", w.deploying, " deploying");
    if (w.waiting) absl::StrAppend(&counts, ", ", w.waiting, " waiting");
    std::string step;
    if (!running || wave < r.current_wave()) {
      step = wave < r.current_wave() || phase == tern::v1::ROLLOUT_PHASE_SUCCEEDED ? "done" : "";
    } else if (wave > r.current_wave()) {
      step = "next";
    } else {
      const auto ws = r.wave_step();
      if (ws == tern::v1::WAVE_STEP_BAKING && r.has_bake_until()) {
        const int64_t left = TimeUtil::TimestampToMilliseconds(r.bake_until()) - now_ms;
        step = left > 0 ? absl::StrCat("baking, ", format_duration(Millis((left + 999) / 1000 * 1000)), " left")
                        : "baked";
      } else if (ws == tern::v1::WAVE_STEP_AWAITING_APPROVAL) {
        step = absl::StrCat("waits for `ternctl rollout promote ", r.id(), "`");
      } else if (ws == tern::v1::WAVE_STEP_AWAITING_GATE) {
        step = absl::StrCat("waits for webhook ", r.spec().waves(i).gate_webhook());
      } else {
        step = shown(ws);
      }
    }
    out.push_back(absl::StrCat("  wave ", i + 1, "/", r.spec().waves_size(), "  ", wave_size(r.spec().waves(i)),
                               std::string(std::max<size_t>(1, 9 - wave_size(r.spec().waves(i)).size()), ' '), bar,
                               " ", counts, step.empty() ? "" : absl::StrCat("  ", step)));
  }
  if (r.has_analysis() && !r.analysis().verdict().empty()) {
    out.push_back(absl::StrCat("  analysis of wave ", r.analysis().wave() + 1, ": ", r.analysis().verdict(),
                               r.analysis().message().empty() ? "" : absl::StrCat(": ", r.analysis().message())));
  }
  if (phase == tern::v1::ROLLOUT_PHASE_PAUSED || !running) {
    if (!r.message().empty()) out.push_back(absl::StrCat("  ", r.message()));
  }
  if (!waiting_on.empty()) {
    std::vector<std::string> named;
    for (size_t i = 0; i < waiting_on.size() && i < kAwayNamed; ++i) {
      const auto& a = away.at(waiting_on[i]);
      named.push_back(absl::StrCat(waiting_on[i], " (", a.state, " ", ago_ms(a.since_ms, now_ms), ")"));
    }
    out.push_back(paint(color, "33",
                        absl::StrCat("  waiting on ", waiting_on.size(), " host(s) not connected: ",
                                     absl::StrJoin(named, ", "),
                                     waiting_on.size() > kAwayNamed
                                         ? absl::StrCat(" and ", waiting_on.size() - kAwayNamed, " more")
                                         : "",
                                     "; the progress deadline counts them as failed")));
  }
  for (const auto& line : recent) out.push_back(line);
  return out;
}

std::string event_line(const tern::v1::RolloutEvent& e) {
  return absl::StrCat("  ", clock_time(e.time()), "  ", word(e.kind()), ": ", e.message());
}

std::vector<std::string> EventLog::add(const tern::v1::RolloutEvent& e) {
  std::vector<std::string> out;
  if (folded_kind(e.kind())) {
    auto& f = host_events_[{static_cast<int>(e.kind()), e.rollout().current_wave()}];
    if (f.printed < kFirstHostLines) {
      ++f.printed;
      out.push_back(event_line(e));
    } else {
      ++f.more;
      f.last_time = clock_time(e.time());
      f.last_host_message = e.message();
    }
    return out;
  }
  out = flush();
  out.push_back(event_line(e));
  return out;
}

std::vector<std::string> EventLog::flush() {
  std::vector<std::string> out;
  for (auto& [key, f] : host_events_) {
    if (f.more == 0) continue;
    out.push_back(absl::StrCat("  ", f.last_time, "  ", word(static_cast<tern::v1::RolloutEventKind>(key.first)),
                               ": ", f.more, " more host(s) (the last: ", f.last_host_message, ")"));
    f.more = 0;
  }
  return out;
}

}  // namespace tern
