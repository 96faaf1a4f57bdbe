#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "core/clock.h"

namespace tern {

// The sockets of a local TCP port: the listener's accept queue and the
// established connections, for draining.
struct PortSockets {
  uint32_t accept_queue = 0;
  uint32_t established = 0;
  bool listening = false;
};

// Time, waiting and the host's sockets, as the supervisor and its slots see
// them: the one place their logic reads the clock, waits, asks whether a port
// is taken or counts a port's connections. The system one reads the kernel;
// tests use a fake on a FakeClock (tests/support/agent_fakes.h).
//
// Implementations are safe for concurrent use from several threads without
// external synchronisation.
class HostOs {
 public:
  virtual ~HostOs() = default;

  virtual const Clock& clock() const = 0;
  // Blocks for up to `d` of clock() time, or until `cv` is notified and
  // `done()` holds; `lock` (on the mutex `cv` waits with) is released
  // meanwhile. Returns done().
  virtual bool wait_for(std::unique_lock<std::mutex>& lock, std::condition_variable& cv, Millis d,
                        const std::function<bool()>& done) = 0;
  // Blocks the calling thread for `d` of clock() time.
  virtual void sleep_for(Millis d) = 0;
  // Whether something is bound to `port` ("tcp" or "udp") on any address.
  virtual bool port_in_use(uint16_t port, const std::string& protocol) = 0;
  // The TCP sockets of local port `port` (/proc/net/tcp and tcp6).
  virtual PortSockets port_sockets(uint16_t port) = 0;
};

// The real host on SystemClock.
std::unique_ptr<HostOs> make_system_host_os();

}  // namespace tern
