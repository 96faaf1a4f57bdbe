#include "agent/slot.h"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <deque>
#include <filesystem>
#include <fstream>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "agent/confine.h"
#include "core/duration.h"
#include "core/service_spec.h"

namespace tern {

using tern::v1::SlotColor;

SlotColor other(SlotColor c) {
  return c == tern::v1::SLOT_COLOR_BLUE ? tern::v1::SLOT_COLOR_GREEN : tern::v1::SLOT_COLOR_BLUE;
}

namespace {

uint16_t port_of(const tern::v1::PortMap& pm, SlotColor color) {
  return static_cast<uint16_t>(color == tern::v1::SLOT_COLOR_GREEN ? pm.green_port() : pm.blue_port());
}

}  // namespace

uint16_t slot_port(const tern::v1::ServiceSpec& spec, SlotColor color) {
  return spec.ports_size() == 0 ? 0 : port_of(spec.ports(0), color);
}

Slot::Slot(std::string service, SlotColor color, Deps deps)
    : service_(std::move(service)),
      color_(color),
      deps_(std::move(deps)),
      log_path_(absl::StrCat(deps_.log_dir, "/", service_, "-", word(color_), ".log")),
      slot_id_(deps_.state_dir.empty() ? "" : absl::StrCat(deps_.state_dir, "/", service_, "/", word(color_))),
      render_dir_(slot_id_.empty() ? "" : absl::StrCat(slot_id_, "/rendered")),
      cgroup_(SlotCgroups::slot_name(service_, word(color_))) {}

std::string Slot::log_tail() const {
  constexpr std::size_t kMaxLines = 3;
  std::ifstream in(log_path_);
  std::deque<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    lines.push_back(line.size() > 200 ? line.substr(0, 200) : line);
    if (lines.size() > kMaxLines) lines.pop_front();
  }
  std::string out;
  for (const auto& l : lines) absl::StrAppend(&out, out.empty() ? "" : " | ", l);
  return out;
}

Placeholders Slot::placeholders(const tern::v1::ServiceSpec& spec, const tern::v1::ReleaseRef& release,
                                const std::string& dir) const {
  Placeholders values = {{"port", std::to_string(slot_port(spec, color_))},
                         {"release_dir", dir},
                         {"render_dir", render_dir_},
                         {"version", release.version()},
                         {"slot", word(color_)},
                         {"service", spec.name()}};
  for (const auto& pm : spec.ports()) values[absl::StrCat("port:", pm.name())] = std::to_string(port_of(pm, color_));
  return values;
}

LaunchSpec Slot::launch(const tern::v1::ServiceSpec& spec, const tern::v1::ReleaseRef& release,
                        const std::string& dir) const {
  const uint16_t port = slot_port(spec, color_);
  // argv keeps its lenient rule (text that names no placeholder stays as
  // written, with no escape), so specs written before templates existed run
  // unchanged; templates are strict (slot_templates.h).
  std::vector<std::pair<std::string, std::string>> repl;
  for (const auto& [name, value] : placeholders(spec, release, dir)) {
    repl.emplace_back(absl::StrCat("{", name, "}"), value);
  }
  auto subst = [&](const std::string& in) { return absl::StrReplaceAll(in, repl); };
  LaunchSpec ls;
  for (const auto& a : spec.argv()) ls.argv.push_back(subst(a));
  if (!ls.argv.empty() && ls.argv[0].find('/') == std::string::npos && std::ifstream(dir + "/" + ls.argv[0])) {
    ls.argv[0] = dir + "/" + ls.argv[0];
  }
  ls.env = {{"PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
            {"TERN_SERVICE", spec.name()},
            {"TERN_SLOT", word(color_)},
            {"TERN_VERSION", release.version()},
            {"TERN_PORT", std::to_string(port)},
            {"TERN_RELEASE_DIR", dir}};
  if (!render_dir_.empty()) ls.env["TERN_RENDER_DIR"] = render_dir_;
  for (const auto& [k, v] : spec.env()) ls.env[k] = subst(v);
  ls.working_dir = spec.working_dir().empty() ? dir : subst(spec.working_dir());
  ls.user = spec.user().empty() ? deps_.default_user : spec.user();
  ls.log_path = log_path_;
  ls.slot_id = slot_id_;
  ls.cgroup = cgroup_;
  ls.limits = limits(spec);
  return ls;
}

absl::Status Slot::render(const tern::v1::ServiceSpec& spec, const tern::v1::ReleaseRef& release,
                          const std::string& dir, const LaunchSpec& as) const {
  if (render_dir_.empty()) {
    if (spec.templates().empty()) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat("cannot render the templates of ", word(color_), " (",
                                                      release.version(), "): the agent has no state dir"));
  }
  RenderOwner owner;
  if (!spec.templates().empty()) {
    auto run_as = resolve_run_as(as.user);
    if (!run_as.ok()) return run_as.status();
    owner = {run_as->uid, run_as->gid};
  }
  auto st = render_slot_files(spec.templates(), placeholders(spec, release, dir), dir, render_dir_, owner);
  if (st.ok()) return st;
  return absl::Status(st.code(), absl::StrCat("cannot start ", word(color_), " (", release.version(),
                                              "): rendering its config files failed: ", st.message(),
                                              "; the slot was not started"));
}

