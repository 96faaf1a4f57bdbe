#include "core/systemd_notify.h"

#include <systemd/sd-daemon.h>

#include <spdlog/spdlog.h>

namespace tern {
namespace {

void notify(const std::string& state) {
  // 0: not under systemd (nothing to tell); < 0: a real failure, worth a
  // line but never fatal (the daemon still serves).
  if (int r = sd_notify(0, state.c_str()); r < 0) {
    spdlog::warn("cannot notify systemd ({}): error {}", state.substr(0, state.find('\n')), -r);
  }
}

// STATUS= is one line.
std::string one_line(std::string s) {
  for (char& c : s) {
    if (c == '\n') c = ' ';
  }
  return s;
}

}  // namespace

SystemdNotifier::SystemdNotifier() {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
    watchdog_interval_ = std::chrono::milliseconds(std::max<uint64_t>(usec / 2000, 1));
  }
}

void SystemdNotifier::ready(const std::string& status) { notify("READY=1\nSTATUS=" + one_line(status)); }
void SystemdNotifier::status(const std::string& status) { notify("STATUS=" + one_line(status)); }
void SystemdNotifier::stopping() { notify("STOPPING=1"); }
void SystemdNotifier::watchdog_ping() { notify("WATCHDOG=1"); }

}  // namespace tern
