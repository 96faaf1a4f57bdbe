#pragma once

// Helpers for tests that send real traffic through port mappings inside a
// private network namespace.

#include <cstdint>
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
// UDP datagram (SOCK_DGRAM: replies with its name) on 127.0.0.1:<port()>,
// from a thread of its own, until destroyed.
class NameServer {
 public:
  NameServer(std::string name, int type);
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
