#include "tests/agent/loopback.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

namespace tern::testing {
namespace {

sockaddr_in loopback(uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

uint16_t bound_port(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) throw std::runtime_error("getsockname");
  return ntohs(addr.sin_port);
}

void set_timeouts(int fd, int seconds) {
  timeval tv{};
  tv.tv_sec = seconds;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

}  // namespace

std::string enter_fresh_network_namespace() {
  if (geteuid() != 0) return "needs root (network namespaces, nftables, iptables); CI runs this as root";
  if (unshare(CLONE_NEWNET) != 0) return std::string("unshare(CLONE_NEWNET) failed: ") + std::strerror(errno);
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::string("socket: ") + std::strerror(errno);
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  std::string err;
  if (ioctl(fd, SIOCGIFFLAGS, &ifr) != 0) {
    err = std::string("SIOCGIFFLAGS lo: ") + std::strerror(errno);
  } else {
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    if (ioctl(fd, SIOCSIFFLAGS, &ifr) != 0) err = std::string("SIOCSIFFLAGS lo up: ") + std::strerror(errno);
  }
  close(fd);
  return err;
}

uint16_t unused_port(int type) {
  int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
  sockaddr_in addr = loopback(0);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    throw std::runtime_error(std::string("unused_port: ") + std::strerror(errno));
  }
  uint16_t port = bound_port(fd);
  close(fd);
  return port;
}

NameServer::NameServer(std::string name, int type, bool any_address) : name_(std::move(name)), type_(type) {
  listen_fd_ = socket(AF_INET, type | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr = loopback(0);
  if (any_address) addr.sin_addr.s_addr = htonl(INADDR_ANY);
  if (listen_fd_ < 0 || bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      (type == SOCK_STREAM && listen(listen_fd_, 512) != 0)) {
    throw std::runtime_error(std::string("NameServer: ") + std::strerror(errno));
  }
  port_ = bound_port(listen_fd_);
  stop_fd_ = eventfd(0, EFD_CLOEXEC);
  thread_ = std::thread([this] { serve(); });
}

NameServer::~NameServer() {
  uint64_t one = 1;
  if (write(stop_fd_, &one, sizeof one) < 0) std::abort();
  thread_.join();
  close(listen_fd_);
  close(stop_fd_);
}

void NameServer::serve() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    if (fds[0].revents == 0) continue;
    if (type_ == SOCK_STREAM) {
      int conn = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn < 0) continue;
      set_timeouts(conn, 2);
      if (send(conn, name_.data(), name_.size(), MSG_NOSIGNAL) < 0) {
        // The client gave up; nothing to do.
      }
      close(conn);
    } else {
      char buf[512];
      sockaddr_in from{};
      socklen_t len = sizeof from;
      ssize_t n = recvfrom(listen_fd_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n < 0) continue;
      sendto(listen_fd_, name_.data(), name_.size(), 0, reinterpret_cast<sockaddr*>(&from), len);
    }
  }
}

std::string ask_tcp(uint16_t port) { return ask_tcp_from("", port); }

std::string ask_tcp_from(const std::string& from, uint16_t port, const std::string& to) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  set_timeouts(fd, 2);
  if (!from.empty()) {
    sockaddr_in local{};
    local.sin_family = AF_INET;
    if (inet_pton(AF_INET, from.c_str(), &local.sin_addr) != 1 ||
        bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
      close(fd);
      return "";
    }
  }
  sockaddr_in addr = loopback(port);
  if (inet_pton(AF_INET, to.c_str(), &addr.sin_addr) != 1) {
    close(fd);
    return "";
  }
  std::string reply;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    char buf[256];
    for (;;) {
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n > 0) {
        reply.append(buf, static_cast<size_t>(n));
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        break;
      }
    }
  }
  close(fd);
  return reply;
}

PeerNamespace::PeerNamespace() {
  thread_ = std::thread([this] {
    std::unique_lock lock(mu_);
    if (std::string why = enter_fresh_network_namespace(); !why.empty()) {
      error_ = why;
    } else {
      tid_ = static_cast<int>(gettid());
    }
    done_ = true;
    cv_.notify_all();
    if (!error_.empty()) return;
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || task_ != nullptr; });
      if (stop_) return;
      (*task_)();
      task_ = nullptr;
      done_ = true;
      cv_.notify_all();
    }
  });
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return done_; });
  if (!error_.empty()) {
    lock.unlock();
    thread_.join();
    throw std::runtime_error("PeerNamespace: " + error_);
  }
}

PeerNamespace::~PeerNamespace() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void PeerNamespace::run(const std::function<void()>& f) {
  std::unique_lock lock(mu_);
  done_ = false;
  task_ = &f;
  cv_.notify_all();
  cv_.wait(lock, [&] { return done_; });
}

UdpClient::UdpClient(uint16_t port) {
  fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr = loopback(port);
  if (fd_ < 0 || connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    throw std::runtime_error(std::string("UdpClient: ") + std::strerror(errno));
  }
  set_timeouts(fd_, 2);
}

UdpClient::~UdpClient() { close(fd_); }

std::string UdpClient::ask() {
  if (send(fd_, "?", 1, 0) < 0) return "";
  char buf[512];
  for (;;) {
    ssize_t n = recv(fd_, buf, sizeof buf, 0);
    if (n >= 0) return std::string(buf, static_cast<size_t>(n));
    // ECONNREFUSED (an ICMP error from an earlier datagram) or a timeout.
    if (errno != EINTR) return "";
  }
}

}  // namespace tern::testing
