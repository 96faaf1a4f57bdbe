#include "core/metrics.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include "core/status_fmt.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace tern {

Metrics::Value& Metrics::cell(const std::string& name, const std::string& type, const std::string& help,
                              const std::string& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& fam = families_[name];
  if (fam.type.empty()) {
    fam.type = type;
    fam.help = help;
  }
  auto& slot = fam.cells[labels];
  if (!slot) slot = std::make_unique<Value>(0);
  return *slot;
}

Metrics::Value& Metrics::counter(const std::string& name, const std::string& help, const std::string& labels) {
  return cell(name, "counter", help, labels);
}

Metrics::Value& Metrics::gauge(const std::string& name, const std::string& help, const std::string& labels) {
  return cell(name, "gauge", help, labels);
}

std::string Metrics::render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& [name, fam] : families_) {
    absl::StrAppend(&out, "# HELP ", name, " ", fam.help, "\n# TYPE ", name, " ", fam.type, "\n");
    for (const auto& [labels, value] : fam.cells) {
      if (labels.empty()) {
        absl::StrAppend(&out, name, " ", value->load(std::memory_order_relaxed), "\n");
      } else {
        absl::StrAppend(&out, name, "{", labels, "} ", value->load(std::memory_order_relaxed), "\n");
      }
    }
  }
  return out;
}

absl::StatusOr<std::pair<std::string, uint16_t>> split_host_port(const std::string& address) {
  std::string host;
  std::string port;
  if (!address.empty() && address.front() == '[') {
    auto close = address.find(']');
    if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':') {
      return absl::InvalidArgumentError(absl::StrCat("invalid address \"", address, "\": expected [ipv6]:port"));
    }
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
  } else {
    auto colon = address.rfind(':');
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("invalid address \"", address, "\": expected host:port"));
    }
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
  }
  uint32_t p;
  if (!absl::SimpleAtoi(port, &p) || p > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("invalid address \"", address, "\": port must be 0-65535"));
  }
  return std::make_pair(host.empty() ? std::string("0.0.0.0") : host, static_cast<uint16_t>(p));
}

MetricsHttpServer::~MetricsHttpServer() { stop(); }

absl::StatusOr<std::string> MetricsHttpServer::start(const std::string& listen) {
  auto hp = split_host_port(listen);
  if (!hp.ok()) return hp.status();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string port = std::to_string(hp->second);
  if (int rc = getaddrinfo(hp->first.c_str(), port.c_str(), &hints, &res); rc != 0) {
    return absl::InvalidArgumentError(absl::StrCat("metrics listen address \"", listen, "\": ", gai_strerror(rc)));
  }
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 || ::listen(fd, 64) != 0) {
    int err = errno;
    freeaddrinfo(res);
    if (fd >= 0) close(fd);
    return absl::UnavailableError(absl::StrCat("cannot listen for metrics on ", listen, ": ", std::strerror(err),
                                               " (is another process using the port?)"));
  }
  freeaddrinfo(res);
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  uint16_t bound_port = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                                    : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  if (pipe2(wake_pipe_, O_CLOEXEC) != 0) {
    close(fd);
    return absl::InternalError("metrics server: pipe2 failed");
  }
  listen_fd_ = fd;
  thread_ = std::thread([this] { serve(); });
  std::string host = hp->first.find(':') != std::string::npos ? absl::StrCat("[", hp->first, "]") : hp->first;
  return absl::StrCat(host, ":", bound_port);
}

void MetricsHttpServer::stop() {
  if (!thread_.joinable()) return;
  char c = 'x';
  [[maybe_unused]] auto n = write(wake_pipe_[1], &c, 1);
  thread_.join();
  close(listen_fd_);
  close(wake_pipe_[0]);
  close(wake_pipe_[1]);
  listen_fd_ = -1;
}

void MetricsHttpServer::serve() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("metrics server: poll failed: {}", std::strerror(errno));
      return;
    }
    if (fds[1].revents) return;
    if (fds[0].revents & POLLIN) {
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        handle(fd);
        close(fd);
      }
    }
  }
}

void MetricsHttpServer::handle(int fd) {
  // A scrape's request fits in one read; a client that sends nothing for 2 s is dropped.
  timeval tv{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  char buf[4096];
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  if (n <= 0) return;
  absl::string_view req(buf, static_cast<size_t>(n));
  std::string status = "200 OK";
  std::string body;
  std::string type = "text/plain; version=0.0.4; charset=utf-8";
  if (req.rfind("GET /metrics", 0) == 0) {
    body = metrics_.render();
  } else if (req.rfind("GET /healthz", 0) == 0) {
    body = "ok\n";
  } else {
    status = "404 Not Found";
    body = "try /metrics\n";
  }
  std::string resp = absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", type,
                                  "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n", body);
  size_t off = 0;
  while (off < resp.size()) {
    ssize_t w = write(fd, resp.data() + off, resp.size() - off);
    if (w <= 0) return;
    off += static_cast<size_t>(w);
  }
}

}  // namespace tern
