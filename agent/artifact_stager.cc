#include "agent/artifact_stager.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "agent/bundle.h"
#include "core/grpc_limits.h"
#include "core/sha256.h"
#include "agent/exec.h"
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

  absl::Status fetch(const std::string& sha256, const Sink& sink) override {
    uint64_t got = 0, total = 0;
    absl::Status sink_status;
    grpc::Status st = attempt(stub(), sha256, got, total, sink, sink_status);
    if (sink_status.ok() && st.error_code() == grpc::StatusCode::UNAVAILABLE) {
      auto fresh = new_stub();
      {
        std::lock_guard lock(mu_);
        stub_ = fresh;
      }
      st = attempt(fresh, sha256, got, total, sink, sink_status);
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

 private:
  using Stub = tern::v1::AgentService::Stub;

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

// curl writes the file itself; fetch() goes through a temp file.
class UrlArtifactFetcher final : public ArtifactFetcher {
 public:
  absl::Status fetch_to_file(const std::string& url, const std::string& path) override {
    auto out = run_command({"curl", "--fail", "--silent", "--show-error", "--location", "--proto", "=http,https",
                            "--max-time", "1800", "--output", path, url},
                           "", Millis(1'900'000));
    if (!out.ok()) return out.status();
    if (out->exit_code != 0) {
      std::string why = out->err;
      while (!why.empty() && (why.back() == '\n' || why.back() == '\r')) why.pop_back();
      return absl::UnavailableError(absl::StrCat("downloading ", url, " failed: ", why.empty() ? "curl error" : why));
    }
    return absl::OkStatus();
  }

  absl::Status fetch(const std::string& url, const Sink& sink) override {
    std::string tmp = (fs::temp_directory_path() / "tern-download-XXXXXX").string();
    unique_fd fd(::mkstemp(tmp.data()));
    if (!fd.valid()) return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
    struct Unlink {
      std::string path;
      ~Unlink() { ::unlink(path.c_str()); }
    } unlink_tmp{tmp};
    if (auto st = fetch_to_file(url, tmp); !st.ok()) return st;
    char buf[64 * 1024];
    for (;;) {
      const ssize_t n = ::read(fd.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return absl::InternalError(absl::StrCat("reading ", tmp, ": ", std::strerror(errno)));
      if (n == 0) return absl::OkStatus();
      if (auto st = sink(buf, static_cast<std::size_t>(n)); !st.ok()) return st;
    }
  }
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

absl::Status ArtifactFetcher::fetch_to_file(const std::string& source, const std::string& path) {
  FileSink sink(path);
  if (auto st = sink.open_status(); !st.ok()) return st;
  auto st = fetch(source, [&](const char* d, std::size_t n) { return sink.write(d, n); });
  if (!st.ok()) return st;
  return sink.finish();
}

std::unique_ptr<ArtifactFetcher> make_url_artifact_fetcher() { return std::make_unique<UrlArtifactFetcher>(); }

std::unique_ptr<ArtifactFetcher> make_grpc_artifact_fetcher(const std::string& target,
                                                            std::shared_ptr<grpc::ChannelCredentials> credentials,
                                                            const std::string& server_name) {
  return std::make_unique<GrpcArtifactFetcher>(target, std::move(credentials), server_name);
}

ArtifactStager::ArtifactStager(std::string root, ArtifactFetcher* fetcher, BundleLimits limits,
                               ArtifactFetcher* url_fetcher)
    : root_(std::move(root)),
      fetcher_(fetcher),
      limits_(limits),
      own_url_fetcher_(url_fetcher ? nullptr : make_url_artifact_fetcher()),
      url_fetcher_(url_fetcher ? url_fetcher : own_url_fetcher_.get()) {}

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

absl::Status ArtifactStager::download(const tern::v1::ReleaseRef& release, const std::string& file,
                                      const Progress& progress) {
  if (!release.url().empty()) {
    const std::string& url = release.url();
    if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("release url \"", url, "\" must be http:// or https://"));
    }
    progress(absl::StrCat("downloading ", url));
    return url_fetcher_->fetch_to_file(url, file);
  }
  if (fetcher_ == nullptr) return absl::FailedPreconditionError("no artifact source configured");
  progress(absl::StrCat("fetching artifact ", release.sha256().substr(0, 12), " from the coordinator"));
  return fetcher_->fetch_to_file(release.sha256(), file);
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
