#include "agent/host_os.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <thread>

#include "agent/unique_fd.h"

namespace tern {
namespace {

class SystemHostOs final : public HostOs {
 public:
  const Clock& clock() const override { return SystemClock::instance(); }

  bool wait_for(std::unique_lock<std::mutex>& lock, std::condition_variable& cv, Millis d,
                const std::function<bool()>& done) override {
    return cv.wait_for(lock, d, done);
  }

  void sleep_for(Millis d) override { std::this_thread::sleep_for(d); }

  bool port_in_use(uint16_t port, const std::string& protocol) override {
    unique_fd fd(::socket(AF_INET, (protocol == "udp" ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return false;
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    return ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno == EADDRINUSE;
  }

  PortSockets port_sockets(uint16_t port) override {
    PortSockets out;
    for (const char* file : {"/proc/net/tcp", "/proc/net/tcp6"}) {
      std::ifstream in(file);
      std::string line;
      std::getline(in, line);  // header
      while (std::getline(in, line)) {
        std::istringstream f(line);
        std::string sl, local, remote, st, queues;
        if (!(f >> sl >> local >> remote >> st >> queues)) continue;
        auto colon = local.rfind(':');
        if (colon == std::string::npos) continue;
        if (std::stoul(local.substr(colon + 1), nullptr, 16) != port) continue;
        const unsigned long state = std::stoul(st, nullptr, 16);
        if (state == 0x0A) {  // LISTEN: rx_queue is the accept queue
          out.listening = true;
          auto q = queues.find(':');
          if (q != std::string::npos) {
            out.accept_queue += static_cast<uint32_t>(std::stoul(queues.substr(q + 1), nullptr, 16));
          }
        } else if (state == 0x01 || state == 0x03 || state == 0x08) {  // ESTABLISHED, SYN_RECV, CLOSE_WAIT
          ++out.established;
        }
      }
    }
    return out;
  }
};

}  // namespace

std::unique_ptr<HostOs> make_system_host_os() { return std::make_unique<SystemHostOs>(); }

}  // namespace tern
