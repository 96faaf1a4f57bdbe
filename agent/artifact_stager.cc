#include "agent/artifact_stager.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "agent/bundle.h"
#include "core/grpc_limits.h"
#include "core/sha256.h"
#include "agent/unique_fd.h"
#include "core/service_spec.h"
#include "tern/v1/agent.grpc.pb.h"

namespace tern {
namespace fs = std::filesystem;

namespace {

grpc::ChannelArguments channel_args(const std::string& server_name) {
  grpc::ChannelArguments args;
  if (!server_name.empty()) args.SetSslTargetNameOverride(server_name);
  args.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);
  return args;
}

class FileSink {
 public:
  explicit FileSink(const std::string& path)
      : fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)), path_(path) {}
  ~FileSink() {
    if (fd_ >= 0) ::close(fd_);
  }
  absl::Status open_status() const {
    if (fd_ >= 0) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("cannot create ", path_, ": ", std::strerror(errno)));
  }
  absl::Status write(const char* data, std::size_t len) {
    while (len > 0) {
      ssize_t n = ::write(fd_, data, len);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return absl::ResourceExhaustedError(absl::StrCat("writing ", path_, ": ", std::strerror(errno)));
      data += n;
      len -= static_cast<std::size_t>(n);
    }
    return absl::OkStatus();
  }
  absl::Status finish() {
    if (::fsync(fd_) != 0) return absl::InternalError(absl::StrCat("fsync ", path_, ": ", std::strerror(errno)));
    ::close(fd_);
    fd_ = -1;
    return absl::OkStatus();
  }

 private:
  int fd_;
  std::string path_;
};

// Into `file`, refusing any byte past `max_bytes` (0: no limit), so a
// transfer stops at the limit rather than after it.
ArtifactFetcher::Sink capped_sink(FileSink& file, uint64_t max_bytes, const std::string& what) {
  return [&file, max_bytes, what, written = uint64_t{0}](const char* d, std::size_t n) mutable {
    if (max_bytes != 0 && written + n > max_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat(what, " is larger than the limit of ", max_bytes, " bytes; nothing more was fetched"));
    }
    written += n;
    return file.write(d, n);
  };
}

// The coordinator's store over gRPC. A transfer that breaks off with
// UNAVAILABLE (a coordinator restart leaves this channel on a dead
// connection while the agent's own link has long redialled) is resumed once,
// from the byte it reached, on a fresh channel.
class GrpcArtifactFetcher final : public ArtifactFetcher {
 public:
  GrpcArtifactFetcher(const std::string& target, std::shared_ptr<grpc::ChannelCredentials> credentials,
                      const std::string& server_name)
      : target_(target),
        credentials_(credentials ? std::move(credentials) : grpc::InsecureChannelCredentials()),
        server_name_(server_name),
        stub_(new_stub()) {}

  absl::Status fetch(const std::string& sha256, const Sink& sink) override { return fetch_sized(sha256, sink, {}); }

  // As the default, plus FetchOptions::on_size, told the store's total_size.
  absl::Status fetch_to_file(const std::string& sha256, const std::string& path,
                             const FetchOptions& options) override {
    FileSink file(path);
    if (auto st = file.open_status(); !st.ok()) return st;
    auto st = fetch_sized(sha256, capped_sink(file, options.max_bytes, "artifact " + sha256.substr(0, 12)),
                          options.on_size);
    if (!st.ok()) return st;
    return file.finish();
  }

 private:
  using Stub = tern::v1::AgentService::Stub;
  using SizeCheck = std::function<absl::Status(uint64_t)>;

