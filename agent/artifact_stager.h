#pragma once

#include <grpcpp/security/credentials.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/bundle.h"
#include "tern/v1/common.pb.h"

namespace tern {

// What one transfer into a file may take.
struct FetchOptions {
  // At most this many bytes reach the file (0: no limit); a longer artifact
  // stops the transfer at the limit with RESOURCE_EXHAUSTED.
  uint64_t max_bytes = 0;
  // Told the artifact's size before its first byte is written, when the
  // source says it (an HTTP Content-Length); a non-OK status stops the
  // transfer with that status. Null: nobody asks.
  std::function<absl::Status(uint64_t size)> on_size;
};

// Where artifact bytes come from: the coordinator's content-addressed store
// (the source is a sha256) or a web server (the source is a URL).
// Thread-safe.
class ArtifactFetcher {
 public:
  using Sink = std::function<absl::Status(const char* data, std::size_t len)>;
  virtual ~ArtifactFetcher() = default;
  // Streams the artifact `source` names into `sink`; an error when the
  // transfer breaks off, the artifact is unknown or the sink refuses.
  virtual absl::Status fetch(const std::string& source, const Sink& sink) = 0;
  // Fetches into the file `path` (created with mode 0600, or truncated) under
  // `options`. By default through fetch(), synced to disk, counting bytes
  // against max_bytes (on_size is not called: fetch() does not say the size);
  // a fetcher that learns the size first overrides it.
  virtual absl::Status fetch_to_file(const std::string& source, const std::string& path,
                                     const FetchOptions& options);
};

// FetchArtifact over gRPC to the coordinator at `target` (host:port).
// Fetches from the coordinator's store; `credentials` null: plaintext.
std::unique_ptr<ArtifactFetcher> make_grpc_artifact_fetcher(const std::string& target,
                                                            std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr,
                                                            const std::string& server_name = "");

// Where a URL download may connect to.
struct UrlFetchPolicy {
  // Loopback addresses (127.0.0.0/8, ::1, and 0.0.0.0, which reaches this
  // host) are refused unless this is set: a URL must not reach services that
  // listen only locally. Tests with an artifact server on 127.0.0.1 set it.
  bool allow_loopback = false;
};

// http:// and https:// URLs, downloaded in-process with libcurl, 30 minutes
// at most. Every address the transfer connects to, for the URL and for each
// redirect, is checked just before the socket is opened (after DNS, so a
// name that resolves to a refused address is refused too): link-local
// addresses (169.254.0.0/16 with the cloud metadata service, fe80::/10) are
// never connected to, loopback only under `policy`; IPv4-mapped IPv6
// addresses count as their IPv4 address. Redirects (at most 5) must keep the
// URL's scheme: an https download never continues over http, and nothing
// continues to file:, ftp: and the like. Proxy settings in the environment
// are ignored, so the address checked is the address the bytes come from.
// Errors: PERMISSION_DENIED for a refused address or redirect,
// RESOURCE_EXHAUSTED past FetchOptions::max_bytes, UNAVAILABLE "downloading
// <url> failed: <libcurl's reason>" otherwise.
std::unique_ptr<ArtifactFetcher> make_url_artifact_fetcher(UrlFetchPolicy policy = UrlFetchPolicy());

// How the stager guards the host's disk.
struct StagingLimits {
  // Largest artifact downloaded from a URL (the agent's downloads.max_mib).
  uint64_t max_url_bytes = uint64_t{2} << 30;
  // Free space kept beyond the artifact itself (for a bundle's unpacked
  // files, logs, the state file): staging is refused when the release dir's
  // filesystem has less than the artifact's size (when known) plus this.
  uint64_t free_space_margin = uint64_t{64} << 20;
  // Bytes available to the agent on the filesystem holding `path`. Null:
  // statvfs(2). Tests inject one.
  std::function<absl::StatusOr<uint64_t>(const std::string& path)> free_bytes;
};

// Puts releases on disk: <root>/<service>/releases/<version>/.
//
// A release is downloaded into a temp dir beside its final place, its sha256
// checked, unpacked (tar.gz, in-process under the policy and `limits` of
// agent/bundle.h) or installed as one executable, then renamed into place, so
// a release dir that exists is always complete and verified; a refused or
// broken bundle leaves nothing behind. A version once staged is immutable:
// staging it again with another sha256 is refused.
//
// Before anything is fetched the stager checks the free space of the
// release dir's filesystem (StagingLimits), and again once the fetcher says
// the artifact's size; a URL download stops at max_url_bytes. Either refusal
// is RESOURCE_EXHAUSTED, names the release, the numbers and what to do, and
// leaves nothing behind. Thread-safe for different services.
class ArtifactStager {
 public:
  using Progress = std::function<void(const std::string&)>;
  // `fetcher` serves releases without a URL (null: none), `url_fetcher` the
  // ones with a URL (null: make_url_artifact_fetcher()). Neither is owned.
  ArtifactStager(std::string root, ArtifactFetcher* fetcher, BundleLimits limits = BundleLimits(),
                 ArtifactFetcher* url_fetcher = nullptr, StagingLimits staging = StagingLimits());

  absl::StatusOr<std::string> stage(const std::string& service, const tern::v1::ReleaseRef& release,
                                    const Progress& progress);
  std::string release_dir(const std::string& service, const std::string& version) const;
  // Removes temp dirs of stagings cut short by a crash; returns how many.
  int remove_abandoned() const;
  // Deletes the staged releases of `service` except the `keep_last` staged
  // most recently and the versions in `in_use` (whatever runs, is warm or is
  // known-good: the caller names them). Only complete releases (with their
  // marker) are considered; anything else in the dir is left alone. Returns
  // the versions removed; a release that cannot be removed is skipped.
  std::vector<std::string> prune(const std::string& service, const std::set<std::string>& in_use,
                                 std::size_t keep_last) const;

 private:
  absl::Status download(const tern::v1::ReleaseRef& release, const std::string& file, const Progress& progress);
  // RESOURCE_EXHAUSTED when the filesystem of `dir` has less than `need`
  // bytes plus the margin free; `size_known` only shapes the message.
  absl::Status check_free_space(const std::string& dir, const tern::v1::ReleaseRef& release, uint64_t need,
                                bool size_known) const;

  std::string root_;
  ArtifactFetcher* fetcher_;
  BundleLimits limits_;
  std::unique_ptr<ArtifactFetcher> own_url_fetcher_;
  ArtifactFetcher* url_fetcher_;
  StagingLimits staging_;
};

}  // namespace tern
