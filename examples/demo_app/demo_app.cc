// tern-demo-app: a small HTTP server for demos, tests and benchmarks of the
// blue/green swap. It answers every request with its version and can be told
// to misbehave in the ways a real release does.
//
//   GET /            200 "<version> <color>\n" (X-Tern-Version / X-Tern-Color headers);
//                    any other path not listed here answers the same
//   GET /healthz     200 while healthy, 503 once told to fail
//   GET /metrics     Prometheus text (0.0.4): http_requests_total{code="..."}
//                    (a series per code that has occurred) and the histogram
//                    http_request_duration_seconds, both for / only: /healthz,
//                    /metrics and /admin/* are not counted
//   GET /admin/fail-health     /admin/heal     flip health at run time
//
// Flags: --port N (required, unless a --config file gives it), --version V, --color C,
// --config FILE (reads "port=N", "version=V" and "color=C" lines, '#' comments
// and blank lines, as a real app reads a config file Tern rendered for its
// slot; flags after it override it), --fail-health,
// --fail-health-after 10s (healthy at first, then failing, as a release that
// goes bad while its wave bakes),
// --crash-after N (abort after N requests of any kind), --start-delay 2s (listen late),
// --error-rate 0.2 (that share of / answers 500; health is unaffected, so only
// analysis of the metrics can tell), --latency 50ms (answer / that much later),
// --drain 5s (on SIGTERM stop accepting, finish open connections for at most
// this long, then exit), --drain-idle 2s (see below).
//
// SIGUSR1 tells it that it is draining (a service spec's `drain_signal:
// SIGUSR1`): it keeps accepting and serving, but every response carries
// "Connection: close" and ends its connection, and a kept-alive connection
// that has been idle for --drain-idle is closed. A client is never cut off
// while it may be sending a request on a connection it was told it could
// keep, which is what loses requests when a server stops with idle
// keep-alive connections open: the close and the next request cross.
//
// Errors are deterministic, not random: the k-th request to / (counted across
// all connections) fails when floor(k * rate) > floor((k - 1) * rate), so the
// first n requests hold exactly floor(n * rate) errors, evenly spread (rate
// 0.25: the 4th, 8th, 12th, ...). Tests can count on it; the pattern is
// regular, which no analysis of counts can tell from random errors.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace {

struct Options {
  int port = -1;
  std::string version = "v0";
  std::string color = "";
  bool fail_health = false;
  long crash_after = -1;
  double start_delay_s = 0;
  double fail_health_after_s = 0;  // healthy at first, then failing: a release that goes bad in its bake
  double error_rate = 0;
  double latency_s = 0;
  double drain_s = 5;
  double drain_idle_s = 2;
};

// What GET /metrics reports: requests to / by status code, and how long they
// took. One lock; a request holds it for a few increments.
class RequestMetrics {
 public:
  // Upper bounds in seconds (the Go client's defaults); +Inf follows.
  static constexpr std::array<double, 10> kBounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};

  void observe(int code, double seconds) {
    std::lock_guard<std::mutex> lock(mu_);
    ++by_code_[code];
    std::size_t i = 0;
    while (i < kBounds.size() && seconds > kBounds[i]) ++i;
    ++buckets_[i];  // the last one is +Inf
    sum_ += seconds;
  }

  std::string render() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::string out =
        "# HELP http_requests_total Requests to / by HTTP status code.\n"
        "# TYPE http_requests_total counter\n";
    for (const auto& [code, n] : by_code_) {
      out += "http_requests_total{code=\"" + std::to_string(code) + "\"} " + std::to_string(n) + "\n";
    }
    out +=
        "# HELP http_request_duration_seconds Time to answer a request to /, in seconds.\n"
        "# TYPE http_request_duration_seconds histogram\n";
    uint64_t cumulative = 0;
    for (std::size_t i = 0; i <= kBounds.size(); ++i) {
      cumulative += buckets_[i];
      out += "http_request_duration_seconds_bucket{le=\"" + (i < kBounds.size() ? number(kBounds[i]) : "+Inf") +
             "\"} " + std::to_string(cumulative) + "\n";
    }
    out += "http_request_duration_seconds_sum " + number(sum_) + "\n";
    out += "http_request_duration_seconds_count " + std::to_string(cumulative) + "\n";
    return out;
  }

 private:
  // The shortest text that reads back as the same double: 0.005, 1, 2.5.
  static std::string number(double v) {
    char buf[32];
    return std::string(buf, std::to_chars(buf, buf + sizeof(buf), v).ptr);
  }

  mutable std::mutex mu_;
  std::map<int, uint64_t> by_code_;  // only codes that have occurred: each is a series
  std::array<uint64_t, kBounds.size() + 1> buckets_{};
  double sum_ = 0;
};