absl::Status Slot::check_ports(const tern::v1::ServiceSpec& spec, const std::string& version) const {
  for (const auto& pm : spec.ports()) {
    const uint16_t sp = port_of(pm, color_);
    if (deps_.os->port_in_use(sp, pm.protocol())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot start ", word(color_), " (", version, "): its port ", sp,
          " is already in use by another process on this host; stop that process or change the ", word(color_),
          " port in the spec"));
    }
  }
  return absl::OkStatus();
}

CgroupLimits Slot::limits(const tern::v1::ServiceSpec& spec) {
  CgroupLimits l;
  l.memory_max = parse_byte_size(spec.memory_max()).value_or(0);
  l.cpu_quota_us = parse_cpu_quota_us(spec.cpu_max()).value_or(0);
  l.tasks_max = spec.tasks_max();
  return l;
}

absl::StatusOr<ProcessHandle> Slot::start(const LaunchSpec& launch) {
  // A slot starts afresh: whatever an earlier run left in its cgroup (a
  // daemonized child of a crashed process, say) would hold its port.
  if (int n = deps_.launcher->kill_leftovers(cgroup_); n > 0) {
    spdlog::warn("{}: killed {} process(es) an earlier run of {} left in its cgroup", service_, n, word(color_));
  }
  auto h = deps_.launcher->start(launch);
  if (h.ok()) runtime_.tracker.reset();
  return h;
}

absl::Status Slot::wait_healthy(const tern::v1::HealthCheck& check, uint16_t port, const ProcessHandle& h,
                                const std::string& version, const LaunchSpec& as,
                                const std::function<void(const std::string&)>& progress) {
  const HealthParams params = health_params(check);
  const Clock& clock = deps_.os->clock();
  const TimePoint began = clock.now();
  HealthTracker tracker(params, began);
  std::string last_detail;
  TimePoint last_report = began;
  for (;;) {
    if (auto exited = deps_.launcher->poll(h)) {
      const std::string tail = log_tail();
      return absl::FailedPreconditionError(
          absl::StrCat(word(color_), " (", version, ") ", exited->description, " before turning healthy",
                       tail.empty() ? "" : absl::StrCat("; last output: ", tail), "; the active slot was not touched"));
    }
    auto r = deps_.prober->probe(check, port, params.timeout, as);
    auto verdict = tracker.observe(r, clock.now());
    if (verdict == HealthTracker::State::kHealthy) return absl::OkStatus();
    // Whoever waits hears how the probes go: on each change of what they
    // say, and every kProbeReportEvery while it stays the same.
    const TimePoint now = clock.now();
    if (progress && verdict != HealthTracker::State::kFailed &&
        (r.detail != last_detail || now - last_report >= kProbeReportEvery)) {
      progress(absl::StrCat("probing ", word(color_), " (", version, "): ",
                            r.ok ? absl::StrCat("passing, ", r.detail, "; turns healthy after ",
                                                params.success_threshold, " pass(es) and ",
                                                format_duration(params.min_healthy_time), " healthy")
                                 : absl::StrCat("not healthy yet: ", r.detail),
                            " (", format_duration(std::chrono::duration_cast<Millis>(now - began)), " of its ",
                            format_duration(params.healthy_deadline), " healthy deadline)"));
      last_detail = r.detail;
      last_report = now;
    }
    if (verdict == HealthTracker::State::kFailed) {
      return absl::FailedPreconditionError(absl::StrCat(
          word(color_), " (", version, ") did not turn healthy within ", format_duration(params.healthy_deadline),
          ": ", r.detail, "; it was stopped and the active slot was not touched"));
    }
    if (deps_.pause(params.interval)) return absl::AbortedError("the agent is shutting down");
  }
}

