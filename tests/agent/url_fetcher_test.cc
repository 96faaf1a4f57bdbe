// The URL fetcher (libcurl) against a small HTTP server on 127.0.0.1: which
// addresses and redirects it refuses, and where a download stops.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>

#include "agent/artifact_stager.h"
#include "tests/support/http_server.h"
#include "tests/support/temp_dir.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

// Answers GET requests with the raw response `routes` gives for the path
// (404 otherwise): a FakeHttpServer with routes.
class ArtifactServer {
 public:
  explicit ArtifactServer(std::map<std::string, std::string> routes)
      : routes_(std::move(routes)), server_([this](const std::string& req) { return route(req); }) {}
  uint16_t port() const { return server_.port(); }
  int requests() const { return static_cast<int>(server_.requests().size()); }
  std::string url(const std::string& path) const { return server_.url() + path; }

 private:
  std::string route(const std::string& req) const {
    const auto sp = req.find(' ');
    const std::string path = sp == std::string::npos ? "" : req.substr(sp + 1, req.find(' ', sp + 1) - sp - 1);
    auto it = routes_.find(path);
    return it != routes_.end() ? it->second
                               : "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  }

  const std::map<std::string, std::string> routes_;
  testing::FakeHttpServer server_;  // last: stops before routes_ goes
};

std::string ok(const std::string& body) {
  return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}
// No Content-Length: the body ends when the connection does.
std::string ok_unsized(const std::string& body) { return "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body; }
std::string redirect(const std::string& to) {
  return "HTTP/1.1 302 Found\r\nLocation: " + to + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
}

std::string contents(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return "";
  std::string out(fs::file_size(path), '\0');
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return "";
  out.resize(std::fread(out.data(), 1, out.size(), f));
  std::fclose(f);
  return out;
}

UrlFetchPolicy loopback_allowed() {
  UrlFetchPolicy p;
  p.allow_loopback = true;
  return p;
}

TEST(UrlFetcherTest, LoopbackIsRefusedUnlessTheConfigAllowsIt) {
  testing::TempDir dir;
  ArtifactServer server({{"/app", ok("hello")}});
  ASSERT_NE(server.port(), 0);
  const std::string file = dir.file("artifact");
  auto st = make_url_artifact_fetcher()->fetch_to_file(server.url("/app"), file, FetchOptions());
  EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied) << st;
  EXPECT_NE(st.message().find("loopback"), absl::string_view::npos) << st;
  EXPECT_NE(st.message().find("downloads.allow_loopback"), absl::string_view::npos) << st;
  EXPECT_EQ(server.requests(), 0) << "refused before connecting";
  EXPECT_EQ(contents(file), "");

  uint64_t told = 0;
  FetchOptions options;
  options.on_size = [&](uint64_t size) {
    told = size;
    return absl::OkStatus();
  };
  st = make_url_artifact_fetcher(loopback_allowed())->fetch_to_file(server.url("/app"), file, options);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(contents(file), "hello");
  EXPECT_EQ(told, 5u) << "the Content-Length, before the first byte";
}

TEST(UrlFetcherTest, LinkLocalAddressesAreRefusedEvenWithLoopbackAllowed) {
  testing::TempDir dir;
  const std::string file = dir.file("artifact");
  auto fetcher = make_url_artifact_fetcher(loopback_allowed());
  for (const char* url : {"http://169.254.169.254/latest/meta-data/", "http://[::ffff:169.254.169.254]/",
                                "https://169.254.10.20/app"}) {
    auto st = fetcher->fetch_to_file(url, file, FetchOptions());
    EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied) << url << ": " << st;
    EXPECT_NE(st.message().find("link-local"), absl::string_view::npos) << st;
  }
  // Nor through a redirect from an allowed server.
  ArtifactServer server({{"/app", redirect("http://169.254.169.254/latest/meta-data/iam")}});
  auto st = fetcher->fetch_to_file(server.url("/app"), file, FetchOptions());
  EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied) << st;
  EXPECT_NE(st.message().find("169.254.169.254"), absl::string_view::npos) << st;
  EXPECT_EQ(server.requests(), 1);
  EXPECT_EQ(contents(file), "");
}

TEST(UrlFetcherTest, ARedirectMustKeepTheScheme) {
  testing::TempDir dir;
  const std::string file = dir.file("artifact");
  ArtifactServer server({{"/app", ok("hello")}, {"/moved", redirect("/app")}, {"/to-file", redirect("file:///etc/passwd")}});
  // A redirect on the same scheme is followed.
  auto fetcher = make_url_artifact_fetcher(loopback_allowed());
  ASSERT_TRUE(fetcher->fetch_to_file(server.url("/moved"), file, FetchOptions()).ok());
  EXPECT_EQ(contents(file), "hello");
  ArtifactServer other({{"/to-https", redirect("https://127.0.0.1:" + std::to_string(server.port()) + "/app")}});
  for (const std::string& url : {server.url("/to-file"), other.url("/to-https")}) {
    auto st = fetcher->fetch_to_file(url, file, FetchOptions());
    EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied) << url << ": " << st;
    EXPECT_NE(st.message().find("redirect"), absl::string_view::npos) << st;
    EXPECT_EQ(contents(file), "") << url;
  }
}

TEST(UrlFetcherTest, ADownloadNeverGoesPastTheLimit) {
  testing::TempDir dir;
  const std::string file = dir.file("artifact");
  const std::string big(1 << 20, 'x');
  ArtifactServer server({{"/unsized", ok_unsized(big)}, {"/sized", ok(big)}});
  auto fetcher = make_url_artifact_fetcher(loopback_allowed());
  FetchOptions options;
  options.max_bytes = 64 << 10;
  bool told = false;
  options.on_size = [&](uint64_t) {
    told = true;
    return absl::OkStatus();
  };
  // Without a Content-Length: stopped while streaming, at the limit.
  auto st = fetcher->fetch_to_file(server.url("/unsized"), file, options);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  EXPECT_NE(st.message().find("downloads.max_mib"), absl::string_view::npos) << st;
  EXPECT_LE(contents(file).size(), options.max_bytes);
  // With one: refused before the first byte.
  st = fetcher->fetch_to_file(server.url("/sized"), file, options);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  EXPECT_EQ(contents(file), "");
  EXPECT_FALSE(told) << "a size over the limit goes no further";
}

}  // namespace
}  // namespace tern