std::atomic<bool> g_healthy{true};
std::atomic<long> g_requests{0};
std::atomic<int> g_open_connections{0};
std::atomic<bool> g_stopping{false};
std::atomic<bool> g_draining{false};  // SIGUSR1
std::atomic<long> g_traffic{0};  // requests to /, for the error pattern
RequestMetrics g_metrics;
Options g_opts;

// The k-th request to / fails when floor(k * rate) > floor((k - 1) * rate),
// in whole parts per million so the count is exact.
bool injected_error(long k) {
  const long ppm = std::lround(g_opts.error_rate * 1e6);
  return k * ppm / 1000000 > (k - 1) * ppm / 1000000;
}

double parse_seconds(const char* text) {
  char* end = nullptr;
  double v = std::strtod(text, &end);
  std::string unit = end ? end : "";
  if (unit == "ms") return v / 1000;
  if (unit == "m") return v * 60;
  return v;  // "s" or bare seconds
}

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr, "tern-demo-app: %s\nusage: tern-demo-app --port N [--config FILE] [--version V] [--color C] "
                       "[--fail-health] [--fail-health-after D] [--crash-after N] [--start-delay D] [--error-rate F] "
                       "[--latency D] [--drain D] [--drain-idle D]\n", why);
  std::exit(2);
}

// A --config file: key=value lines.
void read_config(const std::string& path, Options& o) {
  std::ifstream in(path);
  if (!in) usage(("cannot read --config " + path).c_str());
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto eq = line.find('=');
    const std::string key = line.substr(0, eq), value = eq == std::string::npos ? "" : line.substr(eq + 1);
    if (eq == std::string::npos) usage(("not key=value in " + path + ": " + line).c_str());
    if (key == "port") o.port = std::atoi(value.c_str());
    else if (key == "version") o.version = value;
    else if (key == "color") o.color = value;
    else usage(("unknown key " + key + " in " + path).c_str());
  }
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    if (a == "--port") o.port = std::atoi(value());
    else if (a == "--config") read_config(value(), o);
    else if (a == "--version") o.version = value();
    else if (a == "--color") o.color = value();
    else if (a == "--fail-health") o.fail_health = true;
    else if (a == "--fail-health-after") o.fail_health_after_s = parse_seconds(value());
    else if (a == "--crash-after") o.crash_after = std::atol(value());
    else if (a == "--start-delay") o.start_delay_s = parse_seconds(value());
    else if (a == "--error-rate") {
      const char* text = value();
      char* end = nullptr;
      o.error_rate = std::strtod(text, &end);
      if (end == text || *end != '\0' || !(o.error_rate >= 0 && o.error_rate <= 1)) {
        usage("--error-rate is a share of requests from 0 to 1, such as 0.05");
      }
    }
    else if (a == "--latency") o.latency_s = parse_seconds(value());
    else if (a == "--drain") o.drain_s = parse_seconds(value());
    else if (a == "--drain-idle") o.drain_idle_s = parse_seconds(value());
    else usage(("unknown flag " + a).c_str());
  }
  if (o.port < 0 || o.port > 65535) usage("--port is required (0-65535)");
  if (!(o.latency_s >= 0)) usage("--latency is a duration such as 50ms");
  return o;
}

bool write_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

std::string respond(int status, const char* reason, const std::string& body, bool keep_alive,
                    const char* content_type = "text/plain") {
  std::string color = g_opts.color.empty() ? "" : "X-Tern-Color: " + g_opts.color + "\r\n";
  return "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\nContent-Type: " + content_type +
         "\r\nX-Tern-Version: " +
         g_opts.version + "\r\n" + color + "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: " +
         (keep_alive ? "keep-alive" : "close") + "\r\n\r\n" + body;
}