std::string Slot::begin_drain(const tern::v1::ServiceSpec& spec, const tern::v1::ReleaseRef& release,
                              const std::string& dir, const ProcessHandle& h, Millis limit) {
  if (h.pid <= 0) return "";
  if (!spec.drain_signal().empty()) {
    const int sig = parse_signal_name(spec.drain_signal()).value_or(0);
    if (sig == 0) return "";  // validated when the spec was applied
    deps_.launcher->signal_group(h, sig);
    return absl::StrCat("sent ", word(color_), " its drain signal ", spec.drain_signal());
  }
  if (spec.drain_command_size() == 0) return "";
  tern::v1::ServiceSpec as_command = spec;
  as_command.clear_argv();
  for (const auto& a : spec.drain_command()) as_command.add_argv(a);
  LaunchSpec ls = launch(as_command, release, dir);
  ls.slot_id.clear();  // not the slot's process: recovery must not take it for one
  ls.env.emplace("TERN_DRAIN", "1");
  auto cmd = deps_.launcher->start(ls);
  if (!cmd.ok()) {
    return absl::StrCat("the drain command of ", word(color_), " did not start (", cmd.status().message(),
                        "); draining without it");
  }
  const Clock& clock = deps_.os->clock();
  const TimePoint deadline = clock.now() + limit;
  for (;;) {
    if (auto exit = deps_.launcher->poll(*cmd)) {
      return exit->clean ? absl::StrCat("the drain command of ", word(color_), " succeeded")
                           : absl::StrCat("the drain command of ", word(color_), " failed (", exit->description,
                                          "; its output is in ", log_path_, "); draining without it");
    }
    if (clock.now() >= deadline || deps_.pause(Millis(50))) break;
  }
  deps_.launcher->signal_group(*cmd, SIGKILL);
  const TimePoint kill_deadline = clock.now() + Millis(5'000);
  while (!deps_.launcher->poll(*cmd) && clock.now() < kill_deadline) deps_.os->sleep_for(Millis(10));
  return absl::StrCat("the drain command of ", word(color_), " did not finish within ", format_duration(limit),
                      " and was killed; draining without it");
}

namespace {

// `raw` as one line of valid UTF-8: invalid bytes become '?', control
// characters spaces, and non-empty lines are joined with " | ".
std::string one_line(std::string_view raw) {
  std::string out;
  std::string line;
  auto flush = [&] {
    while (!line.empty() && line.back() == ' ') line.pop_back();
    if (!line.empty()) absl::StrAppend(&out, out.empty() ? "" : " | ", line);
    line.clear();
  };
  for (std::size_t i = 0; i < raw.size();) {
    const auto c = static_cast<unsigned char>(raw[i]);
    if (c == '\n') {
      flush();
      ++i;
      continue;
    }
    if (c < 0x80) {
      line.push_back(c < 0x20 || c == 0x7f ? ' ' : static_cast<char>(c));
      ++i;
      continue;
    }
    // A multi-byte sequence: kept only when complete and well-formed.
    const std::size_t len = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c <= 0xdf ? 2 : 0;
    bool ok = len > 0 && c < 0xf5 && i + len <= raw.size();
    for (std::size_t k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(raw[i + k]) & 0xc0) == 0x80;
    if (ok && len == 3) {
      const auto c1 = static_cast<unsigned char>(raw[i + 1]);
      ok = !(c == 0xe0 && c1 < 0xa0) && !(c == 0xed && c1 >= 0xa0);  // overlong, surrogates
    }
    if (ok && len == 4) {
      const auto c1 = static_cast<unsigned char>(raw[i + 1]);
      ok = !(c == 0xf0 && c1 < 0x90) && !(c == 0xf4 && c1 >= 0x90);
    }
    if (ok) {
      line.append(raw.substr(i, len));
      i += len;
    } else {
      line.push_back('?');
      ++i;
    }
  }
  flush();
  return out;
}

// The last `n` bytes of the file at `path` (all of it when shorter).
std::string file_tail(const std::string& path, std::size_t n) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff from = size > static_cast<std::streamoff>(n) ? size - static_cast<std::streamoff>(n) : 0;
  in.seekg(from);
  std::string out(static_cast<std::size_t>(size - from), '\0');
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  out.resize(static_cast<std::size_t>(in.gcount()));
  return out;
}

}  // namespace

