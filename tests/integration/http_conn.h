#pragma once

// A blocking HTTP/1.1 client connection for load tests through a host's
// public port: one request at a time, with or without keep-alive.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdint>
#include <string>

namespace tern::testing {

// One blocking HTTP/1.1 connection to the public port.
class HttpConn {
 public:
  ~HttpConn() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool connect_to(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{2, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  // The body's first word (the version), or empty on any failure.
  // `told_to_close` is set when the response says "Connection: close".
  std::string get(bool keep_alive, bool* told_to_close = nullptr) {
    std::string req = std::string("GET / HTTP/1.1\r\nHost: t\r\nConnection: ") + (keep_alive ? "keep-alive" : "close") +
                      "\r\n\r\n";
    if (::send(fd_, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) return "";
    std::string buf;
    char tmp[4096];
    std::size_t header_end = std::string::npos, need = 0;
    for (;;) {
      ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n <= 0) return "";
      buf.append(tmp, static_cast<std::size_t>(n));
      if (header_end == std::string::npos) {
        header_end = buf.find("\r\n\r\n");
        if (header_end == std::string::npos) continue;
        if (buf.compare(0, 12, "HTTP/1.1 200") != 0) return "";
        auto cl = buf.find("Content-Length: ");
        if (cl == std::string::npos) return "";
        need = header_end + 4 + std::stoul(buf.substr(cl + 16));
      }
      if (buf.size() >= need) break;
    }
    if (told_to_close) *told_to_close = buf.substr(0, header_end).find("Connection: close") != std::string::npos;
    std::string body = buf.substr(header_end + 4, need - header_end - 4);
    return body.substr(0, body.find(' '));
  }

 private:
  int fd_ = -1;
};

}  // namespace tern::testing