void serve_connection(int fd) {
  std::string buf;
  char chunk[4096];
  auto last_request = std::chrono::steady_clock::now();
  for (;;) {
    size_t end;
    while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
      // While stopping, an idle keep-alive connection is closed rather than
      // held open; while draining, only once it has been idle a while.
      pollfd p{fd, POLLIN, 0};
      int r = poll(&p, 1, 200);
      if (r == 0) {
        if (g_stopping && buf.empty()) goto done;
        if (g_draining && buf.empty() &&
            std::chrono::steady_clock::now() - last_request >= std::chrono::duration<double>(g_opts.drain_idle_s)) {
          goto done;
        }
        continue;
      }
      ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) goto done;
      buf.append(chunk, static_cast<size_t>(n));
      if (buf.size() > 64 * 1024) goto done;
    }
    {
      std::string head = buf.substr(0, end);
      buf.erase(0, end + 4);
      std::string line = head.substr(0, head.find("\r\n"));
      std::string path = line.substr(line.find(' ') + 1);
      path = path.substr(0, path.find(' '));
      last_request = std::chrono::steady_clock::now();
      bool keep_alive = head.find("Connection: close") == std::string::npos &&
                        head.find("connection: close") == std::string::npos && !g_stopping && !g_draining;
      long n = ++g_requests;
      if (g_opts.crash_after >= 0 && n > g_opts.crash_after) {
        std::fprintf(stderr, "tern-demo-app %s: crashing after %ld requests as told\n", g_opts.version.c_str(),
                     g_opts.crash_after);
        std::abort();
      }
      std::string resp;
      if (path == "/healthz") {
        resp = g_healthy ? respond(200, "OK", "ok\n", keep_alive)
                         : respond(503, "Service Unavailable", "unhealthy\n", keep_alive);
      } else if (path == "/admin/fail-health") {
        g_healthy = false;
        resp = respond(200, "OK", "health will fail\n", keep_alive);
      } else if (path == "/admin/heal") {
        g_healthy = true;
        resp = respond(200, "OK", "healthy again\n", keep_alive);
      } else if (path == "/metrics") {
        resp = respond(200, "OK", g_metrics.render(), keep_alive, "text/plain; version=0.0.4; charset=utf-8");
      } else {
        const auto start = std::chrono::steady_clock::now();
        if (g_opts.latency_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(g_opts.latency_s));
        int code = 200;
        if (injected_error(++g_traffic)) {
          code = 500;
          resp = respond(500, "Internal Server Error", "injected error\n", keep_alive);
        } else {
          std::string body = g_opts.version + (g_opts.color.empty() ? "" : " " + g_opts.color) + "\n";
          resp = respond(200, "OK", body, keep_alive);
        }
        g_metrics.observe(code, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      }
      if (!write_all(fd, resp) || !keep_alive) goto done;
    }
  }
done:
  close(fd);
  --g_open_connections;
}

}  // namespace

int main(int argc, char** argv) {
  g_opts = parse(argc, argv);
  g_healthy = !g_opts.fail_health;
  if (g_opts.fail_health_after_s > 0) {
    std::thread([] {
      std::this_thread::sleep_for(std::chrono::duration<double>(g_opts.fail_health_after_s));
      g_healthy = false;
    }).detach();
  }

  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  if (g_opts.start_delay_s > 0) {
    std::this_thread::sleep_for(std::chrono::duration<double>(g_opts.start_delay_s));
  }
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_ANY);
  sa.sin_port = htons(static_cast<uint16_t>(g_opts.port));
  if (bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 || listen(lfd, 1024) != 0) {
    std::fprintf(stderr, "tern-demo-app: cannot listen on port %d: %s\n", g_opts.port, std::strerror(errno));
    return 1;
  }
  socklen_t len = sizeof(sa);
  getsockname(lfd, reinterpret_cast<sockaddr*>(&sa), &len);
  std::fprintf(stderr, "tern-demo-app %s listening on port %d\n", g_opts.version.c_str(), ntohs(sa.sin_port));

  std::thread acceptor([lfd] {
    for (;;) {
      int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (g_stopping) return;
        if (errno == EINTR || errno == ECONNABORTED) continue;
        return;
      }
      int nodelay = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof(nodelay));
      ++g_open_connections;
      std::thread(serve_connection, fd).detach();
    }
  });

  int sig = 0;
  while (sigwait(&stop, &sig) == 0 && sig == SIGUSR1) {
    if (!g_draining.exchange(true)) {
      std::fprintf(stderr, "tern-demo-app %s draining: closing each connection after its next response\n",
                   g_opts.version.c_str());
    }
  }
  // Drain: stop accepting, let open connections finish (bounded), then exit.
  g_stopping = true;
  shutdown(lfd, SHUT_RDWR);
  close(lfd);
  acceptor.join();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(g_opts.drain_s);
  while (g_open_connections > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::fprintf(stderr, "tern-demo-app %s stopped after %ld requests (%d connections cut)\n", g_opts.version.c_str(),
               g_requests.load(), g_open_connections.load());
  return 0;
}