HookRun Slot::run_hook(const tern::v1::ServiceSpec& spec, const HookCall& call, Millis limit,
                       const std::function<void(const ProcessHandle&)>& started) {
  tern::v1::ServiceSpec as_command = spec;
  as_command.clear_argv();
  for (const auto& a : call.hook.argv()) as_command.add_argv(a);
  LaunchSpec ls = launch(as_command, call.release, call.dir);
  // Below the slot's name, so that after an agent restart recovery finds a
  // hook still running and stops it (it is never one of the slot's known
  // processes); never the slot's own name.
  if (!slot_id_.empty()) ls.slot_id = absl::StrCat(slot_id_, "/hook");
  ls.env.insert_or_assign(std::string("TERN_HOOK"), call.name);
  ls.env.insert_or_assign(std::string("TERN_RELEASE"), call.release.version());
  ls.env.insert_or_assign(std::string("TERN_PREVIOUS_RELEASE"), call.previous_release);
  ls.env.insert_or_assign(std::string("TERN_ROLLOUT_ID"), call.rollout_id);
  ls.env.insert_or_assign(std::string("TERN_WAVE"), call.wave == 0 ? std::string() : std::to_string(call.wave));
  // The hook writes to a file of its own, copied into the slot's log when it
  // ends: the slot may be writing its log meanwhile, and the output reported
  // must be the hook's alone.
  const std::string out_path = absl::StrCat(log_path_, ".hook");
  std::ofstream(out_path, std::ios::trunc).flush();
  ls.log_path = out_path;
  HookRun run;
  const Clock& clock = deps_.os->clock();
  auto h = deps_.launcher->start(ls);
  if (!h.ok()) {
    run.outcome = absl::StrCat("did not start: ", h.status().message());
  } else {
    if (started) started(*h);
    const TimePoint deadline = clock.now() + limit;
    std::optional<ExitInfo> exit;
    for (;;) {
      if ((exit = deps_.launcher->poll(*h))) break;
      if (clock.now() >= deadline) break;
      if (deps_.pause(std::min(Millis(50), std::chrono::duration_cast<Millis>(deadline - clock.now())))) {
        run.interrupted = true;
        break;
      }
    }
    if (exit) {
      run.passed = exit->clean;
      run.outcome = exit->description;
    } else {
      deps_.launcher->signal_group(*h, SIGKILL);
      const TimePoint kill_deadline = clock.now() + Millis(5'000);
      while (!deps_.launcher->poll(*h) && clock.now() < kill_deadline) deps_.os->sleep_for(Millis(10));
      run.outcome = run.interrupted ? "was killed: the agent is shutting down"
                                    : absl::StrCat("did not finish within ", format_duration(limit),
                                                   " and was killed");
    }
  }
  // Into the slot's log, framed so that a reader tells it from the app's
  // lines; at most the last MiB of it.
  const std::string raw = file_tail(out_path, 1 << 20);
  {
    std::ofstream log(log_path_, std::ios::app | std::ios::binary);
    log << "---- tern: hook " << call.name << " (" << call.release.version() << ") " << run.outcome << " ----\n"
        << raw << (raw.empty() || raw.back() == '\n' ? "" : "\n") << "---- tern: end of hook " << call.name
        << " ----\n";
  }
  std::error_code ec;
  std::filesystem::remove(out_path, ec);
  run.output = one_line(raw.size() > kHookOutputBytes ? std::string_view(raw).substr(raw.size() - kHookOutputBytes)
                                                      : std::string_view(raw));
  return run;
}

std::optional<PortSockets> Slot::drain(const std::vector<uint16_t>& ports, Millis drain_time) {
  const Clock& clock = deps_.os->clock();
  const TimePoint deadline = clock.now() + drain_time;
  for (;;) {
    PortSockets sum;
    for (uint16_t port : ports) {
      PortSockets ps = deps_.os->port_sockets(port);
      sum.accept_queue += ps.accept_queue;
      sum.established += ps.established;
      sum.listening |= ps.listening;
    }
    if (sum.accept_queue == 0 && sum.established == 0) return sum;
    if (clock.now() >= deadline) return sum;
    if (deps_.pause(Millis(100))) return std::nullopt;
  }
}

void Slot::stop(const ProcessHandle& h, Millis grace, int signal) {
  if (h.pid <= 0) {
    if (int n = deps_.launcher->kill_leftovers(cgroup_); n > 0) {
      spdlog::warn("{}: killed {} process(es) left in {}'s cgroup with no slot process", service_, n, word(color_));
    }
    deps_.launcher->release(cgroup_);
    return;
  }
  const Clock& clock = deps_.os->clock();
  // The whole slot hears the stop signal, as under systemd's
  // KillMode=control-group: in a cgroup that includes what left the group.
  deps_.launcher->signal_slot(h, cgroup_, signal);
  const TimePoint deadline = clock.now() + grace;
  bool ended = false;
  while (!(ended = deps_.launcher->slot_ended(h, cgroup_)) && clock.now() < deadline) deps_.os->sleep_for(Millis(20));
  if (!ended) {
    spdlog::warn("{}: {} (pid {}) outlived its {} grace; killing what is left of it ({})", service_, word(color_),
                 h.pid, format_duration(grace), deps_.launcher->placement());
    deps_.launcher->kill_slot(h, cgroup_);
    const TimePoint kill_deadline = clock.now() + Millis(5'000);
    while (!deps_.launcher->slot_ended(h, cgroup_) && clock.now() < kill_deadline) deps_.os->sleep_for(Millis(10));
  }
  deps_.launcher->release(cgroup_);
}

}  // namespace tern