  absl::Status fetch_sized(const std::string& sha256, const Sink& sink, const SizeCheck& on_size) {
    uint64_t got = 0, total = 0;
    absl::Status sink_status;
    bool size_checked = !on_size;
    // The first chunk carries total_size: the size check comes before its bytes.
    const Sink checked = [&](const char* d, std::size_t n) {
      if (!size_checked) {
        size_checked = true;
        if (total != 0) {
          if (auto st = on_size(total); !st.ok()) return st;
        }
      }
      return sink(d, n);
    };
    grpc::Status st = attempt(stub(), sha256, got, total, checked, sink_status);
    if (sink_status.ok() && st.error_code() == grpc::StatusCode::UNAVAILABLE) {
      auto fresh = new_stub();
      {
        std::lock_guard lock(mu_);
        stub_ = fresh;
      }
      st = attempt(fresh, sha256, got, total, checked, sink_status);
    }
    if (!sink_status.ok()) return sink_status;
    if (!st.ok()) {
      return absl::UnavailableError(absl::StrCat("fetching artifact ", sha256.substr(0, 12), " from the coordinator: ",
                                                 st.error_message(), " (after ", got, " bytes)"));
    }
    if (total != 0 && got != total) {
      return absl::DataLossError(absl::StrCat("artifact ", sha256.substr(0, 12), " truncated: got ", got, " of ",
                                              total, " bytes"));
    }
    return absl::OkStatus();
  }

  std::shared_ptr<Stub> new_stub() const {
    return tern::v1::AgentService::NewStub(
        grpc::CreateCustomChannel(target_, credentials_, channel_args(server_name_)));
  }
  std::shared_ptr<Stub> stub() {
    std::lock_guard lock(mu_);
    return stub_;
  }

  // One transfer from byte `got` on; advances `got` and learns `total`.
  static grpc::Status attempt(const std::shared_ptr<Stub>& stub, const std::string& sha256, uint64_t& got,
                              uint64_t& total, const Sink& sink, absl::Status& sink_status) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(30));
    tern::v1::FetchArtifactRequest req;
    req.set_sha256(sha256);
    req.set_offset(got);
    auto reader = stub->FetchArtifact(&ctx, req);
    tern::v1::ArtifactChunk chunk;
    while (reader->Read(&chunk)) {
      if (chunk.total_size()) total = chunk.total_size();
      if (chunk.offset() != got) {
        ctx.TryCancel();
        sink_status = absl::DataLossError(absl::StrCat("artifact stream out of order at byte ", got));
        break;
      }
      sink_status = sink(chunk.data().data(), chunk.data().size());
      if (!sink_status.ok()) {
        ctx.TryCancel();
        break;
      }
      got += chunk.data().size();
    }
    return reader->Finish();
  }

  const std::string target_;
  const std::shared_ptr<grpc::ChannelCredentials> credentials_;
  const std::string server_name_;
  std::mutex mu_;
  std::shared_ptr<Stub> stub_;
};


std::string mib(uint64_t bytes) {
  return bytes < (uint64_t{1} << 20) ? absl::StrCat(bytes, " bytes") : absl::StrCat(bytes >> 20, " MiB");
}

// Why a URL download must not connect to `addr`, or "" when it may.
std::string refused_address(const sockaddr* addr, bool allow_loopback) {
  char text[INET6_ADDRSTRLEN] = "?";
  uint32_t v4 = 0;  // host order
  bool is_v4 = false;
  if (addr->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(addr);
    ::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
    v4 = ntohl(in->sin_addr.s_addr);
    is_v4 = true;
  } else if (addr->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(addr);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
    const in6_addr& a = in6->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&a)) {
      std::memcpy(&v4, a.s6_addr + 12, 4);
      v4 = ntohl(v4);
      is_v4 = true;
    } else if (IN6_IS_ADDR_LINKLOCAL(&a)) {
      return absl::StrCat(text, " is a link-local address (fe80::/10)");
    } else if (IN6_IS_ADDR_LOOPBACK(&a) || IN6_IS_ADDR_UNSPECIFIED(&a)) {
      if (!allow_loopback) return absl::StrCat(text, " is this host (loopback)");
      return "";
    } else {
      return "";
    }
  } else {
    return absl::StrCat("address family ", addr->sa_family, " is not IPv4 or IPv6");
  }
  if (is_v4) {
    if ((v4 >> 16) == 0xa9fe) {
      return absl::StrCat(text, " is a link-local address (169.254.0.0/16, where cloud metadata services answer)");
    }
    if (((v4 >> 24) == 127 || (v4 >> 24) == 0) && !allow_loopback) {
      return absl::StrCat(text, " is this host (loopback)");
    }
  }
  return "";
}

