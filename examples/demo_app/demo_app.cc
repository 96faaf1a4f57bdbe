// tern-demo-app: a small HTTP server for demos, tests and benchmarks of the
// blue/green swap. It answers every request with its version and can be told
// to misbehave in the ways a real release does.
//
//   GET /            200 "<version> <color>\n" (X-Tern-Version / X-Tern-Color headers)
//   GET /healthz     200 while healthy, 503 once told to fail
//   GET /admin/fail-health     /admin/heal     flip health at run time
//
// Flags: --port N (required), --version V, --color C, --fail-health,
// --fail-health-after 10s (healthy at first, then failing, as a release that
// goes bad while its wave bakes),
// --crash-after N (abort after N requests), --start-delay 2s (listen late),
// --error-rate 0.2 (that share of / answers 500), --drain 5s (on SIGTERM stop
// accepting, finish open connections for at most this long, then exit).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
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
  double drain_s = 5;
};

std::atomic<bool> g_healthy{true};
std::atomic<long> g_requests{0};
std::atomic<int> g_open_connections{0};
std::atomic<bool> g_stopping{false};
Options g_opts;

double parse_seconds(const char* text) {
  char* end = nullptr;
  double v = std::strtod(text, &end);
  std::string unit = end ? end : "";
  if (unit == "ms") return v / 1000;
  if (unit == "m") return v * 60;
  return v;  // "s" or bare seconds
}

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr, "tern-demo-app: %s\nusage: tern-demo-app --port N [--version V] [--color C] "
                       "[--fail-health] [--fail-health-after D] [--crash-after N] [--start-delay D] [--error-rate F] [--drain D]\n", why);
  std::exit(2);
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
    else if (a == "--version") o.version = value();
    else if (a == "--color") o.color = value();
    else if (a == "--fail-health") o.fail_health = true;
    else if (a == "--fail-health-after") o.fail_health_after_s = parse_seconds(value());
    else if (a == "--crash-after") o.crash_after = std::atol(value());
    else if (a == "--start-delay") o.start_delay_s = parse_seconds(value());
    else if (a == "--error-rate") o.error_rate = std::atof(value());
    else if (a == "--drain") o.drain_s = parse_seconds(value());
    else usage(("unknown flag " + a).c_str());
  }
  if (o.port < 0 || o.port > 65535) usage("--port is required (0-65535)");
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

std::string respond(int status, const char* reason, const std::string& body, bool keep_alive) {
  std::string color = g_opts.color.empty() ? "" : "X-Tern-Color: " + g_opts.color + "\r\n";
  return "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\nContent-Type: text/plain\r\nX-Tern-Version: " +
         g_opts.version + "\r\n" + color + "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: " +
         (keep_alive ? "keep-alive" : "close") + "\r\n\r\n" + body;
}

void serve_connection(int fd) {
  thread_local std::mt19937 rng(std::random_device{}());
  std::string buf;
  char chunk[4096];
  for (;;) {
    size_t end;
    while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
      // While draining, an idle keep-alive connection is closed rather than held open.
      pollfd p{fd, POLLIN, 0};
      int r = poll(&p, 1, 200);
      if (r == 0) {
        if (g_stopping && buf.empty()) goto done;
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
      bool keep_alive = head.find("Connection: close") == std::string::npos &&
                        head.find("connection: close") == std::string::npos && !g_stopping;
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
      } else if (g_opts.error_rate > 0 && std::uniform_real_distribution<double>(0, 1)(rng) < g_opts.error_rate) {
        resp = respond(500, "Internal Server Error", "injected error\n", keep_alive);
      } else {
        std::string body = g_opts.version + (g_opts.color.empty() ? "" : " " + g_opts.color) + "\n";
        resp = respond(200, "OK", body, keep_alive);
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
  sigwait(&stop, &sig);
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
