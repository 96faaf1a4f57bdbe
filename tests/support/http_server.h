#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tern::testing {

// An HTTP/1.1 server on 127.0.0.1:<port()> (port 0, read back) for tests of
// HTTP clients. One connection at a time, on a thread of its own: it reads a
// request (head, and a body as long as its Content-Length), keeps it, and
// writes what `respond` returns for it, then closes the connection. An empty
// response leaves the client waiting until the server is destroyed (a
// server that hangs). `respond` runs on the server's thread.
class FakeHttpServer {
 public:
  using Respond = std::function<std::string(const std::string& request)>;

  explicit FakeHttpServer(Respond respond);
  ~FakeHttpServer();
  FakeHttpServer(const FakeHttpServer&) = delete;
  FakeHttpServer& operator=(const FakeHttpServer&) = delete;

  uint16_t port() const { return port_; }
  // "http://127.0.0.1:<port>"
  std::string url() const;
  // Every request so far, in order, as received.
  std::vector<std::string> requests() const;

  // A whole response: status line, Content-Type, Content-Length, Connection: close.
  static std::string response(int status, const std::string& body,
                              const std::string& content_type = "application/json");

 private:
  void serve();
  bool wait_readable(int fd);

  Respond respond_;
  int listen_fd_ = -1;
  int stop_[2] = {-1, -1};
  uint16_t port_ = 0;
  std::vector<int> held_;  // server thread only
  mutable std::mutex mu_;
  std::vector<std::string> requests_;
  std::thread thread_;
};

// The value of `name` in an application/x-www-form-urlencoded body, decoded;
// empty when absent.
std::string form_value(const std::string& body, const std::string& name);

// The body of a raw request or response (after the blank line).
std::string http_body(const std::string& message);

// The value of header `name` (any case) in a raw request or response, with
// surrounding spaces trimmed; empty when absent.
std::string http_header(const std::string& message, const std::string& name);

}  // namespace tern::testing