void init_curl_once() {
  static std::once_flag once;
  std::call_once(once, [] { ::curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// One download into one file, as libcurl's callbacks see it.
struct UrlTransfer {
  FileSink* file = nullptr;
  const FetchOptions* options = nullptr;
  bool allow_loopback = false;
  CURL* curl = nullptr;
  uint64_t written = 0;
  bool size_checked = false;
  // Why a callback stopped the transfer (the address, the size, the disk).
  absl::Status stopped;
  std::string refused;  // the last address refused, for the message

  static curl_socket_t open_socket(void* self, curlsocktype, curl_sockaddr* a) {
    auto* t = static_cast<UrlTransfer*>(self);
    std::string why = refused_address(&a->addr, t->allow_loopback);
    if (!why.empty()) {
      t->refused = why;
      return CURL_SOCKET_BAD;
    }
    return ::socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
  }

  static size_t write(char* data, size_t, size_t len, void* self) {
    auto* t = static_cast<UrlTransfer*>(self);
    const uint64_t max = t->options->max_bytes;
    if (!t->size_checked) {
      t->size_checked = true;
      curl_off_t length = -1;
      ::curl_easy_getinfo(t->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
      if (length >= 0) {
        const auto size = static_cast<uint64_t>(length);
        if (max != 0 && size > max) {
          t->stopped = too_big(absl::StrCat("the server says it is ", size, " bytes"), max);
          return 0;
        }
        if (t->options->on_size) {
          if (auto st = t->options->on_size(size); !st.ok()) {
            t->stopped = st;
            return 0;
          }
        }
      }
    }
    if (max != 0 && (t->written + len > max)) {
      t->stopped = too_big("the server sent more", max);
      return 0;
    }
    if (auto st = t->file->write(data, len); !st.ok()) {
      t->stopped = st;
      return 0;
    }
    t->written += len;
    return len;
  }

  static absl::Status too_big(const std::string& what, uint64_t max) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the artifact is larger than this agent's download limit of ", max, " bytes (", mib(max), "; ", what,
        "); nothing more was downloaded (raise downloads.max_mib in the agent's config, or ship a smaller artifact)"));
  }
};

// libcurl writes the file as the bytes come; fetch() goes through a temp file.
class UrlArtifactFetcher final : public ArtifactFetcher {
 public:
  explicit UrlArtifactFetcher(UrlFetchPolicy policy) : policy_(policy) { init_curl_once(); }

  absl::Status fetch_to_file(const std::string& url, const std::string& path, const FetchOptions& options) override {
    const bool https = url.rfind("https://", 0) == 0;
    if (!https && url.rfind("http://", 0) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("cannot download \"", url, "\": only http:// and https:// URLs"));
    }
    FileSink file(path);
    if (auto st = file.open_status(); !st.ok()) return st;
    std::unique_ptr<CURL, void (*)(CURL*)> curl(::curl_easy_init(), ::curl_easy_cleanup);
    if (!curl) return absl::InternalError(absl::StrCat("downloading ", url, ": libcurl could not start a transfer"));
    UrlTransfer t;
    t.file = &file;
    t.options = &options;
    t.allow_loopback = policy_.allow_loopback;
    t.curl = curl.get();
    char error[CURL_ERROR_SIZE] = "";
    CURL* c = curl.get();
    ::curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    ::curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
    ::curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    ::curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    ::curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    ::curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    ::curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
    // A redirect keeps the scheme: https never drops to http.
    ::curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, https ? "https" : "http");
    ::curl_easy_setopt(c, CURLOPT_PROXY, "");  // the address checked is the one the bytes come from
    ::curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    ::curl_easy_setopt(c, CURLOPT_TIMEOUT, 1800L);
    ::curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, &UrlTransfer::open_socket);
    ::curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, &t);
    ::curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &UrlTransfer::write);
    ::curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
    if (options.max_bytes != 0) {
      ::curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(options.max_bytes));
    }
    const CURLcode rc = ::curl_easy_perform(c);
    if (rc == CURLE_OK) return file.finish();
    if (!t.stopped.ok()) return t.stopped;
    if (rc == CURLE_FILESIZE_EXCEEDED) return UrlTransfer::too_big("the server says so", options.max_bytes);
    if (rc == CURLE_COULDNT_CONNECT && !t.refused.empty()) {
      return absl::PermissionDeniedError(absl::StrCat(
          "downloading ", url, " refused: ", t.refused, ", which this agent never downloads from",
          policy_.allow_loopback || t.refused.find("loopback") == std::string::npos
              ? "; serve the artifact from another address"
              : "; serve the artifact from another address, or set downloads.allow_loopback in the agent's config"));
    }
    if (rc == CURLE_UNSUPPORTED_PROTOCOL) {
      char* to = nullptr;
      ::curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &to);
      return absl::PermissionDeniedError(absl::StrCat(
          "downloading ", url, " refused: the server redirected to ", to ? to : "another scheme",
          ", and a download only follows redirects that keep its scheme (", https ? "https" : "http",
          "); register the artifact's final URL"));
    }
    if (rc == CURLE_TOO_MANY_REDIRECTS) {
      return absl::UnavailableError(absl::StrCat("downloading ", url,
                                                 " failed: more than 5 redirects; register the artifact's final URL"));
    }
    return absl::UnavailableError(
        absl::StrCat("downloading ", url, " failed: ", error[0] ? error : ::curl_easy_strerror(rc)));
  }

  absl::Status fetch(const std::string& url, const Sink& sink) override {
    std::string tmp = (fs::temp_directory_path() / "tern-download-XXXXXX").string();
    unique_fd fd(::mkstemp(tmp.data()));
    if (!fd.valid()) return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
    struct Unlink {
      std::string path;
      ~Unlink() { ::unlink(path.c_str()); }
    } unlink_tmp{tmp};
    if (auto st = fetch_to_file(url, tmp, FetchOptions()); !st.ok()) return st;
    char buf[64 * 1024];
    for (;;) {
      const ssize_t n = ::read(fd.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return absl::InternalError(absl::StrCat("reading ", tmp, ": ", std::strerror(errno)));
      if (n == 0) return absl::OkStatus();
      if (auto st = sink(buf, static_cast<std::size_t>(n)); !st.ok()) return st;
    }
  }

 private:
  const UrlFetchPolicy policy_;
};

