// MetricsHttpServer on Boost.Beast and Asio: every connection is a Session
// whose reads and writes are asynchronous with a deadline, so one thread
// serves them all and none waits for another.
#include <fcntl.h>

#include <spdlog/spdlog.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <list>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/metrics.h"

namespace tern {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

// A scrape's request is a line and a few headers.
constexpr uint32_t kMaxRequestHeaderBytes = 8 << 10;

}  // namespace

struct MetricsHttpServer::Impl {
  class Session;

  Impl(const Metrics& m, const std::map<std::string, Handler>& r) : metrics(m), routes(r), acceptor(ioc) {}

  void accept();
  // Makes room for one more connection: drops the oldest one still waiting
  // for its request. False when every held connection is answering.
  bool make_room();

  const Metrics& metrics;
  const std::map<std::string, Handler>& routes;
  asio::io_context ioc;  // first: destroyed after every socket
  tcp::acceptor acceptor;
  // Oldest first; touched only on the io thread.
  std::list<std::shared_ptr<Session>> sessions;
  std::thread thread;
};

class MetricsHttpServer::Impl::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, Impl& server) : stream_(std::move(socket)), server_(server) {}

  void start(std::list<std::shared_ptr<Session>>::iterator self) {
    self_ = self;
    parser_.header_limit(kMaxRequestHeaderBytes);
    stream_.expires_after(kRequestTimeout);
    http::async_read(stream_, buffer_, parser_,
                     [s = shared_from_this()](beast::error_code ec, size_t) { s->on_request(ec); });
  }

  bool waiting_for_request() const { return waiting_; }

  void close() {
    if (closed_) return;
    closed_ = true;
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
    server_.sessions.erase(self_);  // the pending handler keeps this alive until it runs
  }

 private:
  void on_request(beast::error_code ec) {
    waiting_ = false;
    if (ec || closed_) return close();
    const auto& req = parser_.get();
    const std::string target(req.target());
    const std::string path = target.substr(0, target.find('?'));
    response_.version(11);
    response_.keep_alive(false);
    response_.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
    const Handler* handler = nullptr;
    for (const auto& [prefix, h] : server_.routes) {
      if (path.rfind(prefix, 0) == 0) handler = &h;  // in order: the longest matching prefix is last
    }
    if (req.method() != http::verb::get) {
      response_.result(http::status::method_not_allowed);
      response_.set(http::field::allow, "GET");
      response_.body() = "only GET\n";
    } else if (handler != nullptr) {
      Request r;
      r.path = path;
      r.query = target.size() > path.size() ? target.substr(path.size() + 1) : "";
      r.authorization = std::string(req[http::field::authorization]);
      Reply reply = (*handler)(r);
      response_.result(static_cast<http::status>(reply.status));
      response_.set(http::field::content_type, reply.content_type);
      response_.set(http::field::cache_control, "no-store");
      response_.set("X-Content-Type-Options", "nosniff");
      response_.set("Content-Security-Policy",
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
                    "img-src 'self' data:; frame-ancestors 'none'");
      response_.body() = std::move(reply.body);
    } else if (path == "/metrics") {
      response_.result(http::status::ok);
      response_.body() = server_.metrics.render();
    } else if (path == "/healthz") {
      response_.result(http::status::ok);
      response_.body() = "ok\n";
    } else {
      response_.result(http::status::not_found);
      response_.body() = "try /metrics\n";
    }
    response_.prepare_payload();
    stream_.expires_after(kRequestTimeout);
    http::async_write(stream_, response_, [s = shared_from_this()](beast::error_code, size_t) { s->close(); });
  }

  beast::tcp_stream stream_;
  Impl& server_;
  std::list<std::shared_ptr<Session>>::iterator self_;
  beast::flat_buffer buffer_;
  http::request_parser<http::empty_body> parser_;
  http::response<http::string_body> response_;
  bool waiting_ = true;
  bool closed_ = false;
};

void MetricsHttpServer::Impl::accept() {
  acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
    if (!ec) {
      ::fcntl(socket.native_handle(), F_SETFD, FD_CLOEXEC);
      if (sessions.size() < kMaxConnections || make_room()) {
        auto session = std::make_shared<Session>(std::move(socket), *this);
        session->start(sessions.insert(sessions.end(), session));
      }
      // else: every held connection is being answered; this one is closed
      // unanswered, and the client may try again.
    } else {
      spdlog::warn("metrics server: accept failed: {}", ec.message());
    }
    accept();
  });
}

bool MetricsHttpServer::Impl::make_room() {
  for (const auto& s : sessions) {
    if (s->waiting_for_request()) {
      s->close();
      return true;
    }
  }
  return false;
}

MetricsHttpServer::MetricsHttpServer(const Metrics& metrics) : metrics_(metrics) {}

MetricsHttpServer::~MetricsHttpServer() { stop(); }

absl::StatusOr<std::string> MetricsHttpServer::start(const std::string& listen) {
  auto hp = split_host_port(listen);
  if (!hp.ok()) return hp.status();
  auto impl = std::make_unique<Impl>(metrics_, routes_);
  beast::error_code ec;
  tcp::resolver resolver(impl->ioc);
  auto endpoints = resolver.resolve(hp->first, std::to_string(hp->second),
                                    tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || endpoints.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("metrics listen address \"", listen, "\": ",
                                                   ec ? ec.message() : "no such address"));
  }
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  auto& acceptor = impl->acceptor;
  acceptor.open(endpoint.protocol(), ec);
  // Asio does not open sockets close-on-exec; a child of the agent (a slot)
  // must not inherit the listener.
  if (!ec) ::fcntl(acceptor.native_handle(), F_SETFD, FD_CLOEXEC);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(64, ec);
  if (!ec) {
    const uint16_t bound_port = acceptor.local_endpoint().port();
    impl->accept();
    impl->thread = std::thread([impl = impl.get()] {
      try {
        impl->ioc.run();
      } catch (const std::exception& e) {
        spdlog::error("metrics server stopped: {}", e.what());
      }
    });
    impl_ = std::move(impl);
    std::string host = hp->first.find(':') != std::string::npos ? absl::StrCat("[", hp->first, "]") : hp->first;
    return absl::StrCat(host, ":", bound_port);
  }
  return absl::UnavailableError(absl::StrCat("cannot listen for metrics on ", listen, ": ", ec.message(),
                                             " (is another process using the port?)"));
}

void MetricsHttpServer::stop() {
  if (!impl_) return;
  Impl* impl = impl_.get();
  asio::post(impl->ioc, [impl] {
    beast::error_code ignored;
    impl->acceptor.close(ignored);
    while (!impl->sessions.empty()) impl->sessions.front()->close();
  });
  impl->thread.join();
  impl_.reset();
}

}  // namespace tern
