#pragma once

// Helpers for tests that send real traffic through port mappings inside a
// private network namespace.

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace tern::testing {

// Moves the calling thread (and the threads and processes it starts later)
// into a new, empty network namespace with `lo` up. Returns an empty string on
// success, otherwise why it could not (not root, unshare refused, ...).
std::string enter_fresh_network_namespace();

// A port on 127.0.0.1 that nothing listens on right now (bound to port 0 and
// read back, then released). `type` is SOCK_STREAM or SOCK_DGRAM.
uint16_t unused_port(int type);

// Answers every TCP connection (SOCK_STREAM: writes its name and closes) or
// UDP datagram (SOCK_DGRAM: replies with its name) on <address>:<port()>,
// from a thread of its own, until destroyed.
class NameServer {
 public:
  // Listens on 127.0.0.1, or with `any_address` on every address (what a
  // connection redirected from another host reaches: the address it came in on).
  NameServer(std::string name, int type, bool any_address = false);
  ~NameServer();
  NameServer(const NameServer&) = delete;
  NameServer& operator=(const NameServer&) = delete;

  uint16_t port() const { return port_; }

 private:
  void serve();

  std::string name_;
  int type_;
  int listen_fd_ = -1;
  int stop_fd_ = -1;  // eventfd
  uint16_t port_ = 0;
  std::thread thread_;
};

// Connects to 127.0.0.1:<port> and returns what the server wrote before
// closing; "" when the connection fails (refused, timeout after 2 s).
std::string ask_tcp(uint16_t port);
// The same from the local IPv4 address `from` (the socket is bound to it
// before it connects) to `to`: how a test plays many clients. "" also when
// `from` cannot be bound.
std::string ask_tcp_from(const std::string& from, uint16_t port, const std::string& to = "127.0.0.1");

// A second network namespace, empty but for `lo` (up), with a thread of its
// own: the far side of a link, where a test's remote clients live. run()
// calls a function on that thread, so in that namespace (and so are the
// processes it starts), and returns when it has returned.
class PeerNamespace {
 public:
  // Throws std::runtime_error when the namespace cannot be made.
  PeerNamespace();
  ~PeerNamespace();
  PeerNamespace(const PeerNamespace&) = delete;
  PeerNamespace& operator=(const PeerNamespace&) = delete;

  // The thread's id, which names the namespace to `ip link ... netns <id>`.
  int tid() const { return tid_; }
  void run(const std::function<void()>& f);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  const std::function<void()>* task_ = nullptr;  // guarded by mu_
  bool done_ = false, stop_ = false;
  int tid_ = 0;
  std::string error_;
  std::thread thread_;
};

// A UDP socket connected to 127.0.0.1:<port>; each ask() sends one datagram
// from the same local port and returns the reply, "" after 2 s without one.
class UdpClient {
 public:
  explicit UdpClient(uint16_t port);
  ~UdpClient();
  UdpClient(const UdpClient&) = delete;
  UdpClient& operator=(const UdpClient&) = delete;

  std::string ask();

 private:
  int fd_ = -1;
};

}  // namespace tern::testing