constexpr const char* kMarkerName = ".tern-sha256";

bool looks_gzip(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  unsigned char magic[2] = {0, 0};
  in.read(reinterpret_cast<char*>(magic), 2);
  return in.gcount() == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
}

// The marker that says the release is complete. O_EXCL | O_NOFOLLOW: a
// bundle that ships its own marker (or a symlink in its place) is refused
// rather than trusted or written through.
absl::Status write_marker(const std::string& content, const std::string& sha256) {
  const std::string path = content + "/" + kMarkerName;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0 && errno == EEXIST) {
    return absl::InvalidArgumentError(absl::StrCat("the bundle contains ", kMarkerName,
                                                   ", a name tern reserves; remove it from the bundle"));
  }
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
  const std::string line = sha256 + "\n";
  const ssize_t n = ::write(fd, line.data(), line.size());
  const int write_errno = errno;
  if (::close(fd) != 0 || n != static_cast<ssize_t>(line.size())) {
    return absl::InternalError(absl::StrCat("cannot write ", path, ": ", std::strerror(n < 0 ? write_errno : errno)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ArtifactFetcher::fetch_to_file(const std::string& source, const std::string& path,
                                            const FetchOptions& options) {
  FileSink sink(path);
  if (auto st = sink.open_status(); !st.ok()) return st;
  auto st = fetch(source, capped_sink(sink, options.max_bytes, "artifact " + source));
  if (!st.ok()) return st;
  return sink.finish();
}

std::unique_ptr<ArtifactFetcher> make_url_artifact_fetcher(UrlFetchPolicy policy) {
  return std::make_unique<UrlArtifactFetcher>(policy);
}

std::unique_ptr<ArtifactFetcher> make_grpc_artifact_fetcher(const std::string& target,
                                                            std::shared_ptr<grpc::ChannelCredentials> credentials,
                                                            const std::string& server_name) {
  return std::make_unique<GrpcArtifactFetcher>(target, std::move(credentials), server_name);
}

ArtifactStager::ArtifactStager(std::string root, ArtifactFetcher* fetcher, BundleLimits limits,
                               ArtifactFetcher* url_fetcher, StagingLimits staging)
    : root_(std::move(root)),
      fetcher_(fetcher),
      limits_(limits),
      own_url_fetcher_(url_fetcher ? nullptr : make_url_artifact_fetcher()),
      url_fetcher_(url_fetcher ? url_fetcher : own_url_fetcher_.get()),
      staging_(std::move(staging)) {
  if (!staging_.free_bytes) {
    staging_.free_bytes = [](const std::string& path) -> absl::StatusOr<uint64_t> {
      struct statvfs vfs;
      if (::statvfs(path.c_str(), &vfs) != 0) {
        return absl::InternalError(absl::StrCat("statvfs ", path, ": ", std::strerror(errno)));
      }
      return static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    };
  }
}

std::string ArtifactStager::release_dir(const std::string& service, const std::string& version) const {
  return absl::StrCat(root_, "/", service, "/releases/", version);
}

int ArtifactStager::remove_abandoned() const {
  int removed = 0;
  std::error_code ec;
  for (const auto& svc : fs::directory_iterator(root_, ec)) {
    std::error_code ec2;
    for (const auto& e : fs::directory_iterator(svc.path() / "releases", ec2)) {
      if (e.path().filename().string().rfind(".staging-", 0) == 0) {
        std::error_code ignored;
        fs::remove_all(e.path(), ignored);
        ++removed;
      }
    }
  }
  return removed;
}

std::vector<std::string> ArtifactStager::prune(const std::string& service, const std::set<std::string>& in_use,
                                               std::size_t keep_last) const {
  struct Staged {
    fs::file_time_type when;
    std::string version;
  };
  std::vector<Staged> staged;
  std::error_code ec;
  const fs::path dir = fs::path(root_) / service / "releases";
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string version = e.path().filename().string();
    std::error_code ec2;
    if (!is_valid_version(version) || !e.is_directory(ec2) || e.is_symlink(ec2)) continue;
    // The marker is written last: its time is when the release was staged.
    const auto when = fs::last_write_time(e.path() / kMarkerName, ec2);
    if (ec2) continue;
    staged.push_back({when, version});
  }
  std::sort(staged.begin(), staged.end(), [](const Staged& a, const Staged& b) {
    return a.when != b.when ? a.when > b.when : a.version > b.version;
  });
  std::vector<std::string> removed;
  for (std::size_t i = keep_last; i < staged.size(); ++i) {
    if (in_use.count(staged[i].version)) continue;
    std::error_code rm;
    fs::remove_all(dir / staged[i].version, rm);
    if (!rm) removed.push_back(staged[i].version);
  }
  return removed;
}

absl::Status ArtifactStager::check_free_space(const std::string& dir, const tern::v1::ReleaseRef& release,
                                              uint64_t need, bool size_known) const {
  auto free = staging_.free_bytes(dir);
  if (!free.ok()) return free.status();
  const uint64_t want = need + staging_.free_space_margin;
  if (*free >= want) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "not enough disk space to stage release ", release.version(), ": ", dir, " has ", mib(*free), " free, and ",
      size_known ? absl::StrCat("the artifact is ", mib(need), ", plus ") : std::string("staging needs "),
      mib(staging_.free_space_margin), " kept free; nothing was downloaded (free space there, e.g. remove old "
      "releases or logs, then deploy again)"));
}

