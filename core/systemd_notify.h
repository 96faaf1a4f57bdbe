#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace tern {

// The daemon side of systemd's Type=notify protocol (libsystemd's
// sd_notify): READY when serving, STATUS lines, STOPPING on shutdown and
// WATCHDOG pings. Outside systemd (no $NOTIFY_SOCKET) every call is a no-op,
// so the daemons run the same by hand, in tests and under a unit.
//
// Thread-safe: sd_notify opens a fresh datagram socket per call.
class SystemdNotifier {
 public:
  SystemdNotifier();

  void ready(const std::string& status);
  void status(const std::string& status);
  void stopping();
  void watchdog_ping();

  // How often to ping: half of WatchdogSec (systemd's advice), or nothing
  // when the unit has no watchdog.
  std::optional<std::chrono::milliseconds> watchdog_interval() const { return watchdog_interval_; }

 private:
  std::optional<std::chrono::milliseconds> watchdog_interval_;
};

}  // namespace tern