absl::Status ArtifactStager::download(const tern::v1::ReleaseRef& release, const std::string& file,
                                      const Progress& progress) {
  const std::string dir = fs::path(file).parent_path().string();
  FetchOptions options;
  options.on_size = [&](uint64_t size) { return check_free_space(dir, release, size, true); };
  if (!release.url().empty()) {
    const std::string& url = release.url();
    if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("release url \"", url, "\" must be http:// or https://"));
    }
    progress(absl::StrCat("downloading ", url));
    options.max_bytes = staging_.max_url_bytes;
    return url_fetcher_->fetch_to_file(url, file, options);
  }
  if (fetcher_ == nullptr) return absl::FailedPreconditionError("no artifact source configured");
  progress(absl::StrCat("fetching artifact ", release.sha256().substr(0, 12), " from the coordinator"));
  return fetcher_->fetch_to_file(release.sha256(), file, options);
}

absl::StatusOr<std::string> ArtifactStager::stage(const std::string& service, const tern::v1::ReleaseRef& release,
                                                  const Progress& progress) {
  if (!is_valid_version(release.version())) {
    return absl::InvalidArgumentError(absl::StrCat("version \"", release.version(),
                                                   "\" must be 1-64 of letters, digits, '.', '_', '+', '-'"));
  }
  if (!is_sha256_hex(release.sha256())) {
    return absl::InvalidArgumentError(
        absl::StrCat("release ", release.version(), ": sha256 \"", release.sha256(), "\" is not 64 lower-case hex digits"));
  }
  const std::string final_dir = release_dir(service, release.version());
  const std::string marker = absl::StrCat(final_dir, "/", kMarkerName);
  std::error_code ec;
  if (fs::exists(final_dir, ec)) {
    std::ifstream in(marker);
    std::string have;
    std::getline(in, have);
    if (have == release.sha256()) {
      progress(absl::StrCat("release ", release.version(), " already staged"));
      return final_dir;
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "release ", release.version(), " of ", service, " is already staged with sha256 ", have.substr(0, 12),
        ", not ", release.sha256().substr(0, 12), "; versions are immutable, push the new build as a new version"));
  }
  const std::string parent = absl::StrCat(root_, "/", service, "/releases");
  fs::create_directories(parent, ec);
  if (ec) return absl::FailedPreconditionError(absl::StrCat("cannot create ", parent, ": ", ec.message()));
  if (auto st = check_free_space(parent, release, 0, false); !st.ok()) return st;
  std::random_device rd;
  const std::string tmp = absl::StrCat(parent, "/.staging-", release.version(), "-", rd() % 1000000);
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp + "/content", ec);
  if (ec) return absl::FailedPreconditionError(absl::StrCat("cannot create ", tmp, ": ", ec.message()));
  auto cleanup = [&] {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
  };
  const std::string blob = tmp + "/artifact";
  if (auto st = download(release, blob, progress); !st.ok()) {
    cleanup();
    return st;
  }
  auto digest = sha256_file(blob);
  if (!digest.ok()) {
    cleanup();
    return digest.status();
  }
  if (*digest != release.sha256()) {
    cleanup();
    return absl::DataLossError(absl::StrCat("artifact for ", service, " ", release.version(),
                                            " failed its checksum: expected sha256 ", release.sha256(), ", got ",
                                            *digest, "; nothing was installed (re-push the artifact or fix the sha256)"));
  }
  progress(absl::StrCat("verified sha256 ", digest->substr(0, 12)));
  const bool bundle = release.kind() == "tar.gz" || (release.kind().empty() && looks_gzip(blob));
  const std::string content = tmp + "/content";
  if (bundle) {
    if (auto st = unpack_bundle(blob, content, limits_); !st.ok()) {
      cleanup();
      return absl::Status(st.code(), absl::StrCat("cannot unpack the ", release.version(), " bundle of ", service,
                                                  ": ", st.message(), "; nothing was installed"));
    }
  } else {
    std::string name = release.name().empty() ? service : release.name();
    if (name.find('/') != std::string::npos || name == "." || name == "..") {
      cleanup();
      return absl::InvalidArgumentError(absl::StrCat("executable name \"", name, "\" must be a plain file name"));
    }
    fs::rename(blob, content + "/" + name, ec);
    if (!ec) ::chmod((content + "/" + name).c_str(), 0755);
    if (ec) {
      cleanup();
      return absl::InternalError(absl::StrCat("cannot install executable: ", ec.message()));
    }
  }
  if (auto st = write_marker(content, release.sha256()); !st.ok()) {
    cleanup();
    return st;
  }
  ::chmod(content.c_str(), 0755);
  fs::rename(content, final_dir, ec);
  cleanup();
  if (ec) return absl::InternalError(absl::StrCat("cannot move the release into ", final_dir, ": ", ec.message()));
  progress(absl::StrCat("staged ", release.version(), " in ", final_dir));
  return final_dir;
}

}  // namespace tern
